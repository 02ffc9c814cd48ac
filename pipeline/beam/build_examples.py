"""`dupn build-examples`: the Beam job that turns raw behaviour logs into TFRecord examples.

    dupn build-examples --raw RAW --out EXAMPLES --start D1 --end D2 [--lookback-days L]
        [--config small] [--set k=v] [--runner DataflowRunner|FlinkRunner|SparkRunner ...]

Reads the six raw tables (behaviours and items for [D1 - L, D2], the rest for [D1, D2]), rejects
and counts rows that break the contract, joins each day's item snapshot, and writes, per task and
day, EXAMPLES/<task>/dt=D/part-*.tfrecord.gz, with EXAMPLES/_stats/dt=D.json and the dead letters
EXAMPLES/_rejected/dt=D/. Options it does not know go to Beam's PipelineOptions. See docs/BEAM.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import create_runner

from configs.loader import ConfigError, add_config_args, load_config
from features.contract import TASKS, Contract
from pipeline import layout
from pipeline.beam.inputs import LOOKBACK_TABLES, day_inputs, record_builds
from pipeline.beam.block_join import JoinBlocks
from pipeline.beam.block_read import ReadBlocks
from pipeline.beam.block_samples import BuildBlockSamples
from pipeline.beam.dedup import DropDuplicateBlocks, DropDuplicateRows
from pipeline.beam.dask_cluster import close_client, dask_args, is_dask, local_cluster, runner_name
from pipeline.beam.pass_merge import WriteSortedRuns, merge_passes
from pipeline.beam.passes import LOCAL_RUNNERS, available_gb, choose_passes
from pipeline.beam.join import BEHAVIORS, IMPRESSIONS, MISSING, SNAPSHOT, JoinItems
from pipeline.beam.read import COUNTS, REJECTED, RawLayoutError, ReadTables, list_files
from pipeline.beam.samples import EXAMPLES, STATS, BuildSamples, NegativePool, SampleSpec
from pipeline.beam.write import (WriteExamples, WriteRejected, WriteStats, publish, remove_dead_staging,
                                 remove_staging)
from pipeline.layout import days_between, shift
from pipeline.rawlogs.schema import TABLES

NAME_PATTERN = "<name>.jsonl|csv|parquet[.gz]"    # shown in the error for a raw root without files


class BuildFailed(RuntimeError):
    """The job ran but its output was not published (too many bad rows, an unreadable file)."""


@dataclass
class Plan:
    """Everything the pipeline needs, resolved before it is built."""
    raw: str
    out: str
    staging: str
    spec: SampleSpec
    contract: Contract
    rank_features: int
    pool_size: int
    max_bad_share: float
    data: object = None          # the DataConfig: path, shuffle shards, output compression
    files: dict = field(default_factory=dict)   # table -> [(table, day, path)]
    # (index, count): this pipeline builds the examples of one user pass of `count` (passes.py);
    # with count > 1 it stages sorted runs and counts for pass_merge instead of the final files.
    user_pass: tuple = (0, 1)

    @property
    def window(self) -> list[str]:
        return days_between(self.spec.start, self.spec.end)


def make_plan(raw: str, out: str, start: str, end: str, config) -> Plan:
    """Lists the input files and fixes the staging folder of one run."""
    window = days_between(start, end, names=("--start", "--end"))   # first: it names a bad flag
    contract = Contract.from_config(config)
    spec = SampleSpec.from_config(config, start, end, contract)
    with_lookback = days_between(shift(start, -spec.lookback_days), end)
    files = {t: list_files(raw, t, with_lookback if t in LOOKBACK_TABLES else window) for t in TABLES}
    if not any(files[t] for t in ("behaviors", "impressions", "follows", "shop_prefs", "users")):
        raise RawLayoutError(f"{raw}: no raw files for {start}..{end} (expected "
                             f"{layout.join(layout.raw_dir(raw, '<table>', 'YYYY-MM-DD'), NAME_PATTERN)})")
    run = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{os.getpid()}-{secrets.token_hex(3)}"
    return Plan(raw=raw, out=out, staging=layout.staging_dir(out, run), spec=spec, contract=contract,
                rank_features=config.features.rank_features, pool_size=config.data.ctr_negative_pool,
                max_bad_share=config.data.max_bad_share, data=config.data, files=files)


def build_pipeline(p: beam.Pipeline, plan: Plan) -> None:
    """Adds the job's transforms to `p` (data.beam_path: blocks or rows); everything is written
    under plan.staging."""
    if plan.data is None or plan.data.beam_path == "blocks":
        build_block_pipeline(p, plan)
    else:
        build_row_pipeline(p, plan)


def write_outputs(plan: Plan, examples, rejected, counts: list) -> None:
    """The examples, the window's dead letters and the statistics, under plan.staging (as sorted
    runs and counts when the run is in user passes)."""
    level, encoder = (plan.data.gzip_level, plan.data.gzip_encoder) if plan.data else (6, "zlib")
    in_passes = plan.user_pass[1] > 1
    write_examples = (WriteSortedRuns(plan.staging, plan.spec.shards) if in_passes
                      else WriteExamples(plan.staging, plan.spec.shards, level, encoder))
    written = (
        examples | "WriteExamples" >> write_examples,
        rejected | "WriteRejected" >> WriteRejected(plan.staging, plan.window),
        tuple(counts) | "FlattenCounts" >> beam.Flatten()
        | "WriteStats" >> WriteStats(plan.staging, plan.spec.start, plan.spec.end, plan.window,
                                     required_tables(plan.spec.ctr_from_behaviors),
                                     counts_only=in_passes))
    # One last step downstream of every write: the DaskRunner (2.77) computes only the graph of
    # the step applied last, so a write not leading into it would never run (docs/BEAM.md).
    _ = written | "AllWritten" >> beam.Flatten() | "Done" >> beam.Filter(lambda _: False)


def build_block_pipeline(p: beam.Pipeline, plan: Plan) -> None:
    """The columnar job: Arrow blocks through the shuffles (block_read, block_join, block_samples)."""
    spec, data = plan.spec, plan.data
    files = [f for table in TABLES for f in plan.files[table]]
    reads = p | "ReadBlocks" >> ReadBlocks(files, plan.rank_features, plan.user_pass)
    joinable = frozenset(("items", "behaviors", "impressions"))
    # two filters rather than beam.Partition, which the DaskRunner cannot run (split.py)
    joinable_tables = reads["block"] | "JoinableTables" >> beam.Filter(
        lambda e, names: e[0] in names, joinable)
    user_tables = (reads["block"]
                   | "UserTables" >> beam.Filter(lambda e, names: e[0] not in names, joinable)
                   | "DropDuplicateUserRows" >> DropDuplicateBlocks(data.user_shards))
    joined = joinable_tables | "JoinBlocks" >> JoinBlocks(
        spec.start, spec.tag_slots, spec.sequence_length, data.item_shards, data.user_shards,
        emit_snapshot=spec.ctr_from_behaviors, count_items=plan.user_pass[0] == 0)
    inputs = {"joined": joined["joined"], "user_tables": user_tables["block"]}
    if spec.ctr_from_behaviors:
        window = frozenset(plan.window)
        inputs["pool"] = (joined["snapshot"]
                          | "SnapshotOfWindow" >> beam.Filter(lambda kv, days: kv[0] in days, window)
                          | "NegativePool" >> NegativePool(plan.pool_size, spec.seed))
    built = inputs | "BuildSamples" >> BuildBlockSamples(spec, plan.contract, data.user_shards)
    write_outputs(plan, built["examples"], reads["rejected"],
                  [reads["counts"], joined["counts"], user_tables["counts"], built["stats"]])


def build_row_pipeline(p: beam.Pipeline, plan: Plan) -> None:
    """The row job (one element per row): the reference the block path must match byte for byte."""
    spec = plan.spec
    files = [f for table in TABLES for f in plan.files[table]]
    reads = p | "ReadTables" >> ReadTables(files, plan.rank_features)
    counts = [reads[COUNTS]]
    rows = {}
    for table in TABLES:
        rows[table], duplicates = reads[table] | f"DropDuplicates_{table}" >> DropDuplicateRows(table)
        counts.append(duplicates)
    joined = ((rows["items"], rows["behaviors"], rows["impressions"])
              | "JoinItems" >> JoinItems(spec.tag_slots, spec.query_terms,
                                         emit_snapshot=spec.ctr_from_behaviors))
    counts.append(joined[MISSING])
    inputs = {"behaviors": joined[BEHAVIORS], "impressions": joined[IMPRESSIONS],
              "follows": rows["follows"], "shop_prefs": rows["shop_prefs"], "users": rows["users"]}
    if spec.ctr_from_behaviors:
        window = frozenset(plan.window)
        inputs["pool"] = (joined[SNAPSHOT]
                          | "SnapshotOfWindow" >> beam.Filter(lambda kv, days: kv[0] in days, window)
                          | "NegativePool" >> NegativePool(plan.pool_size, spec.seed))
    built = inputs | "BuildSamples" >> BuildSamples(spec, plan.contract)
    counts.append(built[STATS])
    write_outputs(plan, built[EXAMPLES], reads[REJECTED], counts)


def pipeline_options(config, runner: str | None, beam_args: list[str]) -> PipelineOptions:
    """Beam options from the command line, with the runner and local workers from the config."""
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    standard.runner = runner_name(runner or config.runtime.runner)
    if standard.runner in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        given = " ".join(beam_args)
        if "--direct_running_mode" not in given:
            direct.direct_running_mode = config.runtime.direct_running_mode
        if standard.runner == "BundleBasedDirectRunner" and (
                direct.direct_running_mode != "in_memory" or config.data.beam_path == "rows"):
            # Threads and processes are the DirectRunner's modes; and the row path's one element
            # per row costs 3x the CPU and 6x the memory on the bundle-based runner.
            standard.runner = "DirectRunner"
        if "--direct_num_workers" not in given:
            workers = config.runtime.direct_num_workers or os.cpu_count() or 1
            # in_memory runs one worker whatever the number; saying 1 avoids Beam's warning
            direct.direct_num_workers = 1 if direct.direct_running_mode == "in_memory" else workers
    return options


def plan_passes(plan: Plan, config, options: PipelineOptions, requested: int | None) -> int:
    """The run's user passes (passes.choose_passes): `requested`, or from the input and the budget,
    itself capped by the memory the machine has free now (said on stderr where that adds passes)."""
    return choose_passes(requested, options.view_as(StandardOptions).runner, plan.data.beam_path,
                         [f for table in TABLES for f in plan.files[table]],
                         config.runtime.memory_budget_gb, plan.spec.sequence_length, available_gb(),
                         lambda line: print(f"dupn build-examples: {line}", file=sys.stderr))


def required_tables(ctr_from_behaviors: bool) -> tuple:
    """The tables every day needs: logs without impressions (Taobao) bring behaviours and items only."""
    return ("behaviors", "items") if ctr_from_behaviors else TABLES


def check_totals(totals: dict, plan: Plan) -> str | None:
    """Why the run must not be published, or None. The bad-share bound holds for each table of
    each day read: a table broken on one day fails the run however many good rows the others hold."""
    where = layout.rejected_dir(plan.out, "D")
    unreadable = totals.get("unreadable_files", [])
    if unreadable:
        shown = ", ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else "")
        return (f"{len(unreadable)} file(s) cannot be read ({shown}), so their rows cannot be "
                f"counted; details in {where}/")
    over = []
    for day, tables in totals.get("bad_rows_by_day", {}).items():
        for table, seen in tables.items():
            bad = sum(seen["rejected"].values())
            share = bad / seen["rows"] if seen["rows"] else 1.0
            if share > plan.max_bad_share:
                over.append((-share, day, table, bad, seen))
    if not over:
        return None
    over.sort()
    share, day, table, bad, seen = over[0]
    ranked = sorted(seen["rejected"].items(), key=lambda kv: (-kv[1], kv[0]))
    worst = ", then ".join(f"{r} ({n:,} rows)" for r, n in ranked[:3])
    others = "".join(f"; also {t} of {d} ({-s:.2%})" for s, d, t, _, _ in over[1:4])
    # A lookback day's dead letters belong to its own run: say so rather than point to an empty folder.
    lookback = sorted({d for _, d, _, _, _ in over} - set(plan.window))
    elsewhere = (f" (none for the lookback days before --start, {', '.join(lookback)}: a run with "
                 f"--start {lookback[0]} --end {lookback[-1]} writes theirs)" if lookback else "")
    return (f"{table} of {day}: {-share:.2%} of its {seen['rows']:,} rows are bad ({bad:,} rows), "
            f"above data.max_bad_share {plan.max_bad_share:.2%} (a bound per table and day); "
            f"worst reason: {worst}{others}{' ...' if len(over) > 4 else ''}; rejected rows with "
            f"file and row number in {where}/{elsewhere}")


def run_pipeline(plan: Plan, options: PipelineOptions) -> None:
    """Runs one pipeline of the job, writing under plan.staging."""
    p = beam.Pipeline(options=options)
    try:
        with p:
            build_pipeline(p, plan)
    finally:
        close_client(getattr(p, "result", None))


def run(plan: Plan, options: PipelineOptions, passes: int = 1) -> dict:
    """Runs the job, in `passes` user passes (passes.py), and publishes its days; returns the run
    totals. BuildFailed if not published."""
    try:
        if passes == 1:
            run_pipeline(plan, options)
        else:
            for index in range(passes):
                run_pipeline(dataclasses.replace(plan, staging=layout.pass_dir(plan.staging, index),
                                                 user_pass=(index, passes)), options)
            level, encoder = (plan.data.gzip_level, plan.data.gzip_encoder)
            merge_passes(plan.staging, passes, plan.spec.start, plan.spec.end, plan.window,
                         required_tables(plan.spec.ctr_from_behaviors), level, encoder)
        with FileSystems.open(layout.run_file(plan.staging)) as f:
            totals = json.load(f)
        reason = check_totals(totals, plan)
        publish(plan.out, plan.staging, plan.window, examples=reason is None)
    finally:
        remove_staging(plan.out, plan.staging)
    if reason:
        raise BuildFailed(f"{reason}. Examples were not published.")
    return totals


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="dupn build-examples", description=__doc__.split("\n")[0],
        epilog="Unknown options go to Beam, e.g. --project --region --temp_location (Dataflow), "
               "--flink_master (Flink), --direct_num_workers (local).")
    parser.add_argument("--raw", required=True, help="raw-log root: RAW/<table>/dt=YYYY-MM-DD/")
    parser.add_argument("--out", required=True, help="examples root (EXAMPLES)")
    parser.add_argument("--start", required=True, help="first day of samples, YYYY-MM-DD")
    parser.add_argument("--end", help="last day of samples, YYYY-MM-DD (default: --start)")
    parser.add_argument("--lookback-days", type=int, help="history days before --start "
                        "(default: data.lookback_days)")
    parser.add_argument("--max-bad-share", type=float, help="fail above this share of bad rows "
                        "(default: data.max_bad_share)")
    parser.add_argument("--ctr-from-behaviors", action="store_true",
                        help="also make CTR samples from behaviours (logs without impressions)")
    parser.add_argument("--row-path", action="store_true",
                        help="run the row job (one element per row) instead of the block job")
    parser.add_argument("--passes", type=int, help="local runner: build the examples in this "
                        "many passes over user shards, to bound memory (default: from the input's "
                        "rows and runtime.memory_budget_gb; docs/BEAM.md, \"Memory\")")
    parser.add_argument("--runner", help="Beam runner (default: runtime.runner); dask: Beam's "
                        "DaskRunner")
    parser.add_argument("--dask-address", help="with --runner dask: the scheduler of a running "
                        "Dask cluster, tcp://HOST:8786 (default: a local cluster for the run)")
    parser.add_argument("--dask-workers", type=int, default=2, help="with --runner dask and no "
                        "--dask-address: worker processes of the local cluster (default 2)")
    add_config_args(parser)
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides)
    if args.lookback_days is not None:
        overrides.append(f"data.lookback_days={args.lookback_days}")
    if args.max_bad_share is not None:
        overrides.append(f"data.max_bad_share={args.max_bad_share}")
    if args.ctr_from_behaviors:
        overrides.append("data.ctr_from_behaviors=true")
    if args.row_path:
        overrides.append("data.beam_path=rows")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"dupn build-examples: {err}", file=sys.stderr)
        return 2
    if args.passes is not None and args.passes < 1:
        print(f"dupn build-examples: --passes {args.passes}: must be at least 1", file=sys.stderr)
        return 2
    return build_examples(config, args.raw, args.out, args.start, args.end,
                          runner=args.runner, beam_args=beam_args, dask_address=args.dask_address,
                          dask_workers=args.dask_workers, passes=args.passes)


def build_examples(config, raw, out, start: str, end: str | None = None, *, runner: str | None = None,
                   beam_args=(), dask_address: str | None = None, dask_workers: int = 2,
                   passes: int | None = None) -> int:
    """Runs the job on the days [start, end] with `config` (a Config); prints what it did.

    Args:
      raw, out: the raw-log root and the examples root (local paths or URLs).
      runner: the Beam runner (default: runtime.runner); beam_args: further PipelineOptions flags.
      dask_address: with runner dask, a running cluster's scheduler; without it a local cluster of
        `dask_workers` worker processes is started and shut down for the run.
      passes: user passes of a local run (None: from the input's rows and
        runtime.memory_budget_gb; beam/passes.py).
    Returns:
      the command's exit code: 0 done; 1 not published (BuildFailed), no day had rows, or
      another job holds EXAMPLES/.lock; 2 bad input (no raw files, a malformed date). Each
      day's _stats records the raw files and settings it was built from (beam/inputs.py).
    """
    # One job per local examples folder: two would publish over each other's days.
    lock = (contextlib.nullcontext() if layout.is_remote(out)
            else layout.hold_lock(layout.lock_file(out), "dupn build-examples"))
    try:
        with lock:
            return _build_examples(config, raw, out, start, end, runner, beam_args, dask_address,
                                   dask_workers, passes)
    except layout.LockHeld as err:
        print(f"dupn build-examples: {err}", file=sys.stderr)
        return 1


def _build_examples(config, raw, out, start: str, end: str | None, runner, beam_args,
                    dask_address, dask_workers, passes) -> int:
    started = time.monotonic()
    dead = remove_dead_staging(str(out))
    if dead:
        print(f"dupn build-examples: removed {dead} staging folder(s) of interrupted runs from "
              f"{layout.join(str(out), layout.TMP_DIR)}", file=sys.stderr)
    runner = runner or config.runtime.runner
    try:   # a mistyped runner is a bad flag, named, rather than a traceback from inside Beam
        create_runner(runner_name(runner))
    except ValueError as err:
        print(f"dupn build-examples: --runner {runner}: {err}", file=sys.stderr)
        return 2
    try:
        plan = make_plan(str(raw), str(out), start, end or start, config)
    except (RawLayoutError, ValueError) as err:   # ValueError: a malformed date
        print(f"dupn build-examples: {err}", file=sys.stderr)
        return 2
    # Fingerprinted before the run: a file landing meanwhile makes the day stale, not silently whole.
    inputs = {day: day_inputs(plan.raw, day, plan.spec.lookback_days) for day in plan.window}
    if is_dask(runner) and plan.data.beam_path == "rows":
        print("dupn build-examples: the row path (--row-path) runs on the DirectRunner only: the "
              "DaskRunner loses its multi-output steps' and finish_bundle's outputs (docs/BEAM.md)",
              file=sys.stderr)
        return 2
    options = pipeline_options(config, runner, list(beam_args))
    try:
        passes = plan_passes(plan, config, options, passes)
    except ValueError as err:
        print(f"dupn build-examples: {err}", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as stack:
            if is_dask(runner):
                address = dask_address or stack.enter_context(local_cluster(dask_workers))
                beam_args = dask_args(list(beam_args), address, sum(map(len, plan.files.values())))
                options = pipeline_options(config, runner, list(beam_args))
            totals = run(plan, options, passes)
    except BuildFailed as err:
        print(f"dupn build-examples: {err}", file=sys.stderr)
        return 1
    empty = record_builds(plan.out, inputs, config)
    for day in empty:
        print(f"dupn build-examples: {day}: no raw rows, nothing built for it", file=sys.stderr)
    for day, tables in sorted(totals.get("missing_tables", {}).items()):
        if day not in empty:
            print(f"dupn build-examples: warning: {day}: no rows of {', '.join(tables)}: the day's "
                  f"examples lack what they feed (missing_tables in its _stats)", file=sys.stderr)
    if len(empty) == len(plan.window):
        return 1
    examples = ", ".join(f"{t} {totals['examples'][t]:,}" for t in TASKS if t in totals["examples"])
    print(f"dupn build-examples: {plan.spec.start}..{plan.spec.end}: {totals['rows_total']:,} rows "
          f"read, {totals['rejected_total']:,} rejected ({totals['bad_share']:.2%}); examples: "
          f"{examples or 'none'}; in {time.monotonic() - started:.1f} s"
          f"{f' ({passes} user passes)' if passes > 1 else ''} -> {plan.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
