"""The worlds experiment: the ablation's models on every planted world of `dupn synth --world`, per seed.

For each world (--worlds, default all) and seed (--seeds, default 1,2): raw logs of --users users
(default 1000) over --days days (default 12) in WORK/worlds/<world>/seed<k>/raw (synth seed k,
runtime.seed k), examples from the Beam job for every day but the first (its lookback), then
the ablation (pipeline/experiments/ablation.py: same models, one pass over the same window,
equal steps) trained on the days before the last and evaluated on the last. Raw logs, examples
and runs are reused when the experiment runs again with the same arguments.

--train-seeds t1,t2 trains every world seed's models once per training seed (runtime.seed t, runs
in .../experiments/runs/ablation/train<t>/) on the same examples: the spread over training seeds
is the model's own noise, the spread over world seeds adds the world's.

Writes WORK/experiments/worlds.csv (one row per world, seed, model and training seed: the
ablation's columns), worlds_summary.csv (mean and spread, max - min over the runs, per world and
model) and worlds.png (a row of panels per world, bars with the runs' range).
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd

from pipeline.experiments import ablation, plots
from pipeline.experiments.run import DEFAULT_TRAIN_DAYS, Setup, choose_window, example_days
from pipeline.rawlogs.worlds import WORLDS

GENERATES_DATA = True        # run.main: no examples needed in WORK beforehand
START = "2026-11-01"
METRICS = [*ablation.COLUMNS.values(), "CTR oracle AUC", "CTR blind oracle AUC"]


def world_raw(raw: Path, world: str, seed: int, users: int, days: int, log) -> None:
    """Writes the world's raw logs unless raw already holds them for the same arguments."""
    from pipeline.rawlogs import synth
    wanted = {"world": world, "seed": seed, "users": users, "days": days, "start": START}
    marker = raw / "_synth.json"           # '_' folders and files are never read as tables
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    log(f"{world} seed {seed}: synth {users} users x {days} days")
    summary = synth.generate(raw, START, days=days, users=users, seed=seed, log=None, world=world)
    log(f"{world} seed {seed}: {summary['click_rate']:.1%} clicked, {summary['seconds']:.1f} s")
    marker.write_text(json.dumps(wanted))


def world_setup(setup: Setup, world: str, seed: int) -> Setup:
    """The setup of one world and seed: its own work dir, examples, window and configuration."""
    from pipeline.jobs.daydata import ensure_examples
    options = setup.options
    users, days = options.get("users") or 1000, options.get("days") or 12
    work = setup.work / "worlds" / world / f"seed{seed}"
    raw = work / "raw"
    world_raw(raw, world, seed, users, days, setup.log)
    config = copy.deepcopy(setup.config)
    config.runtime.seed = seed
    first = dt.date.fromisoformat(START)
    dates = [(first + dt.timedelta(days=d)).isoformat() for d in range(1, days)]
    ensure_examples(raw, work / "examples", dates, config, setup.log)
    eval_date, start, end = choose_window(example_days(work / "examples"), None,
                                          options.get("train_days") or DEFAULT_TRAIN_DAYS)
    return dataclasses.replace(setup, work=work, config=config, eval_date=eval_date, train_start=start,
                               train_end=end, options={**options, "raw": raw})


def with_train_seed(setup: Setup, train_seed: int) -> Setup:
    """The same world seed's setup training with runtime.seed train_seed, its runs kept apart."""
    config = copy.deepcopy(setup.config)
    config.runtime.seed = train_seed
    return dataclasses.replace(setup, config=config, runs_tag=f"train{train_seed}")


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (max - min) over the runs (world seeds x training seeds) of every metric, per
    world and model; `seeds` counts the runs."""
    groups = table.groupby(["world", "model"], sort=False)[METRICS]
    mean, spread = groups.mean(), groups.max() - groups.min()
    out = pd.concat([mean.add_suffix(" mean"), spread.add_suffix(" spread")], axis=1)
    out = out[[f"{m} {s}" for m in METRICS for s in ("mean", "spread")]]
    out.insert(0, "seeds", groups.size())
    return out.reset_index()


def plot(summary: pd.DataFrame, path: Path, title: str) -> Path:
    """A row of panels per world: the ablation's metrics per model, the seeds' range as error bars,
    the oracle and blind oracle as lines on the CTR panel."""
    rows = {}
    for world, part in summary.groupby("world", sort=False):
        part = part.set_index("model")
        metrics = list(ablation.COLUMNS.values())
        lines = {"oracle": part["CTR oracle AUC mean"].mean(),
                 "blind oracle": part["CTR blind oracle AUC mean"].mean()}
        rows[world] = (part[[f"{m} mean" for m in metrics]].set_axis(metrics, axis=1),
                       part[[f"{m} spread" for m in metrics]].set_axis(metrics, axis=1),
                       {metrics[0]: lines})
    return plots.error_bar_grid(rows, path, title)


def run(setup: Setup):
    """Returns (table, png): one row per world, seed and model; writes the summary beside it."""
    worlds = setup.options.get("worlds") or list(WORLDS)
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown:
        raise ValueError(f"unknown worlds {unknown} (known: {', '.join(WORLDS)})")
    seeds, train_seeds = setup.options.get("seeds") or [1, 2], setup.options.get("train_seeds")
    frames = []
    for world in worlds:
        for seed in seeds:
            one = world_setup(setup, world, seed)
            setup.log(f"{world} seed {seed}: training on {one.train_start}..{one.train_end}, "
                      f"evaluating on {one.eval_date}")
            for train_seed in train_seeds or [seed]:
                runs = one
                if train_seeds:
                    setup.log(f"{world} seed {seed}: training seed {train_seed}")
                    runs = with_train_seed(one, train_seed)
                table, _ = ablation.run(runs)
                frames.append(table.assign(world=world, seed=seed, **{"train seed": train_seed}))
    table = pd.concat(frames, ignore_index=True)
    first = ["world", "seed", "model", "train seed"]
    table = table[[*first, *[c for c in table.columns if c not in first]]]
    summary = summarise(table)
    setup.out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(setup.out_dir / "worlds_summary.csv", index=False)
    png = plot(summary, setup.out_dir / "worlds.png",
               f"Worlds: the ablation's models per world, mean and range over seeds "
               f"{','.join(map(str, seeds))}"
               + (f" x training seeds {','.join(map(str, train_seeds))}" if train_seeds else ""))
    return table, png
