"""TensorBoard logs of training and evaluation, read back from the event files; the progress bar
only on a terminal."""
import io
from pathlib import Path

import pytest
import tensorflow as tf

from pipeline.training import summaries
from pipeline.layout import read_json
from train_helpers import DAYS


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every event file under `folder`."""
    found: dict[str, dict[int, float]] = {}
    files = sorted(Path(folder).rglob("events.out.tfevents.*"))
    assert files, f"no event files under {folder}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, {})[event.step] = number
    return found


def test_a_training_run_writes_loss_task_metrics_weights_rate_and_speed(shared_work):
    work, _ = shared_work
    record = read_json(work / "manifest.json")["dates"][DAYS[1]]
    logged = scalars(Path(record["run"]) / "tensorboard")
    for tag in ("loss", "ctr/loss", "l2r/loss", "power/loss", "ctr/loss_weight", "power/loss_weight",
                "learning_rate", "examples_per_second"):
        assert tag in logged, f"{tag} missing; logged: {sorted(logged)}"
    assert any(t.startswith("ctr/") and t not in ("ctr/loss", "ctr/loss_weight") for t in logged)
    # Steps are the run's global steps, the last one the run's.
    assert max(logged["loss"]) == record["global_step"]
    from configs.loader import load_config
    rate = load_config(Path(record["run"]) / "config.yaml").trainer.learning_rate
    assert all(v == pytest.approx(rate) for v in logged["learning_rate"].values())
    assert all(v > 0 for v in logged["examples_per_second"].values())


def test_evaluation_writes_each_dates_metrics_under_the_work_directory(shared_work):
    work, _ = shared_work
    logged = scalars(work / "tensorboard" / "eval")
    step = summaries.date_step(DAYS[2])
    metrics = read_json(work / "eval" / f"{DAYS[2]}.json")
    assert logged["ctr/auc"][step] == pytest.approx(metrics["ctr"]["auc"])
    assert logged["ctr/gauc"][step] == pytest.approx(metrics["ctr"]["gauc"])
    assert logged["l2r/ndcg_at_10"][step] == pytest.approx(metrics["l2r"]["ndcg_at_10"])
    assert logged["power/accuracy"][step] == pytest.approx(metrics["power"]["accuracy"])
    assert "power/precision" not in logged   # lists are not scalars


def test_tags_group_by_task_and_dates_step_by_days():
    assert summaries.tag("ctr_auc") == "ctr/auc" and summaries.tag("loss") == "loss"
    assert summaries.tag("talent_loss_weight") == "talent/loss_weight"
    assert summaries.date_step("1970-01-02") == 1
    assert summaries.date_step("2026-12-01") - summaries.date_step("2026-11-30") == 1


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert summaries.progress_verbosity(Terminal()) == 1
    assert summaries.progress_verbosity(io.StringIO()) == 0
