"""`dupn experiment NAME`: the paper's experiments on a work directory's examples, each writing
WORK/experiments/NAME.csv and NAME.png.

    ablation   the nine models on the same window, evaluated on the same day (Table 3 and a bar chart)
    multitask  each task trained alone against all together: test metric over steps, a panel per task
    transfer   shop-preference AUC against training time for RS, RA, RT, FT (from `dupn transfer`)
    attention  mean attention by behaviour type x time bucket; one user's attention under several queries
    sharing    hard, shared-bottom, mmoe and ple against each task alone; the experts' gate weights
    balance    fixed, uncertainty, gradnorm, dwa and pcgrad against each task alone; weights over training
    worlds     the ablation on every world of `dupn synth --world` and seed, from its own raw logs

The evaluation day is the last day with examples (--eval-date to choose); the models train on the
days before it (--train-days). --small keeps it quick for the demo and tests: the `small`
configuration unless --config is given, and at most SMALL_EVAL_EXAMPLES examples per task in
evaluation. (Fewer training days are no cheaper way to the same answer: three days seen three
times leave dupn-all at CTR AUC 0.55 where ten days seen once give 0.62; docs/QUALITY.md.)
Training goes through pipeline.training.train; runs land in WORK/experiments/runs/NAME/ and a finished run
is reused when the experiment is run again with the same configuration.
"""
from __future__ import annotations

import copy
import importlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import pandas as pd

from configs.loader import ConfigError, load_config
from configs.schema import Config, HeadConfig
from pipeline import layout
from pipeline.dispatch import command_parser

EXPERIMENTS = ("ablation", "multitask", "transfer", "attention", "sharing", "balance", "worlds")
SMALL_EVAL_EXAMPLES = 5000
DEFAULT_TRAIN_DAYS = 10      # the paper's window


@dataclass
class Setup:
    """What every experiment shares: where things are, the configuration, the window and the day."""
    work: Path
    config: Config
    small: bool
    eval_date: str
    train_start: str
    train_end: str
    max_eval_examples: int | None = None
    options: dict = field(default_factory=dict)   # the experiment's own flags (variants, tasks, ...)
    log: callable = print
    runs_tag: str = ""     # runs kept apart under runs/NAME/TAG (the worlds' training seeds)

    @property
    def examples(self) -> Path:
        return layout.examples_dir(self.work)

    @property
    def out_dir(self) -> Path:
        return layout.experiments_dir(self.work)

    def chart_path(self, name: str) -> Path:
        """OUT/NAME.png, or OUT/NAME-TAG.png with a runs_tag (each training seed its own chart)."""
        return self.out_dir / (f"{name}-{self.runs_tag}.png" if self.runs_tag else f"{name}.png")

    def runs_dir(self, name: str) -> Path:
        """OUT/runs/NAME, or OUT/runs/NAME/TAG with a runs_tag."""
        runs = self.out_dir / "runs" / name
        return runs / self.runs_tag if self.runs_tag else runs


def example_days(examples_root) -> list[str]:
    """Days whose examples are complete (the Beam job writes EXAMPLES/_stats/dt=D.json last), sorted."""
    return layout.stats_days(examples_root)


def choose_window(days: list[str], eval_date: str | None, train_days: int) -> tuple[str, str, str]:
    """(evaluation day, first and last training day): the train_days days just before the
    evaluation day that all have examples (fewer if fewer exist, never a gap)."""
    if not days:
        raise FileNotFoundError("no examples (no EXAMPLES/_stats/dt=D.json): run dupn build-examples "
                                "or dupn backfill first")
    eval_date = eval_date or days[-1]
    if eval_date not in days:
        raise FileNotFoundError(f"no examples on {eval_date} (days with examples: {days[0]}..{days[-1]})")
    have = set(days)
    window = []
    day = eval_date
    while len(window) < train_days:
        day = layout.shift(day, -1)
        if day not in have:
            break
        window.append(day)
    if not window:
        raise FileNotFoundError(f"no examples on the day before {eval_date} to train on")
    return eval_date, window[-1], window[0]


def with_variant(config: Config, variant: str) -> Config:
    out = copy.deepcopy(config)
    out.model.variant = variant
    return out


def with_heads(config: Config, tasks) -> Config:
    """The configuration with only the heads of `tasks` (a configured head keeps its settings;
    a task without one gets the default head)."""
    out = copy.deepcopy(config)
    known = {h.name: h for h in config.model.heads}
    out.model.heads = [copy.deepcopy(known.get(t, HeadConfig(t))) for t in tasks]
    return out


def train_run(setup: Setup, config: Config, run_dir: Path, tasks=None, **train_options):
    """Trains `config` on the setup's window into run_dir with pipeline.training.train; returns (run, seconds).

    train_options go to pipeline.training.train.train (keep_checkpoints).
    A finished run of the same configuration in run_dir is reused; one of another configuration
    (an earlier experiment with other settings) is replaced.
    """
    from pipeline.training import train as training
    tasks = tasks or training.head_tasks(config)
    data = training.range_data(setup.examples, setup.train_start, setup.train_end, tasks)
    started = time.monotonic()
    try:
        run = training.train(config, data, run_dir, log=lambda m: None, **train_options)
    except ValueError as err:
        if "another configuration" not in str(err):
            raise
        shutil.rmtree(run_dir)
        run = training.train(config, data, run_dir, log=lambda m: None, **train_options)
    return run, time.monotonic() - started


def evaluate_run(setup: Setup, run_dir: Path, tasks=None) -> dict:
    """Metrics (evaluate.evaluate_model) of a run's latest checkpoint on the evaluation day."""
    from features.contract import Contract
    from pipeline.evaluation import evaluate
    from pipeline.training.checkpoints import load_model
    config, model = load_model(run_dir)
    tasks = tasks or [h.name for h in config.model.heads]
    files = evaluate.example_files(setup.examples, setup.eval_date, tasks)
    return evaluate.evaluate_model(model, Contract.from_config(config), files,
                                   config.trainer.batch_size, oracle=oracle(setup),
                                   max_examples=setup.max_eval_examples)


def chosen(setup: Setup, known) -> list:
    """The options --variants picks among `known` (all of them by default), in the given order."""
    picked = setup.options.get("variants") or list(known)
    unknown = [v for v in picked if v not in known]
    if unknown:
        raise ValueError(f"unknown variants {unknown} (known: {', '.join(known)})")
    return picked


def versus_alone(setup: Setup, key: str, options, name: str, title: str):
    """The setup's configuration with `key` (e.g. "model.sharing") set to each chosen option, every
    configured head, trained and evaluated on the setup's window and day, beside each task trained
    alone (hard sharing, fixed weights); a bar chart of both in WORK/experiments/NAME.png.

    Returns (table, run dirs, png): table rows of setting, task, metric (the paper's), value, alone
    (the task's value alone), gain (value - alone), steps, train seconds; run dirs: option -> its
    run. The alone runs (WORK/experiments/runs/alone/TASK) and the setup's own configuration's run
    (WORK/experiments/runs/default) are shared by every experiment.
    """
    from pipeline.experiments import plots
    from pipeline.training import train as training
    section, field_name = key.split(".")
    settings = {}
    for option in chosen(setup, options):
        settings[option] = copy.deepcopy(setup.config)
        setattr(getattr(settings[option], section), field_name, option)
    tasks = training.head_tasks(setup.config)
    alone = {}
    for task in tasks:
        config = with_heads(setup.config, [task])
        config.model.sharing, config.model.esmm, config.trainer.loss_balance = "hard", False, "fixed"
        run_dir = setup.runs_dir("alone") / task
        train_run(setup, config, run_dir, [task])
        alone[task] = headline(task, evaluate_run(setup, run_dir, [task])[task])
        setup.log(f"{task} alone: {alone[task]:.4f}")
    # The option the setup's configuration already has is that configuration itself: one run,
    # WORK/experiments/runs/default, shared by the experiments (sharing's hard is balance's fixed).
    unchanged = getattr(getattr(setup.config, section), field_name)
    rows, run_dirs = [], {}
    for option, config in settings.items():
        run_dir = run_dirs[option] = (setup.runs_dir("default") if option == unchanged
                                      else setup.runs_dir(name) / option)
        trained, seconds = train_run(setup, config, run_dir)
        result = evaluate_run(setup, run_dir)
        for task in tasks:
            value = headline(task, result[task])
            rows.append({"setting": option, "task": task,
                         "metric": METRIC[task], "value": value,
                         "alone": alone[task], "gain": value - alone[task],
                         "steps": trained["steps"], "train seconds": round(seconds, 1)})
        setup.log(f"{option}: {trained['steps']} steps in {seconds:.0f} s; " + ", ".join(
            f"{r['task']} {r['value']:.4f} ({r['gain']:+.4f})" for r in rows if r["setting"] == option))
    table = pd.DataFrame(rows)
    png = plots.bar_panels(metric_chart(table), setup.out_dir / f"{name}.png",
                           f"{title} vs each task alone: trained {setup.train_start}.."
                           f"{setup.train_end}, tested {setup.eval_date}")
    return table, run_dirs, png


def metric_chart(table) -> "pd.DataFrame":
    """versus_alone's table as a chart for plots.bar_panels: a row per setting plus `alone`, a
    column per task's metric."""
    chart = table.pivot(index="setting", columns="task", values="value")
    chart = chart.loc[list(dict.fromkeys(table["setting"]))]
    alone = table.drop_duplicates("task").set_index("task")["alone"]
    chart.loc["alone"] = alone
    metric = table.drop_duplicates("task").set_index("task")["metric"]
    return chart.rename(columns=lambda t: f"{t} {metric[t]}")


def oracle(setup: Setup):
    """The generator's click probabilities on the evaluation day, if the raw root is known."""
    from pipeline.layout import find_raw
    from pipeline.evaluation.evaluate import read_oracle
    raw = setup.options.get("raw") or find_raw(setup.work)
    return read_oracle(raw, setup.eval_date) if raw else None


# The paper's metric of each task: accuracy for purchasing power, AUC for the others.
METRIC = {"ctr": "AUC", "l2r": "AUC", "talent": "AUC", "power": "accuracy", "shop": "AUC"}


def headline(task: str, values: dict):
    """A task's METRIC in evaluate's results."""
    return values.get(METRIC[task].lower())


def parse_args(argv):
    parser = command_parser("dupn experiment", __doc__)
    parser.add_argument("name", choices=EXPERIMENTS)
    parser.add_argument("--work", required=True, help="work directory (examples/ from dupn backfill; "
                        "worlds: any directory, it writes its own data under WORK/worlds/)")
    parser.add_argument("--small", action="store_true", help="quick: few evaluation examples, the "
                        "small configuration")
    parser.add_argument("--eval-date", help="evaluation day (default: the last day with examples)")
    parser.add_argument("--train-days", type=int, help=f"training days before the evaluation day "
                        f"(default: {DEFAULT_TRAIN_DAYS})")
    parser.add_argument("--raw", help="raw-log root with _oracle/ (default: from WORK/manifest.json)")
    parser.add_argument("--variants", help="comma-separated: ablation's models (default: all nine), "
                        "sharing's structures or balance's methods (default: all)")
    parser.add_argument("--tasks", help="multitask: comma-separated tasks (default: the configured heads)")
    parser.add_argument("--model", help="attention: model dir (default: the published model, else "
                        "the ablation's dupn-all run, else a new dupn-all run)")
    parser.add_argument("--worlds", help="worlds: comma-separated worlds (default: all)")
    parser.add_argument("--seeds", default="1,2", help="worlds: comma-separated seeds (default: 1,2)")
    parser.add_argument("--train-seeds", help="worlds: comma-separated training seeds (runtime.seed) "
                        "for every world seed, to tell a model's own noise from the world's "
                        "(default: each world trains with its own seed)")
    parser.add_argument("--users", type=int, default=1000, help="worlds: users per world (default: 1000)")
    parser.add_argument("--days", type=int, default=12, help="worlds: days of raw logs; the first is "
                        "the lookback, the last the evaluation day (default: 12)")
    parser.add_argument("--config", help="YAML file or name in configs/ (default: dupn; small with --small)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting (repeatable)")
    return parser.parse_args(argv)


def int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a list of integers") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda message: print(f"dupn experiment {args.name}: {message}", flush=True)  # noqa: E731
    work = Path(args.work)
    module = importlib.import_module(f"pipeline.experiments.{args.name}")
    # An experiment that generates its own data chooses its windows itself.
    own_data = getattr(module, "GENERATES_DATA", False)
    try:
        config = load_config(args.config or ("small" if args.small else "dupn"), args.overrides)
        train_days = args.train_days or DEFAULT_TRAIN_DAYS
        eval_date, start, end = ("", "", "") if own_data else \
            choose_window(example_days(layout.examples_dir(work)), args.eval_date, train_days)
        seeds = int_list("--seeds", args.seeds)
        train_seeds = int_list("--train-seeds", args.train_seeds) if args.train_seeds else None
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"dupn experiment {args.name}: {err}", file=sys.stderr)
        return 1
    options = {"variants": args.variants.split(",") if args.variants else None,
               "tasks": args.tasks.split(",") if args.tasks else None,
               "model": args.model, "raw": args.raw,
               "worlds": args.worlds.split(",") if args.worlds else None, "seeds": seeds,
               "train_seeds": train_seeds,
               "users": args.users, "days": args.days, "train_days": train_days}
    setup = Setup(work, config, args.small, eval_date, start, end,
                  SMALL_EVAL_EXAMPLES if args.small else None, options, log)
    if not own_data:
        log(f"training on {start}..{end}, evaluating on {eval_date}")
    started = time.monotonic()
    try:
        table, png = module.run(setup)
    except (FileNotFoundError, ValueError) as err:
        print(f"dupn experiment {args.name}: {err}", file=sys.stderr)
        return 1
    csv = setup.out_dir / f"{args.name}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False)
    log(f"{csv} and {png} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
