"""Distribution: the strategy TF_CONFIG asks for, the worker and ps servers, and a local cluster of processes.

    python -m pipeline.training.cluster serve      # a worker or parameter server: TF_CONFIG names which

With parameter servers in TF_CONFIG the chief (the process that runs `dupn train`) coordinates
a tf.distribute.ParameterServerStrategy: variables live on the ps tasks, embedding tables split
across them, and the workers run the training steps the chief schedules. Without TF_CONFIG
training runs in one process. TensorFlow is imported only where needed, so a LocalCluster can be
managed from a process that never loads it.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)

# Variables of at least this many bytes are split across the parameter servers (at most one
# shard per server): the embedding tables, not the dense layers.
MIN_SHARD_BYTES = 256 << 10
SERVER_JOBS = ("worker", "ps")


def read_tf_config(environ=None) -> dict | None:
    """The parsed TF_CONFIG of this process, or None when it has none."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict):
        raise ValueError("TF_CONFIG has no 'cluster' mapping")
    return value


def task_of(tf_config: dict | None) -> tuple[str, int]:
    """(task type, index) of this process; ('chief', 0) without TF_CONFIG."""
    if not tf_config:
        return "chief", 0
    task = tf_config.get("task") or {}
    return str(task.get("type", "chief")), int(task.get("index", 0))


def uses_parameter_servers(tf_config: dict | None) -> bool:
    return bool(tf_config and tf_config["cluster"].get("ps"))


def server_config(num_workers: int) -> tf.compat.v1.ConfigProto:
    """Session config of a worker or ps server.

    A server whose inter-op pool is smaller than the number of workers can deadlock when the
    coordinator's closures wait on each other (TF's own in-process clusters guard the same way).
    """
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = max(num_workers + 1, os.cpu_count() or 1)
    return config


def parameter_server_strategy(resolver) -> tf.distribute.ParameterServerStrategy:
    """A ParameterServerStrategy whose large variables are sharded, one shard per ps at most."""
    import tensorflow as tf
    num_ps = resolver.cluster_spec().num_tasks("ps")
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=MIN_SHARD_BYTES, max_shards=num_ps)
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def make_strategy(tf_config: dict | None = None) -> tf.distribute.Strategy:
    """The strategy for this process: parameter servers when TF_CONFIG names some, else one process."""
    import tensorflow as tf
    tf_config = read_tf_config() if tf_config is None else tf_config
    if not uses_parameter_servers(tf_config):
        return tf.distribute.get_strategy()
    kind, _ = task_of(tf_config)
    if kind not in ("chief", "evaluator"):
        raise ValueError(f"TF_CONFIG task type '{kind}' serves; only the chief trains "
                         "(run `python -m pipeline.training.cluster serve` on workers and ps)")
    # The resolver reads TF_CONFIG from the environment, so the two must agree.
    os.environ["TF_CONFIG"] = json.dumps(tf_config)
    return parameter_server_strategy(tf.distribute.cluster_resolver.TFConfigClusterResolver())


def exposure_notice(address: str) -> str:
    """What an operator must know about a server TF_CONFIG places at `address` ('host:port').

    TensorFlow's gRPC server binds 0.0.0.0:<port> whatever host TF_CONFIG names (GrpcServer::Init
    hard-codes it, up to at least TF 2.17) and authenticates nobody: whoever reaches the port can
    run any graph there, file reads and writes included. Only a firewall or a private network
    keeps the port to the cluster.
    """
    port = address.rsplit(":", 1)[-1]
    return (f"listening on every interface (0.0.0.0:{port}; TensorFlow ignores the host in "
            f"TF_CONFIG) with no authentication: keep port {port} on a private network or behind "
            f"a firewall that admits only the cluster's machines")


def interfaces() -> set[str]:
    """The network interfaces this process sees (Linux /proc/net/dev); empty where unknown."""
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return set()
    return {line.split(":", 1)[0].strip() for line in lines}


def in_private_network() -> bool:
    """Whether this process's network is loopback only (a namespace of its own): a server here
    listening on 0.0.0.0 is reachable from this network's processes alone."""
    return interfaces() == {"lo"}


def private_network_command(command: list[str]) -> tuple[list[str] | None, str]:
    """(command run in a new network namespace holding loopback only, "") or (None, why not).

    TensorFlow's servers bind 0.0.0.0 whatever TF_CONFIG says, so a local cluster is kept off
    the machine's networks by giving it (chief included: it dials the servers) a network of its
    own. `unshare --net` needs CAP_SYS_ADMIN; without root, a user namespace provides it where
    the kernel allows unprivileged ones.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "no unshare command (util-linux)"
    prefix = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--user", "--map-root-user"])
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{' '.join(prefix[1:])} refused: {probe.stderr.strip() or probe.returncode}"
    return [*prefix, "--", *command], ""


def loopback_up() -> None:
    """Brings up `lo` in a new network namespace (it starts down), so 127.0.0.1 connects."""
    import fcntl
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def run_in_private_network(command: list[str]) -> int:
    """Runs a private_network_command to its end and returns its exit code; SIGTERM is passed on,
    and the command dies with this process (PR_SET_PDEATHSIG)."""
    child = subprocess.Popen(command, preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    except KeyboardInterrupt:   # the child, in our process group, had the SIGINT too
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(tf_config: dict) -> None:
    """Runs this process's worker or ps server until it is killed."""
    kind, index = task_of(tf_config)
    if kind not in SERVER_JOBS:
        raise ValueError(f"TF_CONFIG task type is '{kind}'; only {' and '.join(SERVER_JOBS)} serve")
    # Workers report a lost parameter server to the chief at once instead of retrying forever
    # (read when gRPC starts, so before TensorFlow loads).
    os.environ["GRPC_FAIL_FAST"] = "use_caller"
    import tensorflow as tf
    try:   # workers read the examples: S3 and HDFS paths need tensorflow-io's file systems here too
        import tensorflow_io  # noqa: F401
    except ImportError as err:
        print(f"pipeline.training.cluster: tensorflow-io not loaded ({err}); s3:// and hdfs:// unavailable",
              file=sys.stderr)
    cluster = tf.train.ClusterSpec(tf_config["cluster"])
    server = tf.distribute.Server(cluster, job_name=kind, task_index=index, protocol="grpc",
                                  config=server_config(cluster.num_tasks("worker")), start=True)
    address = cluster.task_address(kind, index)
    print(f"pipeline.training.cluster: {kind} {index} serving at {address}", flush=True)
    notice = ("in a network namespace of its own: only this cluster's processes reach it"
              if in_private_network() else exposure_notice(address))
    print(f"pipeline.training.cluster: {kind} {index} {notice}", file=sys.stderr, flush=True)
    server.join()


def parse_cluster_shape(text: str) -> dict[str, int]:
    """'workers=2,ps=1' -> {'worker': 2, 'ps': 1}."""
    shape = {"worker": 0, "ps": 0}
    names = {"workers": "worker", "worker": "worker", "ps": "ps"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in names or not value.strip().isdigit():
            raise ValueError(f"--local-cluster {text}: expected workers=N,ps=M")
        shape[names[key.strip()]] = int(value)
    if shape["worker"] < 1 or shape["ps"] < 1:
        raise ValueError(f"--local-cluster {text}: needs at least one worker and one ps")
    return shape


def free_ports(count: int) -> list[int]:
    """Loopback ports free right now (all held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it when its parent dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalCluster:
    """Worker and ps processes on this machine, this process the chief; use as a context manager.

    Inside the block os.environ["TF_CONFIG"] names this process the chief; on leaving (also on
    an error) every child is terminated, then killed, and waited for. Children also die with
    this process (PR_SET_PDEATHSIG), so a killed chief leaves no orphans.

    Args:
      workers, ps: number of processes of each kind.
      log_dir: where each child's output goes (<kind>-<index>.log); default: discarded.
      start_timeout: seconds to wait for every server to accept connections.
    """

    def __init__(self, workers: int = 2, ps: int = 1, log_dir=None, start_timeout: float = 60.0):
        self.shape = {"worker": workers, "ps": ps}
        self.log_dir = Path(log_dir) if log_dir else None
        self.start_timeout = start_timeout
        self.processes: list[tuple[str, int, subprocess.Popen]] = []
        self.started_pids: list[int] = []   # every child ever started, kept after stop()
        self.cluster: dict[str, list[str]] = {}
        self._saved_tf_config = None

    def tf_config(self, kind: str, index: int) -> dict:
        return {"cluster": self.cluster, "task": {"type": kind, "index": index}}

    def __enter__(self) -> "LocalCluster":
        ports = iter(free_ports(1 + sum(self.shape.values())))
        self.cluster = {"chief": [f"localhost:{next(ports)}"]}
        for kind in SERVER_JOBS:
            self.cluster[kind] = [f"localhost:{next(ports)}" for _ in range(self.shape[kind])]
        self._saved_tf_config = os.environ.get("TF_CONFIG")
        try:
            for kind in SERVER_JOBS:
                for index in range(self.shape[kind]):
                    self._start(kind, index)
            self._wait_until_serving()
            if self.log_dir:   # so an operator (or a test) can check that none outlives the run
                (self.log_dir / "pids.json").write_text(json.dumps(
                    {f"{kind}-{index}": p.pid for kind, index, p in self.processes}))
        except BaseException:
            self.stop()
            raise
        os.environ["TF_CONFIG"] = json.dumps(self.tf_config("chief", 0))
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self, kind: str, index: int) -> None:
        env = dict(os.environ, TF_CONFIG=json.dumps(self.tf_config(kind, index)))
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{kind}-{index}.log", "wb")
        else:
            out = subprocess.DEVNULL
        try:
            process = subprocess.Popen([sys.executable, "-m", "pipeline.training.cluster", "serve"], env=env,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.processes.append((kind, index, process))
        self.started_pids.append(process.pid)

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        for kind, index, process in self.processes:
            host, port = self.cluster[kind][index].rsplit(":", 1)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"local cluster: {kind} {index} exited with code "
                                       f"{process.returncode} before serving"
                                       + (f" (see {self.log_dir / f'{kind}-{index}.log'})"
                                          if self.log_dir else ""))
                with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"local cluster: {kind} {index} not serving after "
                                       f"{self.start_timeout:.0f} s")
                time.sleep(0.2)

    def stop(self) -> None:
        """Terminates, then kills, every child, and restores this process's TF_CONFIG."""
        for _, _, process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for _, _, process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self._saved_tf_config is None:
            os.environ.pop("TF_CONFIG", None)
        else:
            os.environ["TF_CONFIG"] = self._saved_tf_config

    @property
    def pids(self) -> list[int]:
        return [p.pid for _, _, p in self.processes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"], help="serve: run the worker or ps of TF_CONFIG")
    parser.parse_args(argv)
    try:
        tf_config = read_tf_config()
        if tf_config is None:
            raise ValueError("TF_CONFIG is not set: it names the cluster and this task")
        serve(tf_config)
    except ValueError as err:
        print(f"pipeline.training.cluster: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
