"""`dupn report`: every section present, plots embedded, nothing fetched from outside."""
import base64
import io
import json
import re

import matplotlib.image
import pandas as pd

from pipeline.experiments import plots
from pipeline.experiments import report

SECTIONS = ("Data statistics", "Daily runs", "Evaluation", "Experiments",
            "Configuration of the published model")


def assert_self_contained(page: str):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_empty_work_directory_says_not_run_yet_in_every_section(tmp_path):
    page = report.render(tmp_path)
    for title in SECTIONS:
        assert f">{title}</h2>" in page
    for name in report.EXPERIMENTS:
        assert f"dupn experiment {name}" in page
    # data, daily, evaluation, configuration and the four experiments
    assert page.count('class="missing"') == 4 + len(report.EXPERIMENTS)
    assert_self_contained(page)


def fill_work(work):
    """A work dir in the formats the Beam job (stats) and the backfill/daily jobs (manifest) write."""
    (work / "examples" / "_stats").mkdir(parents=True)
    for day, n in (("2026-11-10", 900), ("2026-11-11", 1100)):
        (work / "examples" / "_stats" / f"dt={day}.json").write_text(json.dumps(
            {"date": day, "rows_total": 5 * n, "rejected_total": 3, "rejected": {"bad_type": 3},
             "examples": n + n // 10,
             "tasks": {"ctr": {"samples": n, "positives": n // 10, "positive_rate": 0.1,
                               "seq_len": {"1-2": 10, "3-4": n - 10}},
                       "power": {"samples": n // 10, "seq_len": {"1-2": 1, "3-4": n // 10 - 1}}}}))

    def record(kind, published, auc, accuracy, reason, previous=None):
        out = {"date": "", "kind": kind, "status": "published" if published else "refused",
               "published": published, "steps": 120, "seconds": 61.5, "reason": reason,
               "inputs": {"raw": "/data/raw", "train": {"start": "2026-11-01", "end": "2026-11-10",
                                                       "samples": 9000},
                          "eval": {"data": "next day", "date": "2026-11-11"}},
               "metrics": {"ctr": {"auc": auc, "oracle_auc": 0.81, "n": 900},
                           "power": {"accuracy": accuracy, "precision": [0.5], "n": 90}}}
        if previous:
            out["previous_metrics"] = previous
        return out
    (work / "manifest.json").write_text(json.dumps({"dates": {
        "2026-11-10": record("backfill", True, 0.71, 0.4, "first model"),
        "2026-11-11": record("daily", False, 0.69, 0.42, "ctr auc fell by 0.02",
                             {"ctr": {"auc": 0.7133}, "power": {"accuracy": 0.41}}),
    }, "published": ["2026-11-10-backfill"]}))
    (work / "eval").mkdir()
    (work / "eval" / "2026-11-12.json").write_text(json.dumps({
        "ctr": {"auc": 0.7123, "oracle_auc": 0.7712, "n": 1000},
        "power": {"accuracy": 0.41, "precision": [0.5, 0.0, None], "recall": [0.2, 0.1, 0.0], "n": 100}}))
    experiments = work / "experiments"
    experiments.mkdir()
    table = pd.DataFrame({"variant": ["wide", "dupn-all"], "ctr_auc": [0.65, 0.72]})
    table.to_csv(experiments / "ablation.csv", index=False)
    plots.bar_panels(table.set_index("variant"), experiments / "ablation.png", "ablation")
    (work / "published" / "run-2").mkdir(parents=True)
    (work / "published" / "LATEST").write_text("run-2")
    (work / "published" / "run-2" / "config.yaml").write_text("model:\n  variant: dupn-all <x>\n")


def test_filled_work_directory_shows_everything_offline(tmp_path):
    fill_work(tmp_path)
    assert report.main(["--work", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page
    assert_self_contained(page)
    # data: the summary per day, and every statistic folded away
    assert "ctr samples" in page and "ctr positive rate" in page and "1100" in page
    assert "rejected.bad_type" in page and "<details>" in page
    # daily: per-day rows with the reason a model was refused, beside the model in service
    assert "ctr auc fell by 0.02" in page and "ctr AUC, in service" in page and "0.7133" in page
    assert "2026-11-01..2026-11-10" in page and "2026-11-10-backfill" in page
    # evaluation: the oracle beside the model; the power lists
    assert "0.7712" in page and "0.5000, 0.0000, –" in page
    # experiments: the ablation table and image; the others not run yet
    assert "dupn-all" in page and "0.7200" in page
    assert "Not run yet: dupn experiment multitask" in page
    # configuration, escaped
    assert "variant: dupn-all &lt;x&gt;" in page
    images = embedded_pngs(page)
    assert len(images) == 3     # data, daily metrics, ablation
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50


def test_report_fails_clearly_on_missing_work(tmp_path, capsys):
    assert report.main(["--work", str(tmp_path / "none")]) == 1
    assert "no such work directory" in capsys.readouterr().err
