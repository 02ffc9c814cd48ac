"""Beam: write sorted, sharded, gzipped TFRecords, the day statistics and the dead letters; publish.

Everything is written under a staging folder (EXAMPLES/_tmp/<run>/, ignored by readers as it
starts with '_') and moved into place by `publish` only after the pipeline succeeded, one day at a
time: a rerun of a day replaces that day's folders whole, never leaving a half-written day.
Output bytes depend only on the input: shards are picked by a stable hash of the example key,
records are sorted by key inside a shard, gzip headers carry no time and JSON keys are ordered.
"""
from __future__ import annotations

import ctypes
import gzip
import os
import posixpath
import shutil
import typing

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from features.contract import TASKS
from pipeline import layout
from pipeline.beam.record_batches import tfrecord_chunks
from pipeline.layout import join
from pipeline.rawlogs.rows import REASONS
from pipeline.rawlogs.schema import TABLES


# ---- TFRecords ---------------------------------------------------------------------------------

def _create(path: str):
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def gzip_writer(raw, level: int = 6, encoder: str = "zlib"):
    """A gzip stream over `raw` without a timestamp: Python's (zlib) or isal's (faster)."""
    if encoder == "isal":
        from isal import igzip       # optional: pip install 'dupn[fast-gzip]'
        return igzip.IGzipFile(filename="", mode="wb", fileobj=raw, compresslevel=min(level, 3),
                               mtime=0)
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0)


def write_tfrecords(path: str, chunks, level: int = 6, encoder: str = "zlib") -> int:
    """Writes framed TFRecord chunks (bytes, count) as one gzipped file (no timestamp in the gzip
    header); returns the count. level 6 with zlib gives the reference bytes; isal takes levels 0-3
    (higher ones are cut to 3)."""
    count = 0
    with _create(path) as raw, gzip_writer(raw, level, encoder) as out:
        for data, n in chunks:
            out.write(data)
            count += n
    return count


def shard_path(root: str, task: str, day: str, shard: int, shards: int) -> str:
    return layout.example_file(root, task, day, shard, shards)


class WriteShardFn(beam.DoFn):
    """((task, day, shard), packed batches of (key, record)) -> one TFRecord file sorted by key.

    Yields (task, day, count).
    """

    def __init__(self, root: str, shards: int, level: int = 6, encoder: str = "zlib"):
        self.root = root
        self.shards = shards
        self.level, self.encoder = level, encoder

    def process(self, element):
        (task, day, shard), batches = element
        # keys are unique (they carry the sample's index in its user's day): sort by key alone
        yield task, day, write_tfrecords(shard_path(self.root, task, day, shard, self.shards),
                                         tfrecord_chunks(batches), self.level, self.encoder)


class WriteExamples(beam.PTransform):
    """((task, day, shard), packed batch) -> ROOT/<task>/dt=D/part-SSSSS-of-NNNNN.tfrecord.gz."""

    def __init__(self, root: str, shards: int, level: int = 6, encoder: str = "zlib"):
        super().__init__()
        self.root = root
        self.shards = shards
        self.level, self.encoder = level, encoder

    def expand(self, examples):
        return (examples
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(WriteShardFn(self.root, self.shards, self.level,
                                                          self.encoder)))


# ---- dead letters ------------------------------------------------------------------------------

class WriteRejectedFn(beam.DoFn):
    """(day, [(path, row, line)]) -> ROOT/_rejected/dt=D/part-00000.jsonl, in file and row order."""

    def __init__(self, root: str):
        self.root = root

    def process(self, element):
        day, rows = element
        lines = sorted(rows)
        with _create(join(layout.rejected_dir(self.root, day), "part-00000.jsonl")) as out:
            out.write("".join(line + "\n" for _, _, line in lines).encode("utf-8"))
        yield day, len(lines)


class WriteRejected(beam.PTransform):
    """Dead letters (day, (path, row, line)) of the window's days, one JSON Lines file per day."""

    def __init__(self, root: str, days):
        super().__init__()
        self.root = root
        self.days = frozenset(days)

    def expand(self, rejected):
        return (rejected
                | "OfWindowDays" >> beam.Filter(lambda kv, days: kv[0] in days, self.days)
                | "GroupByDay" >> beam.GroupByKey()
                | "WriteDay" >> beam.ParDo(WriteRejectedFn(self.root)))


# ---- statistics --------------------------------------------------------------------------------

def merge_counts(into: dict, other: dict) -> dict:
    """Adds nested count dicts: numbers add, dicts merge, lists unite (sorted)."""
    for key, value in other.items():
        if isinstance(value, dict):
            merge_counts(into.setdefault(key, {}), value)
        elif isinstance(value, list):
            into[key] = sorted(set(into.get(key, [])) | set(value))
        else:
            into[key] = into.get(key, 0) + value
    return into


def merge_per_day(items) -> list:
    """[(day, counts)] -> [(day, merged counts)], sorted by day."""
    per_day = {}
    for day, counts in items:
        merge_counts(per_day.setdefault(day, {}), counts)
    return sorted(per_day.items())


def _bin_order(name: str) -> int:
    return int(name.split("-")[0])


def day_stats(day: str, counts: dict, required=TABLES) -> dict:
    """The published statistics of one day from its merged counts (keys in a fixed order).

    `required`: the tables the day's samples need; those without a row are `missing_tables`."""
    rows = {t: counts.get("rows", {}).get(t, 0) for t in TABLES}
    rejected = {r: n for r in REASONS if (n := counts.get("rejected", {}).get(r, 0))}
    tasks = {}
    for task in TASKS:
        found = counts.get("tasks", {}).get(task)
        if not found:
            continue
        entry = {"samples": found["samples"]}
        if task == "power":
            levels = found.get("levels", {})
            entry["level_share"] = {lvl: round(levels[lvl] / found["samples"], 6)
                                    for lvl in sorted(levels, key=int)}
        else:
            entry["positives"] = found.get("positives", 0)
            entry["positive_rate"] = round(found.get("positives", 0) / found["samples"], 6)
        if task == "ctr":   # the ESMM head's conversion label
            entry["buys"] = found.get("buys", 0)
            entry["buy_rate"] = round(found.get("buys", 0) / found["samples"], 6)
        entry["seq_len"] = {b: found["seq_len"][b] for b in sorted(found["seq_len"], key=_bin_order)}
        tasks[task] = entry
    by_table = counts.get("rejected_by_table", {})
    return {
        "date": day,
        "rows": rows,
        "rows_total": sum(rows.values()),
        "rejected": rejected,
        "rejected_total": sum(rejected.values()),
        "rejected_by_table": {t: {r: by_table[t][r] for r in sorted(by_table[t])}
                              for t in TABLES if by_table.get(t)},
        "unreadable_files": counts.get("unreadable_files", []),
        "duplicates": {t: n for t in TABLES if (n := counts.get("duplicates", {}).get(t, 0))},
        "missing_tables": [t for t in TABLES if t in required and not rows[t]],
        "missing_items": counts.get("missing_items", 0),
        "examples_without_profile": counts.get("examples_without_profile", 0),
        "examples": sum(t["samples"] for t in tasks.values()),
        "tasks": tasks,
    }


def bad_rows_by_day(per_day: dict) -> dict:
    """{day: {table: {"rows": n, "rejected": {reason: n}}}} of every table and day read with a
    bad row: the bad-share bound holds per table and day (build_examples.check_totals)."""
    return {day: {t: {"rows": counts.get("rows", {}).get(t, 0),
                      "rejected": dict(sorted(by_table[t].items()))}
                  for t in TABLES if by_table.get(t)}
            for day, counts in sorted(per_day.items()) if (by_table := counts.get("rejected_by_table"))}


def run_totals(start: str, end: str, per_day: dict) -> dict:
    """Totals over every day read (lookback days included), and the bad rows per table and day."""
    total = {}
    for counts in per_day.values():
        merge_counts(total, counts)
    rows = sum(total.get("rows", {}).values())
    rejected = {r: n for r in REASONS if (n := total.get("rejected", {}).get(r, 0))}
    return {
        "start": start, "end": end, "days_read": sorted(per_day),
        "rows": {t: total.get("rows", {}).get(t, 0) for t in TABLES},
        "rows_total": rows,
        "rejected": rejected,
        "rejected_total": sum(rejected.values()),
        "bad_share": round(sum(rejected.values()) / rows, 8) if rows else 0.0,
        "bad_rows_by_day": bad_rows_by_day(per_day),
        "unreadable_files": total.get("unreadable_files", []),
        "examples": {t: v["samples"] for t, v in total.get("tasks", {}).items()},
    }


def create_json(path: str, value) -> None:
    """layout.json_text through Beam's filesystems (gs:// too); not atomic, like every output here
    (publish moves the staged files into place)."""
    with _create(path) as out:
        out.write(layout.json_text(value).encode("utf-8"))


def write_day_stats(root: str, start: str, end: str, days, required, per_day: dict) -> dict:
    """ROOT/_stats/dt=D.json per window day and ROOT/_run.json (totals, with each window day's
    missing tables) from the merged counts per day; returns the totals."""
    missing = {}
    for day in days:
        stats = day_stats(day, per_day.get(day, {}), required)
        create_json(layout.stats_file(root, day), stats)
        if stats["missing_tables"]:
            missing[day] = stats["missing_tables"]
    totals = {**run_totals(start, end, per_day), "missing_tables": missing}
    create_json(layout.run_file(root), totals)
    return totals


class WriteStatsFn(beam.DoFn):
    """[(day, counts)] -> write_day_stats; or, for one pass of a run in user passes
    (counts_only), the counts alone in ROOT/_counts.json, summed with the other passes' later."""

    def __init__(self, root: str, start: str, end: str, days, required=TABLES,
                 counts_only: bool = False):
        self.root, self.start, self.end, self.days = root, start, end, list(days)
        self.required, self.counts_only = tuple(required), counts_only

    def process(self, per_day_list):
        if self.counts_only:
            create_json(layout.pass_counts_file(self.root), per_day_list)
            yield {}
            return
        yield write_day_stats(self.root, self.start, self.end, self.days, self.required,
                              dict(per_day_list))


class WriteStats(beam.PTransform):
    """Merges (day, counts) from every stage and writes the day statistics and the run totals.

    Counts come per file or per bundle, so they are few: one group gathers them all.
    """

    def __init__(self, root: str, start: str, end: str, days, required=TABLES,
                 counts_only: bool = False):
        super().__init__()
        self.root, self.start, self.end, self.days = root, start, end, list(days)
        self.required, self.counts_only = tuple(required), counts_only

    def expand(self, counts):
        return (counts
                | "OneKey" >> beam.Map(lambda kv: (None, kv)).with_output_types(
                    typing.Tuple[None, typing.Any])
                | "Gather" >> beam.GroupByKey()
                | "MergePerDay" >> beam.MapTuple(lambda _, items: merge_per_day(items))
                | "Write" >> beam.ParDo(WriteStatsFn(self.root, self.start, self.end, self.days,
                                                     self.required, self.counts_only)))


# ---- publishing ------------------------------------------------------------------------------

def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_local(staged: str, dest: str, trash: str) -> None:
    """Puts `staged` (a folder or file, or nothing) at `dest`, whose old content goes to `trash`.

    Readers see the old or the new content, never a mix: an atomic exchange where the kernel
    offers it, else rename old aside then new into place (a moment with nothing there).
    """
    has_new, has_old = os.path.exists(staged), os.path.exists(dest)
    if not has_new and not has_old:
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.makedirs(os.path.dirname(trash), exist_ok=True)
    if has_new and has_old and os.path.isdir(dest):
        if _exchange(staged, dest):
            os.rename(staged, trash)          # staged now holds the old content
        else:
            os.rename(dest, trash)
            os.rename(staged, dest)
    elif has_new:
        os.replace(staged, dest)              # atomic for a file or a new folder
    else:
        os.rename(dest, trash)                # the rerun produced nothing here: remove the old


def replace_remote(staged: str, dest: str, is_file: bool) -> None:
    """Object stores have no folders to swap: new files are moved in, then stale ones deleted.

    Not atomic: readers should wait for the day's _stats file, which is published last.
    """
    def files(folder):
        return sorted(m.path for m in FileSystems.match([join(folder, "*")])[0].metadata_list)
    if is_file:
        if FileSystems.exists(staged):
            FileSystems.rename([staged], [dest])
        return
    new = files(staged)
    targets = [join(dest, posixpath.basename(p)) for p in new]
    old = files(dest)
    if new:
        FileSystems.rename(new, targets)
    stale = sorted(set(old) - set(targets))
    if stale:
        FileSystems.delete(stale)


def withdraw(path: str, trash: str) -> None:
    """Takes a published file away (into `trash` on a local disk)."""
    if layout.is_remote(path):
        if FileSystems.exists(path):
            FileSystems.delete([path])
    elif os.path.exists(path):
        os.makedirs(os.path.dirname(trash), exist_ok=True)
        os.rename(path, trash)


def publish(out: str, staging: str, days, examples: bool = True) -> None:
    """Moves the staged days into place: examples of every task, dead letters, then statistics.

    With examples=False (a failed bad-share check) only the dead letters are published, so the
    rejected rows can be inspected while the previous examples of those days stay as they were.
    A day is published as one step whose commit is its stats file: the old one is withdrawn
    before the first folder moves and the new one put in place after the last, so a crash between
    folders leaves a day without _stats, which readers take as not built and the next run builds
    again; never a day whose stats describe a mix of old and new folders.
    """
    remote = layout.is_remote(out)
    trash = join(staging, "_replaced")
    for day in days:
        # Relative to EXAMPLES and to the staging folder alike (a root of "" gives relative paths).
        parts = [layout.rejected_dir("", day)]
        stats = layout.stats_file("", day)
        if examples:
            withdraw(join(out, stats), join(trash, stats))
            parts = [layout.example_dir("", task, day) for task in TASKS] + parts + [stats]
        for part in parts:
            if remote:
                replace_remote(join(staging, part), join(out, part), part.endswith(".json"))
            else:
                replace_local(join(staging, part), join(out, part), join(trash, part))


def remove_dead_staging(out: str) -> int:
    """Deletes the staging folders that killed runs left in a local EXAMPLES/_tmp; the caller
    holds EXAMPLES/.lock, so no other run is using one. Returns how many went."""
    tmp = join(out, layout.TMP_DIR)
    if layout.is_remote(out) or not os.path.isdir(tmp):
        return 0
    dead = os.listdir(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return len(dead)


def remove_staging(out: str, staging: str) -> None:
    """Deletes the run's staging folder (and EXAMPLES/_tmp when no other run uses it)."""
    if layout.is_remote(out):
        leftovers = [m.path for m in FileSystems.match([join(staging, "**")])[0].metadata_list]
        if leftovers:
            FileSystems.delete(leftovers)
        return
    shutil.rmtree(staging, ignore_errors=True)
    parent = os.path.dirname(staging)
    try:
        os.rmdir(parent)
    except OSError:
        pass                                   # another run's staging is still there
