"""The on-disk layout (raw partitions, examples, work directory), day arithmetic, atomic JSON; TensorFlow-free.

Every other module asks this one for a path; none spells a partition or a marker out itself.

  RAW/<table>/dt=D/<name>.<ext>                  raw logs (tables and fields: pipeline/rawlogs/schema.py)
  RAW/<table>/dt=D/_SUCCESS                      optional: the producer finished that table's day
  RAW/_rejected/<source>/part-00000.jsonl        rows an import (dupn import-taobao) did not write
  EXAMPLES/<task>/dt=D/part-SSSSS-of-NNNNN.tfrecord.gz
  EXAMPLES/_stats/dt=D.json                      written last by the Beam job: the day is complete
  EXAMPLES/_rejected/dt=D/part-00000.jsonl       the day's dead letters
  EXAMPLES/_run.json, EXAMPLES/_tmp/<run>/       the last run's totals; a run's staging folder
  EXAMPLES/_tmp/<run>/_pass-P/                   one user pass of a local run: sorted runs
                                                 <task>/dt=D/part-SSSSS-of-NNNNN.arrow, _counts.json
  EXAMPLES/.lock, WORK/.lock                     held by the one job writing there (hold_lock)
  WORK/examples/                                 EXAMPLES of the backfill and daily jobs
  WORK/runs/<name>/                              model dirs (config.yaml, checkpoints/, history.json, run.json)
  WORK/holdout/dt=D/                             held-out users' examples when no next day exists
  WORK/published/<name>/, WORK/published/LATEST  published models; the name of the one in service
  WORK/manifest.json                             {"dates": {date: record}, "published": [names, oldest first]}
  WORK/eval/<name>.json                          metrics of the model in service
  WORK/experiments/<name>/, WORK/transfer/       experiments' outputs; the transfer job's
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import posixpath
from pathlib import Path

PARTITION = "dt="
SUCCESS_MARKER = "_SUCCESS"
STATS_DIR, REJECTED_DIR, TMP_DIR, RUN_FILE = "_stats", "_rejected", "_tmp", "_run.json"
EXAMPLE_GLOB = "part-*.tfrecord.gz"
PUBLISHED_DIR, LATEST_FILE, MANIFEST_FILE = "published", "LATEST", "manifest.json"
LOCK_FILE = ".lock"


# ---- paths on any filesystem --------------------------------------------------------------------

def is_remote(path) -> bool:
    """True for a URL (gs://, s3://, hdfs://): such paths have no local lock, rename or cleanup."""
    return "://" in str(path)


def join(root, *parts: str) -> str:
    """Joins path parts on local paths and URLs (gs://, s3://) alike; FileSystems.join needs the scheme's extra."""
    root = str(root)
    return posixpath.join(root, *parts) if is_remote(root) else os.path.join(root, *parts)


def partition(day: str) -> str:
    """The folder name of a day's partition: dt=YYYY-MM-DD."""
    return f"{PARTITION}{day}"


def partition_day(name: str) -> str:
    """The day of a partition name: 'dt=2026-11-01' or 'dt=2026-11-01.json' -> '2026-11-01'."""
    return name.removeprefix(PARTITION).removesuffix(".json")


def raw_dir(raw, table: str, day: str) -> str:
    """RAW/<table>/dt=D."""
    return join(raw, table, partition(day))


def success_marker(raw, table: str, day: str) -> str:
    """RAW/<table>/dt=D/_SUCCESS: the Hadoop convention for "this folder is complete"."""
    return join(raw_dir(raw, table, day), SUCCESS_MARKER)


def raw_rejected_dir(raw, source: str) -> str:
    """RAW/_rejected/<source>: the rows an import did not write."""
    return join(raw, REJECTED_DIR, source)


def example_dir(examples, task: str, day: str) -> str:
    """EXAMPLES/<task>/dt=D."""
    return join(examples, task, partition(day))


def example_pattern(examples, task: str, day: str) -> str:
    """The glob of a task's TFRecord files on a day."""
    return join(example_dir(examples, task, day), EXAMPLE_GLOB)


def example_file(examples, task: str, day: str, shard: int, shards: int) -> str:
    return join(example_dir(examples, task, day), f"part-{shard:05d}-of-{shards:05d}.tfrecord.gz")


def stats_file(examples, day: str) -> str:
    """EXAMPLES/_stats/dt=D.json."""
    return join(examples, STATS_DIR, f"{partition(day)}.json")


def stats_days(examples) -> list[str]:
    """Days whose examples are complete (a local EXAMPLES/_stats/dt=D.json exists), sorted."""
    folder = Path(examples) / STATS_DIR
    return sorted(partition_day(p.name) for p in folder.glob(f"{PARTITION}*.json")) if folder.is_dir() else []


def rejected_dir(examples, day: str) -> str:
    """EXAMPLES/_rejected/dt=D."""
    return join(examples, REJECTED_DIR, partition(day))


def run_file(examples) -> str:
    return join(examples, RUN_FILE)


def staging_dir(examples, run: str) -> str:
    return join(examples, TMP_DIR, run)


def pass_dir(staging, index: int) -> str:
    """STAGING/_pass-P: what user pass P of a local run writes before the passes are merged."""
    return join(staging, f"_pass-{index:03d}")


def sorted_run_file(pass_root, task: str, day: str, shard: int, shards: int) -> str:
    """A pass's records of one output shard, sorted by key (Arrow IPC): the shard's file name
    with .arrow for .tfrecord.gz."""
    return join(example_dir(pass_root, task, day), f"part-{shard:05d}-of-{shards:05d}.arrow")


def sorted_run_pattern(pass_root) -> str:
    """The glob of every sorted run of a pass."""
    return join(pass_root, "*", partition("*"), "part-*.arrow")


def example_file_of_run(examples, pass_root, run: str) -> str:
    """The shard file under EXAMPLES that a pass's sorted run (a path under pass_root) is part of."""
    relative = posixpath.relpath(run, pass_root)
    return join(examples, relative[:-len(".arrow")] + ".tfrecord.gz")


def pass_counts_file(pass_root) -> str:
    """A pass's counts per day, summed over the passes into the run's _stats."""
    return join(pass_root, "_counts.json")


# ---- the work directory (local) -----------------------------------------------------------------

def examples_dir(work) -> Path:
    return Path(work) / "examples"


def run_dir(work, name: str) -> Path:
    return Path(work) / "runs" / name


def holdout_dir(work, day: str) -> Path:
    return Path(work) / "holdout" / partition(day)


def published_root(work) -> Path:
    return Path(work) / PUBLISHED_DIR


def latest_file(work) -> Path:
    return published_root(work) / LATEST_FILE


def manifest_file(work) -> Path:
    return Path(work) / MANIFEST_FILE


def eval_file(work, name: str) -> Path:
    """WORK/eval/<name>.json; eval_dir for the folder."""
    return eval_dir(work) / f"{name}.json"


def eval_dir(work) -> Path:
    return Path(work) / "eval"


def experiments_dir(work) -> Path:
    return Path(work) / "experiments"


def transfer_dir(work) -> Path:
    return Path(work) / "transfer"


def published_model_dir(work) -> Path:
    """WORK/published/<name> as named by WORK/published/LATEST (a name or an absolute path)."""
    latest = latest_file(work)
    if not latest.exists():
        raise FileNotFoundError(f"{latest}: no published model (give --model DIR)")
    name = latest.read_text().strip()
    path = Path(name) if Path(name).is_absolute() else published_root(work) / name
    if not name or not path.exists():
        raise FileNotFoundError(f"{latest} names '{name}', but {path} does not exist")
    return path


# ---- one job at a time ----------------------------------------------------------------------------

def lock_file(root) -> Path:
    """ROOT/.lock of a local work or examples directory."""
    return Path(root) / LOCK_FILE


class LockHeld(RuntimeError):
    """Another job holds the lock (the message names it)."""


@contextlib.contextmanager
def hold_lock(path, holder: str):
    """Holds an exclusive lock on a local file while the block runs; LockHeld when another has it.

    flock: the kernel drops the lock with its process, so a killed job leaves nothing to clean
    up. The file names the holder, for the message the next job prints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise LockHeld(f"{path.parent} is in use by {who}; run again when it has finished "
                           f"(the lock ends with that process: nothing to delete)") from None
        f.truncate(0)
        f.write(f"{holder} (pid {os.getpid()}, since {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC)\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


# ---- days ---------------------------------------------------------------------------------------

def parse_day(day: str, name: str = "day") -> dt.date:
    """A 'YYYY-MM-DD' day; ValueError naming `name` (the option the user typed) otherwise."""
    try:
        return dt.date.fromisoformat(day)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {day!r} is not a day YYYY-MM-DD") from None


def days_between(start: str, end: str, names=("start", "end")) -> list[str]:
    """Every 'YYYY-MM-DD' day from start to end, both included.

    Raises ValueError when end is before start, naming them as `names` says (a command passes
    its options' names, so that the message points at what the user typed).
    """
    first, last = parse_day(start, names[0]), parse_day(end, names[1])
    if last < first:
        raise ValueError(f"{names[1]} {end} is before {names[0]} {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def shift(day: str, days: int = 1) -> str:
    """The day `days` after `day` (before it when negative)."""
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


# ---- JSON files ---------------------------------------------------------------------------------

def json_text(value) -> str:
    """The project's JSON file text: indented, one trailing newline; numpy scalars and paths as plain values."""
    return json.dumps(value, indent=2, default=_jsonable) + "\n"


def write_text(path, text: str) -> None:
    """Writes a local file atomically: to a hidden temporary file beside it, then renamed over it,
    so that a reader sees the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path, value) -> None:
    """Writes `value` as JSON to a local file atomically (see write_text)."""
    write_text(path, json_text(value))


class DamagedFile(ValueError):
    """A project file (manifest, stats, run record) that cannot be read; the message names it."""


def read_json(path, default=None):
    """A local JSON file's value, or `default` when the file does not exist.

    Raises DamagedFile naming the file when it is not JSON (truncated, say): written atomically
    by write_json, such a file was damaged outside this project, so a person must look at it.
    """
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFile(f"{path}: not valid JSON ({err}); restore it from a backup or fix it "
                          "by hand") from None


def _jsonable(value):
    import numpy as np   # only here: JSON of plain values never needs it
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# ---- the manifest -------------------------------------------------------------------------------

def read_manifest(work) -> dict | None:
    """WORK/manifest.json as written by the backfill and daily jobs; None when the file does not
    exist (before the first job). Writers that want its entries present use publish.dated_manifest."""
    return read_json(manifest_file(work), None)


def write_manifest(work, manifest: dict) -> None:
    write_json(manifest_file(work), manifest)


def find_raw(work) -> Path | None:
    """The raw-log root the daily jobs recorded in WORK/manifest.json (the latest run's), if any."""
    manifest = read_manifest(work)
    found = _find_key(manifest, "raw") if manifest is not None else None
    return Path(found) if found else None


def _find_key(node, key: str):
    """The last string value under `key` anywhere in a nested JSON value."""
    found = None
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                found = v
            else:
                found = _find_key(v, key) or found
    elif isinstance(node, list):
        for v in node:
            found = _find_key(v, key) or found
    return found
