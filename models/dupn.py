"""DUPN, the Deep User Perception Network, and `build_model`: any variant or baseline from a config.

Behaviour sequence -> embeddings e_t (item) and p_t (property) -> property-gated LSTM ->
attention pooling (query, profile and properties aware) -> joined with the profile -> the shared
user representation (shared_dim) -> the sharing structure (model.sharing, models/sharing.py;
hard: none) -> one head per configured task.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from features.contract import Contract
from models.attention import AttentionPooling
from models.config import (balance_spec, contract_config, contract_from_config, head_configs,
                           sharing_config)
from models.embedding import FeatureEmbeddings
from models.gated_lstm import PropertyGatedLSTM
from models.id_match import IdMatch
from models.query_match import QueryMatch
from models.target_attention import TargetAttention
from models.head_inputs import head_inputs
from models.heads import make_head
from models.multitask import RepresentationModel, dummy_inputs

# variant -> (properties in the LSTM gates, properties in the attention)
VARIANT_PROPERTIES = {
    "dupn-all": (True, True),
    "dupn-nobp": (False, False),
    "dupn-bplstm": (True, False),
    "dupn-bpatt": (False, True),
    "dupn-w2v": (True, True),      # dupn-all over a pre-trained, frozen item-id table
}
SEQUENCE_FEATURES = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
                     "seq_type", "seq_scene", "seq_time_bucket")


def time_major(inputs: dict) -> dict:
    """The sequence features with their first two axes swapped: [N, B, ...] (ids are cheap to
    transpose; the LSTM and attention then never transpose float tensors)."""
    out = {}
    for name in SEQUENCE_FEATURES:
        x = inputs[name]
        out[name] = tf.transpose(x, [1, 0, *range(2, len(x.shape))])
    return out


@keras.saving.register_keras_serializable(package="dupn")
class DUPN(RepresentationModel):
    """The DUPN network and its ablations (VARIANT_PROPERTIES).

    Args:
      contract: models.config.contract_config(contract).
      heads: [{name, weight, hidden_units, esmm (ctr only, optional)}] in order.
      variant: a key of VARIANT_PROPERTIES.
      lstm_units: LSTM width, also the width of the pooled representation.
      peepholes: peephole connections in the LSTM.
      attention_units: width of the attention's scoring layer.
      shared_dim: width of the shared user representation (pooled + profile, one dense layer).
      dropout: on the shared representation, the experts' and the heads' hidden layers.
      l2: on every kernel and on looked-up embedding rows.
      interest_match: also pool the behaviours' item embeddings with the attention weights and
        give the ctr head their match with the candidate (models.head_inputs.interest_terms);
        the user representation then ends with that interest vector (item_dim wide).
      interest_heads: K > 1 pools K interests instead: the attention scores each step K times
        on its one tanh layer, the first weighting as before, and each interest is matched
        with the candidate; the representation then ends with K * item_dim.
      sharing: models.config.sharing_config (None: hard, every head reads the representation).
      ctr_rank_features: the ctr head also reads the impression's ranking features.
      target_attention: d > 0: the ctr head also reads a candidate-aware attention over per-step
        keys of width d (models/target_attention.py); the representation then ends with them.
      id_match: K > 0: the ctr head also reads K property-weighted counts per field of the
        history's behaviours that share an id with the candidate (models/id_match.py); the
        representation then ends with the per-step ids and weights.
      id_match_signed: the id match's weights take either sign (a recent buy can count against).
      query_match: the ctr head also reads the counts of the query's terms equal to the
        candidate's tags, brand, category and shop (models/query_match.py); the representation
        then ends with the query terms' fingerprints.
    """

    def __init__(self, contract: dict, heads: list[dict], variant: str = "dupn-all",
                 lstm_units: int = 128, peepholes: bool = False, attention_units: int = 64,
                 shared_dim: int = 256, dropout: float = 0.0, l2: float = 0.0,
                 sharing: dict | None = None, interest_match: bool = False,
                 interest_heads: int = 1, ctr_rank_features: bool = False,
                 target_attention: int = 0, id_match: int = 0, id_match_signed: bool = False,
                 query_match: bool = False, **kwargs):
        if variant not in VARIANT_PROPERTIES:
            raise ValueError(f"unknown DUPN variant '{variant}' "
                             f"(variants: {', '.join(VARIANT_PROPERTIES)})")
        reads = {h["name"]: head_inputs(h["name"], interest_match, ctr_rank_features,
                                        bool(target_attention), bool(id_match), query_match)
                 for h in heads}
        super().__init__(contract, [make_head(h, contract["rank_features"], dropout, l2,
                                              reads[h["name"]]) for h in heads],
                         sharing, dropout, l2, ctr_rank_features, **kwargs)
        self.head_configs = [dict(h) for h in heads]
        self.variant = variant
        self.lstm_units = lstm_units
        self.peepholes = peepholes
        self.attention_units = attention_units
        self.shared_dim = shared_dim
        self.dropout = dropout
        self.l2 = l2
        self.lstm_property, self.attention_property = VARIANT_PROPERTIES[variant]
        self.embeddings = FeatureEmbeddings(contract, l2, freeze_item_table=variant == "dupn-w2v",
                                            name="embeddings")
        self.lstm = PropertyGatedLSTM(
            lstm_units, self.embeddings.item_dim,
            self.embeddings.property_dim if self.lstm_property else 0, peepholes, l2,
            time_major=True, name="gated_lstm")
        self.interest_heads = interest_heads
        self.attention = AttentionPooling(attention_units, self.attention_property, l2,
                                          time_major=True,
                                          heads=interest_heads if interest_match else 1,
                                          name="attention")
        reg = keras.regularizers.L2(l2) if l2 else None
        self.shared = keras.layers.Dense(shared_dim, activation="relu", name="shared",
                                         kernel_regularizer=reg)
        self.shared_dropout = keras.layers.Dropout(dropout, name="shared_dropout")
        self.interest_match = interest_match
        self.interest_dim = self.embeddings.item_dim * interest_heads if interest_match else 0
        self.target_attention = target_attention
        self.target = (TargetAttention(target_attention, contract["sequence_length"], l2,
                                       name="target_attention") if target_attention else None)
        self.id_match = id_match
        self.id_match_signed = id_match_signed
        self.matcher = (IdMatch(id_match, contract["sequence_length"], contract["tag_slots"], l2,
                                signed=id_match_signed, name="id_match") if id_match else None)
        self.query_match = query_match
        self.query_matcher = (QueryMatch(contract["query_terms"], name="query_match")
                              if query_match else None)

    @property
    def representation_parts(self):
        parts = {"interest": self.interest_dim} if self.interest_dim else {}
        if self.target is not None:
            parts["keys"] = self.target.width
        if self.matcher is not None:
            parts["ids"] = self.matcher.width
        if self.query_matcher is not None:
            parts["query"] = self.query_matcher.width
        return parts

    def encode(self, inputs: dict, training=False) -> tuple[tf.Tensor, tf.Tensor]:
        """(user representation [B, shared_dim (+ interest_heads * item_dim with interest_match)
        (+ N * (target_attention + 1) keys with target_attention)], attention weights [B, N]:
        the weighting that pools the states)."""
        seq = time_major(inputs)
        e, valid = self.embeddings.behaviour(seq)                      # [N, B, De], [N, B]
        p = (self.embeddings.behaviour_properties(seq)
             if self.lstm_property or self.attention_property else None)
        h = self.lstm(e, properties=p if self.lstm_property else None, valid=valid)
        profile = self.embeddings.profile(inputs)
        context = tf.concat([self.embeddings.query(inputs), profile], axis=-1)
        pooled, weights = self.attention(h, properties=p if self.attention_property else None,
                                         context=context, valid=valid)   # [B, (K,) N]
        representation = self.shared(tf.concat([pooled, profile], axis=-1))
        representation = self.shared_dropout(representation, training=training)
        if self.interest_dim:
            # The history's item embeddings under the attention's K weightings: vectors in the
            # candidates' space, still computed once per user (docs/QUALITY.md). A broadcast
            # multiply and a sum: einsum's batched matmul cost twice the time, forward and backward.
            by_step = tf.transpose(tf.reshape(weights, [-1, self.interest_heads, tf.shape(e)[0]]),
                                   [2, 0, 1])                                    # [N, B, K]
            interest = tf.reduce_sum(by_step[..., None] * e[:, :, None], axis=0)   # [B, K, De]
            representation = tf.concat(
                [representation, tf.reshape(interest, [-1, self.interest_dim])], axis=-1)
        if self.target is not None:
            # Per-step keys for the item part's target attention, once per user; they read the
            # properties where the variant's attention does (dupn-all, dupn-bpatt).
            keys = self.target.keys(e, valid, p if self.attention_property else None)
            representation = tf.concat([representation, keys], axis=-1)
        if self.matcher is not None:
            # Per-step ids and property weights for the item part's exact-match counts.
            ids = self.matcher.history(seq, valid, p if self.attention_property else None)
            representation = tf.concat([representation, ids], axis=-1)
        if self.query_matcher is not None:
            # The query terms' fingerprints, per request, for the item part's text match.
            representation = tf.concat([representation, self.query_matcher.request(inputs)], -1)
        return representation, (weights if weights.shape.rank == 2 else weights[:, 0])

    @property
    def last_shared_layer(self):
        return self.shared

    def user_representation(self, inputs, training=False):
        return self.encode(inputs, training)[0]

    def attention_weights(self, inputs: dict) -> tf.Tensor:
        """[B, N] attention over the behaviour sequence (0 on padding), for analysis."""
        return self.encode(inputs, training=False)[1]

    def get_config(self):
        return {**super().get_config(), "heads": self.head_configs, "variant": self.variant,
                "lstm_units": self.lstm_units, "peepholes": self.peepholes,
                "attention_units": self.attention_units, "shared_dim": self.shared_dim,
                "dropout": self.dropout, "l2": self.l2, "interest_match": self.interest_match,
                "interest_heads": self.interest_heads, "target_attention": self.target_attention,
                "id_match": self.id_match, "id_match_signed": self.id_match_signed,
                "query_match": self.query_match}


def build_model(config, contract: Contract | None = None, pretrained_item_table=None,
                restore_item_table: bool = False):
    """The model of config.model.variant, built (its variables exist).

    Args:
      config: a configs.schema.Config.
      contract: the feature contract (default: Contract.from_config(config)).
      pretrained_item_table: [item buckets, item dim] array, required by dupn-w2v (see
        models.w2v.item_table_from_files), refused by every other variant.
      restore_item_table: dupn-w2v only: build without the table because the caller restores
        the model, frozen table included, from a checkpoint right away.
    """
    from models.baselines import BASELINES   # baselines import this module's helpers

    contract = contract or Contract.from_config(config)
    m = config.model
    common = {"contract": contract_config(contract), "heads": head_configs(config),
              "dropout": m.dropout, "l2": m.l2, "loss_balance": balance_spec(config.trainer)}
    if m.variant in VARIANT_PROPERTIES:
        model = DUPN(variant=m.variant, lstm_units=m.lstm_units, peepholes=m.peepholes,
                     attention_units=m.attention_units, shared_dim=m.shared_dim,
                     sharing=sharing_config(m), interest_match=m.interest_match,
                     interest_heads=m.interest_heads, target_attention=m.target_attention,
                     id_match=m.id_match, id_match_signed=m.id_match_signed,
                     query_match=m.query_match,
                     ctr_rank_features=m.ctr_rank_features, **common)
    elif m.variant in BASELINES:
        model = BASELINES[m.variant].from_model_config(m, **common)
    else:
        raise ValueError(f"unknown model.variant '{m.variant}'")
    if config.trainer.loss_balance == "gradnorm" and model.last_shared_layer is None:
        raise ValueError(f"trainer.loss_balance gradnorm needs a layer every head reads through "
                         f"(GradNorm's W); {m.variant} has none")
    model(dummy_inputs(contract_from_config(common["contract"])), training=False)
    if m.variant == "dupn-w2v":
        if pretrained_item_table is not None:
            model.embeddings.set_item_table(np.asarray(pretrained_item_table, np.float32))
        elif not restore_item_table:
            raise ValueError("dupn-w2v needs the pre-trained item table "
                             "(models.w2v.item_table_from_files) or restore_item_table=True")
    elif pretrained_item_table is not None:
        raise ValueError(f"{m.variant} does not take a pre-trained item table (only dupn-w2v)")
    return model
