"""`dupn bench memory`: peak memory of the local example job at two input sizes, in one pass and in passes.

    dupn bench memory --json [--rows 1000000,5000000] [--config dupn] [--budget-gb 2.0] [--work DIR]

For each size, writes synthetic logs (`dupn synth`, 4 days, the users that give about that many
raw rows; not timed) and runs `dupn build-examples` over days 2..4 twice, each in a fresh process:
in one pass (--passes 1) and in the passes chosen from the rows and --budget-gb (beam/passes.py).
peak_rss_mb is the job process's resident high-water mark plus its largest child's (the local
runner's in_memory mode has none); seconds its wall time. The budget defaults to one that a million
rows fit in one pass, so that the larger size shows the bound. Figures: docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline import layout
from pipeline.bench.pipeline import run_job_in_child, synth_logs

DAYS = 4
ROWS_PER_USER = 89.7   # raw rows a synthetic user brings to days 2..4 with day 1 as lookback (measured)


def cpu_model() -> str:
    """lscpu's model name (empty where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Model name")), "")


def measure(raw: Path, out: Path, config: str, budget_gb: float, passes: int | None) -> dict:
    """One run of the job in a fresh process, its figures."""
    overrides = [f"runtime.memory_budget_gb={budget_gb}", "runtime.direct_running_mode=in_memory"]
    load = os.getloadavg()[0]
    job = run_job_in_child(str(raw), str(out), DAYS, config, overrides, None, 0, passes)
    return {"passes": job["passes"], "peak_rss_mb": round(job["peak_rss_mb"]),
            "seconds": round(job["seconds"], 1), "cpu_seconds": round(job["cpu_seconds"], 1),
            "rows": job["rows_total"], "examples": sum(job["examples"].values()),
            "load_average_before": round(load, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn bench memory", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,5000000",
                        help="raw rows of each size, comma-separated (default: %(default)s)")
    parser.add_argument("--config", default="dupn", help="the job's config (default: %(default)s, "
                        "as dupn build-examples)")
    parser.add_argument("--budget-gb", type=float, default=2.0,
                        help="runtime.memory_budget_gb of the runs in passes (default: %(default)s)")
    parser.add_argument("--work", help="folder for logs and examples (default: a temporary one); "
                        "logs already there are reused")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]

    runs = []
    with tempfile.TemporaryDirectory(prefix="dupn-bench-memory-") as tmp:
        work = Path(args.work or tmp)
        for rows in sizes:
            users = round(rows / ROWS_PER_USER)
            raw = work / f"raw-{users}"
            if synth_logs(raw, DAYS, users):
                print("dupn bench memory: dupn synth failed", file=sys.stderr)
                return 1
            one = measure(raw, layout.examples_dir(work / f"one-{users}"), args.config, args.budget_gb, 1)
            split = measure(raw, layout.examples_dir(work / f"split-{users}"), args.config,
                            args.budget_gb, None)
            runs.append({"users": users, "rows": one["rows"], "one_pass": one, "in_passes": split,
                         "time_ratio": round(split["seconds"] / one["seconds"], 2)})
    first, last = runs[0], runs[-1]
    result = {
        "config": args.config, "budget_gb": args.budget_gb, "cpu": cpu_model(),
        "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
        # the bound: the largest size's peak in passes against the smallest's
        "peak_ratio_in_passes": round(last["in_passes"]["peak_rss_mb"] / first["in_passes"]["peak_rss_mb"], 2),
        "peak_ratio_one_pass": round(last["one_pass"]["peak_rss_mb"] / first["one_pass"]["peak_rss_mb"], 2),
        "under_budget": all(r["in_passes"]["peak_rss_mb"] <= args.budget_gb * 1024 for r in runs),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for r in runs:
            one, split = r["one_pass"], r["in_passes"]
            print(f"dupn bench memory: {r['rows']:,} rows: one pass peak {one['peak_rss_mb']:,} MB in "
                  f"{one['seconds']} s; {split['passes']} passes peak {split['peak_rss_mb']:,} MB in "
                  f"{split['seconds']} s ({r['time_ratio']}x the time)")
        print(f"dupn bench memory: peak of the largest against the smallest: "
              f"{result['peak_ratio_in_passes']}x in passes, {result['peak_ratio_one_pass']}x in one "
              f"pass; under the {args.budget_gb} GB budget: {result['under_budget']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
