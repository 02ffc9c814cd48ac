"""`dupn backfill`: builds a window's examples, trains a model from scratch on them, evaluates, publishes.

    dupn backfill --raw RAW --work WORK --end D --days 10 [--config C] [--set k=v] [--force]

Builds the examples of [D - days + 1, D] (and of D + 1 when the raw logs have it) into
WORK/examples with the Beam job, trains WORK/runs/<D>-backfill from scratch (a crashed run
resumes when started again), evaluates on D + 1, or on the held-out share of D's users when
there is no next day, and publishes to WORK/published if every metric is finite. The window is
recorded in WORK/manifest.json under D; a rerun for the same D is a no-op. Exit codes: see
pipeline/jobs/jobrun.py and docs/OPERATIONS.md.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from configs.loader import ConfigError, add_config_args, config_from_args
from pipeline import layout
from pipeline.jobs import jobrun

NAME = "backfill"


def parse_args(argv):
    parser = jobrun.job_parser(NAME, __doc__, "work directory")
    parser.add_argument("--end", required=True, help="last day of the window, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=10, help="days in the window (default: %(default)s)")
    jobrun.add_shared_flags(parser, "window")
    add_config_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return jobrun.single_flight(NAME, args.work, lambda: run(args))


def run(args) -> int:
    log = lambda message: print(f"dupn backfill: {message}", flush=True)  # noqa: E731
    work, raw, end = Path(args.work), Path(args.raw), args.end
    from pipeline.training.train import head_tasks
    try:
        if args.days < 1:
            raise ValueError(f"--days {args.days}: at least 1")
        layout.parse_day(end, "--end")   # before shift(), so that the message names the flag
        window = layout.days_between(layout.shift(end, 1 - args.days), end)
        config = config_from_args(args)
    except (ConfigError, ValueError) as err:
        print(f"dupn backfill: {err}", file=sys.stderr)
        return jobrun.EXIT_USAGE
    finished = None if args.force else jobrun.finish_publishing(work, end, log)
    if finished is not None:
        return finished
    done = jobrun.already_done(work, end)
    if done and not args.force:
        log(f"{end} already done ({done['kind']}, {done['status']}: {done.get('reason', '')}); "
            "nothing to do (--force redoes it)")
        return jobrun.EXIT_OK

    from pipeline.jobs.daydata import (ensure_examples, next_day_usable, raw_has_day, run_config,
                                       training_and_evaluation)
    missing = [d for d in window if not raw_has_day(raw, d)]
    if missing:
        print(f"dupn backfill: {raw}: no raw logs for {', '.join(missing)}", file=sys.stderr)
        return jobrun.EXIT_ERROR
    landing = jobrun.not_landed(raw, end, args.landed)   # the days before it have a later day
    if landing:
        print(f"dupn backfill: {landing}", file=sys.stderr)
        return jobrun.EXIT_ERROR
    run_dir = layout.run_dir(work, f"{end}-{NAME}")
    split_dir = layout.holdout_dir(work, end)
    if args.force:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(split_dir, ignore_errors=True)
    examples = layout.examples_dir(work)
    try:
        build_config = run_config(config, run_dir)
        following = layout.shift(end)
        use_next = next_day_usable(raw, end, args.eval, log)
        ensure_examples(raw, examples, window + ([following] if use_next else []), build_config, log)
        data, evaluation, eval_info = training_and_evaluation(
            raw, examples, end, head_tasks(config), config.data.holdout_share, split_dir,
            first_day=window[0], evaluation=args.eval)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"dupn backfill: {err}", file=sys.stderr)
        return jobrun.EXIT_ERROR
    log(f"{window[0]}..{end}: {data.samples} training samples, evaluation on "
        f"{'day ' + eval_info['date'] if eval_info['data'] == 'next day' else 'held-out users'}")
    return jobrun.train_evaluate_publish(
        work=work, date=end, kind=NAME, config=config, run_dir=run_dir, data=data,
        evaluation=evaluation, eval_info=eval_info, raw=raw, log=log)


if __name__ == "__main__":
    sys.exit(main())
