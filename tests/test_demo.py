"""The demo driver: stage statuses, and which exit codes let the job go on."""
import types

import pipeline.demo as demo


def _job(code):
    return types.SimpleNamespace(main=lambda argv: code)


def test_a_refused_daily_model_is_reported_and_the_demo_goes_on(monkeypatch):
    monkeypatch.setattr(demo.importlib, "import_module", lambda name: _job(3))
    status, _ = demo.run_stage("daily fine-tune", "pipeline.jobs.daily", [])
    assert status == "refused by the publish gate, old model kept"
    assert not status.startswith("exit")


def test_a_failing_stage_stops_the_demo_with_its_exit_code(monkeypatch):
    monkeypatch.setattr(demo.importlib, "import_module", lambda name: _job(3))
    assert demo.run_stage("backfill", "pipeline.jobs.backfill", [])[0] == "exit 3"
    ran = []
    monkeypatch.setattr(demo, "run_stage", lambda label, module, argv: (ran.append(module), ("exit 1", 0.0))[1])
    assert demo.main(["--out", "unused"]) == 1
    assert ran == ["pipeline.rawlogs.synth"]


def test_stages_cover_the_whole_main_job_in_order(tmp_path):
    modules = [module for _, module, _ in demo.stages(tmp_path, 10, "small")]
    assert modules == ["pipeline.rawlogs.synth", "pipeline.jobs.backfill", "pipeline.jobs.daily",
                       "pipeline.evaluation.evaluate", "pipeline.experiments.run", "pipeline.experiments.report"]
