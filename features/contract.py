"""The one feature contract: every feature's name, dtype, shape, hash table and embedding width.

The Beam writer, the tf.data parser, the model inputs and the serving signatures all read this
module; nothing restates it. Ids are strings on disk and hashed into fixed bucket counts when
parsed (row 0 of every table is padding), so a daily run never rebuilds a vocabulary and an
unseen id never breaks a trained model.

Layout of one example (N = sequence length, T = tag slots, Q = query terms, R = ranking features):
  behaviour sequence, oldest first, right-padded to N:
    seq_item_id, seq_shop_id, seq_brand_id, seq_category_id   (N,)   string
    seq_tags                                                   (N,T)  string  item tags + price token
    seq_type, seq_scene, seq_time_bucket                       (N,)   int64   small vocabularies
  target item (CTR, L2R; the shop task fills shop_id only):
    item_id, shop_id, brand_id, category_id (), tags (T,)     string
    rank_features                                              (R,)   float32
  talent: talent_id, talent_type (), talent_tags (T,)          string
  query (Q,) string; profile: age_bucket, gender ()            int64
  task (), label (), weight ()                                 int64, float32, float32
  label_buy ()  the impression's buy, CTR examples only        float32 (0 elsewhere and in older examples)
  meta, never a model input: user_id, request_id (), ts ()     string, string, int64
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TASKS = ("ctr", "l2r", "talent", "power", "shop")
TASK_INDEX = {name: i for i, name in enumerate(TASKS)}

# Small closed vocabularies: index 0 is padding / unknown.
BEHAVIOR_TYPES = ("click", "cart", "fav", "buy")
SCENES = ("search", "recommend", "promo", "other")
GENDERS = ("m", "f", "u")
BEHAVIOR_INDEX = {name: i + 1 for i, name in enumerate(BEHAVIOR_TYPES)}
SCENE_INDEX = {name: i + 1 for i, name in enumerate(SCENES)}
GENDER_INDEX = {name: i + 1 for i, name in enumerate(GENDERS)}

# Time since the behaviour, as seen from the sample: < 1 min, < 5 min, < 30 min, < 2 h,
# < 1 day, < 3 days, < 7 days, older -> buckets 1..8.
TIME_BUCKET_EDGES_S = (60, 300, 1800, 7200, 86400, 3 * 86400, 7 * 86400)
NUM_TIME_BUCKETS = len(TIME_BUCKET_EDGES_S) + 2      # with padding
AGE_EDGES = (18, 25, 30, 35, 40, 50)                 # age buckets 1..7, 0 unknown
NUM_AGE_BUCKETS = len(AGE_EDGES) + 2
NUM_POWER_LEVELS = 7                                 # purchasing power 1..7 -> class 0..6
PRICE_BUCKETS = 16                                   # log2 buckets of the price
# Text match: the raw strings a query term may equal, fingerprinted into ONE shared space by the
# parser (features.tfrecord.hash_features) beside their per-table ids, under "<name>_fp". The
# per-table ids cannot be compared across tables (each hashes modulo its own bucket count); the
# fingerprints can (models/query_match.py). Case-folded; '' and the price token fingerprint as 0,
# which matches nothing. Values in [1, FINGERPRINT_RANGE]: below 2^24, so float32 holds them
# exactly (two distinct strings collide once in 16.8 million pairs).
FINGERPRINTED = ("query", "tags", "brand_id", "category_id", "shop_id")
FINGERPRINT_RANGE = 16_777_212
PRICE_PREFIX = "price:"


def fingerprint_name(name: str) -> str:
    """The feature name of a string feature's shared-space fingerprints."""
    return f"{name}_fp"


# How a table embeds its hashed ids: "plain", one row per hash bucket (ids beyond the bucket
# count share rows); "qr", quotient-remainder (Shi et al., KDD 2020): the same number of rows
# split into two tables, each id a unique (quotient, remainder) pair of rows (qr_rows).
EMBEDDINGS = ("plain", "qr")


def time_bucket(gap_seconds):
    """Bucket (1..8) of the time between a behaviour and the sample; works on arrays too."""
    return np.searchsorted(TIME_BUCKET_EDGES_S, gap_seconds, side="right") + 1


def age_bucket(age) -> int:
    """Bucket (1..7) of an age in years; 0 when unknown."""
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return 0
    return int(np.searchsorted(AGE_EDGES, age, side="right")) + 1


def price_token(price) -> str:
    """The item's price bucketed on a log scale, as a tag ('is it expensive'), or '' if unknown."""
    if price is None or not 0 <= price < math.inf:   # catches NaN and infinity too
        return ""
    return f"{PRICE_PREFIX}{min(int(math.log2(price + 1.0)), PRICE_BUCKETS - 1)}"


def item_tag_slots(tags, price, tag_slots: int) -> list[str]:
    """An item's tags padded or cut to tag_slots - 1, then its price token: the `tags` slots.

    tags: a list of strings, or one ';'-separated string (a list field read from CSV), or None.
    """
    if tags is None:
        tags = ()
    elif isinstance(tags, str):   # iterating it would make every character a tag
        tags = tags.split(";")
    kept = [t for t in tags if t][: tag_slots - 1]
    return kept + [""] * (tag_slots - 1 - len(kept)) + [price_token(price)]


def qr_rows(buckets: int) -> tuple[int, int]:
    """(quotient rows, remainder rows) of a qr table of `buckets` rows in all: the halves, which
    give the most distinct pairs (their product) at that memory."""
    remainder = buckets // 2
    return buckets - remainder, remainder


@dataclass(frozen=True)
class Feature:
    """One feature of an example.

    shape: the dense shape of one example's value after parsing.
    table: the embedding table its hashed ids index (shared wherever an item is embedded again).
    vocab: the size of a small closed vocabulary of int64 ids, with 0 as padding.
    model_input: whether the model reads it (meta and labels are not inputs).
    """
    name: str
    dtype: str                      # "string", "int64" or "float32"
    shape: tuple[int, ...]
    table: str | None = None
    vocab: int | None = None
    model_input: bool = True

    @property
    def default(self):
        return {"string": b"", "int64": 0, "float32": 0.0}[self.dtype]


LABELS = ("task", "label", "weight", "label_buy")
META = ("user_id", "request_id", "ts")


class Contract:
    """The features of DUPN at the sizes of a configuration."""

    def __init__(self, sequence_length: int, tag_slots: int, query_terms: int, rank_features: int,
                 tables: dict[str, tuple[int, int]], property_dims: dict[str, int],
                 embeddings: dict[str, str] | None = None):
        self.sequence_length = sequence_length
        self.tag_slots = tag_slots
        self.query_terms = query_terms
        self.rank_features = rank_features
        self.tables = dict(tables)                 # name -> (buckets, dim)
        self.property_dims = dict(property_dims)   # type, scene, time_bucket, age, gender -> dim
        # name -> EMBEDDINGS entry; a table left out is plain. Only non-plain ones are kept, so
        # a default contract describes itself as before the choice existed.
        self.embeddings = {k: v for k, v in (embeddings or {}).items() if v != "plain"}
        for name, kind in self.embeddings.items():
            if kind not in EMBEDDINGS or name not in self.tables:
                raise ValueError(f"embedding {kind!r} of table {name!r}: tables are "
                                 f"{', '.join(self.tables)}, embeddings {', '.join(EMBEDDINGS)}")
            if qr_rows(self.tables[name][0])[1] < 2:
                raise ValueError(f"table {name!r}: a qr embedding needs at least 4 buckets")
        n, t = sequence_length, tag_slots
        specs = [
            Feature("seq_item_id", "string", (n,), table="item_id"),
            Feature("seq_shop_id", "string", (n,), table="shop_id"),
            Feature("seq_brand_id", "string", (n,), table="brand_id"),
            Feature("seq_category_id", "string", (n,), table="category_id"),
            Feature("seq_tags", "string", (n, t), table="tags"),
            Feature("seq_type", "int64", (n,), vocab=len(BEHAVIOR_TYPES) + 1),
            Feature("seq_scene", "int64", (n,), vocab=len(SCENES) + 1),
            Feature("seq_time_bucket", "int64", (n,), vocab=NUM_TIME_BUCKETS),
            Feature("item_id", "string", (), table="item_id"),
            Feature("shop_id", "string", (), table="shop_id"),
            Feature("brand_id", "string", (), table="brand_id"),
            Feature("category_id", "string", (), table="category_id"),
            Feature("tags", "string", (t,), table="tags"),
            Feature("rank_features", "float32", (rank_features,)),
            Feature("talent_id", "string", (), table="talent_id"),
            Feature("talent_type", "string", (), table="talent_type"),
            Feature("talent_tags", "string", (t,), table="tags"),
            Feature("query", "string", (query_terms,), table="query"),
            Feature("age_bucket", "int64", (), vocab=NUM_AGE_BUCKETS),
            Feature("gender", "int64", (), vocab=len(GENDERS) + 1),
            Feature("task", "int64", (), vocab=len(TASKS), model_input=False),
            Feature("label", "float32", (), model_input=False),
            Feature("weight", "float32", (), model_input=False),
            # The ESMM ctr head's conversion label; examples written before it parse as 0.
            Feature("label_buy", "float32", (), model_input=False),
            Feature("user_id", "string", (), model_input=False),
            Feature("request_id", "string", (), model_input=False),
            Feature("ts", "int64", (), model_input=False),
        ]
        self.features = {f.name: f for f in specs}

    @classmethod
    def from_config(cls, config) -> "Contract":
        f = config.features
        tables = {name: (getattr(f, name).buckets, getattr(f, name).dim)
                  for name in ("item_id", "shop_id", "brand_id", "category_id", "tags", "query",
                               "talent_id", "talent_type")}
        dims = {"type": f.type_dim, "scene": f.scene_dim, "time_bucket": f.time_bucket_dim,
                "age": f.age_dim, "gender": f.gender_dim}
        embeddings = {name: getattr(f, name).embedding for name in tables}
        return cls(config.data.sequence_length, f.tags_per_item + 1, f.query_terms,
                   f.rank_features, tables, dims, embeddings)

    def embedding(self, table: str) -> str:
        """How the table embeds its ids (an EMBEDDINGS entry)."""
        return self.embeddings.get(table, "plain")

    def id_range(self, table: str) -> int:
        """How many ids (row 0 padding) the parser hashes the table's strings into: its buckets
        for a plain table, every (quotient, remainder) pair for a qr one."""
        buckets = self.tables[table][0]
        if self.embedding(table) == "qr":
            quotient, remainder = qr_rows(buckets)
            return quotient * remainder
        return buckets

    @property
    def model_inputs(self) -> dict[str, Feature]:
        return {k: f for k, f in self.features.items() if f.model_input}

    def input_dtype(self, name: str) -> str:
        """dtype the model sees: hashed string ids become int64."""
        f = self.features[name]
        return "int64" if f.dtype == "string" else f.dtype

    @property
    def item_embedding_dim(self) -> int:
        """Width of e_t: item id, shop, brand, category and pooled tags (price included)."""
        return sum(self.tables[t][1] for t in ("item_id", "shop_id", "brand_id", "category_id", "tags"))

    @property
    def property_embedding_dim(self) -> int:
        """Width of p_t: behaviour type, scene and time bucket."""
        return sum(self.property_dims[k] for k in ("type", "scene", "time_bucket"))
