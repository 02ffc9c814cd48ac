"""`dupn daily`: fine-tunes the model in service on one new day and publishes it only if it is no worse.

    dupn daily --raw RAW --work WORK --date D [--config C] [--set k=v] [--force]

Builds day D's examples (the Beam job, unless WORK/examples already holds the day), warm-starts
a new run WORK/runs/<D>-daily from the published model (weights, optimizer slots, global step),
trains one pass over D, and evaluates it and the model in service on the same examples: day
D+1 when the raw logs have it, else the held-out share of D's users (data.holdout_share; those
users are then left out of training); --eval chooses. Publishes only if every metric is finite
and no task's AUC (accuracy for power) falls below the previous model's by more than
trainer.publish_margin and more than its standard error on that day's data.
A day whose statistics leave the drift bounds (config section drift) is not trained on (exit 5).
A date already done is a no-op. Exit codes: see pipeline/jobs/jobrun.py and docs/OPERATIONS.md.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from configs.loader import ConfigError, add_config_args, load_config
from pipeline import layout
from pipeline.jobs import jobrun
from pipeline.jobs.publish import current_model

NAME = "daily"


def parse_args(argv):
    parser = jobrun.job_parser(NAME, __doc__, "work directory (examples/, runs/, published/)")
    parser.add_argument("--date", required=True, help="the new day, YYYY-MM-DD")
    jobrun.add_shared_flags(parser, "date")
    add_config_args(parser, default=None)
    parser.epilog += "\n\n--config defaults to the published model's own configuration."
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return jobrun.single_flight(NAME, args.work, lambda: run(args))


def run(args) -> int:
    import datetime as dt
    log = lambda message: print(f"dupn daily: {message}", flush=True)  # noqa: E731
    work, raw, date = Path(args.work), Path(args.raw), args.date
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        print(f"dupn daily: --date {date}: expected YYYY-MM-DD", file=sys.stderr)
        return jobrun.EXIT_USAGE
    finished = None if args.force else jobrun.finish_publishing(work, date, log)
    if finished is not None:
        return finished
    done = jobrun.already_done(work, date)
    if done and not args.force:
        log(f"{date} already done ({done['status']}: {done.get('reason', '')}); nothing to do "
            "(--force redoes it)")
        return jobrun.EXIT_OK
    current = current_model(work)
    if current is None:
        print(f"dupn daily: {layout.published_root(work)}: no published model to fine-tune "
              "(run dupn backfill first)", file=sys.stderr)
        return jobrun.EXIT_NO_MODEL

    from pipeline.training.checkpoints import load_config_of
    from pipeline.jobs.daydata import (ensure_examples, next_day_usable, raw_has_day, run_config,
                                       training_and_evaluation)
    from pipeline.training.train import head_tasks
    try:
        published_config = load_config_of(current)
        config = load_config(args.config or current / "config.yaml", args.overrides)
        jobrun.check_same_contract(config, published_config, f"the published model {current}")
    except (ConfigError, ValueError) as err:
        print(f"dupn daily: {err}", file=sys.stderr)
        return jobrun.EXIT_USAGE
    if not raw_has_day(raw, date):
        print(f"dupn daily: {raw}: no raw logs for {date} (no {layout.raw_dir('', '<table>', date)}/)", file=sys.stderr)
        return jobrun.EXIT_ERROR
    landing = jobrun.not_landed(raw, date, args.landed)
    if landing:   # a model trained on part of a day would be published as the day's
        print(f"dupn daily: {landing}", file=sys.stderr)
        return jobrun.EXIT_ERROR
    run_dir = layout.run_dir(work, f"{date}-{NAME}")
    split_dir = layout.holdout_dir(work, date)
    if args.force:   # a forced redo is a new run on a new split, not a resume of the old one
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(split_dir, ignore_errors=True)
    examples = layout.examples_dir(work)
    tasks = head_tasks(config)
    try:
        # Before run_config writes the run's config: a refused --eval leaves no run to pin it.
        use_next = next_day_usable(raw, date, args.eval, log)
        build_config = run_config(config, run_dir)
        wanted = [date] + ([layout.shift(date)] if use_next else [])
        ensure_examples(raw, examples, wanted, build_config, log)
        drift = jobrun.refuse_drift(work, date, NAME, examples, config, current)
        if drift is not None:
            return drift
        data, evaluation, eval_info = training_and_evaluation(
            raw, examples, date, tasks, config.data.holdout_share, split_dir, evaluation=args.eval)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"dupn daily: {err}", file=sys.stderr)
        return jobrun.EXIT_ERROR
    log(f"{date}: {data.samples} training samples, evaluation on "
        f"{'day ' + eval_info['date'] if eval_info['data'] == 'next day' else 'held-out users'}, "
        f"warm start from {current}")
    return jobrun.train_evaluate_publish(
        work=work, date=date, kind=NAME, config=config, run_dir=run_dir, data=data,
        evaluation=evaluation, eval_info=eval_info, raw=raw, warm_start=current,
        compare_with=current, log=log)


if __name__ == "__main__":
    sys.exit(main())
