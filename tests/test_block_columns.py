"""The block path's column work against the row path's one-at-a-time code it replaces."""
import struct

import google_crc32c
import numpy as np
import pyarrow as pa

from features import example_bytes as eb
from features import example_columns as ec
from pipeline.beam import blocks
from pipeline.beam.block_group import IMP, Group
from pipeline.beam.block_windows import Sequences
from pipeline.beam.record_batches import framed, pack_parts, sorted_chunks, tfrecord_chunks
from pipeline.beam.samples import SampleSpec, pack_batch


def test_column_encoders_write_example_bytes_own_pieces():
    values = [0, 1, 127, 128, 16383, 16384, 2 ** 40, 2 ** 63 - 1, -1, -300]
    assert ec.varints(np.array(values)).to_pylist() == [eb.varint(v) for v in values]
    strings = pa.array(["", "a", "héllo" * 40])
    assert ec.string_pieces(strings).to_pylist() == [eb.string_piece(s) for s in strings.to_pylist()]
    lists = pa.array([["a", "b"], [], ["x" * 200]]).slice(1)         # a sliced list array too
    assert ec.list_pieces(lists).to_pylist() == [b"", eb.string_piece("x" * 200)]
    floats = pa.array([[0.1, 1e40, -2.5], []])
    assert ec.floats_feature(floats).to_pylist() == [eb.feature(eb.FLOATS, eb.packed_floats(v))
                                                     for v in floats.to_pylist()]
    ts = np.array([5, 1_795_000_000])
    assert ec.entry("ts", ec.ints_feature(ec.varints(ts))).to_pylist() == [
        eb.entry("ts", eb.feature(eb.INTS, eb.packed_ints((int(v),)))) for v in ts]
    shops = ec.entry("shop_id", ec.bytes_feature(ec.string_pieces(pa.array(["s1", "s22"]))))
    both = ec.example(("shop_id", "ts"), {"shop_id": shops, "ts": ec.entry("ts", ec.ints_feature(
        ec.varints(ts)))})
    assert both.to_pylist() == [eb.example(("shop_id", "ts"), {
        "shop_id": eb.feature(eb.BYTES, eb.string_piece(s)),
        "ts": eb.feature(eb.INTS, eb.packed_ints((int(t),)))}) for s, t in zip(["s1", "s22"], ts)]


def test_concat_rows_and_regroup_pick_and_join_whole_rows():
    a, b = pa.array([b"a", b"bb", b"ccc"]), pa.array([b"X", b"Y"])
    stacked, start = ec.stack(a, b)
    assert ec.concat_rows(stacked, np.array([2, 0, 0]) + start[0],
                          np.array([1, 1, 0]) + start[1]).to_pylist() == [b"cccY", b"aY", b"aX"]
    assert ec.regroup(a.slice(1), np.array([0, 2, 2])).to_pylist() == [b"bbccc", b""]


def test_a_window_is_the_last_n_before_the_sample_with_earlier_days_tails_first():
    # key = user * 3 + day: user 0 with behaviours on days 0, 1 and 2 (sample day 2), N = 3
    keys = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    ts = np.array([1, 2, 3, 10, 11, 20, 21, 21])
    earlier = np.array([[-1, -1], [-1, 0], [0, 1]])        # lookback 2: day 2 looks at 0 and 1
    sequences = Sequences(keys, ts, np.array([2]), earlier, days=3, n=3)
    rows = sequences.rows                                  # day 0's last 3, day 1's 2, day 2's 3
    first, length = sequences.windows(np.array([0, 0, 0, 0]), np.array([5, 20, 21, 22]))
    windows = [rows[f:f + n].tolist() for f, n in zip(first, length)]
    # tails keep the last N = 3 of (1, 2, 3, 10, 11); a sample sees behaviours strictly before it
    assert windows == [[2, 3, 4], [2, 3, 4], [3, 4, 5], [5, 6, 7]]
    assert length.tolist() == [3, 3, 3, 3]


def test_impressions_tied_in_the_sort_columns_take_the_row_paths_whole_tuple_order():
    spec = SampleSpec(start="2026-11-02", end="2026-11-02", sequence_length=3, lookback_days=0,
                      tag_slots=2, query_terms=2, shards=1)
    impressions = pa.table({
        "request_id": ["r", "r", "r"], "user_id": ["u", "u", "u"], "ts": [100, 100, 100],
        "query": ["q", "q", "q"], "item_id": ["i", "i", "a"], "position": [1, 2, 3],
        "features": [[0.5], [0.5], [0.5]], "click": [1, 0, 0], "buy": [0, 0, 0],
        "shop_id": ["s", "s", "s"], "brand_id": ["b", "b", "b"], "category_id": ["c", "c", "c"],
        "tags": [["t", ""], ["t", ""], ["t", ""]]})
    group = Group([("i", "2026-11-02", blocks.pack(impressions))], ["2026-11-02"], spec)
    key, ts, kind, row = group.samples()
    assert kind.tolist() == [IMP] * 3
    # item "a" first (Arrow's sort), then the two "i" rows by their clicks (the tuples' order)
    assert row.tolist() == [2, 1, 0]


def _record_bytes(record: bytes) -> bytes:
    def masked(data):
        crc = google_crc32c.value(data)
        return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    length = struct.pack("<Q", len(record))
    return length + masked(length) + record + masked(record)


def test_tfrecords_are_framed_in_bulk_as_one_at_a_time_in_key_order_from_either_path():
    records = [b"", b"abc", b"x" * 300, b"hello" * 1000]
    assert framed(pa.array(records, pa.binary())).to_pybytes() == b"".join(map(_record_bytes, records))
    no_context = pa.array([b""], pa.binary())
    arrow = pack_parts(pa.array(["b", "d"]), np.array([0, 0]), no_context, pa.array([b"B", b"D"]))
    other = pack_parts(pa.array(["a", "c"]), np.array([0, 0]), no_context, pa.array([b"A", b"C"]))
    chunks = list(tfrecord_chunks([arrow, other], chunk=3))
    assert [n for _, n in chunks] == [3, 1]
    assert b"".join(c.to_pybytes() for c, _ in chunks) == b"".join(map(_record_bytes, [b"A", b"B", b"C", b"D"]))
    rows = list(tfrecord_chunks([pack_batch([("b", b"B"), ("a", b"A")])]))
    assert rows[0][0].to_pybytes() == _record_bytes(b"A") + _record_bytes(b"B")


def test_blocks_of_shared_contexts_give_each_record_its_context_and_rest_in_key_order():
    contexts = pa.array([b"ctx0", b"", b"context-two" * 50], pa.binary())
    first = pack_parts(pa.array(["k3", "k1", "k5"]), np.array([2, 0, 2]), contexts,
                       pa.array([b"r3", b"r1", b""], pa.binary()))
    second = pack_parts(pa.array(["k2", "k4"]), np.array([1, 0]), contexts,
                        pa.array([b"r2", b"r4"], pa.binary()))
    rows = pack_batch([("k0", b"whole0")])
    whole = {"k0": b"whole0", "k1": b"ctx0r1", "k2": b"r2", "k3": b"context-two" * 50 + b"r3",
             "k4": b"ctx0r4", "k5": b"context-two" * 50}
    chunks = list(tfrecord_chunks([first, rows, second], chunk=4))
    assert [n for _, n in chunks] == [4, 2]
    assert b"".join(c.to_pybytes() for c, _ in chunks) == b"".join(
        _record_bytes(whole[k]) for k in sorted(whole))
    keys, records = zip(*sorted_chunks([second, first, rows], chunk=5))
    assert [k for part in keys for k in part.to_pylist()] == sorted(whole)
    assert [r for part in records for r in part.to_pylist()] == [whole[k] for k in sorted(whole)]
