"""What the backfill and daily jobs share: train a run, evaluate it (and the model in service) on the
same examples, gate, publish, and record the date in WORK/manifest.json.

Exit codes of both jobs (docs/OPERATIONS.md):
  0  published (or the date was already done: nothing to do)
  1  error: missing or bad input, a failed Beam job or training run (recorded as failed)
  2  bad command line or configuration
  3  refused by the publish gate: the model in service stays (recorded with the reasons)
  4  no published model to fine-tune (daily before the first backfill)
  5  daily: the day's statistics left the drift gate's bounds (recorded as drift, with the reasons)
"""
from __future__ import annotations

import math
import sys
import time
import traceback
from pathlib import Path

from pipeline import layout
from pipeline.dispatch import command_parser
from pipeline.jobs import publish as pub
from pipeline.layout import eval_file
from pipeline.rawlogs.landing import incomplete_reason

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED, EXIT_NO_MODEL, EXIT_DRIFT = 0, 1, 2, 3, 4, 5
DONE = ("published", "refused")   # statuses that make a rerun of the date a no-op


def job_parser(name: str, doc: str, work_help: str):
    """The argument parser of a job (dupn NAME): --raw and --work; add_shared_flags adds the rest
    both jobs take, after the job's own."""
    parser = command_parser(f"dupn {name}", doc)
    parser.add_argument("--raw", required=True, help="raw-log root (RAW/<table>/dt=D/)")
    parser.add_argument("--work", required=True, help=work_help)
    return parser


def add_shared_flags(parser, unit: str) -> None:
    """--eval and --force (`unit`: what --force redoes, a window or a date)."""
    parser.add_argument("--eval", choices=("auto", "next-day", "holdout"), default="auto",
                        help="evaluate on the next day, on held-out users of the last day, or "
                             "(auto) the next day when its raw logs exist (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help=f"redo a {unit} already done")
    parser.add_argument("--landed", action="store_true",
                        help="the last day's raw logs are complete, though they carry no _SUCCESS "
                             "markers and no later day has begun (docs/RAW_LOGS.md)")


def not_landed(raw, day: str, landed: bool) -> str | None:
    """Why a job must not train on `day` yet (its raw logs may still be landing), or None; a day
    the user says has landed (--landed) is taken as complete."""
    reason = None if landed else incomplete_reason(raw, day)
    if reason is None:
        return None
    return f"{reason}; rerun once they have landed (or with --landed, if they are complete)"


def single_flight(job: str, work, body) -> int:
    """body()'s exit code, run while holding WORK's lock; EXIT_ERROR, naming the holder, when
    another job has it (two runs on one work directory would both publish and race on the manifest),
    and naming the file when a manifest or record it reads is damaged."""
    try:
        with layout.hold_lock(layout.lock_file(work), f"dupn {job}"):
            return body()
    except (layout.LockHeld, layout.DamagedFile) as err:
        print(f"dupn {job}: {err}", file=sys.stderr)
        return EXIT_ERROR


def finish_publishing(work, date: str, log=print) -> int | None:
    """Completes a publish of `date` that a crash interrupted (its record says "publishing"):
    publishes the run again (idempotent) and records it; EXIT_OK then, None when none is pending."""
    from pipeline.evaluation.metrics import write_metrics
    record = pub.dated_manifest(work)["dates"].get(date)
    if not record or record.get("status") != "publishing":
        return None
    pending = record.pop("publishing")
    run_dir = Path(record["run"])
    log(f"{date}: finishing the publish of {run_dir.name} that was interrupted")
    target = pub.publish(run_dir, work, run_dir.name, pending["keep"])
    record.update({"status": "published", "published": True, "model": str(target)})
    if record.get("metrics"):
        write_metrics(eval_file(work, evaluation_name(record["inputs"]["eval"])), record["metrics"])
    pub.record_date(work, date, {k: v for k, v in record.items() if k != "date"})
    log(f"{date}: published {target}")
    return EXIT_OK


def already_done(work, date: str) -> dict | None:
    """The manifest record of `date` if its job finished (published or refused), else None."""
    record = pub.dated_manifest(work)["dates"].get(date)
    return record if record and record.get("status") in DONE else None


def refuse_drift(work, date: str, kind: str, examples, config, model) -> int | None:
    """EXIT_DRIFT, with the date recorded as "drift" and the reasons, when the day's examples
    leave the drift gate's bounds (pipeline/jobs/drift.py); None when it may be trained on.
    A drift record is not a done date: the rerun checks again (after the logs were fixed, or
    with --set drift.enabled=false to accept the day)."""
    from pipeline.jobs.drift import check_day
    from pipeline.training.train import day_stats
    reasons, compared = check_day(date, lambda d: day_stats(examples, d), config.drift)
    if not reasons:
        return None
    reason = "drift: " + "; ".join(reasons)
    pub.record_date(work, date, {"kind": kind, "status": "drift", "published": False,
                                 "reason": reason, "drift": {**compared, "reasons": reasons},
                                 "model": str(model)})
    print(f"dupn {kind}: {date}: not trained on, its examples leave the drift bounds: "
          f"{'; '.join(reasons)} (recorded in the manifest; --set drift.enabled=false accepts "
          f"the day)", file=sys.stderr)
    return EXIT_DRIFT


def evaluation_name(info: dict) -> str:
    """File stem under WORK/eval: the evaluated day, marked when it is a held-out share."""
    return info["date"] if info["data"] == "next day" else f"{info['date']}-holdout"


def train_evaluate_publish(*, work, date: str, kind: str, config, run_dir, data, evaluation: dict,
                           eval_info: dict, raw, warm_start=None, compare_with=None, log=print) -> int:
    """Trains run_dir, evaluates, publishes if the gate allows, records the date; returns the exit code.

    Args:
      data: pipeline.training.train.TrainingData; evaluation: {task: files}; eval_info: what they are.
      warm_start: model dir the run begins from (daily: the model in service).
      compare_with: model dir whose metrics on the same examples the new ones must not fall
        more than trainer.publish_margin and their standard error below (daily: the model in
        service; publish.gate); None: only the finiteness check.
    """
    from features.contract import Contract
    from pipeline.training.checkpoints import load_model
    from pipeline.evaluation.evaluate import evaluate_model, read_oracle
    from pipeline.evaluation.metrics import write_metrics
    from pipeline.training.summaries import log_evaluation
    from pipeline.training.train import train

    work, run_dir = Path(work), Path(run_dir)
    started = time.monotonic()
    record = {"kind": kind, "status": "failed", "published": False, "run": str(run_dir),
              "inputs": {"raw": str(raw), "train": {**data.describe, "samples": data.samples,
                                                    "samples_by_task": data.samples_by_task},
                         "eval": {**eval_info, "tasks": sorted(evaluation)}},
              "warm_start": str(warm_start) if warm_start else None}
    try:
        run = train(config, data, run_dir, warm_start=warm_start, log=log)
        record.update({"steps": run["steps"], "global_step": run["global_step"],
                       "resumed_from": run["resumed_from"], "training": run["final"]})
        # The last training metrics count too: a NaN loss means NaN weights.
        reasons = [f"training {k} is {v}" for k, v in run["final"].items()
                   if isinstance(v, float) and not math.isfinite(v)]
        oracle = read_oracle(raw, eval_info["date"]) if raw else None
        batch = config.trainer.batch_size
        _, model = load_model(run_dir)
        try:
            new = evaluate_model(model, Contract.from_config(config), evaluation, batch, oracle)
            record["metrics"] = new
        except ValueError as err:   # e.g. NaN scores, which no metric can rank
            new = None
            reasons.append(f"evaluation of the new model failed: {err}")
        previous = None
        if compare_with:
            old_config, old_model = load_model(compare_with)
            heads = {h.name for h in old_config.model.heads}
            previous = evaluate_model(old_model, Contract.from_config(old_config),
                                      {t: f for t, f in evaluation.items() if t in heads}, batch, oracle)
            record["previous_metrics"] = previous
            record["previous_model"] = str(compare_with)
        if new is not None:
            reasons += pub.gate(new, previous, config.trainer.publish_margin,
                                config.trainer.publish_metric)
    except Exception as err:   # recorded, so the manifest says what happened to the date
        record.update({"reason": f"{type(err).__name__}: {err}",
                       "seconds": round(time.monotonic() - started, 1)})
        pub.record_date(work, date, record)
        traceback.print_exc()
        log(f"{date}: failed: {err}")
        return EXIT_ERROR
    if reasons:
        record.update({"status": "refused", "reason": "; ".join(reasons), "model": str(compare_with)})
        in_service = previous
        code = EXIT_REFUSED
        log(f"{date}: not published ({record['reason']}); the model in service stays")
    else:
        record["reason"] = ("first model" if previous is None else
                            f"no headline metric more than {config.trainer.publish_margin} and its "
                            "standard error below the previous model's")
        # Intent first: a crash between here and the final record leaves "publishing", which the
        # next run completes (finish_publishing) instead of taking the new model for the old one.
        pub.record_date(work, date, {**record, "status": "publishing",
                                     "publishing": {"keep": config.trainer.keep_published}})
        target = pub.publish(run_dir, work, run_dir.name, config.trainer.keep_published)
        record.update({"status": "published", "published": True, "model": str(target)})
        in_service = new
        code = EXIT_OK
        log(f"{date}: published {target}")
    if in_service is not None:
        write_metrics(eval_file(work, evaluation_name(eval_info)), in_service)
        log_evaluation(work, evaluation_name(eval_info), in_service)   # TensorBoard's daily view
    record["seconds"] = round(time.monotonic() - started, 1)
    pub.record_date(work, date, record)
    return code


def check_same_contract(config, reference, source: str) -> None:
    """Raises ValueError when config's model or features differ from reference's (no warm start then)."""
    from configs.loader import to_dict
    mine, theirs = to_dict(config), to_dict(reference)
    differing = [f"{section}.{key}" for section in ("model", "features")
                 for key in mine[section] if mine[section][key] != theirs[section][key]]
    if config.data.sequence_length != reference.data.sequence_length:
        differing.append("data.sequence_length")
    if differing:
        raise ValueError(f"the configuration differs from {source} in {', '.join(differing)}: "
                         "a warm start needs the same network and features")
