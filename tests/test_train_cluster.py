"""Distributed training: an in-process ParameterServerStrategy cluster shards the embedding tables, and a
real cluster of chief, worker and ps processes (TF_CONFIG, --local-cluster) trains and leaves no process;
a run begun in one process resumes on a cluster, and a cluster run warm-starts from it, with the weights restored."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pipeline.training import cluster
from train_helpers import REPO, TESTS, alive, config_args, run_python, tiny_examples

DAY = "2026-11-01"

IN_PROCESS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import features
    import numpy as np
    import tensorflow as tf
    from pipeline.training import train
    from train_helpers import in_process_cluster, tiny_config, tiny_examples

    examples = tiny_examples({root!r}, [{day!r}])
    config = tiny_config("trainer.checkpoint_every_steps=10", "trainer.steps_per_execution=2")
    strategy, servers = in_process_cluster(workers=2, ps=2)
    with strategy.scope():
        model = train.new_model(config, train.Contract.from_config(config))
    table = model.embeddings.tables["item_id"].embeddings
    placement = [v.device for v in table.variables]
    data = train.range_data(examples, {day!r}, {day!r}, train.head_tasks(config))

    def item_table(built):   # its shards' values, read from the ps, in order
        return np.concatenate([v.numpy() for v in built.embeddings.tables["item_id"].embeddings.variables])

    built, build = [], train.new_model
    def new_model(*args, **kwargs):   # the model train() builds, its table's values as built
        built.append(build(*args, **kwargs))
        np.save({root!r} + "/table-initial.npy", item_table(built[-1]))
        return built[-1]
    train.new_model = new_model
    run = train.train(config, data, {root!r} + "/run", strategy=strategy)
    np.save({root!r} + "/table-trained.npy", item_table(built[-1]))
    print("RESULT " + json.dumps({{"run": run, "shards": len(table.variables), "placement": placement,
                                   "table": type(table).__name__}}))
""")


def test_in_process_parameter_server_cluster_shards_tables_and_trains(tmp_path):
    script = IN_PROCESS.format(tests=str(TESTS), root=str(tmp_path), day=DAY)
    done = run_python(["-c", script], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    # item_id: 20011 x 16 floats = 1.3 MB, above the 256 KB shard minimum: one shard per ps.
    assert result["table"] == "ShardedVariable" and result["shards"] == 2
    assert {p.split("/task:")[0] for p in result["placement"]} == {"/job:ps/replica:0"}
    assert len(set(result["placement"])) == 2
    run = result["run"]
    assert run["strategy"] == "ParameterServerStrategyV2"
    assert run["sharded_tables"]["item_id"] == 2 and "gender" not in run["sharded_tables"]
    # 600 samples in batches of 32: 19 steps, as two fit epochs of 5 executions of 2 steps (a
    # checkpoint at the end of each): 20 steps.
    assert run["checkpoint_interval"] == 10
    assert run["target_steps"] == 20 and run["steps"] == 20 and run["global_step"] == 20
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.index"))
    assert checkpoints == ["ckpt-10.index", "ckpt-20.index"]
    # It learnt: the rows of the ids trained on moved on the ps. (The two intervals' mean losses,
    # 10 steps each on other batches, differ by noise as much as by learning: not checked.)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20] and all(np.isfinite(h["loss"]) for h in history)
    initial, trained = np.load(tmp_path / "table-initial.npy"), np.load(tmp_path / "table-trained.npy")
    assert initial.shape == trained.shape == (20011, 16)
    moved_rows = int(np.sum(np.any(np.abs(trained - initial) > 1e-4, axis=1)))
    assert 50 < moved_rows < 20011      # the rows of the ids trained on, not the others
    # A checkpoint of sharded tables restores into one process, whole, with the trained values.
    from pipeline.training.checkpoints import load_model
    _, model = load_model(tmp_path / "run")
    np.testing.assert_array_equal(model.embeddings.tables["item_id"].embeddings.numpy(), trained)


def test_real_chief_worker_and_ps_processes_train_and_exit(tmp_path):
    examples = tiny_examples(tmp_path, [DAY])
    model_dir = tmp_path / "model"
    done = run_python(["-m", "pipeline.cli", "train", "--examples", str(examples), "--start", DAY,
                       "--model-dir", str(model_dir), "--local-cluster", "workers=2,ps=1",
                       *config_args("trainer.checkpoint_every_steps=10")], timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "local cluster: 2 workers, 1 ps" in done.stdout
    run = json.loads((model_dir / "run.json").read_text())
    assert run["strategy"] == "ParameterServerStrategyV2"
    assert run["finished"] and run["steps"] == run["target_steps"] == 20
    pids = json.loads((model_dir / "cluster-logs" / "pids.json").read_text())
    assert sorted(pids) == ["ps-0", "worker-0", "worker-1"]
    assert not [name for name, pid in pids.items() if alive(pid)]
    for name in pids:   # every server said where it served (TF_CONFIG read)
        assert "serving at localhost:" in (model_dir / "cluster-logs" / f"{name}.log").read_text()
    if cluster.private_network_command(["true"])[0] is not None:
        # TF's servers bind 0.0.0.0: the run, chief and servers, had a network of its own
        assert "local cluster: in a network namespace of its own (loopback only)" in done.stdout
        for name in pids:
            assert "network namespace of its own" in (model_dir / "cluster-logs" / f"{name}.log").read_text()


def test_local_cluster_stops_its_processes_on_error_and_when_the_chief_is_killed(tmp_path):
    before = os.environ.get("TF_CONFIG")
    local = cluster.LocalCluster(workers=2, ps=1, start_timeout=0.01)
    with pytest.raises(TimeoutError, match="not serving after"):
        with local:
            pass
    assert len(local.started_pids) == 3 and not [p for p in local.started_pids if alive(p)]
    assert os.environ.get("TF_CONFIG") == before
    # A chief killed outright cannot clean up: its children die with it (PR_SET_PDEATHSIG).
    script = ("import json, sys, time\nfrom pipeline.training.cluster import LocalCluster\n"
              f"with LocalCluster(1, 1, log_dir={str(tmp_path)!r}) as c:\n"
              "    print(json.dumps(c.pids), flush=True)\n    time.sleep(300)\n")
    chief = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        children = json.loads(chief.stdout.readline())
        assert len(children) == 2 and all(alive(p) for p in children)
        chief.send_signal(signal.SIGKILL)
        chief.wait(30)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in children if alive(p)]
    finally:
        chief.kill()
        chief.wait()


RESUME_SETUP = textwrap.dedent("""
    import json, pickle, re, sys
    sys.path.insert(0, {tests!r})
    import features
    import numpy as np
    import tensorflow as tf
    from pipeline.training import checkpoints, train
    from train_helpers import in_process_cluster, tiny_config, tiny_examples

    root = {root!r}
    # two steps an execution: the cluster pads what is left to whole executions (checked below)
    config = tiny_config("trainer.checkpoint_every_steps=10", "trainer.steps_per_execution=2")
    data = train.range_data(tiny_examples(root, [{day!r}]), {day!r}, {day!r}, train.head_tasks(config))

    def values(model):   # name -> trainable weights, a sharded table's shards joined in order
        out = {{}}   # (names without the model's own, which counts the models built: dupn_1/...)
        for v in model.trainable_variables:
            for part in (v.variables if type(v).__name__ == "ShardedVariable" else [v]):
                out.setdefault(re.sub(r"^dupn(_\\d+)?/", "", checkpoints._name(part)), []).append(part.numpy())
        return {{name: np.concatenate(parts) if len(parts) > 1 else parts[0] for name, parts in out.items()}}
""")

# Begun in one process without a cluster, stopped after its first checkpoint; its weights kept.
STOPPED = RESUME_SETUP + textwrap.dedent("""
    class Stop(Exception):
        pass

    def stop_at_first_checkpoint(message):
        if message.startswith("step "):
            raise Stop(message)

    try:
        train.train(config, data, root + "/run", log=stop_at_first_checkpoint)
    except Stop:
        pass
    with open(root + "/at-stop.pickle", "wb") as f:
        pickle.dump(values(checkpoints.load_model(root + "/run")[1]), f)
""")

# Resumed in another process on a cluster, then a new run warm-started from it there.
ON_CLUSTER = RESUME_SETUP + textwrap.dedent("""
    def compare(got, expected):   # names of the weights that differ, or that one side lacks
        return sorted(set(got) ^ set(expected)) + [k for k in got if k in expected
                                                   and not np.array_equal(got[k], expected[k])]

    with open(root + "/at-stop.pickle", "rb") as f:
        at_stop = pickle.load(f)
    strategy, servers = in_process_cluster(workers=2, ps=2)

    # What each run holds right after its restore, before any step (read from the ps).
    restored, built = {{}}, []
    for method in ("resume", "warm_start"):
        def capture(self, *args, _method=method, _real=getattr(checkpoints.RunCheckpoints, method),
                    **kwargs):
            path = _real(self, *args, **kwargs)
            if path:
                restored[_method] = (values(self.model), int(self.global_step))
                built.append(self.model)
            return path
        setattr(checkpoints.RunCheckpoints, method, capture)

    resumed = train.train(config, data, root + "/run", strategy=strategy, log=print)
    at_end = values(built[0])   # the resumed model after its steps: what its last checkpoint holds
    warm = train.train(config, data, root + "/warm", warm_start=root + "/run", strategy=strategy, log=print)
    print("RESULT " + json.dumps({{
        "resumed": resumed, "warm": warm,
        "resume_differs": compare(restored["resume"][0], at_stop), "resume_step": restored["resume"][1],
        "warm_differs": compare(restored["warm_start"][0], at_end), "warm_step": restored["warm_start"][1],
        "moved_on_cluster": len(compare(at_end, at_stop)), "weights": len(at_stop)}}))
""")


def test_a_run_begun_in_one_process_resumes_on_a_cluster_and_warm_starts_another(tmp_path):
    stopped = run_python(["-c", STOPPED.format(tests=str(TESTS), root=str(tmp_path), day=DAY)], timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    done = run_python(["-c", ON_CLUSTER.format(tests=str(TESTS), root=str(tmp_path), day=DAY)], timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    # Resumed on the cluster: every weight as the one-process checkpoint left it, its step 10.
    assert result["weights"] > 20 and result["resume_differs"] == [] and result["resume_step"] == 10
    resumed = result["resumed"]
    # (run.json keeps the strategy the run began with; the checkpoint interval is the cluster's.)
    assert resumed["resumed_from"].endswith("ckpt-10") and resumed["checkpoint_interval"] == 10
    # 19 steps in one process; the 9 left, padded to one cluster interval of 5 executions of 2.
    assert resumed["steps_this_call"] == 10 and resumed["steps"] == resumed["global_step"] == 20
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20] and all(np.isfinite(h["loss"]) for h in history)
    assert result["moved_on_cluster"] > 10          # the cluster's steps trained from there
    # A warm start on the cluster: every weight and the global step of the resumed run's end.
    assert result["warm_differs"] == [] and result["warm_step"] == 20
    warm = result["warm"]
    assert warm["strategy"] == "ParameterServerStrategyV2" and warm["sharded_tables"]["item_id"] == 2
    assert warm["warm_start"].endswith("ckpt-20") and warm["resumed_from"] is None
    assert warm["initial_global_step"] == 20 and warm["steps"] == warm["target_steps"] == 20
    assert warm["global_step"] == 40
