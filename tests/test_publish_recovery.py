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
