"""The local example job in user passes: the one-pass bytes, each user in one pass, the pass count."""
import json
from types import SimpleNamespace

import pyarrow as pa
import pytest

from configs.loader import ConfigError, load_config
from pipeline.beam import build_examples, passes
from pipeline.beam.block_read import of_user_pass
from pipeline.beam.read import list_files, read_file
from pipeline.rawlogs.schema import TABLES
from test_beam_fixtures import (DAYS, SMALL_SHARDS, assert_same_outputs, item, mixed_world, run_job,
                                write_rows)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = mixed_world(tmp_path_factory.mktemp("passes") / "raw", users=40, seed=3)
    for day in DAYS:      # items delivered twice: every pass joins them, one counts their duplicates
        write_rows(root, "items", day, [item(j) for j in range(4)], "jsonl", name="part-again")
    return root


@pytest.mark.parametrize("extra", [(), ("--ctr-from-behaviors",)], ids=["impressions", "behaviours"])
def test_three_passes_write_the_bytes_of_one(raw, tmp_path, extra):
    # examples, _stats (counts summed over the passes), dead letters: every file, byte for byte
    assert run_job(raw, tmp_path / "one", DAYS[1], DAYS[2], *SMALL_SHARDS, *extra, "--passes", "1") == 0
    assert run_job(raw, tmp_path / "three", DAYS[1], DAYS[2], *SMALL_SHARDS, *extra, "--passes", "3") == 0
    assert_same_outputs(tmp_path / "one", tmp_path / "three", ctr_samples=100)
    stats = json.loads((tmp_path / "three" / "_stats" / f"dt={DAYS[2]}.json").read_text())
    assert stats["duplicates"]["items"] == 4
    assert not (tmp_path / "three" / "_tmp").exists()        # the passes' staging is gone


def test_every_user_is_in_exactly_one_pass():
    users = [f"user-{k}" for k in range(500)] * 2
    block = pa.table({"user_id": users, "row": list(range(len(users)))})
    parts = [of_user_pass(block, (index, 3)) for index in range(3)]
    assert sorted(r for part in parts for r in part.column("row").to_pylist()) == list(range(len(users)))
    pass_of = {}
    for index, part in enumerate(parts):
        for user in part.column("user_id").to_pylist():
            assert pass_of.setdefault(user, index) == index
    assert all(part.num_rows > 200 for part in parts)         # crc32 spreads them
    items = pa.table({"item_id": ["i1", "i2"]})
    assert all(of_user_pass(items, (index, 3)) == items for index in range(3))   # no user: all


def test_the_pass_count_follows_the_budget(raw, tmp_path, monkeypatch, capsys):
    slope = passes.gb_per_million_rows(100)
    room = 10.0 - passes.BASE_GB
    fits = int(room / slope * 1e6)               # rows one pass holds under a 10 GB budget
    assert passes.passes_for(fits, 10.0, 100) == 1
    assert passes.passes_for(fits + 1000, 10.0, 100) == 2
    assert passes.passes_for(5 * fits, 10.0, 100) == 5
    assert passes.passes_for(5 * fits, 2 * room + passes.BASE_GB, 100) == 3
    assert passes.passes_for(fits, 10.0, 20) == 1 and passes.gb_per_million_rows(20) < slope

    files = [f for t in TABLES for f in list_files(str(raw), t, DAYS)]
    rows = passes.estimate_rows(files)
    assert rows == sum(next(c for c in read_file(*f, 8) if isinstance(c, dict))["rows"][f[0]]
                       for f in files)             # whole files: Parquet footers, lines counted
    for runner in ("DataflowRunner", "FlinkRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        assert passes.choose_passes(None, runner, "blocks", files, 2.0, 20) == 1
    assert passes.choose_passes(None, "DirectRunner", "rows", files, 2.0, 20) == 1
    assert passes.choose_passes(None, "DirectRunner", "blocks", files, 2.0, 20) == 1

    # a slope that makes this input need 6 GB above the base: passes follow the budget's room
    monkeypatch.setattr(passes, "MB_PER_MILLION_ROWS", {"fixed": 6000 / (rows / 1e6), "per_behaviour": 0})
    for room, expected in ((7.0, 1), (2.01, 3), (1.49, 5)):
        assert passes.choose_passes(None, "DirectRunner", "blocks", files, passes.BASE_GB + room,
                                    20) == expected
    # day 3 with its lookback reads 88 % of the rows: 5.3 GB, 3 passes of a 2 GB room
    assert run_job(raw, tmp_path / "out", DAYS[2], DAYS[2], *SMALL_SHARDS,
                   "--set", f"runtime.memory_budget_gb={passes.BASE_GB + 2.0}") == 0
    assert "(3 user passes)" in capsys.readouterr().out
    # the default 20 GB budget on a machine with only that room free now: the same 3 passes, said
    monkeypatch.setattr(build_examples, "available_gb",
                        lambda: (passes.BASE_GB + 2.0) / passes.AVAILABLE_SHARE)
    assert run_job(raw, tmp_path / "out", DAYS[2], DAYS[2], *SMALL_SHARDS) == 0
    captured = capsys.readouterr()
    assert "(3 user passes)" in captured.out
    assert ("runtime.memory_budget_gb is 20 GB but the machine has 2.9 GB available: 3 passes "
            "for 2.5 GB") in captured.err

    monkeypatch.setattr(passes, "SAMPLE_BYTES", 2048)   # text files sampled: lines scaled
    assert abs(passes.estimate_rows(files) - rows) < 0.05 * rows


def test_a_bad_budget_or_pass_count_is_a_clear_error(raw, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"runtime.memory_budget_gb: 0.5 is below the minimum 2.0"):
        load_config("small", ["runtime.memory_budget_gb=0.5"])
    with pytest.raises(ConfigError, match=r"runtime.memory_budget_gb"):
        load_config("small", ["runtime.memory_budget_gb=lots"])
    for flags, message in ((("--passes", "0"), "--passes 0: must be at least 1"),
                           (("--passes", "2", "--row-path"), "the row path (--row-path) runs in one pass"),
                           (("--passes", "2", "--runner", "DataflowRunner"), "DataflowRunner runs the job as one pipeline")):
        assert run_job(raw, tmp_path / "out", DAYS[2], DAYS[2], *flags) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "ctr").exists()


def test_the_budget_is_capped_by_the_memory_free_now(monkeypatch):
    monkeypatch.setattr(passes.psutil, "virtual_memory", lambda: SimpleNamespace(available=8 << 30))
    assert passes.available_gb() == 8.0
    assert passes.usable_budget_gb(20.0, None) == 20.0
    assert passes.usable_budget_gb(20.0, 100.0) == 20.0
    assert passes.usable_budget_gb(20.0, 8.0) == pytest.approx(8.0 * passes.AVAILABLE_SHARE)
    assert passes.usable_budget_gb(20.0, 0.1) == passes.BASE_GB     # never below the job's base
