"""Helpers of the training-job tests: tiny settings, subprocess runs with time-outs, and one backfilled
work directory (synthetic raw logs -> Beam -> training -> publish) shared by the test modules."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# The shared data sits in ../shared beside the project root, wherever the project is cloned.
# The shared sample of the public Taobao data: ../shared beside the project root, or where
# DUPN_SHARED_DATA points (a clone made elsewhere, e.g. by CI in a temporary folder).
SHARED_DATA = Path(os.environ.get("DUPN_SHARED_DATA", REPO.parent / "shared" / "data"))
# configs/small.yaml at widths that trace and train in seconds; ctr and l2r (the exported
# scores) and power (a multi-class head) cover every kind of head.
TINY = ["data.sequence_length=6", "model.lstm_units=8", "model.attention_units=8",
        "model.shared_dim=16",
        "model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
        "{name: l2r, weight: 1.0, hidden_units: [8]}, {name: power, weight: 1.0, hidden_units: [8]}]",
        "trainer.batch_size=32", "trainer.steps_per_execution=1", "trainer.checkpoint_every_steps=4",
        "trainer.shuffle_buffer=256", "runtime.direct_num_workers=1"]
FIRST_DAY = "2026-11-01"
DAYS = ("2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04")


def config_args(*extra) -> list[str]:
    return ["--config", "small", *[a for o in (*TINY, *extra) for a in ("--set", o)]]


def tiny_config(*extra):
    from configs.loader import load_config
    return load_config("small", [*TINY, *extra])


def in_process_cluster(workers: int = 2, ps: int = 2):
    """(strategy, servers): a parameter-server cluster of `workers` workers and `ps` parameter
    servers in this process, on free loopback ports. Keep `servers` referenced while it trains."""
    import tensorflow as tf
    from pipeline.training import cluster
    ports = iter(cluster.free_ports(workers + ps))
    spec = tf.train.ClusterSpec({"worker": [f"localhost:{next(ports)}" for _ in range(workers)],
                                 "ps": [f"localhost:{next(ports)}" for _ in range(ps)]})
    servers = [tf.distribute.Server(spec, job_name=job, task_index=i, protocol="grpc",
                                    config=cluster.server_config(workers), start=True)
               for job, n in (("worker", workers), ("ps", ps)) for i in range(n)]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")
    return cluster.parameter_server_strategy(resolver), servers


def run_python(args, timeout: float, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    """Runs `python args` to the end (a hang fails the test at `timeout` seconds)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def tiny_examples(root, days, seed: int = 0) -> Path:
    """EXAMPLES with every task on `days`, written directly (no Beam): tests/tiny_work.py."""
    from features.contract import Contract
    from tiny_work import write_day
    contract = Contract.from_config(tiny_config())
    for i, date in enumerate(days):
        write_day(Path(root) / "examples", Path(root) / "raw", date, contract, seed=seed + i)
    return Path(root) / "examples"


# The running sums of the training metrics (reset each fit, so a resumed call counts only its own steps).
METRIC_STATE = {"total", "count", "hits", "true_positives", "false_positives", "true_negatives",
                "false_negatives"}


def checkpoint_values(path) -> dict:
    """key -> value of every weight and optimizer variable in a checkpoint, metrics left out (keys
    name the object path, not the model's prefix, so two runs' checkpoints compare key by key)."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(path))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "optimizer/")) and key.split("/")[-3] not in METRIC_STATE}


def fake_run(root, name: str, steps=(10, 20)) -> Path:
    """A model dir with a config and checkpoints ckpt-<step>, each one variable (publishing copies
    the newest that reads back whole)."""
    import tensorflow as tf
    run = Path(root) / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"# {name}\n")
    for step in steps:
        tf.train.Checkpoint(step=tf.Variable(float(step))).write(
            str(run / "checkpoints" / f"ckpt-{step}"))
    (run / "checkpoints" / "checkpoint").write_text(
        f'model_checkpoint_path: "ckpt-{steps[-1]}"\n'
        + "".join(f'all_model_checkpoint_paths: "ckpt-{s}"\n' for s in steps))
    return run


_SHARED: dict = {}


def backfilled_work() -> tuple[Path, Path]:
    """(work, raw): synthetic raw logs of DAYS, then `dupn backfill --end DAYS[1] --days 2`, once per
    test process. Callers copy the work dir before changing it (copy_work)."""
    if "work" not in _SHARED:
        import atexit
        root = Path(tempfile.mkdtemp(prefix="dupn-train-"))
        atexit.register(shutil.rmtree, root, True)
        from pipeline.jobs import backfill
        from pipeline.rawlogs import synth
        raw, work = root / "raw", root / "work"
        assert synth.main(["--out", str(raw), "--start", FIRST_DAY, "--days", str(len(DAYS)),
                           "--users", "40", "--seed", "3"]) == 0
        code = backfill.main(["--raw", str(raw), "--work", str(work), "--end", DAYS[1], "--days", "2",
                              *config_args()])
        assert code == 0, "the backfill of the shared work dir failed"
        _SHARED["work"], _SHARED["raw"] = work, raw
    return _SHARED["work"], _SHARED["raw"]


def copy_work(destination) -> tuple[Path, Path]:
    work, raw = backfilled_work()
    target = Path(destination) / "work"
    shutil.copytree(work, target)
    return target, raw


def export_published(work, out, candidates: int = 60):
    """`dupn export` of the work dir's published model into `out`; returns (model dir, model,
    contract, the first `candidates` serialized ctr examples of the evaluation day DAYS[2])."""
    import tensorflow as tf
    from features.contract import Contract
    from pipeline.serving import export
    from pipeline.training.checkpoints import load_model
    assert export.main(["--work", str(work), "--out", str(out)]) == 0
    model_dir = work / "published" / (work / "published" / "LATEST").read_text().strip()
    config, model = load_model(model_dir)
    files = sorted((work / "examples" / "ctr" / f"dt={DAYS[2]}").glob("part-*.tfrecord.gz"))
    serialized = next(iter(tf.data.TFRecordDataset([str(f) for f in files], "GZIP").batch(candidates)))
    return model_dir, model, Contract.from_config(config), serialized
