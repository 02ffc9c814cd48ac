"""The multi-task experiment: each task trained alone against all of them together.

One run per task with only that task's head, and one run with every head, all on the same
window; each run's checkpoints (CURVE_POINTS evenly spaced along its steps, plus the untrained
start) are evaluated on the same day, giving the test metric over training steps, one panel per
task with the two curves.
"""
from __future__ import annotations

import math

import pandas as pd

from pipeline.experiments import plots
from pipeline.experiments.run import METRIC, Setup, headline, train_run, with_heads

CURVE_POINTS = 6     # checkpoints along a run, all kept


def run(setup: Setup):
    """Returns (table, png): rows of setting (alone / together), task, step, metric, value."""
    from pipeline.training import train as training
    tasks = setup.options.get("tasks") or training.head_tasks(setup.config)
    unknown = [t for t in tasks if t not in METRIC]
    if unknown:
        raise ValueError(f"unknown tasks {unknown} (tasks: {', '.join(METRIC)})")
    settings = [("alone", [t]) for t in tasks] + [("together", list(tasks))]
    rows = []
    for setting, run_tasks in settings:
        name = "together" if setting == "together" else f"alone-{run_tasks[0]}"
        config = with_heads(setup.config, run_tasks)
        samples = training.range_data(setup.examples, setup.train_start, setup.train_end,
                                      run_tasks).samples
        steps = training.target_steps(samples, config.trainer)
        # Evenly spaced checkpoints, every one kept: the points of the curve.
        config.trainer.checkpoint_every_steps = max(1, math.ceil(steps / CURVE_POINTS))
        run_dir = setup.runs_dir("multitask") / name
        trained, seconds = train_run(setup, config, run_dir, run_tasks,
                                     keep_checkpoints=CURVE_POINTS + 1)
        points = evaluate_checkpoints(setup, config, run_dir, run_tasks)
        for step, result in points:
            for task in run_tasks:
                rows.append({"setting": setting, "task": task, "step": step, "metric": METRIC[task],
                             "value": headline(task, result[task]), "n": result[task]["n"]})
        setup.log(f"{name}: {trained['steps']} steps in {seconds:.0f} s; at the end "
                  + ", ".join(f"{t} {headline(t, points[-1][1][t]):.4f}" for t in run_tasks))
    table = pd.DataFrame(rows, columns=["setting", "task", "step", "metric", "value", "n"])
    curves = {}
    for task in tasks:
        panel = f"{task} ({METRIC[task]})"
        for setting in ("alone", "together"):
            part = table[(table.task == task) & (table.setting == setting)].sort_values("step")
            curves.setdefault(panel, {})[setting] = (part["step"].to_list(), part["value"].to_list())
    png = plots.panels(curves, setup.out_dir / "multitask.png",
                       f"Each task alone vs all together: test metric on {setup.eval_date}",
                       xlabel="training steps", ylabels={f"{t} ({METRIC[t]})": METRIC[t] for t in tasks})
    return table, png


def evaluate_checkpoints(setup: Setup, config, run_dir, tasks) -> list[tuple[int, dict]]:
    """[(step, metrics)] of the untrained model and of each checkpoint kept in run_dir, by step.

    One model is built and traced; each checkpoint's weights are restored into it in turn.
    """
    import tensorflow as tf

    from features.contract import Contract
    from pipeline.evaluation import evaluate
    from pipeline.training.checkpoints import checkpoint_dir, new_model
    from pipeline.experiments.run import oracle
    contract = Contract.from_config(config)
    model = new_model(config, contract)
    predict = evaluate.predictor(model)
    files = evaluate.example_files(setup.examples, setup.eval_date, tasks)
    missing = [t for t in tasks if t not in files]
    if missing:
        raise FileNotFoundError(f"no {', '.join(missing)} examples on {setup.eval_date}")
    truth = oracle(setup)
    cache = {}

    def measure():
        return evaluate.evaluate_model(model, contract, files, config.trainer.batch_size, truth,
                                       setup.max_eval_examples, predict, cache)
    points = [(0, measure())]
    state = tf.train.get_checkpoint_state(str(checkpoint_dir(run_dir)))
    for path in state.all_model_checkpoint_paths if state else []:
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        points.append((int(path.rsplit("-", 1)[-1]), measure()))
    return sorted(points, key=lambda p: p[0])
