"""`dupn experiment worlds` at a tiny size: from an empty work dir to worlds.csv, its summary, the
plot and the report's section."""
import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("tensorflow")

from pipeline.experiments import report  # noqa: E402
from pipeline.experiments import run as experiment  # noqa: E402
from tiny_work import experiment_argv  # noqa: E402

METRICS = ["CTR AUC", "L2R AUC", "Talent AUC", "Power accuracy", "CTR oracle AUC", "CTR blind oracle AUC"]


def test_worlds_from_an_empty_work_dir(tmp_path):
    work = tmp_path / "work"
    argv = experiment_argv(work, "worlds", "--worlds", "properties,price", "--seeds", "1",
                           "--variants", "wide,dupn-all", "--users", "40", "--days", "4")
    assert experiment.main(argv) == 0
    table = pd.read_csv(work / "experiments" / "worlds.csv")
    assert list(table.columns[:3]) == ["world", "seed", "model"]
    assert set(METRICS) <= set(table.columns)
    assert table[["world", "model"]].values.tolist() == [
        ["properties", "wide"], ["properties", "dupn-all"], ["price", "wide"], ["price", "dupn-all"]]
    values = table[METRICS].to_numpy(dtype=np.float64)
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert (table["steps"] > 0).all() and table["steps"].nunique() <= 2    # equal steps per world
    # the blind oracle never beats the oracle by more than noise; price's is the oracle itself
    assert (table["CTR blind oracle AUC"] <= table["CTR oracle AUC"] + 0.01).all()
    summary = pd.read_csv(work / "experiments" / "worlds_summary.csv")
    assert {"world", "model", "seeds", "CTR AUC mean", "CTR AUC spread"} <= set(summary.columns)
    assert (summary["seeds"] == 1).all() and (summary["CTR AUC spread"] == 0).all()
    assert (work / "experiments" / "worlds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "worlds" / "price" / "seed1" / "raw" / "_oracle").is_dir()
    page = report.render(work)
    assert 'id="worlds"' in page and "CTR blind oracle AUC mean" in page


def test_unknown_world_is_named(tmp_path, capsys):
    argv = experiment_argv(tmp_path, "worlds", "--worlds", "nowhere", "--seeds", "1")
    assert experiment.main(argv) == 1
    assert "unknown worlds ['nowhere']" in capsys.readouterr().err


def test_training_seeds_train_apart_on_the_same_examples(tmp_path):
    work = tmp_path / "work"
    argv = experiment_argv(work, "worlds", "--worlds", "properties", "--seeds", "1",
                           "--train-seeds", "3,4", "--variants", "dupn-all", "--users", "40",
                           "--days", "4")
    assert experiment.main(argv) == 0
    table = pd.read_csv(work / "experiments" / "worlds.csv")
    assert table[["seed", "model", "train seed"]].values.tolist() == [[1, "dupn-all", 3],
                                                                    [1, "dupn-all", 4]]
    experiments = work / "worlds" / "properties" / "seed1" / "experiments"
    for seed in (3, 4):
        run_dir = experiments / "runs" / "ablation" / f"train{seed}" / "dupn-all"
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["runtime"]["seed"] == seed
        assert (experiments / f"ablation-train{seed}.png").stat().st_size > 0   # a chart each
    assert not (experiments / "ablation.png").exists()
    # one world seed's examples, two trainings: different weights, so different scores
    assert table["CTR AUC"].nunique() == 2
    summary = pd.read_csv(work / "experiments" / "worlds_summary.csv")
    assert summary["seeds"].tolist() == [2]


def test_training_seeds_must_be_integers(tmp_path, capsys):
    argv = experiment_argv(tmp_path, "worlds", "--worlds", "properties", "--train-seeds", "3,x")
    assert experiment.main(argv) == 1
    assert "--train-seeds '3,x' is not a list of integers" in capsys.readouterr().err
