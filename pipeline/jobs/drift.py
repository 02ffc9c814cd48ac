"""The drift gate: a day whose statistics leave its trailing window's bounds is not trained on.

A day's _stats (the Beam job's) is compared with the median of the days before it that have
statistics (up to drift.window_days): rows per table, samples per task, label rates, and the
rejected share per table, each where it counts at least drift.min_count rows or samples; a
required table without rows is refused whatever its size. Bounds are the
configuration's `drift` section; a refused day is recorded in the manifest with the reasons.
"""
from __future__ import annotations

import math
import statistics

from pipeline.layout import shift

BINARY_RATE = "positive_rate"


def measures(stats: dict) -> dict:
    """What the gate compares, from one day's _stats: {kind: {name: value}}."""
    rows = stats.get("rows", {})
    by_table = stats.get("rejected_by_table", {})
    tasks = stats.get("tasks", {})
    return {
        "rows": dict(rows),
        "samples": {t: v["samples"] for t, v in tasks.items()},
        "rates": {t: (v[BINARY_RATE], v["samples"]) for t, v in tasks.items() if BINARY_RATE in v},
        "rejected_share": {t: sum(by_table.get(t, {}).values()) / n for t, n in rows.items() if n},
    }


def _ratio_reason(what: str, today: float, typical: float, ratio: float, days: int) -> str | None:
    if typical <= 0 or typical / ratio <= today <= typical * ratio:
        return None
    return (f"{what} {today:,} is {today / typical:.2f}x the median of the {days} days before "
            f"({typical:,.0f}); bound {ratio:g}x")


def drift_reasons(today: dict, window: list[dict], bounds) -> list[str]:
    """Why a day's stats (`today`) leave the bounds of the days before it (`window`, their
    stats); [] when they do not. `bounds`: the drift config section."""
    now, before = measures(today), [measures(s) for s in window]
    days = len(window)
    reasons = []
    present_before = {t for s in window for t, n in s.get("rows", {}).items() if n}
    for table in today.get("missing_tables", []):
        if table in present_before:
            reasons.append(f"table {table} has no rows (the days before had)")
    for kind, label, ratio in (("rows", "rows of", bounds.max_rows_ratio),
                               ("samples", "samples of", bounds.max_samples_ratio)):
        for name, value in sorted(now[kind].items()):
            typical = statistics.median(m[kind].get(name, 0) for m in before)
            if typical < bounds.min_count:
                continue
            reason = _ratio_reason(f"{label} {name}", value, typical, ratio, days)
            if reason and not (kind == "rows" and value == 0 and name not in present_before):
                reasons.append(reason)
    for task, (rate, samples) in sorted(now["rates"].items()):
        typical = statistics.median(m["rates"].get(task, (0.0, 0))[0] for m in before)
        usual_samples = statistics.median(m["samples"].get(task, 0) for m in before)
        if typical <= 0 or typical >= 1 or min(samples, usual_samples) < bounds.min_count:
            continue
        # the rate must leave the ratio and be more than 4 standard errors off: small days are noisy
        noise = 4 * math.sqrt(typical * (1 - typical) / max(samples, 1))
        outside = not typical / bounds.max_rate_ratio <= rate <= typical * bounds.max_rate_ratio
        if outside and abs(rate - typical) > noise:
            reasons.append(f"label rate of {task} {rate:.4f} against a median of {typical:.4f} over "
                           f"the {days} days before; bound {bounds.max_rate_ratio:g}x")
    for table, share in sorted(now["rejected_share"].items()):
        typical = statistics.median(m["rejected_share"].get(table, 0.0) for m in before)
        if now["rows"][table] >= bounds.min_count and share > typical + bounds.max_rejected_share_rise:
            reasons.append(f"rejected share of {table} {share:.2%} against a median of {typical:.2%} "
                           f"over the {days} days before; bound +{bounds.max_rejected_share_rise:.2%}")
    return reasons


def check_day(date: str, stats_of, bounds) -> tuple[list[str], dict]:
    """(reasons to refuse `date`, what was compared) from `stats_of(day)` (a day's _stats or None).

    Fewer than bounds.min_days earlier days with statistics: nothing to compare, no reasons."""
    window = [(d, s) for k in range(1, bounds.window_days + 1)
              if (s := stats_of(d := shift(date, -k))) is not None]
    info = {"window": sorted(d for d, _ in window), "enabled": bounds.enabled}
    today = stats_of(date)
    if not bounds.enabled or today is None or len(window) < bounds.min_days:
        return [], info
    return drift_reasons(today, [s for _, s in window], bounds), info
