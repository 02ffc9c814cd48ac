"""Publishing and the manifest are one recoverable step: a crash between them leaves "publishing",
which the next run completes without training again or taking the new model for the old one."""
from __future__ import annotations

from pipeline import layout
from pipeline.jobs import backfill, jobrun
from train_helpers import DAYS, config_args, copy_work


def test_a_publish_interrupted_before_its_record_is_completed_by_the_rerun(tmp_path, capsys):
    work, raw = copy_work(tmp_path)
    manifest = layout.read_manifest(work)
    done = manifest["dates"][DAYS[1]]
    # What a SIGKILL after LATEST was replaced, before the final record, leaves behind.
    manifest["dates"][DAYS[1]] = {**done, "status": "publishing", "published": False,
                                  "publishing": {"keep": 3}}
    layout.write_manifest(work, manifest)
    layout.eval_file(work, DAYS[2]).unlink()
    capsys.readouterr()                           # the shared backfill's own output
    code = backfill.main(["--raw", str(raw), "--work", str(work), "--end", DAYS[1], "--days", "2",
                          *config_args()])
    assert code == jobrun.EXIT_OK
    out = capsys.readouterr().out
    assert f"{DAYS[1]}: finishing the publish of {DAYS[1]}-backfill that was interrupted" in out
    assert "training samples" not in out          # nothing trained or evaluated again
    record = layout.read_manifest(work)["dates"][DAYS[1]]
    assert record["status"] == "published" and record["published"] and "publishing" not in record
    assert record["metrics"] == done["metrics"] and record["warm_start"] == done["warm_start"]
    assert layout.published_model_dir(work).name == f"{DAYS[1]}-backfill"
    assert layout.read_json(layout.eval_file(work, DAYS[2])) == done["metrics"]


class Crash(Exception):
    """Stands for a SIGKILL: publish() runs no cleanup an exception would trigger (no finally,
    no context manager), so raising inside it leaves on disk what a kill leaves."""


def test_republishing_the_model_in_service_never_leaves_latest_naming_a_missing_folder(
        tmp_path, monkeypatch):
    # A forced rerun of the date in service publishes under the name in service. Killed before
    # each rename or link of that publish in turn, LATEST still names a whole model, the old one or
    # the new; the rerun of the publish then completes with the new one and leaves nothing behind.
    import os
    import tensorflow as tf
    from pipeline.jobs import publish
    from train_helpers import fake_run

    def step_in_service(work):
        model = publish.current_model(work)
        assert model is not None, "LATEST names a missing folder"
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model / "checkpoints")))
        return reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")

    real = {name: getattr(os, name) for name in ("rename", "replace", "link")}
    crashes = 0
    for crash_at in range(1, 50):
        work = tmp_path / f"work-{crash_at}"
        publish.publish(fake_run(work, "old"), work, "2026-11-03-daily", keep=3)
        new_run = fake_run(work, "new", steps=(30,))
        calls = iter(range(1, 1000))

        def crashing(name):
            def operation(*args, **kwargs):
                if next(calls) == crash_at:
                    raise Crash(f"killed before {name} {args}")
                return real[name](*args, **kwargs)
            return operation

        for name in real:
            monkeypatch.setattr(os, name, crashing(name))
        try:
            publish.publish(new_run, work, "2026-11-03-daily", keep=3)
        except Crash:
            crashes += 1
        else:
            break
        finally:
            for name, function in real.items():
                monkeypatch.setattr(os, name, function)
        assert step_in_service(work) in (20.0, 30.0), crash_at
        publish.publish(new_run, work, "2026-11-03-daily", keep=3)   # the rerun's finish_publishing
        assert step_in_service(work) == 30.0
        assert sorted(p.name for p in (work / "published").iterdir()) == ["2026-11-03-daily", "LATEST"]
    assert crashes > 5, crashes    # each rename and link of the republish, and its manifest write


def test_a_publish_removes_what_killed_publishes_of_other_dates_left(tmp_path):
    from pipeline.jobs import publish
    from train_helpers import fake_run
    work = tmp_path / "work"
    publish.publish(fake_run(work, "old"), work, "2026-11-03-daily", keep=3)
    # A daily of 11-04 killed while copying its model; the next day's daily publishes another name.
    left = work / "published" / ".staging-2026-11-04-daily-4242-1"
    (left / "checkpoints").mkdir(parents=True)
    publish.publish(fake_run(work, "new"), work, "2026-11-05-daily", keep=3)
    assert sorted(p.name for p in (work / "published").iterdir()) == [
        "2026-11-03-daily", "2026-11-05-daily", "LATEST"]
