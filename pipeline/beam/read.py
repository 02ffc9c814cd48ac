"""Beam: find the raw-log files of a date range and read them into validated rows and rejects.

Files live at RAW/<table>/dt=YYYY-MM-DD/<name>.{jsonl,csv,parquet}[.gz] on any filesystem Beam
knows (local, gs://, s3://, hdfs:// with the matching Beam extra). Names starting with '_' or '.'
(_SUCCESS markers, .crc files) are skipped; only the dt= folders of the requested days are listed,
so folders such as RAW/_oracle or RAW/<table>/_temporary are never read.
"""
from __future__ import annotations

import collections
import csv
import gzip
import io
import json
import posixpath
import typing

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline import layout
from pipeline.rawlogs import rows as beam_rows
from pipeline.rawlogs.rows import RowError
from pipeline.rawlogs.schema import TABLES

FORMATS = ("jsonl", "csv", "parquet")
REJECTED, COUNTS = "rejected", "counts"


class RawLayoutError(ValueError):
    """The raw folder cannot be read as the contract lays it out (message names the path)."""


def file_format(path: str) -> tuple[str, bool]:
    """(format, gzipped) of a raw file from its name; RawLayoutError for anything else."""
    name = posixpath.basename(path).lower()
    gzipped = name.endswith(".gz")
    stem = name[:-3] if gzipped else name
    ext = stem.rsplit(".", 1)[-1] if "." in stem else ""
    if ext not in FORMATS:
        raise RawLayoutError(f"{path}: not a raw-log file (expected .jsonl, .csv or .parquet, "
                             f"optionally .gz)")
    return ext, gzipped


def list_files(raw: str, table: str, days) -> list[tuple[str, str, str]]:
    """Sorted (table, day, path) of every data file of `table` on `days`."""
    found = []
    for day in days:
        pattern = layout.join(layout.raw_dir(raw, table, day), "*")
        for meta in FileSystems.match([pattern])[0].metadata_list:
            name = posixpath.basename(meta.path.rstrip("/"))
            if name.startswith(("_", ".")):
                continue
            file_format(meta.path)
            found.append((table, day, meta.path))
    return sorted(found)


def _open_binary(path: str, gzipped: bool):
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    # Python's gzip reader is C-accelerated and buffered; Beam's own is slower for line reads.
    return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb")) if gzipped else raw


def iter_records(path: str):
    """Yields (row number, record dict or RowError, raw text) of one file, in file order.

    Row numbers are 1-based lines for JSON Lines and CSV (the CSV header is line 1; a record
    spanning lines takes its first) and 1-based rows for Parquet. A row that cannot be decoded
    (not UTF-8, not JSON, a broken CSV line) comes as a RowError in place of its record and costs
    that row only: text files are decoded line by line.
    """
    fmt, gzipped = file_format(path)
    with _open_binary(path, gzipped) as stream:
        if fmt == "parquet":
            yield from _parquet_records(stream, gzipped)
            return
        lines = _text_lines(stream)
        if fmt == "jsonl":
            for number, line, error in lines:
                if error:
                    yield number, error, line.rstrip("\r\n")
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    record = RowError(beam_rows.UNPARSEABLE, f"not JSON: {err}")
                else:
                    if "\\u" in line and _lone_surrogate(record):
                        record = RowError(beam_rows.UNPARSEABLE, "not Unicode text: a \\u escape "
                                                                 "is a lone surrogate")
                yield number, record, line.rstrip("\r\n")
        else:
            yield from _csv_records(lines)


def _lone_surrogate(record) -> bool:
    """Whether a parsed JSON value holds a string with a lone surrogate (JSON's "\\ud800"), which
    is no Unicode text: it cannot be encoded as UTF-8, so no later step could write it."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _text_lines(stream):
    """(line number, text, None) of each line of a byte stream; (line number, text with bad bytes
    replaced, RowError) for a line that is not UTF-8. A byte-order mark before line 1 is dropped."""
    for number, data in enumerate(stream, 1):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, data.decode("utf-8", "replace"), RowError(
                beam_rows.UNPARSEABLE, f"not UTF-8 text: {err}")
            continue
        yield number, text[1:] if number == 1 and text.startswith("\ufeff") else text, None


# A quoted CSV field may hold line breaks; a quote that never closes must not swallow the file.
CSV_RECORD_LINES = 64


def _csv_records(lines):
    """CSV records of numbered lines. A quoted field may span lines; a record whose quotes never
    close or whose column count is wrong costs its first line only: the lines after it are read
    again as records of their own."""
    pending = collections.deque()

    def pull():
        return pending.popleft() if pending else next(lines, None)

    header = None
    while (first := pull()) is not None:
        number, text, error = first
        if error:
            yield number, error, text.rstrip("\r\n")
            continue
        if not text.strip():
            continue
        taken, quotes = [first], text.count('"')
        while quotes % 2 and len(taken) < CSV_RECORD_LINES:   # an open quote: the record goes on
            more = pull()
            if more is None or more[2]:
                if more is not None:
                    pending.appendleft(more)
                break
            taken.append(more)
            quotes += more[1].count('"')
        values = next(csv.reader([t for _, t, _ in taken]), [])
        if header is None:
            header = [h.strip() for h in values]
            continue
        closed = not quotes % 2
        if closed and len(values) == len(header):
            yield number, dict(zip(header, values)), "".join(t for _, t, _ in taken).rstrip("\r\n")
            continue
        pending.extendleft(reversed(taken[1:]))
        why = (f"{len(values)} columns, the header has {len(header)}" if closed and len(taken) == 1
               else f"a quoted field opened on this line does not close as a record of "
                    f"{len(header)} columns")
        yield number, RowError(beam_rows.UNPARSEABLE, why), text.rstrip("\r\n")


def _parquet_records(stream, gzipped: bool):
    import pyarrow.parquet as pq
    source = io.BytesIO(stream.read()) if gzipped else stream   # Parquet needs to seek
    number = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            number += 1
            yield number, record, None


def rejected_record(table: str, path: str, row: int, reason: str, detail: str, raw) -> str:
    """One dead-letter line: the reason, where the row came from and the row as read."""
    return json.dumps({"reason": reason, "detail": detail, "table": table, "file": path, "row": row,
                       "raw": raw}, sort_keys=True, default=str)


VALID, DEAD = "valid", "dead"


def read_file(table: str, day: str, path: str, rank_features: int):
    """Validates one file row by row: yields (VALID, row number, row tuple) and (DEAD, row number,
    dead-letter line) in file order, then the file's counts dict (layout in ReadRowsFn)."""
    start = beam_rows.day_start(day)
    rows, rejected = 0, {}
    number = 0
    try:
        for number, record, raw in iter_records(path):
            rows += 1
            try:
                if isinstance(record, RowError):
                    raise record
                valid = beam_rows.validate(table, record, start, rank_features)
            except RowError as err:
                rejected[err.reason] = rejected.get(err.reason, 0) + 1
                yield DEAD, number, rejected_record(table, path, number, err.reason, err.detail,
                                                    record if raw is None else raw)
                continue
            yield VALID, number, valid
    except Exception as err:  # noqa: BLE001  (a corrupt file: keep going, report it)
        rows += 1
        rejected[beam_rows.UNREADABLE_FILE] = rejected.get(beam_rows.UNREADABLE_FILE, 0) + 1
        detail = f"cannot read the file after row {number}: {type(err).__name__}: {err}"
        yield DEAD, number + 1, rejected_record(table, path, number + 1, beam_rows.UNREADABLE_FILE,
                                                detail, None)
    yield file_counts(table, path, rows, rejected)


def file_counts(table: str, path: str, rows: int, rejected: dict) -> dict:
    """The counts of one file read (and its Beam counters)."""
    Metrics.counter("dupn.rows", table).inc(rows)
    for reason, n in rejected.items():
        Metrics.counter("dupn.rejected", reason).inc(n)
    return {"rows": {table: rows}, "rejected": dict(rejected),
            "rejected_by_table": {table: dict(rejected)} if rejected else {},
            "unreadable_files": [path] if beam_rows.UNREADABLE_FILE in rejected else []}


# Tagged outputs defeat Beam's type inference of the main output: declare it.
@beam.typehints.with_output_types(typing.Any)
class ReadRowsFn(beam.DoFn):
    """(table, day, path) -> valid rows tagged by table, rejected rows, per-file counts.

    Output <table>: (day, row) with the row tuple of beam_rows.validate; for items and users
    (day, (path, row number), row) so that "the last row of a day wins" can be applied later.
    REJECTED: (day, (path, row number, dead-letter JSON line)).
    Main output (COUNTS): (day, {"rows": {table: n}, "rejected": {reason: n}, ...}) once per file.
    """

    def __init__(self, rank_features: int):
        self.rank_features = rank_features

    def process(self, element):
        table, day, path = element
        keep_order = table in ("items", "users")
        for item in read_file(table, day, path, self.rank_features):
            if isinstance(item, dict):
                yield day, item
            elif item[0] == DEAD:
                yield beam.pvalue.TaggedOutput(REJECTED, (day, (path, item[1], item[2])))
            else:
                yield beam.pvalue.TaggedOutput(
                    table, (day, (path, item[1]), item[2]) if keep_order else (day, item[2]))


class ReadTables(beam.PTransform):
    """Reads and validates the listed files of every table in one step (one shuffle spreads them).

    Args:
      files: (table, day, path) of every file to read.
    Returns a DoOutputsTuple: [<table>] valid rows of each table, [REJECTED] dead letters,
    [COUNTS] per-file counts (layouts in ReadRowsFn).
    """

    def __init__(self, files: list[tuple[str, str, str]], rank_features: int):
        super().__init__()
        unknown = sorted({t for t, _, _ in files} - set(TABLES))
        if unknown:
            raise ValueError(f"unknown table '{unknown[0]}'")
        self.files = sorted(files)
        self.rank_features = rank_features

    def expand(self, pbegin):
        files = (pbegin
                 | "ListFiles" >> beam.Create(self.files)
                 # spreads files over workers (Create alone may keep them in one bundle)
                 | "SpreadFiles" >> beam.Reshuffle())
        return files | "ReadAndValidate" >> beam.ParDo(ReadRowsFn(self.rank_features)).with_outputs(
            *TABLES, REJECTED, main=COUNTS)
