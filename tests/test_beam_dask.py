"""The example job on Beam's DaskRunner, over a LocalCluster of 2 worker processes: the local runner's bytes."""
import pytest

from pipeline.beam.dask_cluster import local_cluster
from test_beam_fixtures import DAYS, SMALL_SHARDS, assert_same_outputs, mixed_world, run_job


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return mixed_world(tmp_path_factory.mktemp("dask") / "raw", users=20, seed=5)


@pytest.mark.timeout(240)   # cluster start, job and shutdown each have their own time-out too
def test_dask_runner_writes_the_direct_runners_bytes(raw, tmp_path):
    assert run_job(raw, tmp_path / "direct", DAYS[1], DAYS[2], *SMALL_SHARDS) == 0
    with local_cluster(2) as address:
        assert run_job(raw, tmp_path / "dask", DAYS[1], DAYS[2], "--runner", "dask",
                       "--dask-address", address, *SMALL_SHARDS) == 0
    assert_same_outputs(tmp_path / "direct", tmp_path / "dask", ctr_samples=50)


def test_the_row_path_is_refused_on_dask(raw, tmp_path, capsys):
    assert run_job(raw, tmp_path / "rows", DAYS[1], DAYS[2], "--row-path", "--runner", "dask") == 2
    assert "DirectRunner only" in capsys.readouterr().err
