"""`dupn bench scale`: the 10-day backfill end to end at a given input size, per stage.

    dupn bench scale --json [--rows 1000000,3000000] [--config small] [--set k=v] [--work DIR]
        [--probe-steps 200] [--train-steps N]

For each size, writes `dupn synth` logs of a 10-day window at the shape of the public Taobao
UserBehavior set (about 101 behaviours per user over 9 days, so users = rows / (101 / 9 x 10);
synth follows its behaviour mix and long tail; not timed as a stage), then runs the backfill's
stages one after the other, each in a fresh process so that its peak memory is its own:

  beam      the Beam example job over the window (daydata.ensure_examples, as `dupn backfill`)
  split     the held-out users of the last day split off (no next day: backfill's evaluation data)
  train     training from scratch (training.train.train, as `dupn backfill`)
  evaluate  `dupn backfill` itself: finds the stages' examples, split and finished run, evaluates,
            publishes and records the window (it would rebuild or retrain anything stale)
  export    `dupn export` of the published model
  input     a probe, not a backfill stage: the training stream alone, then the same model's steps
            on that stream and on batches held in memory; input_wait = 1 - the second / the first

seconds: the stage's wall time inside its process (imports excluded); cpu_seconds: its process
and children; peak_rss_mb: its VmHWM plus its largest child's. With several sizes, `fit` holds
each stage's time as a power law and peak memory as a line in the rows. Figures: docs/SCALE.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pipeline import layout
from pipeline.bench.memory import cpu_model
from pipeline.bench.pipeline import START, _cpu_seconds, _peak_rss_mb, in_child, synth_logs

DAYS = 10
ROWS_PER_USER_DAY = 101 / 9      # Taobao UserBehavior: ~100M rows, 988k users, 9 days
CACHED_BATCHES = 20              # the input probe's batches held in memory
STAGES = ("beam", "split", "train", "evaluate", "export")


def users_for(rows: int) -> int:
    return max(1, round(rows / (ROWS_PER_USER_DAY * DAYS)))


def _backfill_argv(job: dict) -> list[str]:
    argv = ["--raw", job["raw"], "--work", job["work"], "--end", job["end"], "--days", str(DAYS),
            "--config", job["config"]]
    for override in job["overrides"]:
        argv += ["--set", override]
    return argv


def _plan(job: dict):
    """What `dupn backfill` derives from its arguments: (args, config, window, run_dir)."""
    from configs.loader import config_from_args
    from pipeline.jobs import backfill
    args = backfill.parse_args(_backfill_argv(job))
    config = config_from_args(args)
    window = layout.days_between(layout.shift(args.end, 1 - args.days), args.end)
    return args, config, window, layout.run_dir(args.work, f"{args.end}-{backfill.NAME}")


def _training_data(job: dict):
    """(config, run_dir, training data) as backfill computes them; the split is reused once made."""
    from pipeline.jobs.daydata import training_and_evaluation
    from pipeline.training.train import head_tasks
    args, config, window, run_dir = _plan(job)
    data, _, _ = training_and_evaluation(
        args.raw, layout.examples_dir(args.work), args.end, head_tasks(config),
        config.data.holdout_share, layout.holdout_dir(args.work, args.end), first_day=window[0],
        evaluation=args.eval)
    return config, run_dir, data


def _quiet(_message) -> None:
    pass


def stage_beam(job: dict) -> dict:
    from pipeline.beam.build_examples import make_plan, pipeline_options, plan_passes
    from pipeline.jobs.daydata import ensure_examples, next_day_usable, run_config
    from pipeline.training.train import day_stats
    args, config, window, run_dir = _plan(job)
    examples = layout.examples_dir(args.work)
    following = [layout.shift(args.end)] if next_day_usable(args.raw, args.end, args.eval, _quiet) else []
    build_config = run_config(config, run_dir)
    built = ensure_examples(args.raw, examples, window + following, build_config, _quiet)
    days = [day_stats(examples, d) for d in built]
    # the user passes the local job chose for this input (docs/BEAM.md, "Memory on one machine")
    plan = make_plan(args.raw, str(examples), built[0], built[-1], build_config)
    passes = plan_passes(plan, build_config, pipeline_options(build_config, None, []), None)
    return {"days_built": len(built), "raw_rows": sum(d["rows_total"] for d in days),
            "examples": sum(d["examples"] for d in days), "passes": passes}


def stage_split(job: dict) -> dict:
    _, _, data = _training_data(job)
    return {"samples": data.samples, "samples_by_task": data.samples_by_task}


def stage_train(job: dict) -> dict:
    from pipeline.training.train import train
    config, run_dir, data = _training_data(job)
    batch, samples = config.trainer.batch_size, data.samples
    if job.get("train_steps"):   # the run's target is its samples' steps: fewer samples, fewer steps
        data = dataclasses.replace(data, samples=min(samples, job["train_steps"] * batch))
    started = time.monotonic()
    run = train(config, data, run_dir, log=_quiet)
    seconds = time.monotonic() - started
    rate = run["steps_this_call"] * batch / seconds
    out = {"samples": samples, "steps": run["steps_this_call"], "batch_size": batch,
           "train_call_s": round(seconds, 1), "samples_per_s": round(rate, 1)}
    if data.samples < samples:   # cut short: the whole pass's time at the rate measured
        out["full_pass_s_extrapolated"] = round(samples / rate, 1)
    return out


def stage_evaluate(job: dict) -> dict:
    from pipeline.jobs import backfill
    from pipeline.jobs.publish import dated_manifest
    code = backfill.main(_backfill_argv(job))
    record = dated_manifest(job["work"])["dates"].get(job["end"], {})
    _, _, _, run_dir = _plan(job)
    run = layout.read_json(Path(run_dir) / "run.json", {})
    metrics = record.get("metrics", {})
    return {"exit_code": code, "status": record.get("status"),
            "samples": record.get("inputs", {}).get("train", {}).get("samples"),
            "steps_retrained": run.get("steps_this_call"),
            "ctr_auc": metrics.get("ctr", {}).get("auc")}


def stage_export(job: dict) -> dict:
    from pipeline.serving import export
    return {"exit_code": export.main(["--work", job["work"], "--out", str(Path(job["work"]) / "export")])}


def _step_clock(warm: int):
    """A Keras callback timing fit's batches after the first `warm` (tracing, buffers filling)."""
    import tf_keras as keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append((batch, time.monotonic()))

        def seconds_per_step(self) -> float:
            after = [(b, t) for b, t in self.times if b + 1 >= warm]
            (b0, t0), (b1, t1) = after[0], after[-1]
            return (t1 - t0) / max(b1 - b0, 1)
    return StepClock()


def stage_input(job: dict, steps: int) -> dict:
    """Whether training waits on its input: the stream alone, then the model's steps on it and on
    CACHED_BATCHES batches held in memory (the model, optimizer and compile of train; one model
    trains on both, so the second measures steps of a model already trained on a few batches)."""
    from features.contract import Contract
    from pipeline.training.checkpoints import make_optimizer, new_model
    from pipeline.training.train import training_stream
    config, _, data = _training_data(job)
    contract = Contract.from_config(config)
    trainer = config.trainer
    warm = 2 * trainer.steps_per_execution
    stream = training_stream(data, contract, config)
    batches = iter(stream)
    for _ in range(warm):
        next(batches)
    started = time.monotonic()
    for _ in range(steps):
        next(batches)
    input_alone = (time.monotonic() - started) / steps
    del batches

    # One model for both: its training step is traced once (the second fit reuses it).
    model = new_model(config, contract)
    model.compile(optimizer=make_optimizer(trainer, model), steps_per_execution=trainer.steps_per_execution)

    def step_time(dataset) -> float:
        clock = _step_clock(warm)
        model.fit(dataset, epochs=1, steps_per_epoch=warm + steps, callbacks=[clock], verbose=0)
        return clock.seconds_per_step()
    streamed = step_time(stream)
    in_memory = step_time(stream.take(CACHED_BATCHES).cache().repeat())
    batch = trainer.batch_size
    return {"steps": steps, "input_alone_samples_per_s": round(batch / input_alone, 1),
            "step_s_streamed": round(streamed, 4), "step_s_in_memory": round(in_memory, 4),
            "samples_per_s_streamed": round(batch / streamed, 1),
            "samples_per_s_in_memory": round(batch / in_memory, 1),
            "input_wait": round(max(0.0, 1 - in_memory / streamed), 3)}


def _measured(function, *args) -> dict:
    """function(*args) in this process, with its wall, CPU and peak memory."""
    cpu, started = _cpu_seconds(), time.monotonic()
    out = function(*args)
    return {**out, "seconds": round(time.monotonic() - started, 1),
            "cpu_seconds": round(_cpu_seconds() - cpu, 1), "peak_rss_mb": round(_peak_rss_mb()),
            "load_average_after": round(os.getloadavg()[0], 2)}


def _measured_quietly(function, *args) -> dict:
    os.dup2(2, 1)   # the stages' own output goes to stderr: --json's stdout stays one object
    return _measured(function, *args)


def run_stage(function, *args) -> dict:
    """A stage in a fresh process, so that its peak memory is its own."""
    return in_child(_measured_quietly, function, *args)


def run_size(work: Path, rows: int, config: str, overrides: list[str], probe_steps: int,
             train_steps: int | None = None) -> dict:
    """Synthetic logs of `rows` behaviour rows, the backfill's stages on them, and the probe."""
    users = users_for(rows)
    raw = work / f"raw-{users}"
    started = time.monotonic()
    if synth_logs(raw, DAYS, users):
        raise RuntimeError("dupn synth failed")
    synth_s = time.monotonic() - started
    job_work = work / f"work-{users}-{config}"
    shutil.rmtree(job_work, ignore_errors=True)   # every stage measured from scratch
    job = {"raw": str(raw), "work": str(job_work), "config": config,
           "overrides": overrides, "end": layout.shift(START, DAYS - 1), "train_steps": train_steps}
    stages = {}
    for name in STAGES:
        load = os.getloadavg()[0]
        stages[name] = {**run_stage(globals()[f"stage_{name}"], job),
                        "load_average_before": round(load, 2)}
    probe = run_stage(stage_input, job, probe_steps) if probe_steps else None
    train = stages["train"]
    return {"rows_requested": rows, "users": users, "behaviour_rows": behaviour_rows(raw),
            "train_steps_cut": bool(train_steps),
            "synth_s": round(synth_s, 1), "samples": train["samples"],
            "samples_per_s": train["samples_per_s"],
            "input_wait": probe["input_wait"] if probe else None,
            "total_s": round(sum(s["seconds"] for s in stages.values()), 1),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
            "stages": stages, "input_probe": probe}


def whole_pass(stage: dict) -> tuple[float, float]:
    """A stage's (seconds, CPU seconds); a training cut short by --train-steps scaled to its pass."""
    if "full_pass_s_extrapolated" not in stage:
        return stage["seconds"], stage["cpu_seconds"]
    share = stage["samples"] / (stage["steps"] * stage["batch_size"])
    return stage["seconds"] * share, stage["cpu_seconds"] * share


def fit_laws(sizes: list[dict]) -> dict:
    """Per stage, fitted by least squares against behaviour rows: wall and CPU time as power laws
    (seconds = a x rows^b, a line in log space; a cut training's scaled to its pass) and peak
    memory as a line (base + MB per million rows: a process's libraries are a constant its data
    adds to)."""
    import numpy as np
    rows = np.array([s["behaviour_rows"] for s in sizes], dtype=float)
    laws = {}
    for name in sizes[0]["stages"]:
        seconds = np.array([whole_pass(s["stages"][name])[0] for s in sizes])
        cpu = np.array([whole_pass(s["stages"][name])[1] for s in sizes])
        peak = np.array([s["stages"][name]["peak_rss_mb"] for s in sizes])
        b, log_a = np.polyfit(np.log(rows), np.log(seconds), 1)
        b_cpu, log_a_cpu = np.polyfit(np.log(rows), np.log(cpu), 1)
        slope, base = np.polyfit(rows / 1e6, peak, 1)
        laws[name] = {"seconds": {"a": float(np.exp(log_a)), "b": round(float(b), 3)},
                      "cpu_seconds": {"a": float(np.exp(log_a_cpu)), "b": round(float(b_cpu), 3)},
                      "peak_rss_mb": {"base": round(float(base)), "per_million_rows": round(float(slope), 1)}}
    return laws


def behaviour_rows(raw: Path) -> int:
    """Rows of the behaviours table (every day), from the parquet footers."""
    import pyarrow.parquet as pq
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted((raw / "behaviors").glob("*/*.parquet")))


def print_table(result: dict) -> None:
    for size in result["sizes"]:
        print(f"dupn bench scale: {size['behaviour_rows']:,} behaviour rows, {size['users']:,} users, "
              f"{size['samples']:,} samples ({result['config']}): {size['total_s']} s, peak "
              f"{size['peak_rss_mb']:,} MB, {size['samples_per_s']} samples/s, input wait "
              f"{size['input_wait']}")
        print(f"  {'stage':<9} {'s':>8} {'CPU s':>8} {'peak MB':>8} {'load':>5}")
        for name, stage in size["stages"].items():
            print(f"  {name:<9} {stage['seconds']:>8} {stage['cpu_seconds']:>8} "
                  f"{stage['peak_rss_mb']:>8,} {stage['load_average_before']:>5}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn bench scale", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000",
                        help="behaviour rows of each size, comma-separated (default: %(default)s)")
    parser.add_argument("--config", default="small", help="the backfill's config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--probe-steps", type=int, default=200,
                        help="training steps the input probe times (0: no probe; default: %(default)s)")
    parser.add_argument("--train-steps", type=int, help="stop training after this many steps (a "
                        "pass too long for the time at hand): samples/s is measured on them and the "
                        "pass's time extrapolated, as train.full_pass_s_extrapolated (default: the pass)")
    parser.add_argument("--work", help="folder for logs and work directories (default: a temporary "
                        "one); logs already there are reused, work directories redone")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dupn-bench-scale-") as tmp:
        work = Path(args.work or tmp)
        try:
            sizes = [run_size(work, int(n), args.config, args.overrides, args.probe_steps,
                              args.train_steps)
                     for n in args.rows.split(",")]
        except RuntimeError as err:
            print(f"dupn bench scale: {err}", file=sys.stderr)
            return 1
    result = {"config": args.config, "overrides": args.overrides, "days": DAYS, "cpu": cpu_model(),
              "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
              "sizes": sizes}
    if len(sizes) > 1:
        result["fit"] = fit_laws(sizes)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
