"""`dupn import-taobao`: the public Taobao UserBehavior CSV mapped to raw-log day partitions.

Input: headerless `user_id,item_id,category_id,behavior_type,timestamp` (behavior_type pv / cart /
fav / buy, timestamp Unix seconds). Output, per docs/RAW_LOGS.md:
  RAW/behaviors/dt=D/part-00000.<ext>   user_id, item_id, ts, type (pv -> click), scene = other
  RAW/items/dt=D/part-00000.<ext>       item_id, category_id; shop_id, brand_id '' ; tags [] ; price null
  RAW/_rejected/taobao/part-00000.jsonl every row not written, with reason, file and row number
where D is the UTC day of the row's timestamp (the contract's partitioning).

Choices (documented here because they change what is written):
- The collection window is given in days of the data set's own time zone, China Standard Time
  (--window-utc-offset 8): the real data runs from 2017-11-24 16:00 UTC to 2017-12-03 16:00 UTC,
  so reading the window in UTC days would reject the first eight hours of 25 November (52 of
  the 4,321 sample rows). Partitions are still UTC days, so dt=2017-11-24 holds those hours.
- Out-of-window rows are rejected (kept in the dead-letter file) but do not count against
  --max-bad-share: they are well-formed rows the window filters out, and counting them would make
  the bound depend on the window chosen. Only malformed rows count; a run where no row falls in
  the window fails instead.
- Exact duplicate rows are kept as they are: with one-second timestamps a repeated row cannot be
  told from a repeated view, the contract does not ask behaviours to be unique, and finding them
  in 100M rows would need the whole file in memory or a second pass.
- items: one row per item and day; within a day the last row of an item wins (its category).
  `category_conflict` counts (day, item) pairs whose rows name more than one category that day.

The file is read in chunks of --chunk-rows lines; behaviours are appended to their day's file as
each chunk is parsed, item rows are spilled per day to a temporary folder and reduced one day at a
time at the end, so memory holds one chunk or one day's item rows, never the whole file. Tables
are written under temporary names and renamed only when the run succeeds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipeline import layout
from pipeline.rawlogs.schema import SCHEMAS as RAW_SCHEMAS, table_dir

COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIOR_TYPE = {"pv": "click", "cart": "cart", "fav": "fav", "buy": "buy"}
SCENE = "other"
DEFAULT_START, DEFAULT_END = "2017-11-25", "2017-12-03"
DEFAULT_UTC_OFFSET = 8.0        # China Standard Time, where the data set was logged
FORMATS = ("jsonl", "csv", "parquet")
OUT_OF_WINDOW = "out_of_window"
MALFORMED = ("not_utf8", "wrong_column_count", "empty_id", "unknown_behavior_type", "bad_timestamp")
SOURCE = "taobao"   # names the dead-letter folder, RAW/_rejected/taobao/
SCHEMAS = {table: RAW_SCHEMAS[table] for table in ("behaviors", "items")}   # the tables it writes


class ImportFailed(ValueError):
    """The run wrote no tables; `summary` holds the counts that made it fail."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


class PartitionWriter:
    """Appends frames to one day's file of a table, under a temporary name until commit()."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema):
        self.path, self.fmt, self.schema = path, fmt, schema
        self.tmp = path.with_name(f".{path.name}.tmp")   # hidden: readers skip dot files
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        if fmt == "parquet":
            self._out = pq.ParquetWriter(self.tmp, schema)
        else:
            self._out = open(self.tmp, "w", encoding="utf-8", newline="")

    def append(self, frame: pd.DataFrame) -> None:
        if self.fmt == "parquet":
            self._out.write_table(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))
        elif self.fmt == "jsonl":
            text = frame.to_json(orient="records", lines=True, force_ascii=False)
            self._out.write(text if text.endswith("\n") else text + "\n")
        else:
            frame = frame.copy()
            for name in frame.columns:
                if pa.types.is_list(self.schema.field(name).type):   # CSV lists are ';'-joined
                    frame[name] = frame[name].map(";".join)
            frame.to_csv(self._out, index=False, header=self.rows == 0, lineterminator="\n")
        self.rows += len(frame)

    def close(self) -> None:
        self._out.close()

    def commit(self) -> None:
        self.close()
        self.tmp.replace(self.path)

    def discard(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)
        for folder in (self.path.parent, self.path.parent.parent):   # dt=D, then the table
            try:
                folder.rmdir()
            except OSError:   # not empty: other days or an earlier run's files
                break


def window_bounds(start: str, end: str, utc_offset_hours: float) -> tuple[int, int]:
    """[first, last) Unix seconds of the days start..end (inclusive) in the UTC+offset zone."""
    zone = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    first = dt.datetime.combine(dt.date.fromisoformat(start), dt.time(), zone)
    last = dt.datetime.combine(dt.date.fromisoformat(end) + dt.timedelta(days=1), dt.time(), zone)
    return int(first.timestamp()), int(last.timestamp())


def _utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Rejected(Exception):
    """A line that breaks the format: `reason` is its dead-letter reason, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _is_integer(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return digits.isascii() and digits.isdigit()


def parse_line(line: str, first_ts: int, last_ts: int) -> tuple[str, str, str, str, int]:
    """(user_id, item_id, category_id, type, ts) of one line; raises Rejected if it breaks the format
    or its timestamp is outside [first_ts, last_ts)."""
    fields = line.split(",")
    if len(fields) != len(COLUMNS):
        raise Rejected("wrong_column_count", f"{len(fields)} fields, expected {len(COLUMNS)}")
    user, item, category, behavior, ts = fields
    if not (user and item and category):
        empty = next(name for name, value in zip(COLUMNS, fields) if not value)
        raise Rejected("empty_id", f"{empty} is empty")
    kind = BEHAVIOR_TYPE.get(behavior)
    if kind is None:
        raise Rejected("unknown_behavior_type",
                       f"behavior_type {behavior!r} is not one of {', '.join(BEHAVIOR_TYPE)}")
    if not (ts.isdigit() and ts.isascii()) and not _is_integer(ts):   # fast path first
        raise Rejected("bad_timestamp", f"timestamp {ts!r} is not an integer")
    seconds = int(ts)
    if not first_ts <= seconds < last_ts:
        raise Rejected(OUT_OF_WINDOW, f"timestamp {ts} ({_utc(seconds)}) is outside "
                                      f"[{_utc(first_ts)}, {_utc(last_ts)})")
    return user, item, category, kind, seconds


def read_chunks(path: Path, first_ts: int, last_ts: int, chunk_rows: int, reject, counts: Counter):
    """Yields lists of valid rows (parse_line tuples), at most chunk_rows each.

    Every other line is passed to reject(row_number, reason, detail, line) and not yielded;
    row numbers are 1-based line numbers of the file. counts["rows_read"] counts every line.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    number = 0
    with opener(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                reject(number, "not_utf8", "the line is not UTF-8 text",
                       raw.decode("utf-8", "replace").rstrip("\r\n"))
                continue
            try:
                rows.append(parse_line(line, first_ts, last_ts))
            except Rejected as err:
                reject(number, err.reason, err.detail, line)
                continue
            if len(rows) >= chunk_rows:
                counts["rows_read"] = number
                yield rows
                rows = []
    counts["rows_read"] = number
    if rows:
        yield rows


def latest_items(spill: Path) -> tuple[pd.DataFrame, int]:
    """A day's items from its spilled (item_id, category_id) rows: the last row of each item, in
    order of those rows, and the number of items that name two or more categories that day.

    Works on Arrow dictionary codes: a full-size day (~10M rows) stays within a few hundred MB,
    where pandas string group-bys take several times that.
    """
    pairs = pa_csv.read_csv(spill, read_options=pa_csv.ReadOptions(column_names=["item_id", "category_id"]),
                            convert_options=pa_csv.ConvertOptions(
                                column_types={"item_id": pa.string(), "category_id": pa.string()},
                                strings_can_be_null=False, quoted_strings_can_be_null=False))
    item_code = pairs["item_id"].combine_chunks().dictionary_encode().indices.to_numpy().astype(np.int64)
    categories = pairs["category_id"].combine_chunks().dictionary_encode()
    n_categories = len(categories.dictionary)
    distinct = np.unique(item_code * n_categories + categories.indices.to_numpy())
    conflicts = int((np.bincount(distinct // n_categories) > 1).sum())
    # np.unique gives first occurrences: on the reversed codes, those are each item's last row.
    _, first_from_end = np.unique(item_code[::-1], return_index=True)
    last_rows = np.sort(len(item_code) - 1 - first_from_end)
    return pairs.take(last_rows).to_pandas(), conflicts


def import_taobao(csv_path, out, start: str = DEFAULT_START, end: str = DEFAULT_END,
                  fmt: str = "jsonl", max_bad_share: float = 0.01,
                  utc_offset_hours: float = DEFAULT_UTC_OFFSET, chunk_rows: int = 500_000) -> dict:
    """Maps a Taobao UserBehavior CSV to RAW/behaviors and RAW/items day partitions.

    Returns:
      the summary: rows_read, written {table: rows}, days, rejected {reason: rows},
      malformed_share, category_conflict, rejected_file.
    Raises:
      FileNotFoundError if csv_path is missing; ImportFailed (no tables written, the dead-letter
      file kept) if the malformed share passes max_bad_share or no row falls in the window.
    """
    csv_path, out = Path(csv_path), Path(out)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such file")
    first_ts, last_ts = window_bounds(start, end, utc_offset_hours)
    rejected = Counter()
    first_malformed = []
    dead_letter_path = Path(layout.raw_rejected_dir(out, SOURCE)) / "part-00000.jsonl"
    dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    behaviors: dict[str, PartitionWriter] = {}
    items: dict[str, PartitionWriter] = {}
    conflicts = 0
    counts = Counter()
    with open(dead_letter_path, "w", encoding="utf-8") as dead_letters, \
            tempfile.TemporaryDirectory(dir=out, prefix="_tmp_import_taobao_") as spill_dir:

        def reject(number, reason, detail, line):
            rejected[reason] += 1
            if reason != OUT_OF_WINDOW and not first_malformed:
                first_malformed.append(f"row {number}: {reason} ({detail})")
            dead_letters.write(json.dumps({"reason": reason, "detail": detail, "file": str(csv_path),
                                           "row": number, "line": line}, ensure_ascii=False) + "\n")

        try:
            for rows in read_chunks(csv_path, first_ts, last_ts, chunk_rows, reject, counts):
                frame = pd.DataFrame.from_records(
                    rows, columns=["user_id", "item_id", "category_id", "type", "ts"])
                frame["ts"] = frame["ts"].astype("int64")
                frame["scene"] = SCENE
                frame["dt"] = frame["ts"].to_numpy().astype("datetime64[s]").astype("datetime64[D]").astype(str)
                for day, part in frame.groupby("dt", sort=True):
                    if day not in behaviors:
                        behaviors[day] = PartitionWriter(
                            table_dir(out, "behaviors", day) / f"part-00000.{fmt}", fmt, SCHEMAS["behaviors"])
                    behaviors[day].append(part[list(SCHEMAS["behaviors"].names)])
                    # Distinct (item, category) pairs in order of last sight keep both the
                    # last-row-wins category and every conflict, at a fraction of the rows.
                    pairs = part[["item_id", "category_id"]].drop_duplicates(keep="last")
                    pairs.to_csv(Path(spill_dir) / f"{day}.csv", mode="a", header=False, index=False)
            rows_read = counts["rows_read"]
            malformed = sum(rejected[r] for r in MALFORMED)
            share = malformed / rows_read if rows_read else 0.0
            summary = {"file": str(csv_path), "out": str(out), "format": fmt, "window": [start, end],
                       "window_utc_offset": utc_offset_hours, "rows_read": rows_read,
                       "rejected": dict(sorted(rejected.items())), "malformed_share": share,
                       "rejected_file": str(dead_letter_path)}
            if share > max_bad_share:
                raise ImportFailed(
                    f"{csv_path}: {malformed} of {rows_read} rows ({share:.2%}) are malformed, above "
                    f"--max-bad-share {max_bad_share}; first at {first_malformed[0]}; every rejected row "
                    f"is in {dead_letter_path}", summary)
            if not behaviors:
                raise ImportFailed(
                    f"{csv_path}: none of its {rows_read} rows falls in the window {start}..{end} "
                    f"(UTC{utc_offset_hours:+g}); check --start, --end and --window-utc-offset", summary)
            for day in sorted(behaviors):
                latest, day_conflicts = latest_items(Path(spill_dir) / f"{day}.csv")
                conflicts += day_conflicts
                table = pd.DataFrame({"item_id": latest["item_id"], "shop_id": "", "brand_id": "",
                                      "category_id": latest["category_id"],
                                      "tags": [[]] * len(latest), "price": np.nan})
                items[day] = PartitionWriter(table_dir(out, "items", day) / f"part-00000.{fmt}",
                                             fmt, SCHEMAS["items"])
                items[day].append(table)
        except BaseException:
            for writer in [*behaviors.values(), *items.values()]:
                writer.discard()
            raise
    for writer in [*behaviors.values(), *items.values()]:
        writer.commit()
    summary.update(written={"behaviors": sum(w.rows for w in behaviors.values()),
                            "items": sum(w.rows for w in items.values())},
                   days=sorted(behaviors), category_conflict=conflicts)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"import-taobao: {summary['file']} -> {summary['out']} ({summary['format']}), window "
             f"{summary['window'][0]}..{summary['window'][1]} (UTC{summary['window_utc_offset']:+g})",
             f"  rows read           {summary['rows_read']:>12,}"]
    for table, rows in summary.get("written", {}).items():
        lines.append(f"  {table + ' written':<20}{rows:>12,}")
    if summary.get("days"):
        lines.append(f"  days (UTC)          {summary['days'][0]}..{summary['days'][-1]} "
                     f"({len(summary['days'])} partitions)")
    lines.append(f"  rejected            {sum(summary['rejected'].values()):>12,}")
    for reason, rows in summary["rejected"].items():
        note = "  (not counted against --max-bad-share)" if reason == OUT_OF_WINDOW else ""
        lines.append(f"    {reason:<18}{rows:>12,}{note}")
    lines.append(f"  malformed share     {summary['malformed_share']:>12.4%}")
    if "category_conflict" in summary:
        lines.append(f"  category_conflict   {summary['category_conflict']:>12,}"
                     "  (items with two categories in one day; the last row wins)")
    lines.append(f"  rejected rows in    {summary['rejected_file']}")
    return "\n".join(lines)


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day YYYY-MM-DD") from None


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share in [0, 1]")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn import-taobao", description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="the UserBehavior CSV (headerless; .gz allowed)")
    parser.add_argument("--out", required=True, help="raw-log root to write (RAW)")
    parser.add_argument("--start", type=_day, default=DEFAULT_START,
                        help="first day of the collection window (default: %(default)s)")
    parser.add_argument("--end", type=_day, default=DEFAULT_END,
                        help="last day of the collection window, inclusive (default: %(default)s)")
    parser.add_argument("--window-utc-offset", type=float, default=DEFAULT_UTC_OFFSET, metavar="HOURS",
                        help="time zone the window's days are read in (default: %(default)s, China "
                             "Standard Time, where the data set was logged); partitions stay UTC days")
    parser.add_argument("--format", choices=FORMATS, default="jsonl", help="table file format")
    parser.add_argument("--max-bad-share", type=_share, default=0.01,
                        help="fail above this share of malformed rows; out-of-window rows do not "
                             "count (default: %(default)s)")
    parser.add_argument("--chunk-rows", type=_positive, default=500_000,
                        help="lines parsed per chunk: bounds memory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.start > args.end:
        parser.error(f"--start {args.start} is after --end {args.end}")
    try:
        summary = import_taobao(args.csv, args.out, args.start, args.end, args.format,
                                args.max_bad_share, args.window_utc_offset, args.chunk_rows)
    except FileNotFoundError as err:
        print(f"dupn import-taobao: {err}", file=sys.stderr)
        return 2
    except ImportFailed as err:
        print(format_summary(err.summary))
        print(f"dupn import-taobao: failed, no tables written: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
