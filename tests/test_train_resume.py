"""Resume: a training run killed (SIGKILL) after its first checkpoint, started again with the same model
dir, continues from that checkpoint and trains only the remaining steps; a finished run is left as is.
Resume is exact: interrupted and resumed, a run ends with the weights and optimizer slots of the same
run trained without a stop (same seed, same batches). `dupn train` refuses to resume a run with
another configuration (exit 2, one line), and --warm-start begins a new run from another's checkpoint."""
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tf_keras as keras

from configs.loader import dump_config
from pipeline.training.checkpoints import latest_checkpoint
from pipeline.training.train import head_tasks, main as train_main, range_data, train
from train_helpers import DAYS as SHARED_DAYS
from train_helpers import REPO, checkpoint_values, config_args, run_python, tiny_config, tiny_examples

DAYS = ("2026-11-01", "2026-11-02")


def latest_step(model_dir) -> int:
    text = (model_dir / "checkpoints" / "checkpoint").read_text()
    return int(text.split('model_checkpoint_path: "ckpt-', 1)[1].split('"', 1)[0])


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    examples = tiny_examples(tmp_path, DAYS)
    model_dir = tmp_path / "model"
    argv = ["-m", "pipeline.cli", "train", "--examples", str(examples), "--start", DAYS[0],
            "--end", DAYS[1], "--model-dir", str(model_dir),
            # five passes for many checkpoints, all of them trained (no held-out stopping rule)
            *config_args("trainer.epochs=5", "trainer.validation_share=0",
                         "trainer.checkpoint_every_steps=10")]
    first = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (model_dir / "checkpoints" / "checkpoint").exists():
            assert first.poll() is None, \
                f"the run ended before its first checkpoint: {first.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
        first.wait()
    killed_at = latest_step(model_dir)
    run = json.loads((model_dir / "run.json").read_text())
    target = run["target_steps"]
    assert target == 5 * 38   # 1200 samples in batches of 32, five times
    assert not run["finished"] and 10 <= killed_at < target and killed_at % 10 == 0

    second = run_python(argv, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming {model_dir} from ckpt-{killed_at}: {killed_at} steps done" in second.stdout
    run = json.loads((model_dir / "run.json").read_text())
    assert run["finished"] and run["resumed_from"].endswith(f"ckpt-{killed_at}")
    assert run["steps_this_call"] == target - killed_at     # only the remaining steps
    assert run["steps"] == run["global_step"] == target
    # One entry per checkpoint, across both processes: no step trained twice.
    steps = [entry["step"] for entry in json.loads((model_dir / "history.json").read_text())]
    assert steps == list(range(10, target + 1, 10))

    third = run_python(argv, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"all {target} steps already trained" in third.stdout
    assert json.loads((model_dir / "run.json").read_text())["steps_this_call"] == 0


class Interrupted(Exception):
    pass


def stop_after_first_checkpoint(message):
    if message.startswith("step "):    # logged after the checkpoint is written (train._record)
        raise Interrupted(message)


def test_resumed_run_ends_where_an_uninterrupted_run_does(tmp_path):
    config = tiny_config("trainer.checkpoint_every_steps=10")
    data = range_data(tiny_examples(tmp_path, DAYS), DAYS[0], DAYS[1], head_tasks(config))
    keras.utils.set_random_seed(7)
    whole = train(config, data, tmp_path / "whole", log=lambda m: None)
    assert whole["steps"] == 38 and whole["resumed_from"] is None   # 1200 samples / 32, one pass

    keras.utils.set_random_seed(7)
    with pytest.raises(Interrupted, match="step 10/38"):
        train(config, data, tmp_path / "stopped", log=stop_after_first_checkpoint)
    at_stop = checkpoint_values(latest_checkpoint(tmp_path / "stopped"))
    # The same global seed as a new process's: it seeds the data order (train.training_stream).
    keras.utils.set_random_seed(7)
    resumed = train(config, data, tmp_path / "stopped", log=lambda m: None)
    assert resumed["resumed_from"].endswith("ckpt-10") and resumed["steps_this_call"] == 28
    assert resumed["global_step"] == whole["global_step"] == 38

    expected = checkpoint_values(latest_checkpoint(tmp_path / "whole"))
    got = checkpoint_values(latest_checkpoint(tmp_path / "stopped"))
    assert got.keys() == expected.keys() and len(expected) > 40
    differ = [k for k, value in expected.items()
              if not np.allclose(got[k], value, rtol=1e-5, atol=1e-6)]
    assert differ == [], differ
    # The 28 steps after the stop moved the weights: the equal end is not the stop's state.
    moved = [k for k in at_stop if k.startswith("model/")
             and not np.allclose(at_stop[k], expected[k], rtol=1e-5, atol=1e-6)]
    assert len(moved) > 10


def test_dupn_train_refuses_to_resume_with_another_configuration(tmp_path, capsys):
    examples = tiny_examples(tmp_path, DAYS[:1])
    dump_config(tiny_config(), tmp_path / "model")
    saved = (tmp_path / "model" / "config.yaml").read_text()
    code = train_main(["--examples", str(examples), "--start", DAYS[0], "--model-dir",
                       str(tmp_path / "model"), *config_args("model.lstm_units=4")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dupn train: {tmp_path / 'model'} holds a run of another configuration")
    assert len(err.strip().splitlines()) == 1          # one line, no traceback
    assert (tmp_path / "model" / "config.yaml").read_text() == saved
    assert not (tmp_path / "model" / "checkpoints").exists()


def test_dupn_train_warm_start_begins_a_new_run_from_another_runs_checkpoint(shared_work, tmp_path,
                                                                             capsys):
    work, _ = shared_work
    source = work / "published" / (work / "published" / "LATEST").read_text().strip()
    source_step = int(latest_checkpoint(source).rsplit("-", 1)[1])
    model_dir = tmp_path / "warm"
    code = train_main(["--examples", str(work / "examples"), "--start", SHARED_DAYS[2],
                       "--model-dir", str(model_dir), "--warm-start", str(source), *config_args()])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert f"warm start of {model_dir} from {latest_checkpoint(source)} (global step {source_step})" \
        in capsys.readouterr().out
    run = json.loads((model_dir / "run.json").read_text())
    assert run["warm_start"] == latest_checkpoint(source) and run["resumed_from"] is None
    assert run["initial_global_step"] == source_step
    assert run["steps"] == run["target_steps"] > 0                 # this run's own steps from 0
    assert run["global_step"] == source_step + run["steps"]


def test_dupn_train_warm_start_from_another_network_is_refused_in_one_line(shared_work, tmp_path, capsys):
    work, _ = shared_work
    source = work / "published" / (work / "published" / "LATEST").read_text().strip()
    model_dir = tmp_path / "warm"
    argv = ["--examples", str(work / "examples"), "--start", SHARED_DAYS[2], "--model-dir", str(model_dir),
            "--warm-start", str(source)]
    assert train_main([*argv, *config_args("model.lstm_units=4")]) == 2   # the source's are 8 wide
    err = capsys.readouterr().err
    assert err.startswith(f"dupn train: warm start: {source} holds a model that does not match")
    # The first variable whose shape differs is named (the attention reads the lstm's 4 units).
    assert re.search(r"incompatible tensor with shape \(\d+, 8\) when attempting to restore variable "
                     r"with shape \(\d+, 8\) and name dupn\S*/attention/\S+:0\.$", err.strip()), err
    assert len(err.strip().splitlines()) == 1          # one line, no traceback
    # Nothing of the refused run is left to pin its configuration: the corrected command runs.
    assert not model_dir.exists() or not any(model_dir.iterdir())
