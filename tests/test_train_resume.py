"""Resume: a training run killed (SIGKILL) after its first checkpoint, started again with the same model
dir, continues from that checkpoint and trains only the remaining steps; a finished run is left as is."""
import json
import signal
import subprocess
import sys
import time

from train_helpers import REPO, config_args, run_python, tiny_examples

DAYS = ("2026-11-01", "2026-11-02")


def latest_step(model_dir) -> int:
    text = (model_dir / "checkpoints" / "checkpoint").read_text()
    return int(text.split('model_checkpoint_path: "ckpt-', 1)[1].split('"', 1)[0])


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    examples = tiny_examples(tmp_path, DAYS)
    model_dir = tmp_path / "model"
    argv = ["-m", "pipeline.cli", "train", "--examples", str(examples), "--start", DAYS[0],
            "--end", DAYS[1], "--model-dir", str(model_dir),
            *config_args("trainer.epochs=10", "trainer.checkpoint_every_steps=10")]
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
    assert target == 10 * 38   # 1200 samples in batches of 32, ten times
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
