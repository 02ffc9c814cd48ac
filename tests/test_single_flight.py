"""One job at a time per work directory and per examples directory: the second says who holds it and exits 1."""
from __future__ import annotations

from pipeline import layout
from pipeline.beam.build_examples import build_examples
from pipeline.jobs import backfill, daily, jobrun
from train_helpers import DAYS, config_args, tiny_config


def test_a_second_job_on_a_work_directory_is_refused(tmp_path, capsys):
    work = tmp_path / "work"
    with layout.hold_lock(layout.lock_file(work), "dupn daily"):
        assert daily.main(["--raw", str(tmp_path), "--work", str(work), "--date", DAYS[0]]) == jobrun.EXIT_ERROR
        assert backfill.main(["--raw", str(tmp_path), "--work", str(work), "--end", DAYS[1], "--days", "2",
                              *config_args()]) == jobrun.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count(f"{work} is in use by dupn daily (pid ") == 2 and "nothing to delete" in err
    # Released with the block: the next job runs (and finds no model to fine-tune).
    assert daily.main(["--raw", str(tmp_path), "--work", str(work), "--date", DAYS[0]]) == jobrun.EXIT_NO_MODEL


def test_a_second_beam_job_on_an_examples_directory_is_refused(tmp_path, capsys):
    with layout.hold_lock(layout.lock_file(tmp_path / "ex"), "dupn build-examples"):
        assert build_examples(tiny_config(), tmp_path / "raw", tmp_path / "ex", DAYS[0]) == 1
    assert f"{tmp_path / 'ex'} is in use by dupn build-examples" in capsys.readouterr().err
