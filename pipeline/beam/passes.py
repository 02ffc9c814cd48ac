"""How many user passes a local run of the example job makes, so that its memory stays in budget.

Beam's local runner holds every stage's whole output in memory, so the job's peak grows with its
input. Run locally, the job can instead process the users in turns: pass P of N reads every file
but keeps only the rows of users with crc32(user_id) % N == P (block_read.of_user_pass), builds
their examples and stages them; pass_merge.py then merges the passes into the one-pass files.
A cluster runner keeps one pipeline: its workers hold the shuffles, not the launching process.
"""
from __future__ import annotations

import math
import zlib

import psutil
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.beam.read import _open_binary, file_format

LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner")

# The block path's one-pass peak on Beam's local runner (in_memory) grows linearly with the raw
# rows, and faster with a longer sequence N (each example carries N behaviours). Measured with
# `dupn bench memory` (synthetic logs, 4 days; docs/BEAM.md, "Memory"): N = 100 (config dupn)
# 603 MB at 250,559 rows and 1,451 MB at 1,022,782, so 1,098 MB per million rows over 328 MB;
# N = 20 (config small) 1,113 MB at 1,022,782, so 770 MB per million. Slope = 688 + 4.1 N MB per
# million rows. Rounded up here (about +10 % at N = 100, and the base to cover the items every
# pass joins whole), so that a pass stays under the budget.
BASE_GB = 0.5
MB_PER_MILLION_ROWS = {"fixed": 750.0, "per_behaviour": 5.0}
# Of the memory the machine has free when the job starts, the share it may take: the rest is left
# to whatever else runs (a training, a test run), which the configured budget cannot know about.
AVAILABLE_SHARE = 0.85
SAMPLE_BYTES = 1 << 20     # the head of a text file read to count its lines
FALLBACK_BYTES = 50        # bytes per row of a file that cannot be sampled: few, to be safe


def gb_per_million_rows(sequence_length: int) -> float:
    """The measured slope of the one-pass peak, in GB per million raw rows."""
    slope = MB_PER_MILLION_ROWS
    return (slope["fixed"] + slope["per_behaviour"] * sequence_length) / 1000


def file_rows(path: str, size: int) -> int:
    """Rows of one raw file: Parquet's footer says; a text file's are its lines, counted in its
    first SAMPLE_BYTES (decompressed when gzipped) and scaled to its size on disk. A file that
    cannot be read so counts as one row per FALLBACK_BYTES (the job itself then reports it)."""
    fmt, gzipped = file_format(path)
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            with _open_binary(path, gzipped) as stream:     # gzipped Parquet: read whole, as the job does
                source = pa.BufferReader(stream.read()) if gzipped else stream
                return pq.ParquetFile(source).metadata.num_rows
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            head = raw.read(SAMPLE_BYTES)
        text = zlib.decompressobj(wbits=31).decompress(head) if gzipped else head   # 31: gzip header
    except Exception:  # noqa: BLE001  (a broken file: the job reads it and counts it as unreadable)
        return size // FALLBACK_BYTES
    lines = text.count(b"\n") + (not text.endswith(b"\n") and bool(text)) - (fmt == "csv")
    return max(0, round(lines * size / len(head))) if head else 0


def estimate_rows(files) -> int:
    """Raw rows of (table, day, path) files, estimated without reading them whole."""
    paths = [path for _, _, path in files]
    sizes = {m.path: m.size_in_bytes
             for result in FileSystems.match(paths) for m in result.metadata_list} if paths else {}
    return sum(file_rows(path, sizes.get(path, 0)) for path in paths)


def available_gb() -> float:
    """The memory the machine has available now (psutil: Linux's MemAvailable), in GB."""
    return psutil.virtual_memory().available / 1024 ** 3


def usable_budget_gb(budget_gb: float, available: float | None) -> float:
    """The budget the job plans its passes with: the configured one, or less where the machine has
    less free now (AVAILABLE_SHARE of it), never below the job's base."""
    if available is None:
        return budget_gb
    return min(budget_gb, max(BASE_GB, AVAILABLE_SHARE * available))


def passes_for(rows: int, budget_gb: float, sequence_length: int) -> int:
    """Passes that keep the one-pass model's peak (BASE_GB + slope x rows / passes) under the
    budget; one when the budget leaves nothing above the base (the config's minimum prevents it)."""
    room = budget_gb - BASE_GB
    if room <= 0:
        return 1
    return max(1, math.ceil(rows / 1e6 * gb_per_million_rows(sequence_length) / room))


def choose_passes(requested: int | None, runner: str, beam_path: str, files, budget_gb: float,
                  sequence_length: int, available: float | None = None, say=None) -> int:
    """The run's passes: `requested` (--passes) where given, else from the input's rows and the
    budget; one on a cluster runner and on the row path. ValueError for a request that cannot be
    run that way."""
    local = runner in LOCAL_RUNNERS
    if requested is not None:
        if requested > 1 and not local:
            raise ValueError(f"--passes {requested}: passes are for Beam's local runner; "
                             f"{runner} runs the job as one pipeline")
        if requested > 1 and beam_path != "blocks":
            raise ValueError(f"--passes {requested}: the row path (--row-path) runs in one pass")
        return requested
    if not local or beam_path != "blocks":
        return 1
    rows = estimate_rows(files)
    usable = usable_budget_gb(budget_gb, available)
    chosen = passes_for(rows, usable, sequence_length)
    if say and chosen > passes_for(rows, budget_gb, sequence_length):
        say(f"runtime.memory_budget_gb is {budget_gb:g} GB but the machine has {available:.1f} GB "
            f"available: {chosen} passes for {usable:.1f} GB")
    return chosen
