"""The block (columnar) job writes the row job's bytes: a golden comparison on a mixed data set."""
import json

import pytest

from pipeline.rawlogs.rows import day_start
from test_beam_fixtures import (DAYS, SMALL_SHARDS, assert_same_outputs, behavior, mixed_world,
                                run_job, tree_bytes, write_rows)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return mixed_world(tmp_path_factory.mktemp("golden") / "raw", users=40, seed=3)


@pytest.mark.parametrize("extra", [(), ("--ctr-from-behaviors",)], ids=["impressions", "behaviours"])
def test_block_job_writes_the_row_jobs_bytes(raw, tmp_path, extra):
    flags = (*SMALL_SHARDS, *extra)
    assert run_job(raw, tmp_path / "rows", DAYS[1], DAYS[2], "--row-path", *flags) == 0
    assert run_job(raw, tmp_path / "blocks", DAYS[1], DAYS[2], *flags) == 0
    assert_same_outputs(tmp_path / "rows", tmp_path / "blocks", ctr_samples=100)


def test_the_fast_gzip_encoder_writes_the_same_records(raw, tmp_path):
    import gzip
    # extra_rows' bad profile is 1 of the day's 43 users: above the default bound of its table
    loose = ("--max-bad-share", "0.5")
    assert run_job(raw, tmp_path / "zlib", DAYS[2], DAYS[2], *loose) == 0
    assert run_job(raw, tmp_path / "isal", DAYS[2], DAYS[2], *loose, "--set", "data.gzip_encoder=isal",
                   "--set", "data.gzip_level=1") == 0
    zlib_files, isal_files = tree_bytes(tmp_path / "zlib"), tree_bytes(tmp_path / "isal")
    assert sorted(zlib_files) == sorted(isal_files)
    for name in zlib_files:
        if name.endswith(".gz"):
            assert gzip.decompress(zlib_files[name]) == gzip.decompress(isal_files[name]), name


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_clean_file_is_checked_by_columns_and_a_bad_row_takes_the_row_validator(tmp_path, monkeypatch,
                                                                                   fmt):
    from pipeline.beam import block_read, blocks
    s = day_start(DAYS[0])
    clean = write_rows(tmp_path, "behaviors", DAYS[0], [behavior("u1", 1, s + 5, "buy", "promo")], fmt)
    bad = write_rows(tmp_path, "behaviors", DAYS[0], [behavior("u1", 1, s + 5), behavior("u2", 2, s - 1)],
                     fmt, name="part-bad")
    fn = block_read.ReadBlocksFn(rank_features=8)
    with monkeypatch.context() as patched:       # the clean file never reaches the row validator
        patched.setattr(block_read, "read_file", None)
        out = list(fn.process(("behaviors", DAYS[0], clean)))
    block = blocks.unpack(out[0][1][2])
    assert block.to_pylist() == [{"user_id": "u1", "item_id": "i1", "ts": s + 5, "type": 4, "scene": 3}]
    out = list(fn.process(("behaviors", DAYS[0], bad)))
    kinds = [kind for kind, _ in out]
    assert kinds == ["rejected", "block", "counts"]
    assert json.loads(out[0][1][1][2])["reason"] == "ts_outside_partition"
    assert blocks.unpack(out[1][1][2]).column("user_id").to_pylist() == ["u1"]
    assert out[2][1][1]["rows"] == {"behaviors": 2}
