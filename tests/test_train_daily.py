"""Backfill and daily jobs on synthetic raw logs: backfill publishes; the daily run warm-starts from the
published model (weights, optimizer slots, step) and moves it; a rerun of a done date is a no-op; the
publish gate keeps the old model when the new one is NaN."""

import numpy as np
import pytest

from pipeline.jobs import backfill
from pipeline.jobs import daily
from pipeline.jobs import jobrun
from pipeline.training.checkpoints import load_model, variables_digest
from pipeline.layout import read_json
from train_helpers import DAYS, config_args, copy_work


def record(work, date):
    return read_json(work / "manifest.json")["dates"][date]


def latest(work):
    return (work / "published" / "LATEST").read_text().strip()


def test_backfill_builds_trains_evaluates_on_the_next_day_and_publishes(shared_work):
    work, raw = shared_work
    entry = record(work, DAYS[1])
    assert entry["kind"] == "backfill" and entry["status"] == "published" and entry["published"]
    assert entry["inputs"]["train"]["start"] == DAYS[0] and entry["inputs"]["train"]["end"] == DAYS[1]
    assert entry["inputs"]["eval"] == {"data": "next day", "date": DAYS[2], "tasks": ["ctr", "l2r", "power"]}
    assert entry["steps"] > 0 and entry["warm_start"] is None
    assert latest(work) == f"{DAYS[1]}-backfill"
    published = work / "published" / latest(work)
    assert sorted(p.name for p in (published / "checkpoints").iterdir()) == [
        "checkpoint", f"ckpt-{entry['steps']}.data-00000-of-00001", f"ckpt-{entry['steps']}.index"]
    assert "sequence_length: 6" in (published / "config.yaml").read_text()
    evaluation = read_json(work / "eval" / f"{DAYS[2]}.json")
    assert evaluation["ctr"] == entry["metrics"]["ctr"] and 0 <= evaluation["ctr"]["auc"] <= 1
    assert "oracle_auc" in evaluation["ctr"]   # the synthetic generator's truth, joined
    for day in DAYS[:3]:   # the window and the evaluation day were built by the Beam job
        assert (work / "examples" / "_stats" / f"dt={day}.json").exists()


def test_backfill_rerun_is_a_noop(shared_work, capsys):
    work, raw = shared_work
    before = (work / "manifest.json").read_text()
    assert backfill.main(["--raw", str(raw), "--work", str(work), "--end", DAYS[1], "--days", "2",
                          *config_args()]) == 0
    assert f"{DAYS[1]} already done (backfill, published" in capsys.readouterr().out
    assert (work / "manifest.json").read_text() == before


@pytest.fixture(scope="module")
def daily_work(tmp_path_factory):
    return copy_work(tmp_path_factory.mktemp("daily"))


def test_daily_warm_starts_from_the_published_model_and_moves_it(daily_work):
    work, raw = daily_work
    previous = work / "published" / latest(work)
    _, before = load_model(previous, with_optimizer=True)
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[2],
                       "--set", "trainer.publish_margin=1.0"])
    assert code == jobrun.EXIT_OK
    run_dir = work / "runs" / f"{DAYS[2]}-daily"
    run = read_json(run_dir / "run.json")
    # It began exactly where yesterday's model ended: weights, optimizer slots and step.
    assert run["warm_start"].startswith(str(previous / "checkpoints" / "ckpt-"))
    assert run["initial_global_step"] == int(before.optimizer.iterations.numpy())
    assert run["initial_digest"]["model"] == pytest.approx(
        sum(variables_digest(before.trainable_variables).values()), rel=1e-9)
    assert run["initial_digest"]["optimizer"] == pytest.approx(
        sum(variables_digest(before.optimizer.variables).values()), rel=1e-9)
    assert run["global_step"] == run["initial_global_step"] + run["steps"] and run["steps"] > 0
    # ... and training moved it.
    _, after = load_model(run_dir)
    moved = [np.max(np.abs(a.numpy() - b.numpy()))
             for a, b in zip(after.trainable_variables, before.trainable_variables)]
    assert max(moved) > 1e-4
    entry = record(work, DAYS[2])
    assert entry["status"] == "published" and entry["kind"] == "daily"
    assert entry["inputs"]["eval"]["data"] == "next day" and entry["inputs"]["eval"]["date"] == DAYS[3]
    assert set(entry["previous_metrics"]) == set(entry["metrics"]) == {"ctr", "l2r", "power"}
    assert latest(work) == f"{DAYS[2]}-daily"
    assert read_json(work / "eval" / f"{DAYS[3]}.json")["ctr"] == entry["metrics"]["ctr"]
    assert (work / "examples" / "_stats" / f"dt={DAYS[3]}.json").exists()   # built for evaluation


def test_daily_rerun_of_a_done_date_is_a_noop(daily_work, capsys):
    work, raw = daily_work
    before = (work / "manifest.json").read_text()
    assert daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[2]]) == jobrun.EXIT_OK
    assert f"{DAYS[2]} already done (published" in capsys.readouterr().out
    assert (work / "manifest.json").read_text() == before


def test_daily_gate_keeps_the_model_in_service_when_the_new_one_is_nan(daily_work):
    work, raw = daily_work
    in_service = latest(work)
    # No raw logs after the last day: evaluation on the day's held-out users.
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[3],
                       "--set", "trainer.learning_rate=1e30"])
    assert code == jobrun.EXIT_REFUSED
    entry = record(work, DAYS[3])
    assert entry["status"] == "refused" and entry["published"] is False
    assert "training loss is nan" in entry["reason"]
    assert entry["inputs"]["eval"]["data"] == "held-out users"
    assert latest(work) == in_service and entry["model"].endswith(in_service)
    # The held-out users were not trained on; the model in service was scored on them.
    held_out = read_json(work / "eval" / f"{DAYS[3]}-holdout.json")
    assert held_out == entry["previous_metrics"] and np.isfinite(held_out["ctr"]["log_loss"])
    counts = read_json(work / "holdout" / f"dt={DAYS[3]}" / "counts.json")
    assert counts["holdout"]["ctr"] == held_out["ctr"]["n"]
    assert entry["inputs"]["train"]["samples"] == sum(counts["train"].values())


def test_daily_without_a_published_model_says_so(tmp_path, capsys):
    code = daily.main(["--raw", str(tmp_path), "--work", str(tmp_path / "work"), "--date", DAYS[0]])
    assert code == jobrun.EXIT_NO_MODEL
    assert "no published model to fine-tune (run dupn backfill first)" in capsys.readouterr().err
