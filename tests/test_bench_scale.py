"""`dupn bench scale` at a tiny size: the backfill's stages run end to end and their figures agree."""
import json

from pipeline.bench import commands as bench
from pipeline.bench import scale
from pipeline.bench.scale import STAGES
from train_helpers import TINY


def test_bench_scale_runs_every_stage_and_counts_the_backfills_samples(capsys, tmp_path, monkeypatch):
    # The stages in this process, not one fresh process each (six TensorFlow imports): the
    # fresh process is bench pipeline's in_child, which test_beam_bench runs.
    monkeypatch.setattr(scale, "run_stage", scale._measured)
    # the tests' tiny model, in batches of 128: about 50 steps
    tiny = [a for o in (*TINY, "trainer.batch_size=128") for a in ("--set", o)]
    assert bench.main(["scale", "--json", "--rows", "3000", "--probe-steps", "5",
                       "--work", str(tmp_path), *tiny]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["config"] == "small" and result["days"] == 10 and result["cores"] >= 1
    (size,) = result["sizes"]
    assert size["users"] == 27 and 2000 < size["behaviour_rows"] < 4000
    stages = size["stages"]
    assert tuple(stages) == STAGES
    for name, stage in stages.items():
        assert stage["seconds"] > 0 and stage["cpu_seconds"] > 0, name
        assert 100 < stage["peak_rss_mb"] < 8000, name
    assert stages["beam"]["days_built"] == 10 and stages["beam"]["passes"] == 1
    assert stages["beam"]["raw_rows"] > size["behaviour_rows"]   # behaviours plus the other tables
    # The samples trained on are those the backfill recorded, and it retrained nothing.
    assert size["samples"] == stages["split"]["samples"] == stages["train"]["samples"] > 0
    assert stages["evaluate"]["samples"] == size["samples"]
    assert stages["evaluate"]["status"] == "published" and stages["evaluate"]["steps_retrained"] == 0
    assert stages["export"]["exit_code"] == 0
    train = stages["train"]
    assert size["samples_per_s"] == train["samples_per_s"] > 0
    assert train["steps"] == -(-size["samples"] // train["batch_size"])
    probe = size["input_probe"]
    assert probe["step_s_streamed"] > 0 and probe["step_s_in_memory"] > 0
    assert 0 <= size["input_wait"] == probe["input_wait"] < 1
    assert size["total_s"] == round(sum(s["seconds"] for s in stages.values()), 1)
