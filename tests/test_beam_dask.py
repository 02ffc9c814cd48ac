"""The example job on Beam's DaskRunner, over a LocalCluster of 2 worker processes: the DirectRunner's bytes."""
import json

import pytest

pytest.importorskip("distributed", reason="needs apache-beam[dask]")

from pipeline.beam.dask_cluster import local_cluster  # noqa: E402
from pipeline.rawlogs import synth  # noqa: E402
from test_beam_fixtures import DAYS, extra_rows, run_job, tree_bytes  # noqa: E402

FLAGS = ("--set", "data.shards_per_day=2", "--set", "data.max_bad_share=0.5",
         "--set", "data.user_shards=3", "--set", "data.item_shards=2")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask") / "raw"
    assert synth.main(["--out", str(root), "--start", DAYS[0], "--days", "3", "--users", "20",
                       "--seed", "5"]) == 0
    extra_rows(root)
    return root


@pytest.mark.timeout(240)   # cluster start, job and shutdown each have their own time-out too
def test_dask_runner_writes_the_direct_runners_bytes(raw, tmp_path):
    assert run_job(raw, tmp_path / "direct", DAYS[1], DAYS[2], *FLAGS) == 0
    with local_cluster(2) as address:
        assert run_job(raw, tmp_path / "dask", DAYS[1], DAYS[2], "--runner", "dask",
                       "--dask-address", address, *FLAGS) == 0
    direct, dask = tree_bytes(tmp_path / "direct"), tree_bytes(tmp_path / "dask")
    assert sorted(direct) == sorted(dask)
    assert any(name.startswith("_rejected") for name in direct)
    stats = json.loads(direct[f"_stats/dt={DAYS[2]}.json"])
    assert stats["rejected_total"] >= 3 and stats["tasks"]["ctr"]["samples"] > 50
    for name in sorted(direct):
        assert direct[name] == dask[name], name


def test_the_row_path_is_refused_on_dask(raw, tmp_path, capsys):
    assert run_job(raw, tmp_path / "rows", DAYS[1], DAYS[2], "--row-path", "--runner", "dask") == 2
    assert "DirectRunner only" in capsys.readouterr().err
