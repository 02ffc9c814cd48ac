"""Query-item text match: how many of the request's query terms are the candidate's own tags, brand,
category or shop, with the serving split kept: the query's fingerprints in the user part, the
counting in the item part.

The embeddings never compare a query term with a candidate's strings: query terms and tags are
hashed into separate tables (features/contract.py), and the query only conditions the attention.
Search CTR models carry this signal explicitly. The parser fingerprints the raw strings of the
query terms and of the candidate's tags, brand, category and shop into one shared space
(features.tfrecord.fingerprints: case-folded; '' and the price token are 0), so equal strings
have equal fingerprints whatever their tables.

User part, once per request (`request`): the Q query terms' fingerprints [B, Q], flattened at the
end of the user representation (float32 holds them exactly: they are below 2^24).
Item part, per candidate (`match`), with q_i the query's non-empty terms, n = their number:
    c_tags  = #{i : q_i equals any of the candidate's tags}
    c_brand = #{i : q_i = brand},  c_category, c_shop alike
    c_any   = #{i : q_i equals any of those}
and the head reads [c_tags, c_brand, c_category, c_shop, the same / max(n, 1), c_any / max(n, 1)]
(9 values): exact counts, no weights. A fingerprint 0 (padding, no value, price token) matches
nothing. Cost per candidate: Q (T + 3) compares.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from features.contract import fingerprint_name

CANDIDATE_FIELDS = ("brand_id", "category_id", "shop_id")   # after the tags
OUTPUT_WIDTH = 2 * (1 + len(CANDIDATE_FIELDS)) + 1


@keras.saving.register_keras_serializable(package="dupn")
class QueryMatch(keras.layers.Layer):
    """Counts of the query's terms equal to the candidate's tags, brand, category and shop.

    Args:
      terms: Q, query terms per request (the contract's query_terms).
    """

    def __init__(self, terms: int, **kwargs):
        super().__init__(**kwargs)
        self.terms = terms

    @property
    def width(self) -> int:
        """Width of the query's fingerprints in the user representation."""
        return self.terms

    @property
    def output_width(self) -> int:
        return OUTPUT_WIDTH

    def request(self, inputs: dict) -> tf.Tensor:
        """[B, Q] float32: the query terms' fingerprints (0: no term)."""
        return tf.cast(inputs[fingerprint_name("query")], tf.float32)

    def match(self, query, candidate: dict) -> tf.Tensor:
        """[B, 9]: the counts and shares (module docstring).

        Args:
          query: [B, Q] from request(), or [1, Q]: one request's for every candidate.
          candidate: the batch's tags_fp [B, T] and brand_id_fp, category_id_fp, shop_id_fp [B].
        """
        q = query[:, :, None]                                                 # [B or 1, Q, 1]
        term = tf.not_equal(q, 0.0)
        tags = tf.cast(candidate[fingerprint_name("tags")], tf.float32)[:, None, :]   # [B, 1, T]
        ids = tf.stack([tf.cast(candidate[fingerprint_name(f)], tf.float32)
                        for f in CANDIDATE_FIELDS], -1)[:, None, :]           # [B, 1, 3]
        # Candidate fingerprints 0 are excluded as well as query ones: 0 never matches.
        tag_hit = tf.reduce_any(tf.equal(q, tags) & term, -1)                 # [B, Q]
        id_hit = tf.equal(q, ids) & term                                      # [B, Q, 3]
        hits = tf.concat([tag_hit[..., None], id_hit], -1)                    # [B, Q, 4]
        counts = tf.reduce_sum(tf.cast(hits, tf.float32), 1)                  # [B, 4]
        matched = tf.reduce_sum(tf.cast(tf.reduce_any(hits, -1), tf.float32), 1, keepdims=True)
        n = tf.maximum(tf.reduce_sum(tf.cast(term, tf.float32), 1), 1.0)      # [B or 1, 1]
        return tf.concat([counts, counts / n, matched / n], -1)

    def get_config(self):
        return {**super().get_config(), "terms": self.terms}
