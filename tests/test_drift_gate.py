"""The drift gate: a day whose statistics leave its trailing window's bounds is not trained on (exit 5)."""
import json
import shutil

import pytest

from configs.schema import DriftConfig
from pipeline.jobs import daily, jobrun
from pipeline.jobs.drift import check_day, drift_reasons
from train_helpers import DAYS, copy_work

TABLES = ("behaviors", "items", "users", "impressions", "follows", "shop_prefs")


def day(rows=1000, ctr=(2000, 0.1), talent=(100, 0.3), bad_impressions=0, missing=()):
    """A day's _stats as the Beam job writes them (the fields the gate reads)."""
    counts = {t: (0 if t in missing else rows) for t in TABLES}
    return {"rows": counts, "missing_tables": list(missing),
            "rejected_by_table": {"impressions": {"bad_value": bad_impressions}} if bad_impressions else {},
            "tasks": {"ctr": {"samples": ctr[0], "positive_rate": ctr[1]},
                      "talent": {"samples": talent[0], "positive_rate": talent[1]},
                      "power": {"samples": 40, "level_share": {"1": 1.0}}}}


WINDOW = [day(rows=900), day(rows=1000), day(rows=1100)]
SMALL = DriftConfig(min_count=50)      # talent's 100 samples are compared too


def test_a_day_like_the_ones_before_passes():
    assert drift_reasons(day(rows=1500, ctr=(2500, 0.12)), WINDOW, DriftConfig()) == []


def test_each_measure_outside_its_bound_is_a_reason_with_the_numbers():
    reasons = drift_reasons(day(rows=300), WINDOW, DriftConfig())
    assert "rows of behaviors 300 is 0.30x the median of the 3 days before (1,000); bound 3x" in reasons
    assert len(reasons) == len(TABLES)
    assert drift_reasons(day(ctr=(7000, 0.1)), WINDOW, DriftConfig()) == [
        "samples of ctr 7,000 is 3.50x the median of the 3 days before (2,000); bound 3x"]
    assert drift_reasons(day(ctr=(2000, 0.25)), WINDOW, DriftConfig()) == [
        "label rate of ctr 0.2500 against a median of 0.1000 over the 3 days before; bound 2x"]
    assert drift_reasons(day(bad_impressions=8), WINDOW, DriftConfig()) == [
        "rejected share of impressions 0.80% against a median of 0.00% over the 3 days before; "
        "bound +0.50%"]
    missing = drift_reasons(day(missing=("follows",)), WINDOW, DriftConfig())
    assert missing[0] == "table follows has no rows (the days before had)"


def test_a_label_rate_within_the_noise_of_a_small_day_passes():
    # 0.45 is within 2x of 0.3; 0.65 on 20 samples is 2.17x but within 4 standard errors (0.41)
    assert drift_reasons(day(talent=(100, 0.45)), WINDOW, SMALL) == []
    small = drift_reasons(day(talent=(20, 0.65)), WINDOW, DriftConfig(min_count=10))
    assert small == ["samples of talent 20 is 0.20x the median of the 3 days before (100); bound 3x"]
    assert drift_reasons(day(talent=(250, 0.65)), WINDOW, SMALL) == [
        "label rate of talent 0.6500 against a median of 0.3000 over the 3 days before; bound 2x"]


def test_tables_and_tasks_below_min_count_are_not_compared():
    # talent's 100 samples a day: 5x its samples and a rate of 0.9 pass the default min_count 1000
    assert drift_reasons(day(talent=(500, 0.9)), WINDOW, DriftConfig()) == []
    assert len(drift_reasons(day(talent=(500, 0.9)), WINDOW, SMALL)) == 2
    assert drift_reasons(day(rows=300), WINDOW, DriftConfig(min_count=1001)) == []
    # a missing table is refused whatever its size
    assert drift_reasons(day(missing=("follows",)), WINDOW, DriftConfig(min_count=10**6)) == [
        "table follows has no rows (the days before had)"]


def test_too_few_earlier_days_or_a_disabled_gate_check_nothing():
    stats = {"2026-11-10": day(rows=10), "2026-11-09": WINDOW[0], "2026-11-08": WINDOW[1]}
    reasons, info = check_day("2026-11-10", stats.get, DriftConfig())
    assert reasons == [] and info["window"] == ["2026-11-08", "2026-11-09"]
    stats["2026-11-05"] = WINDOW[2]                  # a gap in the window is fine
    reasons, info = check_day("2026-11-10", stats.get, DriftConfig())
    assert len(reasons) == len(TABLES) and info["window"] == ["2026-11-05", "2026-11-08", "2026-11-09"]
    assert check_day("2026-11-10", stats.get, DriftConfig(enabled=False))[0] == []
    assert check_day("2026-11-10", stats.get, DriftConfig(window_days=2))[0] == []


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """A copy of the shared backfilled work dir and its raw logs, DAYS[2]'s follows gone."""
    root = tmp_path_factory.mktemp("drift")
    work, raw = copy_work(root)
    shutil.copytree(raw, root / "raw")
    shutil.rmtree(root / "raw" / "follows" / f"dt={DAYS[2]}")
    return work, root / "raw"


def test_the_daily_job_refuses_a_drifted_day_records_why_and_checks_again_on_rerun(drifted, capsys):
    work, raw = drifted
    latest = (work / "published" / "LATEST").read_text()
    args = ["--raw", str(raw), "--work", str(work), "--date", DAYS[2], "--set", "drift.min_days=2"]      # the backfill built two days before DAYS[2]
    assert daily.main(args) == jobrun.EXIT_DRIFT == 5
    err = capsys.readouterr().err
    assert f"{DAYS[2]}: not trained on, its examples leave the drift bounds: table follows has no rows" in err
    record = json.loads((work / "manifest.json").read_text())["dates"][DAYS[2]]
    assert record["status"] == "drift" and record["published"] is False
    assert record["reason"].startswith("drift: table follows has no rows (the days before had)")
    assert record["drift"]["window"] == [DAYS[0], DAYS[1]]
    assert (work / "published" / "LATEST").read_text() == latest
    assert not list((work / "runs").glob(f"{DAYS[2]}-daily/checkpoints/*"))
    # not a done date: the rerun checks again (and would train once the logs are fixed)
    assert daily.main(args) == jobrun.EXIT_DRIFT
