"""Columns of the block path: the encoded context and impression-target parts of examples, in bulk.

The bytes are samples.dict_context's and the impression target's as example_bytes encodes them
(tests/test_beam_blocks.py compares the whole job with the row path's output): a record is its
context, target and label parts concatenated (protobuf merges concatenated messages).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import example_columns as ec
from features.contract import AGE_EDGES, time_bucket
from features.example_bytes import BYTES, entry, feature, string_piece
from pipeline.beam.block_windows import ranges

WITH_SEQUENCE = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
                 "seq_type", "seq_scene", "seq_time_bucket", "age_bucket", "gender", "user_id")
PROFILE_ONLY = ("age_bucket", "gender", "user_id")
IMPRESSION_TARGET = ("item_id", "shop_id", "brand_id", "category_id", "tags", "query",
                     "rank_features", "request_id", "ts")
SEQUENCE_STRINGS = {"seq_item_id": "item_id", "seq_shop_id": "shop_id", "seq_brand_id": "brand_id",
                    "seq_category_id": "category_id"}


def int_entry(name: str, values: np.ndarray) -> pa.Array:
    return ec.entry(name, ec.ints_feature(ec.varints(values)))


def behavior_pieces(behaviors: pa.Table) -> dict:
    """The BytesList values of every behaviour's ids and tags (seq_* name -> binary column)."""
    pieces = {seq: ec.string_pieces(ec.plain(behaviors.column(name)))
              for seq, name in SEQUENCE_STRINGS.items()}
    tags = behaviors.column("tags")
    pieces["seq_tags"] = ec.list_pieces(tags.combine_chunks() if isinstance(tags, pa.ChunkedArray) else tags)
    return pieces


def profile_entries(users: pa.Array, ages: pa.Array, genders: np.ndarray) -> dict:
    """The age_bucket, gender and user_id entries of keys (age null: bucket 0)."""
    age = ages.fill_null(-1).to_numpy(zero_copy_only=False)
    buckets = np.where(pc.is_null(ages).to_numpy(zero_copy_only=False), 0,
                       np.searchsorted(AGE_EDGES, age, side="right") + 1)
    return {"age_bucket": int_entry("age_bucket", buckets), "gender": int_entry("gender", genders),
            "user_id": ec.string_entry("user_id", users)}


def contexts(pieces: dict, behaviors: dict, rows: np.ndarray, first: np.ndarray,
             length: np.ndarray, ts: np.ndarray, profiles: dict) -> pa.Array:
    """The context part of every (window, ts): samples.dict_context's example bytes.

    Args:
      pieces: behavior_pieces; behaviors: "type", "scene", "ts" numpy columns of the behaviours.
      rows: behaviour rows of the sequences; first, length: each context's window in `rows`.
      ts: each context's sample time; profiles: profile_entries of each context's key.
    """
    window = rows[ranges(first, length)]
    bounds = np.r_[0, np.cumsum(length)].astype(np.int64)
    entries = dict(profiles)
    for name, column in pieces.items():
        entries[name] = ec.bytes_entry(name, ec.regroup(column.take(window), bounds))
    gaps = np.repeat(ts, length) - behaviors["ts"][window]
    small = {"seq_type": behaviors["type"][window],      # vocabulary indexes 1..4, buckets 1..8:
             "seq_scene": behaviors["scene"][window],    # one varint byte each
             "seq_time_bucket": time_bucket(gaps)}
    for name, values in small.items():
        entries[name] = ec.entry(name, ec.ints_feature(ec.from_buffers(values.astype(np.uint8), bounds)))
    full = ec.example(WITH_SEQUENCE, entries)
    alone = ec.example(PROFILE_ONLY, profiles)
    return pc.if_else(pa.array(length == 0), alone, full)


def query_entries(queries: pa.Array, terms: int) -> pa.Array:
    """The query entry of every impression: its first `terms` words, each query encoded once."""
    encoded = queries.dictionary_encode()
    per_query = [entry("query", feature(BYTES, b"".join(string_piece(t) for t in q.split()[:terms])))
                 for q in encoded.dictionary.to_pylist()]
    return pa.array(per_query, pa.binary()).take(encoded.indices)


def impression_targets(impressions: pa.Table, query_terms: int) -> pa.Array:
    """The target part (item, query, ranking features, request, ts) of every impression."""
    def column(name):
        return impressions.column(name).combine_chunks()
    entries = {name: ec.string_entry(name, ec.plain(column(name)))
               for name in ("item_id", "shop_id", "brand_id", "category_id", "request_id")}
    entries["tags"] = ec.bytes_entry("tags", ec.list_pieces(column("tags")))
    entries["query"] = query_entries(column("query"), query_terms)
    entries["rank_features"] = ec.entry("rank_features", ec.floats_feature(column("features")))
    entries["ts"] = int_entry("ts", column("ts").to_numpy(zero_copy_only=False))
    return ec.example(IMPRESSION_TARGET, entries)
