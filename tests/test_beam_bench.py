"""`dupn bench pipeline` at a tiny size: it runs the job on synthetic logs and reports its figures."""
import json
import pstats
import threading

from configs.loader import load_config
from pipeline.beam.build_examples import pipeline_options
from pipeline.bench import commands as bench
from pipeline.bench.pipeline import profiled


def test_bench_pipeline_prints_one_json_object(capsys):
    assert bench.main(["pipeline", "--json", "--users", "40", "--days", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rows"] == sum(result["rows_by_table"].values()) > 0
    assert result["examples"] == sum(result["examples_by_task"].values()) > 0
    assert result["rows_per_s"] == round(result["rows"] / result["seconds"])
    assert result["seconds"] > 0 and result["cpu_seconds"] > 0 and result["peak_rss_mb"] > 100
    assert result["running_mode"] == "in_memory" and result["days"] == 2
    assert result["beam_runner"] == "BundleBasedDirectRunner"


def test_threads_processes_and_the_row_path_run_on_the_direct_runner():
    """The default local runner has no modes, and costs the row path's one element per row 3x the
    CPU: asking for threads or processes, or the row path, gets the DirectRunner."""
    config = load_config("small")
    assert pipeline_options(config, None, []).get_all_options()["runner"] == "BundleBasedDirectRunner"
    for mode in ("multi_threading", "multi_processing"):
        options = pipeline_options(config, None, [f"--direct_running_mode={mode}"]).get_all_options()
        assert options["runner"] == "DirectRunner" and options["direct_running_mode"] == mode
    rows = load_config("small", ["data.beam_path=rows"])
    assert pipeline_options(rows, None, []).get_all_options()["runner"] == "DirectRunner"


def _work_in_a_thread():
    return sum(i * i for i in range(1000))


def test_the_profile_sees_the_threads_the_runner_starts(tmp_path):
    """The local runner runs its stages in threads of its own: a profile of the caller alone misses them."""
    with profiled(str(tmp_path / "prof")):
        worker = threading.Thread(target=_work_in_a_thread)
        worker.start()
        worker.join()
    functions = {name for _, _, name in pstats.Stats(str(tmp_path / "prof")).stats}
    assert "_work_in_a_thread" in functions


def test_bench_pipeline_reports_both_paths_on_the_same_rows(capsys):
    assert bench.main(["pipeline", "--json", "--users", "30", "--days", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    blocks, rows = result["paths"]["blocks"], result["paths"]["rows"]
    assert blocks["beam_path"] == "blocks" and rows["beam_path"] == "rows"
    assert blocks["rows"] == rows["rows"] and blocks["examples_by_task"] == rows["examples_by_task"]
    for figures in (blocks, rows):
        assert figures["rows_per_s"] > 0 and figures["cpu_seconds"] > 0 and figures["peak_rss_mb"] > 100
    assert result["blocks_vs_rows"] == round(blocks["rows_per_s"] / rows["rows_per_s"], 2)
    assert blocks["beam_runner"] == "BundleBasedDirectRunner" and rows["beam_runner"] == "DirectRunner"


def test_bench_memory_reports_peaks_in_one_pass_and_in_passes(capsys):
    assert bench.main(["memory", "--json", "--rows", "2500"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (run,) = result["runs"]
    one, split = run["one_pass"], run["in_passes"]
    assert one["passes"] == 1 and split["passes"] == 1       # 2,500 rows fit the 2 GB budget
    assert one["rows"] == split["rows"] == run["rows"] > 1500 and one["examples"] == split["examples"]
    assert 100 < one["peak_rss_mb"] < 2048 and result["under_budget"] is True
    assert run["time_ratio"] == round(split["seconds"] / one["seconds"], 2)
    assert result["peak_ratio_in_passes"] == 1.0 and result["budget_gb"] == 2.0
