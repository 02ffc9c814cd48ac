"""The paper's baselines with DUPN's heads and losses: wide, wide-deep, dssm and cnn-max.

Every configured head exists in every baseline, so the same multi-task data trains them:
  wide       one logistic regression per head over hashed ids and hashed crosses
  wide-deep  wide + a deep network over the mean behaviour embedding, query and profile
  dssm       a user tower (mean behaviour, query, profile) and, for heads with a candidate
             (ctr, talent, shop), a candidate tower scored by scaled cosine; l2r and power read
             the user tower alone
  cnn-max    1-D convolutions over the behaviour embeddings, max-pooled over real steps
dssm and cnn-max put model.sharing between their representation and heads as DUPN does; wide and
wide-deep have no single representation to share, so they take hard sharing only.
With model.esmm the ctr head's task is ESMM's entire-space task (models/esmm.py) in each, over
the model's own tower: wide regresses the click and the conversion logit on the same features,
wide-deep adds a wide part to both logits of its two MLPs, dssm scores both by a cosine of their
own towers, cnn-max uses two MLPs as DUPN does.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from models.config import sharing_config
from models.embedding import FeatureEmbeddings, masked_mean
from models.head_inputs import READS, CandidateInputs, head_inputs
from models.heads import cosine_head, make_head, wide_head
from models.multitask import MultiTaskModel, RepresentationModel
from models.towers import WideLinear, apply, mlp

# Wide features: single ids and crosses of ids (feature names of the contract). A row's
# candidate fields are empty (0) unless its task uses them, so one list serves every head.
WIDE_FEATURES = (
    ("item_id",), ("shop_id",), ("brand_id",), ("category_id",), ("tags",), ("talent_id",),
    ("talent_type",), ("talent_tags",), ("query",), ("age_bucket",), ("gender",),
    ("seq_item_id",), ("seq_shop_id",), ("seq_brand_id",), ("seq_category_id",),
    ("seq_category_id", "category_id"), ("seq_shop_id", "shop_id"), ("seq_brand_id", "brand_id"),
    ("age_bucket", "category_id"), ("gender", "category_id"), ("query", "category_id"),
    ("seq_category_id", "talent_type"), ("age_bucket", "talent_type"), ("gender", "talent_type"),
)


def wide_ids(inputs: dict, buckets: int) -> tf.SparseTensor:
    """Hashed ids of every WIDE_FEATURES entry in a row: SparseTensor [B, ?] in [0, buckets).

    Padding (0) never produces an id, so a cross exists only when all its parts are present.
    """
    parts = []
    for k, names in enumerate(WIDE_FEATURES):
        ids = [tf.sparse.from_dense(tf.reshape(inputs[n], [tf.shape(inputs[n])[0], -1]))
               for n in names]
        salt = tf.fill([tf.shape(inputs[names[0]])[0], 1], tf.constant(k, tf.int64))  # per feature
        parts.append(tf.sparse.cross_hashed([salt, *ids], num_buckets=buckets))
    return tf.sparse.concat(axis=1, sp_inputs=parts, expand_nonconcat_dims=True)


def hard_sharing_only(model_config) -> None:
    if model_config.sharing != "hard":
        raise ValueError(f"model.variant {model_config.variant} has no user representation to "
                         f"share: model.sharing must be hard, not {model_config.sharing}")


def _wide_buckets(contract: dict) -> int:
    # As many weights as the item table has rows: crosses then collide about as often as items.
    return contract["tables"]["item_id"][0]


@keras.saving.register_keras_serializable(package="dupn")
class Wide(MultiTaskModel):
    """Logistic regression per head over hashed ids and crosses (no embeddings)."""

    def __init__(self, contract: dict, heads: list[dict], l2: float = 0.0, dropout: float = 0.0,
                 **kwargs):
        buckets = _wide_buckets(contract)
        super().__init__(contract, [wide_head(h["name"], h["weight"], buckets, l2,
                                              bool(h.get("esmm"))) for h in heads], **kwargs)
        self.buckets = buckets
        self.head_configs = [dict(h) for h in heads]
        self.l2 = l2
        self.dropout = dropout

    @classmethod
    def from_model_config(cls, model_config, **common):
        hard_sharing_only(model_config)
        return cls(**common)

    def head_logits(self, inputs, training=False):
        ids = wide_ids(inputs, self.buckets)
        rank = tf.cast(inputs["rank_features"], tf.float32)
        return {h.task: h(ids, rank) for h in self.heads}

    def get_config(self):
        return {**super().get_config(), "heads": self.head_configs, "l2": self.l2,
                "dropout": self.dropout}


def pooled_user_features(embeddings: FeatureEmbeddings, inputs: dict) -> tf.Tensor:
    """The user without order: mean behaviour embedding (item and properties over real steps),
    query and profile, concatenated [B, item_dim + property_dim + query_dim + profile_dim]."""
    e, _ = embeddings.behaviour(inputs)
    steps = tf.concat([e, embeddings.behaviour_properties(inputs)], axis=-1)
    return tf.concat([masked_mean(steps, inputs["seq_item_id"]), embeddings.query(inputs),
                      embeddings.profile(inputs)], axis=-1)


def user_tower(shared_dim: int, dropout: float, l2: float, prefix: str) -> list:
    """Two dense layers to the shared width (the deep part of wide-deep, the DSSM user tower)."""
    return mlp([shared_dim, shared_dim], dropout, l2, prefix)


def last_dense(layers):
    """The last Dense layer of an mlp() list (its Dropout layers come after theirs)."""
    return [layer for layer in layers if isinstance(layer, keras.layers.Dense)][-1]


@keras.saving.register_keras_serializable(package="dupn")
class WideDeep(MultiTaskModel):
    """Wide & Deep: each head's logit is its deep head's plus its wide regression's.

    The wide part crosses user and candidate ids, so this model has no user/item split.
    """

    def __init__(self, contract: dict, heads: list[dict], shared_dim: int = 256,
                 dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(contract, [make_head(h, contract["rank_features"], dropout, l2,
                                              head_inputs(h["name"])) for h in heads], **kwargs)
        self.head_configs = [dict(h) for h in heads]
        self.shared_dim = shared_dim
        self.dropout = dropout
        self.l2 = l2
        self.buckets = _wide_buckets(contract)
        self.embeddings = FeatureEmbeddings(contract, l2, name="embeddings")
        self.deep = user_tower(shared_dim, dropout, l2, "deep")
        self.wide = [WideLinear(h.output_width, self.buckets, l2, name=f"{h.task}_wide")
                     for h in self.heads]

    @classmethod
    def from_model_config(cls, model_config, **common):
        hard_sharing_only(model_config)
        return cls(shared_dim=model_config.shared_dim, **common)

    @property
    def last_shared_layer(self):
        return last_dense(self.deep)

    def head_logits(self, inputs, training=False):
        representation = apply(self.deep, pooled_user_features(self.embeddings, inputs), training)
        ids = wide_ids(inputs, self.buckets)
        rank = tf.cast(inputs["rank_features"], tf.float32)
        candidates = CandidateInputs(self, inputs)
        out = {}
        for head, wide in zip(self.heads, self.wide):
            candidate = candidates.join(head.candidate_inputs)
            wide_logits = wide(ids, rank)
            out[head.task] = head(representation, candidate, training=training) + (
                wide_logits[:, 0] if head.output_width == 1 else wide_logits)
        return out

    def get_config(self):
        return {**super().get_config(), "heads": self.head_configs, "shared_dim": self.shared_dim,
                "dropout": self.dropout, "l2": self.l2}


# The candidate inputs DSSM compares with the user by a cosine (models.towers.CosineTower).
COSINE_INPUTS = {"item", "talent", "shop"}


@keras.saving.register_keras_serializable(package="dupn")
class DSSM(RepresentationModel):
    """User tower (pooled_user_features, two layers) against candidate towers (CosineTower) for
    the heads that score a candidate."""

    def __init__(self, contract: dict, heads: list[dict], shared_dim: int = 256,
                 dropout: float = 0.0, l2: float = 0.0, sharing: dict | None = None,
                 ctr_rank_features: bool = False, **kwargs):
        def head(h):
            reads = head_inputs(h["name"], ctr_rank_features=ctr_rank_features)
            if COSINE_INPUTS & set(READS[h["name"]]):
                return cosine_head(h["name"], h["weight"], h["hidden_units"], dropout, l2,
                                   bool(h.get("esmm")), reads)
            return make_head(h, contract["rank_features"], dropout, l2, reads)

        super().__init__(contract, [head(h) for h in heads], sharing, dropout, l2,
                         ctr_rank_features, **kwargs)
        self.head_configs = [dict(h) for h in heads]
        self.shared_dim = shared_dim
        self.dropout = dropout
        self.l2 = l2
        self.embeddings = FeatureEmbeddings(contract, l2, name="embeddings")
        self.user_tower = user_tower(shared_dim, dropout, l2, "user_tower")

    @classmethod
    def from_model_config(cls, model_config, **common):
        return cls(shared_dim=model_config.shared_dim, sharing=sharing_config(model_config),
                   ctr_rank_features=model_config.ctr_rank_features, **common)

    @property
    def last_shared_layer(self):
        return last_dense(self.user_tower)

    def user_representation(self, inputs, training=False):
        return apply(self.user_tower, pooled_user_features(self.embeddings, inputs), training)

    def get_config(self):
        return {**super().get_config(), "heads": self.head_configs, "shared_dim": self.shared_dim,
                "dropout": self.dropout, "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class CNNMax(RepresentationModel):
    """1-D convolutions over the behaviour embeddings (item and properties), max-pooled over the
    real steps, joined with query and profile into the shared representation."""

    def __init__(self, contract: dict, heads: list[dict], filters: int = 128, kernel_size: int = 3,
                 shared_dim: int = 256, dropout: float = 0.0, l2: float = 0.0,
                 sharing: dict | None = None, ctr_rank_features: bool = False, **kwargs):
        reads = {h["name"]: head_inputs(h["name"], ctr_rank_features=ctr_rank_features)
                 for h in heads}
        super().__init__(contract, [make_head(h, contract["rank_features"], dropout, l2,
                                              reads[h["name"]]) for h in heads],
                         sharing, dropout, l2, ctr_rank_features, **kwargs)
        self.head_configs = [dict(h) for h in heads]
        self.filters = filters
        self.kernel_size = kernel_size
        self.shared_dim = shared_dim
        self.dropout = dropout
        self.l2 = l2
        reg = keras.regularizers.L2(l2) if l2 else None
        self.embeddings = FeatureEmbeddings(contract, l2, name="embeddings")
        self.conv = keras.layers.Conv1D(filters, kernel_size, padding="same", activation="relu",
                                        kernel_regularizer=reg, name="conv")
        self.shared = keras.layers.Dense(shared_dim, activation="relu", kernel_regularizer=reg,
                                         name="shared")
        self.shared_dropout = keras.layers.Dropout(dropout, name="shared_dropout")

    @property
    def last_shared_layer(self):
        return self.shared

    @classmethod
    def from_model_config(cls, model_config, **common):
        return cls(filters=model_config.lstm_units, shared_dim=model_config.shared_dim,
                   sharing=sharing_config(model_config),
                   ctr_rank_features=model_config.ctr_rank_features, **common)

    def user_representation(self, inputs, training=False):
        e, valid = self.embeddings.behaviour(inputs)
        steps = tf.concat([e, self.embeddings.behaviour_properties(inputs)], axis=-1)
        # Padded steps are zeroed so the windows at a sequence's end see nothing there, and are
        # left out of the max; a user without behaviours pools to zeros.
        features_ = self.conv(steps * valid[..., None])
        pooled = tf.reduce_max(features_ - 1e9 * (1.0 - valid[..., None]), axis=1)
        pooled = tf.where(tf.reduce_any(valid > 0, axis=1, keepdims=True), pooled, 0.0)
        x = tf.concat([pooled, self.embeddings.query(inputs), self.embeddings.profile(inputs)], -1)
        return self.shared_dropout(self.shared(x), training=training)

    def get_config(self):
        return {**super().get_config(), "heads": self.head_configs, "filters": self.filters,
                "kernel_size": self.kernel_size, "shared_dim": self.shared_dim,
                "dropout": self.dropout, "l2": self.l2}


BASELINES = {"wide": Wide, "wide-deep": WideDeep, "dssm": DSSM, "cnn-max": CNNMax}
