"""Backfill and daily jobs on synthetic raw logs: backfill publishes; a daily run that fails is recorded
as failed (exit 1) and its rerun resumes it; the daily run warm-starts from the published model
(weights, optimizer slots, step, variable by variable) and moves it, and publishes through the
default margin; a rerun of a done date is a no-op; --force redoes the date in service, and a crash
while it republishes is finished by the next run; --eval next-day without the next day is an error;
after a rollback of LATEST the daily run fine-tunes the rolled-back model, and the publish gate keeps
it when the new one is NaN; a changed network and missing raw logs are refused before anything is
recorded."""

import numpy as np
import pytest

import tensorflow as tf

from features.contract import Contract
from pipeline.jobs import backfill
from pipeline.jobs import daily
from pipeline.jobs import jobrun
from pipeline.training import train as train_module
from pipeline.training.checkpoints import (RunCheckpoints, latest_checkpoint, load_model, make_optimizer,
                                           new_model, variables_digest)
from pipeline.layout import read_json
from train_helpers import DAYS, checkpoint_values, config_args, copy_work


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


class Crash(Exception):
    pass


def test_daily_failure_is_recorded_and_keeps_the_model_in_service(daily_work, monkeypatch):
    work, raw = daily_work
    in_service = latest(work)
    real_train = train_module.train

    def crash_after_first_checkpoint(*args, log, **kwargs):
        def crashing_log(message):
            log(message)
            if message.startswith("step "):     # logged once the checkpoint is written
                raise Crash("killed after the first checkpoint")
        return real_train(*args, log=crashing_log, **kwargs)

    monkeypatch.setattr(train_module, "train", crash_after_first_checkpoint)
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[2]])
    assert code == jobrun.EXIT_ERROR
    entry = record(work, DAYS[2])
    assert entry["status"] == "failed" and entry["published"] is False and entry["kind"] == "daily"
    assert entry["reason"] == "Crash: killed after the first checkpoint"
    assert entry["run"] == str(work / "runs" / f"{DAYS[2]}-daily")
    assert latest(work) == in_service
    assert latest_checkpoint(entry["run"]) is not None     # what the rerun resumes (next test)


def test_daily_warm_starts_from_the_published_model_and_moves_it(daily_work, capsys):
    work, raw = daily_work
    previous = work / "published" / latest(work)
    _, before = load_model(previous, with_optimizer=True)
    run_dir = work / "runs" / f"{DAYS[2]}-daily"
    stopped_at = latest_checkpoint(run_dir)    # the failed attempt's (test above)
    # The default publish margin (0.01 and the standard error): a real comparison.
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[2]])
    assert code == jobrun.EXIT_OK, capsys.readouterr().out[-2000:]
    assert f"resuming {run_dir} from {stopped_at.rsplit('/', 1)[1]}" in capsys.readouterr().out
    run = read_json(run_dir / "run.json")
    assert run["resumed_from"] == stopped_at
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
    assert entry["resumed_from"] == stopped_at
    assert "no headline metric more than 0.01 and its standard error below" in entry["reason"]
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


def test_daily_eval_next_day_without_the_next_day_is_an_error(daily_work, capsys):
    work, raw = daily_work
    before = (work / "manifest.json").read_text()
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[3], "--eval", "next-day"])
    assert code == jobrun.EXIT_ERROR
    assert "cannot evaluate on 2026-11-05" in capsys.readouterr().err
    assert (work / "manifest.json").read_text() == before      # nothing trained or recorded
    assert not (work / "runs" / f"{DAYS[3]}-daily").exists()    # nor a run begun with this config


def test_daily_force_redoes_the_date_in_service_and_a_crash_while_publishing_is_repaired(
        daily_work, capsys, monkeypatch):
    import os
    from pathlib import Path
    from pipeline.jobs.publish import current_model
    work, raw = daily_work
    name = f"{DAYS[2]}-daily"
    assert latest(work) == name
    old = checkpoint_values(latest_checkpoint(work / "published" / name))
    real_rename = os.rename

    def crash_once_the_old_copy_is_aside(source, target, *args, **kwargs):
        real_rename(source, target, *args, **kwargs)
        if Path(target).name.startswith(".replaced-"):
            raise Crash("killed while republishing")

    monkeypatch.setattr(os, "rename", crash_once_the_old_copy_is_aside)
    with pytest.raises(Crash):   # the margin off: this test is about --force, not the gate
        daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[2], "--force",
                    "--eval", "next-day", "--set", "trainer.publish_margin=1.0"])
    monkeypatch.setattr(os, "rename", real_rename)
    assert record(work, DAYS[2])["status"] == "publishing"
    # The model in service is still there to fine-tune from (the next daily would not exit 4).
    assert current_model(work) is not None and latest_checkpoint(current_model(work)) is not None
    capsys.readouterr()

    assert daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[2]]) == jobrun.EXIT_OK
    out = capsys.readouterr().out
    assert f"{DAYS[2]}: finishing the publish of {name} that was interrupted" in out
    assert "already done" not in out and "training samples" not in out
    entry = record(work, DAYS[2])
    assert entry["status"] == "published" and entry["published"] and latest(work) == name
    # A new run, not a resume of the earlier one: from step 0, warm-started from the model in service.
    assert entry["resumed_from"] is None and entry["steps"] > 0
    assert entry["warm_start"] == str(work / "published" / name)
    assert entry["inputs"]["eval"]["data"] == "next day" and entry["inputs"]["eval"]["date"] == DAYS[3]
    run = read_json(work / "runs" / name / "run.json")
    assert run["steps_this_call"] == run["steps"] == entry["steps"]
    # In service now: exactly the forced run's weights, which moved from the old copy's.
    new = checkpoint_values(latest_checkpoint(work / "published" / name))
    assert new.keys() == checkpoint_values(latest_checkpoint(work / "runs" / name)).keys() == old.keys()
    forced = checkpoint_values(latest_checkpoint(work / "runs" / name))
    assert [k for k in new if not np.array_equal(new[k], forced[k])] == []
    assert [k for k in new if k.startswith("model/") and not np.allclose(new[k], old[k])]
    assert not [p.name for p in (work / "published").iterdir() if p.name.startswith(".")]


def test_daily_after_a_rollback_fine_tunes_the_rolled_back_model_and_keeps_it_when_nan(daily_work):
    work, raw = daily_work
    # An operator rolls back to the backfill's model (docs/OPERATIONS.md: Publishing and rollback).
    in_service = f"{DAYS[1]}-backfill"
    (work / "published" / "LATEST").write_text(in_service + "\n")
    rolled_back = work / "published" / in_service
    # No raw logs after the last day: evaluation on the day's held-out users.
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", DAYS[3],
                       "--set", "trainer.learning_rate=1e30"])
    assert code == jobrun.EXIT_REFUSED
    entry = record(work, DAYS[3])
    assert entry["status"] == "refused" and entry["published"] is False
    assert "training loss is nan" in entry["reason"]
    assert "evaluation of the new model failed: auc: scores contain NaN" in entry["reason"]
    assert entry["inputs"]["eval"]["data"] == "held-out users"
    assert latest(work) == in_service and entry["model"] == str(rolled_back)
    # It fine-tuned, and was compared with, the rolled-back model, not the newest published one.
    assert entry["warm_start"] == entry["previous_model"] == str(rolled_back)
    run = read_json(work / "runs" / f"{DAYS[3]}-daily" / "run.json")
    assert run["warm_start"] == latest_checkpoint(rolled_back)
    assert run["initial_global_step"] == int(latest_checkpoint(rolled_back).rsplit("-", 1)[1])
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


def test_warm_start_restores_every_variable_of_the_source(shared_work, tmp_path):
    # Variable by variable: each weight and optimizer slot of the published checkpoint lands in the
    # variable of the same name (a sum of sums would not see two variables swapped).
    work, _ = shared_work
    published = work / "published" / latest(work)
    config, _ = load_model(published)
    model = new_model(config, Contract.from_config(config))
    checkpoints = RunCheckpoints(model, make_optimizer(config.trainer, model), tmp_path / "new")
    checkpoints.warm_start(published)
    assert checkpoints.steps_done == 0 and checkpoints.global_step > 0
    saved = tf.train.Checkpoint(model=model, optimizer=checkpoints.optimizer).save(str(tmp_path / "ws"))
    source, restored = checkpoint_values(latest_checkpoint(published)), checkpoint_values(saved)
    assert restored.keys() == source.keys() and len(source) > 40
    differ = [key for key in source if not np.array_equal(restored[key], source[key])]
    assert differ == []


def test_daily_refuses_a_fine_tune_that_changes_the_network(daily_work, capsys):
    work, raw = daily_work
    before = (work / "manifest.json").read_text()
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", "2026-11-05",
                       "--set", "model.lstm_units=16"])
    assert code == jobrun.EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert "differs from the published model" in err and "in model.lstm_units:" in err
    assert (work / "manifest.json").read_text() == before      # nothing recorded for the date


def test_daily_without_raw_logs_for_the_date_is_an_error(daily_work, capsys):
    work, raw = daily_work
    before = (work / "manifest.json").read_text()
    code = daily.main(["--raw", str(raw), "--work", str(work), "--date", "2026-12-01"])
    assert code == jobrun.EXIT_ERROR == 1
    assert "no raw logs for 2026-12-01" in capsys.readouterr().err
    assert (work / "manifest.json").read_text() == before
