"""Beam's DaskRunner for the example job: its short name, its options, a local cluster for one run."""
from __future__ import annotations

import contextlib

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
RUNNER_NAMES = {"dask": DASK_RUNNER}
START_TIMEOUT_S = 60      # a LocalCluster whose workers do not come up fails instead of hanging
CLOSE_TIMEOUT_S = 30


def runner_name(runner: str | None) -> str | None:
    """The runner Beam knows for a short name (dask); any other name unchanged."""
    return RUNNER_NAMES.get(runner, runner)


def is_dask(runner: str | None) -> bool:
    return runner_name(runner) in (DASK_RUNNER, "DaskRunner")


def dask_args(beam_args: list[str], address: str, files: int) -> list[str]:
    """Beam's Dask options for a run over `files` input files on the scheduler at `address`.

    The runner turns beam.Create into a bag of 128 elements per partition and drops
    beam.Reshuffle, so without a partition count every file would be read by one task: one
    partition per file spreads the reads (and, as groups keep their input's partition count,
    every later stage) over the workers.
    """
    given = " ".join(beam_args)
    args = list(beam_args)
    if "--dask_client_address" not in given:
        args += ["--dask_client_address", address]
    if "--dask_npartitions" not in given and "--dask_partition_size" not in given:
        args += ["--dask_npartitions", str(max(1, files))]
    if "--dask_connection_timeout" not in given:
        args += ["--dask_connection_timeout", str(START_TIMEOUT_S)]
    return args


@contextlib.contextmanager
def local_cluster(workers: int):
    """A dask.distributed LocalCluster of `workers` worker processes (one thread each) on
    127.0.0.1, shut down on exit; yields the scheduler's address.

    Worker processes are spawned with this process's environment (PYTHONPATH included), so they
    import the same packages.
    """
    import dask
    from distributed import LocalCluster
    with dask.config.set({"distributed.comm.timeouts.connect": f"{START_TIMEOUT_S}s"}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close(timeout=CLOSE_TIMEOUT_S)


def close_client(result) -> None:
    """Closes the Dask client a DaskRunner result holds: the runner never does, and an open client
    keeps reconnecting (and logging) once its cluster is gone."""
    client = getattr(result, "client", None)
    if client is not None:
        client.close(timeout=CLOSE_TIMEOUT_S)
