"""`dupn bench pipeline` at a tiny size: it runs the job on synthetic logs and reports its figures."""
import json

from pipeline.bench import commands as bench


def test_bench_pipeline_prints_one_json_object(capsys):
    assert bench.main(["pipeline", "--json", "--users", "40", "--days", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rows"] == sum(result["rows_by_table"].values()) > 0
    assert result["examples"] == sum(result["examples_by_task"].values()) > 0
    assert result["rows_per_s"] == round(result["rows"] / result["seconds"])
    assert result["seconds"] > 0 and result["cpu_seconds"] > 0 and result["peak_rss_mb"] > 100
    assert result["running_mode"] == "in_memory" and result["days"] == 2
