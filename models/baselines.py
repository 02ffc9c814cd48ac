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
With model.esmm the ctr head is ESMM's (models/esmm.py) in each: wide regresses the click and
the conversion logit on the same features, wide-deep adds a wide part to both of ESMMHead's
logits, dssm scores both by a cosine of their own towers, cnn-max uses ESMMHead.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from models.embedding import FeatureEmbeddings, masked_mean
from models.esmm import EntireSpaceHead
from models.heads import CANDIDATES, TaskHead, make_head, mlp
from models.multitask import MultiTaskModel, RepresentationModel
from models.sharing import sharing_config

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


@keras.saving.register_keras_serializable(package="dupn")
class WideLinear(keras.layers.Layer):
    """A linear model over hashed sparse ids plus the dense ranking features.

    Call args:
      ids: SparseTensor [B, ?] from wide_ids; rank_features: [B, R].
    Returns:
      logits [B, classes].
    """

    def __init__(self, classes: int, buckets: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.buckets = buckets
        self.l2 = l2
        reg = keras.regularizers.L2(l2) if l2 else None
        self.table = keras.layers.Embedding(buckets, classes, embeddings_initializer="zeros",
                                            activity_regularizer=reg, name="weights")
        self.dense = keras.layers.Dense(classes, kernel_regularizer=reg, name="rank_features")

    def call(self, ids, rank_features):
        weights = self.table(ids.values)                                     # [nnz, classes]
        summed = tf.math.unsorted_segment_sum(weights, ids.indices[:, 0],
                                              tf.shape(rank_features)[0])
        return summed + self.dense(rank_features)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "buckets": self.buckets,
                "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class WideHead(TaskHead):
    """One task's logistic (or softmax) regression over the wide features."""

    def __init__(self, task: str, weight: float = 1.0, buckets: int = 1 << 18, l2: float = 0.0,
                 **kwargs):
        super().__init__(task, weight, **kwargs)
        self.buckets = buckets
        self.l2 = l2
        self.linear = WideLinear(self.output_width, buckets, l2, name=f"{task}_linear")

    def call(self, ids, rank_features):
        logits = self.linear(ids, rank_features)
        return logits[:, 0] if self.output_width == 1 else logits

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets, "l2": self.l2}


def hard_sharing_only(model_config) -> None:
    if model_config.sharing != "hard":
        raise ValueError(f"model.variant {model_config.variant} has no user representation to "
                         f"share: model.sharing must be hard, not {model_config.sharing}")


@keras.saving.register_keras_serializable(package="dupn")
class WideESMMHead(EntireSpaceHead, WideHead):
    """ESMM's ctr head as two logistic regressions (click, conversion) over the wide features."""


def _wide_buckets(contract: dict) -> int:
    # As many weights as the item table has rows: crosses then collide about as often as items.
    return contract["tables"]["item_id"][0]


@keras.saving.register_keras_serializable(package="dupn")
class Wide(MultiTaskModel):
    """Logistic regression per head over hashed ids and crosses (no embeddings)."""

    def __init__(self, contract: dict, heads: list[dict], l2: float = 0.0, dropout: float = 0.0,
                 **kwargs):
        buckets = _wide_buckets(contract)
        super().__init__(contract, [(WideESMMHead if h.get("esmm") else WideHead)(
            h["name"], h["weight"], buckets=buckets, l2=l2) for h in heads], **kwargs)
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


def apply(layers, x, training):
    for layer in layers:
        x = layer(x, training=training)
    return x


@keras.saving.register_keras_serializable(package="dupn")
class WideDeep(MultiTaskModel):
    """Wide & Deep: each head's logit is its deep head's plus its wide regression's.

    The wide part crosses user and candidate ids, so this model has no user/item split.
    """

    def __init__(self, contract: dict, heads: list[dict], shared_dim: int = 256,
                 dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(contract, [make_head(h, contract["rank_features"], dropout, l2)
                                    for h in heads], **kwargs)
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
        out = {}
        for head, wide in zip(self.heads, self.wide):
            candidate = self.embeddings.candidate(CANDIDATES[head.task], inputs)
            wide_logits = wide(ids, rank)
            out[head.task] = head(representation, candidate, training=training) + (
                wide_logits[:, 0] if head.output_width == 1 else wide_logits)
        return out

    def get_config(self):
        return {**super().get_config(), "heads": self.head_configs, "shared_dim": self.shared_dim,
                "dropout": self.dropout, "l2": self.l2}


def cosine_towers(hidden_units, dropout: float, l2: float, prefix: str) -> tuple:
    """(candidate tower layers, its output layer, the user projection) of a DSSM score."""
    reg = keras.regularizers.L2(l2) if l2 else None
    return (mlp(hidden_units[:-1], dropout, l2, f"{prefix}_tower"),
            keras.layers.Dense(hidden_units[-1], kernel_regularizer=reg, name=f"{prefix}_tower_out"),
            keras.layers.Dense(hidden_units[-1], kernel_regularizer=reg, name=f"{prefix}_user"))


def cosine_scale(layer, prefix: str) -> tuple:
    """(s, b): the learnt scale (from 5) and bias of a DSSM score, weights of `layer`."""
    return (layer.add_weight(f"{prefix}_scale", [], initializer=keras.initializers.Constant(5.0)),
            layer.add_weight(f"{prefix}_bias", [], initializer="zeros"))


def cosine_logit(tower, tower_out, user_projection, scale, bias, representation, candidate,
                 training) -> tf.Tensor:
    """s · cos(W_u r, tower(candidate)) + b, [B]."""
    item = tf.math.l2_normalize(tower_out(apply(tower, candidate, training)), axis=-1)
    user = tf.math.l2_normalize(user_projection(representation), axis=-1)
    return scale * tf.reduce_sum(user * item, axis=-1) + bias


@keras.saving.register_keras_serializable(package="dupn")
class TowerHead(TaskHead):
    """DSSM scoring: a candidate tower and a projection of the user, compared by scaled cosine.

    logit = s · cos(W_u r, tower(candidate)) + b, with s and b learnt.
    """

    def __init__(self, task: str, weight: float = 1.0, hidden_units=(64,), dropout: float = 0.0,
                 l2: float = 0.0, **kwargs):
        super().__init__(task, weight, **kwargs)
        self.hidden_units = list(hidden_units)
        self.dropout = dropout
        self.l2 = l2
        self.tower, self.tower_out, self.user_projection = cosine_towers(
            self.hidden_units, dropout, l2, task)
        self.scale, self.bias = cosine_scale(self, task)

    def call(self, representation, candidate=None, training=None):
        return cosine_logit(self.tower, self.tower_out, self.user_projection, self.scale,
                            self.bias, representation, candidate, training)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "dropout": self.dropout, "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class ESMMTowerHead(EntireSpaceHead, TowerHead):
    """ESMM's ctr head in DSSM: the click and the conversion logit each a scaled cosine of its
    own candidate tower and user projection."""

    def __init__(self, task: str = "ctr", weight: float = 1.0, hidden_units=(64,),
                 dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(task, weight, hidden_units=hidden_units, dropout=dropout, l2=l2, **kwargs)
        self.cvr_tower, self.cvr_tower_out, self.cvr_user_projection = cosine_towers(
            self.hidden_units, dropout, l2, "cvr")
        self.cvr_scale, self.cvr_bias = cosine_scale(self, "cvr")

    def call(self, representation, candidate=None, training=None):
        click = super().call(representation, candidate, training)
        conversion = cosine_logit(self.cvr_tower, self.cvr_tower_out, self.cvr_user_projection,
                                  self.cvr_scale, self.cvr_bias, representation, candidate,
                                  training)
        return tf.stack([click, conversion], axis=-1)


@keras.saving.register_keras_serializable(package="dupn")
class DSSM(RepresentationModel):
    """User tower (pooled_user_features, two layers) against candidate towers (TowerHead) for
    the heads that score a candidate."""

    def __init__(self, contract: dict, heads: list[dict], shared_dim: int = 256,
                 dropout: float = 0.0, l2: float = 0.0, sharing: dict | None = None, **kwargs):
        towers = ("item", "talent", "shop")
        super().__init__(contract, [
            (ESMMTowerHead if h.get("esmm") else TowerHead)(
                h["name"], h["weight"], hidden_units=h["hidden_units"], dropout=dropout, l2=l2)
            if CANDIDATES[h["name"]] in towers else make_head(h, contract["rank_features"],
                                                              dropout, l2)
            for h in heads], sharing, dropout, l2, **kwargs)
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
                 sharing: dict | None = None, **kwargs):
        super().__init__(contract, [make_head(h, contract["rank_features"], dropout, l2)
                                    for h in heads], sharing, dropout, l2, **kwargs)
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
