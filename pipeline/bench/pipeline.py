"""`dupn bench pipeline`: throughput of the Beam example job on synthetic logs, with the local runner.

    dupn bench pipeline --json [--users 2000 --days 4] [--config small] [--mode multi_processing]
        [--paths blocks,rows] [--set data.gzip_encoder=isal --set data.gzip_level=1]
        [--runner dask --dask-workers 2]

Writes synthetic logs (`dupn synth`, not timed), then times `dupn build-examples` (each path in
--paths, each in a fresh process, one after the other on the same logs) over every day
but the first (read as lookback only; every file is read once). rows = raw rows read (lookback included), the unit
of the job's input; seconds = wall time of the job (pipeline construction included). With --runner dask a LocalCluster
of --dask-workers processes is started first (its start timed apart, as cluster_start_s) and the
CPU seconds include its scheduler's and workers'.
--profile FILE runs it in one process under cProfile and prints where the time goes.
Figures and their limits: docs/BENCHMARKS.md ("Beam example job").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty

from pipeline import layout

START = "2026-11-01"


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cluster_cpu_seconds() -> float:
    """CPU seconds of this process's live descendants (a local Dask cluster's processes), which
    getrusage counts only once they have exited."""
    import psutil
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _peak_rss_mb() -> float:
    """Peak resident memory of this process plus the largest child (Linux reports kB).

    This process's own is VmHWM, its address space's high-water mark: ru_maxrss survives exec on
    Linux, so a process spawned from a large one (a test run's) would report its parent's size."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        with open("/proc/self/status") as status:
            own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (own + children) / 1024


def run_job(raw: str, out: str, days: int, config_name: str, overrides: list[str],
            profile: str | None = None, dask_workers: int = 0, passes: int | None = 1) -> dict:
    """Runs the job over days 2..days of the synthetic logs and measures it (in this process).

    dask_workers > 0: on Beam's DaskRunner, over a LocalCluster of that many worker processes.
    passes: user passes of the local job (None: chosen from the rows and runtime.memory_budget_gb).
    Returns the job's totals with seconds, cpu_seconds and peak_rss_mb of this process and its
    children (the local runner's worker processes).
    """
    if dask_workers:
        from pipeline.beam.dask_cluster import local_cluster
        started = time.monotonic()
        with local_cluster(dask_workers) as address:
            cluster_start = time.monotonic() - started
            cpu = _cluster_cpu_seconds()
            job = _timed_job(raw, out, days, config_name, overrides, profile, address)
            job["cpu_seconds"] += _cluster_cpu_seconds() - cpu
        return {**job, "runner": "dask", "running_mode": "dask", "workers": dask_workers,
                "cluster_start_s": round(cluster_start, 2)}
    return {**_timed_job(raw, out, days, config_name, overrides, profile, passes=passes),
            "runner": "direct"}


def _timed_job(raw, out, days, config_name, overrides, profile=None, dask_address=None,
               passes: int | None = 1) -> dict:
    from configs.loader import load_config
    from pipeline.beam import build_examples
    from pipeline.beam.dask_cluster import dask_args
    config = load_config(config_name, overrides)
    start, end = layout.shift(START, 1), layout.shift(START, days - 1)
    plan = build_examples.make_plan(raw, out, start, end, config)
    if dask_address:
        files = sum(map(len, plan.files.values()))
        options = build_examples.pipeline_options(config, "dask", dask_args([], dask_address, files))
    else:
        options = build_examples.pipeline_options(config, None, [])
    with profiled(profile):
        cpu, started = _cpu_seconds(), time.monotonic()
        passes = build_examples.plan_passes(plan, config, options, passes)
        totals = build_examples.run(plan, options, passes)
        seconds = time.monotonic() - started
    direct = options.get_all_options()
    return {**totals, "seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu,
            "peak_rss_mb": _peak_rss_mb(), "beam_runner": direct["runner"],
            "running_mode": direct["direct_running_mode"],
            "workers": direct["direct_num_workers"], "sequence_length": config.data.sequence_length,
            "beam_path": config.data.beam_path, "passes": passes}


def synth_logs(raw: Path, days: int, users: int) -> int:
    """`dupn synth` logs from START (seed 1) into `raw`, quietly, unless it holds some; its exit code."""
    from pipeline.rawlogs import synth
    if (raw / "behaviors").exists():
        return 0
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            return synth.main(["--out", str(raw), "--start", START, "--days", str(days),
                               "--users", str(users), "--seed", "1"])
        finally:
            sys.stdout = stdout


def _child(queue, function, *args) -> None:
    queue.put(function(*args))


def in_child(function, *args):
    """function(*args) in a fresh (spawned) process, its result; `function` is a module-level one."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue, function, *args))
    child.start()
    while True:   # a child killed (out of memory) puts nothing: say so rather than wait forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not child.is_alive():
                raise RuntimeError(f"{function.__name__} in a child process exited with code "
                                   f"{child.exitcode} before returning") from None
    child.join()
    return result


def run_job_in_child(*args) -> dict:
    """run_job in a fresh process, so that its peak memory is the job's alone (not the generator's)."""
    return in_child(run_job, *args)


@contextlib.contextmanager
def profiled(path: str | None):
    """cProfile of this thread and of every thread started meanwhile (the local runner runs its
    stages in its own threads), merged into one dump at path; nothing when path is None."""
    if path is None:
        yield
        return
    import cProfile
    import pstats
    profilers = [cProfile.Profile()]

    def start_in_thread(*_):
        profilers.append(cProfile.Profile())
        profilers[-1].enable()       # replaces this hook in the new thread

    threading.setprofile(start_in_thread)
    profilers[0].enable()
    try:
        yield
    finally:
        profilers[0].disable()
        threading.setprofile(None)
        pstats.Stats(*profilers).dump_stats(path)


def profile_summary(stats_file: str, top: int = 18) -> str:
    """The functions with the most own time of a cProfile dump, as text."""
    import io
    import pstats
    text = io.StringIO()
    pstats.Stats(stats_file, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def figures(job: dict, load: float) -> dict:
    """The reported figures of one run of the job."""
    rows, examples, seconds = job["rows_total"], sum(job["examples"].values()), round(job["seconds"], 2)
    return {
        "rows": rows, "examples": examples, "seconds": seconds,
        "rows_per_s": round(rows / seconds), "examples_per_s": round(examples / seconds),
        "cpu_seconds": round(job["cpu_seconds"], 2),
        "rows_per_cpu_s": round(rows / job["cpu_seconds"]) if job["cpu_seconds"] else None,
        "peak_rss_mb": round(job["peak_rss_mb"]), "sequence_length": job["sequence_length"],
        "running_mode": job["running_mode"], "workers": job["workers"],
        "load_average_before": round(load, 2), "rows_by_table": job["rows"],
        "examples_by_task": job["examples"], "beam_path": job["beam_path"],
        "runner": job["runner"], "beam_runner": job["beam_runner"],
        **({"cluster_start_s": job["cluster_start_s"]} if "cluster_start_s" in job else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn bench pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=4, help="days of logs (the first is lookback)")
    parser.add_argument("--config", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mode", choices=("in_memory", "multi_threading", "multi_processing"),
                        help="local runner mode (default: runtime.direct_running_mode)")
    parser.add_argument("--workers", type=int, help="local runner workers (default: runtime.direct_num_workers)")
    parser.add_argument("--work", help="folder for logs and examples (default: a temporary one)")
    parser.add_argument("--profile", metavar="FILE", help="profile in one process, dump to FILE")
    parser.add_argument("--paths", help="the job's paths to time, in this order (default "
                        "blocks,rows; blocks with --runner dask, which cannot run the row path)")
    parser.add_argument("--runner", choices=("direct", "dask"), default="direct",
                        help="direct: Beam's local runner; dask: Beam's DaskRunner on a local "
                        "cluster of --dask-workers processes")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.days < 2:
        parser.error("--days must be at least 2 (the first day is lookback)")
    overrides = list(args.overrides)
    args.paths = args.paths or ("blocks" if args.runner == "dask" else "blocks,rows")
    if args.runner == "dask" and "rows" in args.paths.split(","):
        parser.error("the row path runs on the DirectRunner only (docs/BEAM.md)")
    if args.profile and args.runner == "dask":
        parser.error("--profile runs in one process: not with --runner dask")
    if args.profile:
        args.mode = "in_memory"     # one process: the profile sees every stage
    if args.mode:
        overrides.append(f"runtime.direct_running_mode={args.mode}")
    if args.workers is not None:
        overrides.append(f"runtime.direct_num_workers={args.workers}")

    with tempfile.TemporaryDirectory(prefix="dupn-bench-") as tmp:
        work = Path(args.work or tmp)
        raw, out = work / "raw", layout.examples_dir(work)
        if synth_logs(raw, args.days, args.users):
            print("dupn bench pipeline: dupn synth failed", file=sys.stderr)
            return 1
        paths = {}
        for path in args.paths.split(","):
            load = os.getloadavg()[0]
            job = run_job_in_child(str(raw), str(out), args.days, args.config,
                                   overrides + [f"data.beam_path={path}"], args.profile,
                                   args.dask_workers if args.runner == "dask" else 0)
            paths[path] = figures(job, load)
    first = paths[next(iter(paths))]
    result = {**first, "users": args.users, "days": args.days, "config": args.config,
              "cores": os.cpu_count(), "paths": paths}
    if "blocks" in paths and "rows" in paths:
        result["blocks_vs_rows"] = round(paths["blocks"]["rows_per_s"] / paths["rows"]["rows_per_s"], 2)
        if paths["blocks"]["rows_per_cpu_s"] and paths["rows"]["rows_per_cpu_s"]:
            result["blocks_vs_rows_cpu"] = round(paths["blocks"]["rows_per_cpu_s"]
                                                 / paths["rows"]["rows_per_cpu_s"], 2)
    if args.json:
        print(json.dumps(result))
    else:
        for name, f in paths.items():
            print(f"dupn bench pipeline ({name}): {f['rows']:,} rows -> {f['examples']:,} examples in "
                  f"{f['seconds']:.1f} s: {f['rows_per_s']:,} rows/s ({f['cpu_seconds']} CPU s, "
                  f"{f['rows_per_cpu_s']:,} rows per CPU s, peak {f['peak_rss_mb']} MB)")
    if args.profile:
        print(profile_summary(args.profile), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
