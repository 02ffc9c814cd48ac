"""Serialized tf.train.Example bytes without TensorFlow, byte-identical to tfrecord.encode_example.

An Example is Features{map<string, Feature>}; protobuf's C library (upb) writes the map's entries
in the order of its hash table, which depends on the keys and the order they were set in, not on
the values. FIELD_ORDER holds that order for every key list the Beam job writes (found once with
TensorFlow's encoder; tests/test_example_bytes.py checks it against TensorFlow), so the job can
assemble records from pre-encoded pieces and never import TensorFlow.
"""
from __future__ import annotations

import struct

import numpy as np

# The key lists the Beam job sets, in the order it sets them -> the order upb writes them.
FIELD_ORDER = {
    ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags", "seq_type",
     "seq_scene", "seq_time_bucket", "age_bucket", "gender", "user_id"):
        ("seq_type", "gender", "seq_item_id", "user_id", "seq_shop_id", "seq_category_id",
         "seq_scene", "seq_tags", "age_bucket", "seq_time_bucket", "seq_brand_id"),
    ("age_bucket", "gender", "user_id"): ("gender", "age_bucket", "user_id"),
    ("item_id", "shop_id", "brand_id", "category_id", "tags", "query", "rank_features",
     "request_id", "ts"):
        ("request_id", "ts", "rank_features", "shop_id", "brand_id", "item_id", "query", "tags",
         "category_id"),
    ("item_id", "shop_id", "brand_id", "category_id", "tags", "request_id", "ts"):
        ("request_id", "ts", "shop_id", "brand_id", "item_id", "tags", "category_id"),
    ("talent_id", "talent_type", "talent_tags", "ts"):
        ("talent_tags", "talent_id", "talent_type", "ts"),
    ("shop_id", "ts"): ("shop_id", "ts"),
    ("ts",): ("ts",),
    ("task", "label", "weight"): ("task", "weight", "label"),
    ("task", "label", "weight", "label_buy"): ("task", "label_buy", "weight", "label"),
}
BYTES, FLOATS, INTS = 0x0A, 0x12, 0x1A       # Feature's oneof: bytes_list, float_list, int64_list
_SMALL = [bytes((n,)) for n in range(128)]


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint; negative int64 values take ten bytes, as protobuf writes them."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string_piece(value: str) -> bytes:
    """One value of a BytesList (field 1, length-delimited): a behaviour's id pre-encoded once."""
    data = value.encode("utf-8")
    return b"\n" + varint(len(data)) + data


def packed_ints(values) -> bytes:
    """The varints of an Int64List's packed values."""
    values = list(values)
    if values and 0 <= min(values) and max(values) < 128:
        return bytes(values)
    return b"".join(map(varint, values))


def packed_floats(values) -> bytes:
    """The little-endian float32 values of a FloatList (rounded from float64 as protobuf does)."""
    try:
        return struct.pack(f"<{len(values)}f", *values)     # C's cast, as protobuf's
    except OverflowError:
        pass
    with np.errstate(over="ignore"):       # beyond float32's range is inf, as protobuf's cast
        return np.asarray(values, dtype=np.float64).astype("<f4").tobytes()


def feature(kind: int, payload: bytes) -> bytes:
    """A Feature of one list kind whose list message holds `payload` (packed numbers wrapped)."""
    if kind != BYTES and payload:
        payload = b"\n" + varint(len(payload)) + payload
    return bytes((kind,)) + varint(len(payload)) + payload


_KEYS = {}


def entry(name: str, value: bytes) -> bytes:
    """One map entry of Features, with its tag and length: name -> an encoded `feature`."""
    head = _KEYS.get(name)
    if head is None:
        key = name.encode()
        head = _KEYS[name] = b"\n" + varint(len(key)) + key + b"\x12"
    size = len(value)
    body = head + (_SMALL[size] if size < 128 else varint(size)) + value
    size = len(body)
    return b"\n" + (_SMALL[size] if size < 128 else varint(size)) + body


def example(keys: tuple, features: dict) -> bytes:
    """An Example of encoded Features (name -> `feature` bytes) set in the order `keys`."""
    return entries_example(keys, {name: entry(name, value) for name, value in features.items()})


def entries_example(keys: tuple, entries: dict) -> bytes:
    """An Example of encoded map entries (name -> `entry` bytes) set in the order `keys`."""
    body = b"".join([entries[name] for name in FIELD_ORDER[keys]])
    return b"\n" + varint(len(body)) + body


def _entry_of(name: str, dtype: str, flat) -> bytes:
    if dtype == "string":
        return entry(name, feature(BYTES, b"".join(map(string_piece, flat))))
    if dtype == "int64":
        return entry(name, feature(INTS, packed_ints(flat)))
    return entry(name, feature(FLOATS, packed_floats(flat)))


def encode_values(values: dict, contract, cache: dict | None = None) -> bytes:
    """encode_example's bytes for the flat values the Beam job writes (scalars, flat lists).

    Strings are str, int64 features ints, float32 features floats; a list feature may be empty.
    cache: encoded entries by (name, value) of string and int features, for values that repeat
    (a request's id and query, an item's ids and tags); float lists are encoded every time.
    """
    entries = {}
    specs = contract.features
    for name, value in values.items():
        spec = specs[name]
        if cache is None or spec.dtype == "float32":
            entries[name] = _entry_of(name, spec.dtype, value if spec.shape else (value,))
            continue
        done = cache.get((name, value))
        if done is None:
            done = cache[name, value] = _entry_of(name, spec.dtype, value if spec.shape else (value,))
        entries[name] = done
    return entries_example(tuple(values), entries)
