"""The paper's experiments: each writes its CSV and a real PNG; the attention grouping by hand."""
import math

import matplotlib.image
import numpy as np
import pytest

from pipeline.experiments import attention as attention


def assert_real_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0, f"{path} is blank"


def test_attention_by_type_and_bucket_by_hand():
    # Sequence 0: a click 1-5 min ago (weight .2) and a buy 5-30 min ago (.8); sequence 1: one
    # click 1-5 min ago (1.0). Relative weight = weight x sequence length (1 = uniform).
    weights = np.array([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    types = np.array([[1, 4, 0], [1, 0, 0]])
    buckets = np.array([[2, 3, 0], [2, 0, 0]])
    cells = attention.mean_attention_by_type_and_bucket(weights, types, buckets)
    assert len(cells) == 4 * 8 and cells["count"].sum() == 3
    click = cells[(cells.behaviour == "click") & (cells.time_bucket == "<5m")].iloc[0]
    assert click["mean_weight"] == pytest.approx(0.6) and click["relative_weight"] == pytest.approx(0.7)
    assert click["count"] == 2
    buy = cells[(cells.behaviour == "buy") & (cells.time_bucket == "<30m")].iloc[0]
    assert buy["mean_weight"] == pytest.approx(0.8) and buy["relative_weight"] == pytest.approx(1.6)
    matrix = attention.heatmap_matrix(cells)
    assert matrix.shape == (4, 8)
    assert matrix[0, 1] == pytest.approx(0.7) and matrix[3, 2] == pytest.approx(1.6)
    assert np.isnan(matrix).sum() == 30 and math.isnan(matrix[1, 0])


import pandas as pd  # noqa: E402

from pipeline.experiments import run as experiment  # noqa: E402
from tiny_work import DAYS, ablation_work, experiment_argv  # noqa: E402


def test_choose_window_takes_the_days_just_before_the_evaluation_day():
    days = ["2026-11-01", "2026-11-02", "2026-11-04", "2026-11-05", "2026-11-06"]
    assert experiment.choose_window(days, None, 10) == ("2026-11-06", "2026-11-04", "2026-11-05")
    assert experiment.choose_window(days, None, 1) == ("2026-11-06", "2026-11-05", "2026-11-05")
    assert experiment.choose_window(days, "2026-11-02", 3) == ("2026-11-02", "2026-11-01", "2026-11-01")
    with pytest.raises(FileNotFoundError, match="no examples on the day before 2026-11-04"):
        experiment.choose_window(days, "2026-11-04", 3)
    with pytest.raises(FileNotFoundError, match="no examples on 2026-11-03"):
        experiment.choose_window(days, "2026-11-03", 3)
    with pytest.raises(FileNotFoundError, match="run dupn build-examples"):
        experiment.choose_window([], None, 3)


def test_with_heads_keeps_the_configured_head_settings():
    from configs.loader import load_config
    config = load_config("small")
    alone = experiment.with_heads(config, ["power"])
    assert [h.name for h in alone.model.heads] == ["power"]
    assert alone.model.heads[0].hidden_units == [32]
    assert [h.name for h in config.model.heads] == ["ctr", "l2r", "talent", "power"]   # untouched


def test_ablation_writes_the_table_and_chart():
    work = ablation_work()
    table = pd.read_csv(work / "experiments" / "ablation.csv")
    assert table["model"].tolist() == ["wide", "dupn-all"]
    metrics = ["CTR AUC", "L2R AUC", "Talent AUC", "Power accuracy"]
    values = table[metrics].to_numpy()
    assert np.all((values >= 0) & (values <= 1))
    # trained on day 1, evaluated on day 2: every impression of day 2, and the oracle beside them
    assert (table["steps"] > 0).all() and table["error"].isna().all()
    assert table["CTR oracle AUC"].iloc[0] > 0.65      # clicks planted at 0.7 vs 0.15
    assert_real_png(work / "experiments" / "ablation.png")


def test_attention_reuses_the_ablation_dupn_and_writes_heatmap_and_user_view():
    work = ablation_work()
    assert experiment.main(experiment_argv(work, "attention")) == 0
    table = pd.read_csv(work / "experiments" / "attention.csv")
    cells = table[table["view"] == "type x time bucket"]
    assert len(cells) == 4 * 8
    # every real behaviour of the day's ctr examples falls in exactly one cell
    from configs.loader import load_config
    from features.contract import Contract
    from features.tfrecord import read_dataset
    from tiny_work import OVERRIDES
    contract = Contract.from_config(load_config("small", OVERRIDES))
    files = str(work / "examples" / "ctr" / f"dt={DAYS[1]}" / "*.tfrecord.gz")
    behaviours = sum(int((inputs["seq_type"] > 0).numpy().sum())
                     for inputs, _ in read_dataset(files, contract, 256))
    assert cells["count"].sum() == behaviours
    user = table[table["view"].str.startswith("user")]
    assert user["query"].nunique() >= 2
    assert user["query"].str.startswith("own: ").any()
    for _, weights in user.groupby("query")["weight"]:
        assert weights.sum() == pytest.approx(1.0, abs=1e-4)     # attention over the real history
    assert_real_png(work / "experiments" / "attention.png")


def test_multitask_curves_alone_and_together(tmp_path):
    from configs.loader import load_config
    from features.contract import Contract
    from pipeline.experiments.multitask import CURVE_POINTS
    from tiny_work import OVERRIDES, make_work
    work, _ = make_work(tmp_path, Contract.from_config(load_config("small", OVERRIDES)))
    argv = experiment_argv(work, "multitask", "--tasks", "ctr,power", "--set", "model.variant=wide",
                           "--set", "trainer.batch_size=32")
    assert experiment.main(argv) == 0
    table = pd.read_csv(work / "experiments" / "multitask.csv")
    assert set(zip(table.setting, table.task)) == {("alone", "ctr"), ("alone", "power"),
                                                   ("together", "ctr"), ("together", "power")}
    for (setting, task), curve in table.groupby(["setting", "task"]):
        steps = curve["step"].tolist()
        # the untrained start, then every checkpoint, evenly spaced up to CURVE_POINTS (ctr alone:
        # 9 steps, every 2 -> 2, 4, 6, 8, 9; power alone: 24 samples, one step)
        every = math.ceil(steps[-1] / CURVE_POINTS)
        assert steps[0] == 0 and steps == sorted(steps), (setting, task, steps)
        assert steps[1:] == sorted({*range(every, steps[-1], every), steps[-1]}), (setting, task, steps)
        assert curve["metric"].iloc[0] == ("accuracy" if task == "power" else "AUC")
    # the together run trains on both tasks' samples (288 + 24), so it runs more steps than ctr alone
    last = table.groupby(["setting", "task"])["step"].max()
    assert last["alone", "ctr"] == 9 and last["alone", "power"] == 1 and last["together", "ctr"] == 10
    assert_real_png(work / "experiments" / "multitask.png")


def test_unknown_variant_is_named(tmp_path, capsys):
    work = ablation_work()
    assert experiment.main(experiment_argv(work, "ablation", "--variants", "wide,dupn-max")) == 1
    assert "unknown variants ['dupn-max']" in capsys.readouterr().err


def test_transfer_reads_what_dupn_transfer_wrote_and_runs_the_missing_modes(tmp_path):
    """rs, ra and ft stand in as already written (their JSON as `dupn transfer` writes it, to keep
    the test fast); rt is missing, so the experiment runs `dupn transfer --mode rt` for real."""
    import json
    import shutil

    from pipeline.jobs.publish import publish
    source = ablation_work()
    work = tmp_path / "work"
    shutil.copytree(source / "examples", work / "examples")
    publish(source / "experiments" / "runs" / "ablation" / "dupn-all", work, "dupn-all", 1)
    (work / "transfer").mkdir()
    for i, mode in enumerate(("rs", "ra", "ft")):
        curve = [{"mode": mode, "epoch": e, "steps": 3 * e, "seconds": 1.5 * e + i, "auc": 0.5 + 0.05 * e}
                 for e in (1, 2)]
        (work / "transfer" / f"{mode}.json").write_text(json.dumps(
            {"mode": mode, "train": [DAYS[0], DAYS[0]], "test_date": DAYS[1], "curve": curve}))
    assert experiment.main(experiment_argv(work, "transfer")) == 0
    table = pd.read_csv(work / "experiments" / "transfer.csv")
    assert table["mode"].tolist() == ["rs", "rs", "ra", "ra", "rt", "rt", "ft", "ft"]   # --small: 2 epochs
    rt = table[table["mode"] == "rt"]
    assert (rt["seconds"] > 0).all() and rt["auc"].between(0, 1).all()
    assert json.loads((work / "transfer" / "rt.json").read_text())["test_date"] == DAYS[1]
    assert_real_png(work / "experiments" / "transfer.png")


def test_sharing_and_balance_against_each_task_alone(tmp_path):
    from configs.loader import load_config
    from features.contract import Contract
    from pipeline.experiments.sharing import STRUCTURES
    from tiny_work import OVERRIDES, make_work
    work, _ = make_work(tmp_path, Contract.from_config(load_config("small", OVERRIDES)))
    heads = ("--set", "model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
             "{name: power, weight: 0.5, hidden_units: [8]}]",
             "--set", "model.expert_units=[8]", "--set", "model.experts=2")
    # uncertainty, gradnorm and pcgrad have their own tests (tests/test_models_balance.py); here they would
    # only add minutes
    methods = "fixed,dwa"
    assert experiment.main(experiment_argv(work, "sharing", *heads)) == 0
    table = pd.read_csv(work / "experiments" / "sharing.csv")
    metrics = table[table["gate"].isna()]
    assert sorted(zip(metrics.setting, metrics.task)) == sorted(
        (s, t) for s in STRUCTURES for t in ("ctr", "power"))
    assert np.allclose(metrics["gain"], metrics["value"] - metrics["alone"])
    # every task's own gate (and ple's lower-level ones) spreads weights summing to 1 over its experts
    gates = table[table["gate"].notna()]
    assert set(gates["setting"]) == {"mmoe", "ple"}
    assert {"ctr", "power"} <= set(gates[gates.setting == "mmoe"]["gate"])
    assert np.allclose(gates.groupby(["setting", "gate"])["value"].sum(), 1.0, atol=1e-4)
    for png in ("sharing.png", "sharing_gates.png"):
        assert_real_png(work / "experiments" / png)

    alone_checkpoint = work / "experiments" / "runs" / "alone" / "ctr" / "checkpoints" / "checkpoint"
    trained_at = alone_checkpoint.stat().st_mtime_ns
    assert experiment.main(experiment_argv(work, "balance", *heads, "--variants", methods)) == 0
    assert alone_checkpoint.stat().st_mtime_ns == trained_at   # the alone runs are shared, not retrained
    table = pd.read_csv(work / "experiments" / "balance.csv")
    metrics = table[table["value"].notna()]
    assert sorted(zip(metrics.setting, metrics.task)) == sorted(
        (m, t) for m in methods.split(",") for t in ("ctr", "power"))
    weights = table[table["weight"].notna()]
    assert set(weights["setting"]) == set(methods.split(",")) and set(weights["task"]) == {"ctr", "power"}
    fixed = weights[weights.setting == "fixed"]
    assert np.allclose(fixed[fixed.task == "power"]["weight"], 0.5)   # the configured weight
    assert (weights["weight"] > 0).all()
    for png in ("balance.png", "balance_weights.png"):
        assert_real_png(work / "experiments" / png)
