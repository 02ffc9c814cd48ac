"""Whether a raw day has fully landed: its tables' _SUCCESS markers, or a later day already begun.

Logs land over hours; a day built from what has landed so far must never be taken for the whole
day. A day counts as complete when every table folder it has carries the optional `_SUCCESS`
marker (docs/RAW_LOGS.md), or, for producers that write no markers, once any table has a
partition of a later day. Local raw roots only, like the jobs that ask.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import layout


def _tables(raw: Path) -> list[Path]:
    # Folders starting with '_' or '.' (_rejected, _oracle) are not tables.
    return [t for t in raw.iterdir() if t.is_dir() and not t.name.startswith(("_", "."))] if raw.is_dir() else []


def later_day(raw, day: str) -> str | None:
    """The first day after `day` of which any table has a partition, or None."""
    later = [layout.partition_day(p.name) for t in _tables(Path(raw)) for p in t.glob(f"{layout.PARTITION}*")
             if p.is_dir() and layout.partition_day(p.name) > day]
    return min(later) if later else None


def incomplete_reason(raw, day: str) -> str | None:
    """None when `day` has fully landed in `raw`; else why it may still be landing."""
    raw = Path(raw)
    folders = [Path(layout.raw_dir(raw, t.name, day)) for t in _tables(raw)]
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        return f"{raw}: no raw logs for {day}"
    unmarked = [f for f in folders if not Path(layout.success_marker(raw, f.parent.name, day)).exists()]
    if not unmarked or later_day(raw, day):
        return None
    shown = ", ".join(str(f) for f in unmarked[:3]) + (" ..." if len(unmarked) > 3 else "")
    return (f"the raw logs of {day} may still be landing: no {layout.SUCCESS_MARKER} in {shown} "
            f"and no later day yet")


def mark_complete(raw, day: str) -> None:
    """Writes the `_SUCCESS` marker into every table folder of `day` (a producer that has finished it)."""
    raw = Path(raw)
    for table in _tables(raw):
        if Path(layout.raw_dir(raw, table.name, day)).is_dir():
            Path(layout.success_marker(raw, table.name, day)).touch()
