"""A day's examples are whole and current: never built from part of a day, rebuilt when their raw files
or example settings change, refused by `dupn train` when built with other settings; no rows, no day."""
from __future__ import annotations

import shutil

import pytest

from pipeline import layout
from pipeline.beam.build_examples import build_examples
from pipeline.beam.inputs import stale_reason
from pipeline.jobs.daydata import ensure_examples, training_and_evaluation
from pipeline.rawlogs.landing import incomplete_reason
from pipeline.training import train
from pipeline.training.train import day_stats
from train_helpers import DAYS, config_args, tiny_config


def copied(shared_work, tmp_path, examples=False):
    """(raw, examples) copies of the shared work dir's, to change."""
    work, raw = shared_work
    shutil.copytree(raw, tmp_path / "raw")
    if examples:
        shutil.copytree(layout.examples_dir(work), tmp_path / "examples")
    return tmp_path / "raw", (tmp_path / "examples" if examples else layout.examples_dir(work))


def landing(raw, day):
    """Makes `day` the last day of `raw`, still landing: later days gone, no _SUCCESS markers."""
    for table in raw.iterdir():
        for part in table.glob("dt=*"):
            if layout.partition_day(part.name) > day:
                shutil.rmtree(part)
        marker = table / layout.partition(day) / layout.SUCCESS_MARKER
        marker.unlink(missing_ok=True)


def test_a_day_is_complete_with_its_markers_or_a_later_day(tmp_path):
    folder = tmp_path / "impressions" / layout.partition(DAYS[0])
    folder.mkdir(parents=True)
    (folder / "part-0.jsonl").write_text("{}\n")
    assert "no _SUCCESS in" in incomplete_reason(tmp_path, DAYS[0])
    (folder / layout.SUCCESS_MARKER).touch()
    assert incomplete_reason(tmp_path, DAYS[0]) is None
    (folder / layout.SUCCESS_MARKER).unlink()
    (tmp_path / "behaviors" / layout.partition(DAYS[1])).mkdir(parents=True)
    assert incomplete_reason(tmp_path, DAYS[0]) is None
    assert "no raw logs" in incomplete_reason(tmp_path, DAYS[3])


def test_a_next_day_still_landing_is_never_evaluated_on(shared_work, tmp_path):
    raw, examples = copied(shared_work, tmp_path)
    landing(raw, DAYS[2])   # its examples were built, but its logs may not all be there
    data, _, info = training_and_evaluation(raw, examples, DAYS[1], ["ctr", "l2r", "power"], 0.2,
                                            tmp_path / "split", first_day=DAYS[0])
    assert info["data"] == "held-out users" and info["date"] == DAYS[1]
    with pytest.raises(FileNotFoundError, match=f"cannot evaluate on {DAYS[2]}: .*no _SUCCESS"):
        training_and_evaluation(raw, examples, DAYS[1], ["ctr"], 0.2, tmp_path / "split",
                                evaluation="next-day")


def test_examples_are_rebuilt_when_raw_files_change_and_kept_when_not(shared_work, tmp_path):
    raw, examples = copied(shared_work, tmp_path, examples=True)
    config = tiny_config()
    before = day_stats(examples, DAYS[2])
    assert stale_reason(before, str(raw), DAYS[2], config) is None
    # The rest of the day lands as a second file (here: the first one again).
    folder = raw / "impressions" / layout.partition(DAYS[2])
    first = sorted(p for p in folder.iterdir() if not p.name.startswith("_"))[0]
    shutil.copy(first, folder / f"late-{first.name}")
    said = []
    assert ensure_examples(raw, examples, [DAYS[1], DAYS[2]], config, said.append) == [DAYS[2]]
    assert f"rebuilding examples of {DAYS[2]}: its raw files changed since it was built: 1 added" in said[0]
    after = day_stats(examples, DAYS[2])
    assert after["rows"]["impressions"] == 2 * before["rows"]["impressions"]
    assert stale_reason(after, str(raw), DAYS[2], config) is None


def test_examples_of_other_settings_are_rebuilt_or_refused(shared_work, tmp_path, capsys):
    work, raw = shared_work
    stats = day_stats(layout.examples_dir(work), DAYS[0])
    other = tiny_config("features.tags_per_item=5")
    assert stale_reason(stats, str(raw), DAYS[0], other) == (
        "built with other settings (features.tags_per_item 3 -> 5)")
    code = train.main(["--examples", str(layout.examples_dir(work)), "--start", DAYS[0],
                       "--model-dir", str(tmp_path / "run"), *config_args("features.tags_per_item=5")])
    assert code == 2
    assert "built with other settings (features.tags_per_item 3 -> 5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_day_without_rows_builds_nothing_and_says_so(shared_work, tmp_path, capsys):
    _, raw = shared_work
    only = tmp_path / "raw" / "behaviors" / layout.partition(DAYS[0])
    shutil.copytree(raw / "behaviors" / layout.partition(DAYS[0]), only)   # history, no day
    code = build_examples(tiny_config("data.lookback_days=1"), tmp_path / "raw", tmp_path / "ex",
                          DAYS[1])
    assert code == 1
    assert f"{DAYS[1]}: no raw rows, nothing built for it" in capsys.readouterr().err
    assert day_stats(tmp_path / "ex", DAYS[1]) is None


def test_a_date_whose_logs_are_still_landing_is_not_trained_on(shared_work, tmp_path, capsys):
    # (daily runs the same check, after it has found a published model to fine-tune)
    from pipeline.jobs import backfill, jobrun
    raw, _ = copied(shared_work, tmp_path)
    landing(raw, DAYS[2])
    assert backfill.main(["--raw", str(raw), "--work", str(tmp_path / "w"), "--end", DAYS[2],
                          "--days", "2", *config_args()]) == jobrun.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"no {layout.SUCCESS_MARKER} in" in err and "rerun once they have landed" in err
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_landed_takes_a_last_day_without_markers_as_complete(shared_work, tmp_path, capsys, monkeypatch):
    # Logs of a producer that writes no markers, all there: --landed says so, and the job goes on
    # to build and train (stopped here, past the landing check, to keep the test short).
    from pipeline.jobs import backfill, daydata

    class PastTheCheck(Exception):
        pass

    def stop(*args, **kwargs):
        raise PastTheCheck
    raw, _ = copied(shared_work, tmp_path)
    landing(raw, DAYS[2])
    monkeypatch.setattr(daydata, "next_day_usable", stop)
    with pytest.raises(PastTheCheck):
        backfill.main(["--raw", str(raw), "--work", str(tmp_path / "w"), "--end", DAYS[2],
                       "--days", "2", "--landed", *config_args()])
    assert "landing" not in capsys.readouterr().err
