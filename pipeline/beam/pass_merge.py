"""The outputs of a local run in user passes: each pass's sorted runs, merged into the run's files.

A pass (beam/passes.py) writes, under STAGING/_pass-P/, each output shard's records of its users
as a sorted run (Arrow IPC of key and record, zstd) and its counts per day. `merge_passes` then
writes what one pass would have written under STAGING: a shard's records are all sorted by key
however many passes made them, so a k-way merge of its runs framed in the writer's chunks gives
the same TFRecord bytes; counts are summed into the same _stats and _run.json; the dead letters
come from pass 0, the only one that reports the reader's rows. Nothing here is published:
build_examples publishes STAGING as after one pass.
"""
from __future__ import annotations

import json
import os
import posixpath

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import layout
from pipeline.beam.record_batches import CHUNK, framed, sorted_chunks
from pipeline.beam.write import merge_counts, write_day_stats, write_tfrecords

_ZSTD = pa.ipc.IpcWriteOptions(compression="zstd")
_RUN_SCHEMA = pa.schema([("key", pa.string()), ("record", pa.binary())])


# ---- in each pass ----------------------------------------------------------------------------

class WriteSortedRunFn(beam.DoFn):
    """((task, day, shard), packed batches of (key, record)) -> the pass's sorted run of that
    shard. Yields (task, day, count)."""

    def __init__(self, root: str, shards: int):
        self.root, self.shards = root, shards

    def process(self, element):
        (task, day, shard), batches = element
        count = 0
        path = layout.sorted_run_file(self.root, task, day, shard, self.shards)
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw, \
                pa.ipc.new_stream(raw, _RUN_SCHEMA, options=_ZSTD) as writer:
            for keys, records in sorted_chunks(batches):
                writer.write_table(pa.table({"key": keys.cast(pa.string()), "record": records},
                                            schema=_RUN_SCHEMA))
                count += len(keys)
        yield task, day, count


class WriteSortedRuns(beam.PTransform):
    """((task, day, shard), packed batch) -> ROOT/<task>/dt=D/part-SSSSS-of-NNNNN.arrow."""

    def __init__(self, root: str, shards: int):
        super().__init__()
        self.root, self.shards = root, shards

    def expand(self, examples):
        return (examples
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteSortedRun" >> beam.ParDo(WriteSortedRunFn(self.root, self.shards)))


# ---- after the last pass ---------------------------------------------------------------------

def _batches(path: str):
    """The record batches of a sorted run, as tables, read one at a time."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        for batch in pa.ipc.open_stream(raw):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


def merged_records(paths: list[str]):
    """Tables of the runs' records in key order, each up to the smallest last key held: only one
    batch per run is in memory. Keys are unique, so the order is the one-pass writer's."""
    readers = [_batches(p) for p in paths]
    heads = [next(r, None) for r in readers]
    while any(h is not None for h in heads):
        bound = min(h.column("key")[-1].as_py() for h in heads if h is not None)
        parts = []
        for i, head in enumerate(heads):
            if head is None:
                continue
            upto = pc.sum(pc.less_equal(head.column("key"), bound)).as_py() or 0
            parts.append(head.slice(0, upto))
            heads[i] = head.slice(upto) if upto < head.num_rows else next(readers[i], None)
        merged = pa.concat_tables(parts)
        yield merged.take(pc.sort_indices(merged.column("key")))


def merged_chunks(paths: list[str], chunk: int = CHUNK):
    """(TFRecord bytes, count) of the runs' records in key order, framed in the chunks of the
    one-pass writer (record_batches.tfrecord_chunks), so any compressor sees the same writes."""
    pending, held = [], 0
    for table in merged_records(paths):
        pending.append(table)
        held += table.num_rows
        while held >= chunk:
            whole = pa.concat_tables(pending)
            yield framed(whole.column("record").slice(0, chunk).combine_chunks()), chunk
            pending, held = [whole.slice(chunk)], held - chunk
    if held:
        records = pa.concat_tables(pending).column("record").combine_chunks()
        yield framed(records), held


def _paths(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _move(source: str, dest: str) -> None:
    if not layout.is_remote(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
    FileSystems.rename([source], [dest])


def merge_passes(staging: str, passes: int, start: str, end: str, days, required,
                 level: int = 6, encoder: str = "zlib") -> dict:
    """Writes under `staging` the examples, statistics, run totals and dead letters of the passes
    staged in its _pass-P folders (removing the runs as they are merged); returns the totals."""
    roots = [layout.pass_dir(staging, index) for index in range(passes)]
    runs = {}     # a shard file -> its runs, one per pass that had its records
    for root in roots:
        for path in _paths(layout.sorted_run_pattern(root)):
            runs.setdefault(layout.example_file_of_run(staging, root, path), []).append(path)
    for shard_file, paths in sorted(runs.items()):
        write_tfrecords(shard_file, merged_chunks(paths), level, encoder)
        FileSystems.delete(paths)      # the disk holds a shard twice at most
    per_day = {}
    for root in roots:
        path = layout.pass_counts_file(root)
        if FileSystems.exists(path):         # a pass without users writes no counts
            with FileSystems.open(path) as f:
                for day, counts in json.load(f):
                    merge_counts(per_day.setdefault(day, {}), counts)
    for day in days:
        for path in _paths(layout.join(layout.rejected_dir(roots[0], day), "*")):
            _move(path, layout.join(layout.rejected_dir(staging, day), posixpath.basename(path)))
    return write_day_stats(staging, start, end, days, required, per_day)
