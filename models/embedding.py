"""The contract's embedding tables, shared by every place an id is embedded, and the behaviour embedding."""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from models.config import contract_from_config
from models.qr_embedding import QREmbedding

ITEM_TABLES = ("item_id", "shop_id", "brand_id", "category_id", "tags")   # e_t, in this order
BEHAVIOUR_PROPERTIES = (("type", "seq_type"), ("scene", "seq_scene"),
                        ("time_bucket", "seq_time_bucket"))              # p_t, in this order
PROFILE = (("age", "age_bucket"), ("gender", "gender"))                    # u, in this order


def valid_steps(ids: tf.Tensor) -> tf.Tensor:
    """float32 mask of non-padding ids (id 0 is padding), same shape as ids."""
    return tf.cast(tf.not_equal(ids, 0), tf.float32)


def masked_mean(embedded: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean of embedded[..., k, :] over the slots k whose id is not padding; zeros when none is.

    Args:
      embedded: [..., K, D]; ids: [..., K].
    Returns:
      [..., D].
    """
    valid = valid_steps(ids)[..., None]
    total = tf.reduce_sum(embedded * valid, axis=-2)
    return tf.math.divide_no_nan(total, tf.reduce_sum(valid, axis=-2))


@keras.saving.register_keras_serializable(package="dupn")
class FeatureEmbeddings(keras.layers.Layer):
    """Every embedding table of the contract; an id goes through the same table wherever it is.

    A table is a plain keras Embedding, or a QREmbedding where the contract says qr.

    The item tables serve the behaviour sequence, the CTR target item and the shop task's shop;
    the tags table also embeds a talent's tags. Looked-up rows carry an L2 penalty (on the rows a
    batch uses, not the whole table: a dense penalty on a million-row table would cost a full
    table update every step).

    Args:
      contract: contract_config(contract).
      l2: L2 penalty on looked-up rows, per example.
      freeze_item_table: keep the item_id table fixed (dupn-w2v loads it pre-trained).
    """

    def __init__(self, contract: dict, l2: float = 0.0, freeze_item_table: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.contract = contract
        self.l2 = l2
        self.freeze_item_table = freeze_item_table
        spec = contract_from_config(contract)
        reg = keras.regularizers.L2(l2) if l2 else None
        tables = {}
        for name, (buckets, dim) in spec.tables.items():
            if spec.embedding(name) == "qr":
                if freeze_item_table and name == "item_id":
                    raise ValueError("a pre-trained (frozen) item table is a plain table: "
                                     "item_id's embedding cannot be qr with it (dupn-w2v)")
                tables[name] = QREmbedding(buckets, dim, l2, name=name)
                continue
            frozen = freeze_item_table and name == "item_id"
            tables[name] = keras.layers.Embedding(
                buckets, dim, activity_regularizer=None if frozen else reg, trainable=not frozen,
                embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05), name=name)
        self.tables = tables
        vocabs = {"type": spec.features["seq_type"].vocab,
                  "scene": spec.features["seq_scene"].vocab,
                  "time_bucket": spec.features["seq_time_bucket"].vocab,
                  "age": spec.features["age_bucket"].vocab, "gender": spec.features["gender"].vocab}
        self.properties = {name: keras.layers.Embedding(vocabs[name], spec.property_dims[name],
                                                        activity_regularizer=reg, name=name)
                           for name in vocabs}
        self.item_dim = spec.item_embedding_dim
        self.property_dim = spec.property_embedding_dim
        self.query_dim = spec.tables["query"][1]
        self.profile_dim = sum(spec.property_dims[k] for k, _ in PROFILE)
        self.talent_dim = sum(spec.tables[k][1] for k in ("talent_id", "talent_type", "tags"))
        self.shop_dim = spec.tables["shop_id"][1]
        self.built = True   # sub-layers build themselves on first lookup

    def pooled(self, table: str, ids: tf.Tensor) -> tf.Tensor:
        """Multi-valued ids [..., K] -> mean of their embeddings over non-padding slots [..., D]."""
        return masked_mean(self.tables[table](ids), ids)

    def item(self, item_id, shop_id, brand_id, category_id, tags) -> tf.Tensor:
        """Item embedding: ids [...], tags [..., T] -> [..., item_dim].

        Concatenated in ITEM_TABLES order: item, shop, brand, category, mean of the tag slots."""
        ids = (item_id, shop_id, brand_id, category_id)
        return tf.concat([self.tables[t](i) for t, i in zip(ITEM_TABLES, ids)]
                         + [self.pooled("tags", tags)], axis=-1)

    def behaviour(self, inputs: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """(e [B, N, item_dim], valid [B, N] float 0/1) of the behaviour sequence."""
        e = self.item(inputs["seq_item_id"], inputs["seq_shop_id"], inputs["seq_brand_id"],
                      inputs["seq_category_id"], inputs["seq_tags"])
        return e, valid_steps(inputs["seq_item_id"])

    def property(self, name: str, ids: tf.Tensor) -> tf.Tensor:
        """The embedding of a small-vocabulary id; an id outside the vocabulary reads row 0, the
        unknown row, in every export alike (a CPU lookup would fail on it, a compiled one clamp)."""
        known = tf.logical_and(ids >= 0, ids < self.properties[name].input_dim)
        return self.properties[name](tf.where(known, ids, tf.zeros_like(ids)))

    def behaviour_properties(self, inputs: dict) -> tf.Tensor:
        """p [B, N, property_dim]: behaviour type, scene and time bucket."""
        return tf.concat([self.property(name, inputs[key]) for name, key in BEHAVIOUR_PROPERTIES],
                         axis=-1)

    def target_item(self, inputs: dict) -> tf.Tensor:
        """The candidate item (CTR, L2R) [B, item_dim], through the same tables as the sequence."""
        return self.item(inputs["item_id"], inputs["shop_id"], inputs["brand_id"],
                         inputs["category_id"], inputs["tags"])

    def talent(self, inputs: dict) -> tf.Tensor:
        """[B, talent_dim]: talent id, type and tags (the items' tags table)."""
        return tf.concat([self.tables["talent_id"](inputs["talent_id"]),
                          self.tables["talent_type"](inputs["talent_type"]),
                          self.pooled("tags", inputs["talent_tags"])], axis=-1)

    def shop(self, inputs: dict) -> tf.Tensor:
        """[B, shop_dim]: the shop task's shop, through the sequence's shop table."""
        return self.tables["shop_id"](inputs["shop_id"])

    def query(self, inputs: dict) -> tf.Tensor:
        """[B, query_dim]: the query terms' mean embedding (zeros without a query)."""
        return self.pooled("query", inputs["query"])

    def profile(self, inputs: dict) -> tf.Tensor:
        """u [B, profile_dim]: age bucket and gender."""
        return tf.concat([self.property(name, inputs[key]) for name, key in PROFILE], axis=-1)

    def set_item_table(self, table) -> None:
        """Loads a pre-trained item_id table [buckets, dim] (dupn-w2v), checking its shape."""
        buckets, dim = self.contract["tables"]["item_id"]
        if self.contract.get("embeddings", {}).get("item_id", "plain") != "plain":
            raise ValueError("a pre-trained item table loads into a plain item_id table only")
        if tuple(table.shape) != (buckets, dim):
            raise ValueError(f"pre-trained item table has shape {tuple(table.shape)}, the "
                             f"contract's item_id table is ({buckets}, {dim})")
        layer = self.tables["item_id"]
        if not layer.built:
            layer(tf.zeros([1], tf.int64))
        layer.embeddings.assign(tf.cast(table, layer.embeddings.dtype))

    def call(self, inputs: dict) -> dict:
        """Everything at once (for inspection): behaviour, properties, query and profile."""
        e, valid = self.behaviour(inputs)
        return {"e": e, "valid": valid, "p": self.behaviour_properties(inputs),
                "query": self.query(inputs), "profile": self.profile(inputs)}

    def get_config(self):
        return {**super().get_config(), "contract": self.contract, "l2": self.l2,
                "freeze_item_table": self.freeze_item_table}
