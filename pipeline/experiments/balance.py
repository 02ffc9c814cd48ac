"""The balance experiment: how the task losses are weighted (trainer.loss_balance).

fixed, uncertainty, gradnorm, dwa and pcgrad trained on the same window and evaluated on the same
day, each task's metric beside that task trained alone (gain > 0: the task profits from the
others; < 0: it pays for them, the seesaw), and each method's task weights over training
(balance_weights.png; pcgrad weights every task 1 and changes the gradients instead).
"""
from __future__ import annotations

import json

import pandas as pd

from pipeline.experiments import plots
from pipeline.experiments.run import Setup, versus_alone

METHODS = ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad")


def run(setup: Setup):
    """Returns (table, png): versus_alone's rows per method, then the weight rows (setting, task,
    step, weight); writes balance_weights.png too."""
    table, run_dirs, png = versus_alone(setup, "trainer.loss_balance", METHODS, "balance",
                                        "Loss balancing")
    weights = pd.concat([weight_rows(method, run_dir) for method, run_dir in run_dirs.items()],
                        ignore_index=True)
    curves = {method: {task: (part["step"].to_list(), part["weight"].to_list())
                       for task, part in weights[weights.setting == method].groupby("task", sort=False)}
              for method in run_dirs}
    plots.panels(curves, setup.out_dir / "balance_weights.png",
                 "Task loss weights over training (each checkpoint's latest step)",
                 xlabel="training steps", ylabels={m: "loss weight" for m in run_dirs})
    return pd.concat([table, weights], ignore_index=True), png


def weight_rows(method: str, run_dir) -> pd.DataFrame:
    """Rows of setting, task, step, weight from a run's history.json (its `<task>_loss_weight`
    metrics, logged at every checkpoint)."""
    from pipeline.training.train import HISTORY_FILE
    suffix = "_loss_weight"
    rows = [{"setting": method, "task": key.removesuffix(suffix), "step": entry["step"],
             "weight": value}
            for entry in json.loads((run_dir / HISTORY_FILE).read_text())
            for key, value in entry.items() if key.endswith(suffix)]
    if not rows:
        raise ValueError(f"{run_dir}: no <task>{suffix} metrics in {HISTORY_FILE}")
    return pd.DataFrame(rows)
