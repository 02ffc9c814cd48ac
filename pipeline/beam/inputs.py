"""The raw files and settings a day's examples were built from, kept in its _stats, and whether they still hold.

A day's examples are only as complete as the raw files they were read from: logs that were still
landing, a file delivered again, or another configuration make them stale. The record goes into
EXAMPLES/_stats/dt=D.json under "build" ({"inputs": {file: [size, mtime]}, "settings": {...}});
a day without one (built before records existed) counts as stale.
"""
from __future__ import annotations

import json
import posixpath

from apache_beam.io.filesystems import FileSystems

from configs.example_settings import example_settings, settings_difference
from pipeline import layout
from pipeline.layout import days_between, shift
from pipeline.rawlogs.schema import TABLES

LOOKBACK_TABLES = ("behaviors", "items")   # read from start - lookback_days; the rest from start


def day_inputs(raw: str, day: str, lookback_days: int) -> dict:
    """{'<table>/dt=D/<name>': [bytes, mtime]} of every file a day's samples read, markers included."""
    wanted = []
    for table in TABLES:
        days = days_between(shift(day, -lookback_days), day) if table in LOOKBACK_TABLES else [day]
        wanted += [(table, d) for d in days]
    results = FileSystems.match([layout.join(layout.raw_dir(raw, t, d), "*") for t, d in wanted])
    found = {}
    for (table, d), result in zip(wanted, results):
        for meta in result.metadata_list:
            name = posixpath.basename(meta.path.rstrip("/"))
            if not name.startswith("."):    # .crc and editors' temporary files are not inputs
                found[posixpath.join(table, layout.partition(d), name)] = [
                    meta.size_in_bytes, round(meta.last_updated_in_seconds, 3)]
    return dict(sorted(found.items()))


def build_record(inputs: dict, config) -> dict:
    return {"inputs": inputs, "settings": example_settings(config)}


def stale_reason(stats: dict | None, raw: str, day: str, config) -> str | None:
    """None when `stats` (a day's _stats) says it was built from the raw files there now, with
    `config`'s example settings; else why the day must be rebuilt."""
    build = (stats or {}).get("build")
    if not build:
        return "no record of the raw files it was built from"
    changed = settings_difference(build.get("settings"), example_settings(config))
    if changed:
        return f"built with other settings ({changed})"
    now, then = day_inputs(raw, day, config.data.lookback_days), build.get("inputs", {})
    if now == then:
        return None
    added = sorted(set(now) - set(then))
    removed = sorted(set(then) - set(now))
    modified = sorted(k for k in set(now) & set(then) if now[k] != then[k])
    parts = [f"{len(files)} {what} ({files[0]}{' ...' if len(files) > 1 else ''})"
             for what, files in (("added", added), ("removed", removed), ("changed", modified)) if files]
    return f"its raw files changed since it was built: {', '.join(parts)}"


def read_stats(path: str) -> dict | None:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.load(f)


def write_stats(path: str, stats: dict) -> None:
    """Atomic on local disks (layout.write_json); object stores replace an object whole anyway."""
    if not layout.is_remote(path):
        layout.write_json(path, stats)
        return
    with FileSystems.create(path) as out:
        out.write(layout.json_text(stats).encode("utf-8"))


def record_builds(out: str, inputs: dict, config) -> list[str]:
    """After a run: each published day's _stats gets its build record; a day with no raw rows gets
    no _stats at all (nothing was built, so nothing may be taken for complete). Returns those days."""
    empty = []
    for day, files in inputs.items():
        path = layout.stats_file(out, day)
        stats = read_stats(path)
        if stats is None:
            continue
        if not stats.get("rows_total"):
            FileSystems.delete([path])
            empty.append(day)
            continue
        write_stats(path, {**stats, "build": build_record(files, config)})
    return empty
