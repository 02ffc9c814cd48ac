"""`dupn evaluate`: per-task metrics, the oracle join, the JSON written and printed."""
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from configs.loader import load_config
from features.contract import Contract
from features.tfrecord import encode_example
from pipeline.evaluation import evaluate
from pipeline.evaluation import metrics

DATE = "2026-11-12"


@pytest.fixture(scope="module")
def config():
    return load_config("small")


@pytest.fixture(scope="module")
def contract(config):
    return Contract.from_config(config)


def write_records(path, rows, contract):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in rows:
            writer.write(encode_example(row, contract))


def binary_rows(task_index, labels, scores, weights=None):
    """Examples whose first ranking feature is the score the stand-in model returns."""
    weights = weights or [1.0] * len(labels)
    return [{"task": task_index, "label": float(y), "weight": float(w), "request_id": f"r{i // 3}",
             "item_id": f"i{i}", "user_id": f"u{i}", "rank_features": [s] + [0.0] * 7,
             "seq_item_id": [f"i{i + 1}", f"i{i + 2}"], "seq_type": [1, 4]}
            for i, (y, s, w) in enumerate(zip(labels, scores, weights))]


class StandInModel:
    """Test stand-in for a trained model: binary heads echo rank_features[:, 0]; power is
    confident in the class written in rank_features[:, 1]."""

    def __call__(self, inputs, training=False):
        score = inputs["rank_features"][:, 0]
        power = tf.one_hot(tf.cast(inputs["rank_features"][:, 1], tf.int32), 7) * 0.9 + 0.1 / 7
        return {"ctr": score[:, None], "l2r": score, "talent": score, "power": power}


CTR_LABELS = [1, 1, 0, 1, 0, 0, 1]
CTR_SCORES = [0.8, 0.6, 0.6, 0.4, 0.2, 0.4, 0.9]
POWER_LABELS = [0, 0, 1, 1, 1, 2]
POWER_PREDICTED = [0, 1, 1, 1, 2, 1]


@pytest.fixture(scope="module")
def examples(tmp_path_factory, contract):
    root = tmp_path_factory.mktemp("work") / "examples"
    write_records(root / "ctr" / f"dt={DATE}" / "part-00000.tfrecord.gz",
                  binary_rows(0, CTR_LABELS[:4], CTR_SCORES[:4]), contract)
    # A second shard: files of one day are read together.
    rows = binary_rows(0, CTR_LABELS, CTR_SCORES)[4:]
    write_records(root / "ctr" / f"dt={DATE}" / "part-00001.tfrecord.gz", rows, contract)
    write_records(root / "l2r" / f"dt={DATE}" / "part-00000.tfrecord.gz",
                  binary_rows(1, [1, 0, 1, 0], [0.7, 0.5, 0.3, 0.1], [5.0, 1.0, 1.0, 1.0]), contract)
    power = [{"task": 3, "label": float(y), "weight": 1.0, "user_id": f"u{i}",
              "rank_features": [0.0, float(p)] + [0.0] * 6}
             for i, (y, p) in enumerate(zip(POWER_LABELS, POWER_PREDICTED))]
    write_records(root / "power" / f"dt={DATE}" / "part-00000.tfrecord.gz", power, contract)
    return root


def test_evaluate_model_metrics_match_hand_values(examples, contract):
    files = evaluate.example_files(examples, DATE)
    assert sorted(files) == ["ctr", "l2r", "power"] and len(files["ctr"]) == 2
    result = evaluate.evaluate_model(StandInModel(), contract, files, batch_size=3)
    assert list(result) == ["ctr", "l2r", "power"]
    # ctr: the hand-checked ranking of test_metrics (7/9) plus a top-scored positive (.9):
    # positives win 7 + 3 of 4 * 3 pairs.
    assert result["ctr"]["auc"] == pytest.approx(10 / 12)
    assert result["ctr"]["n"] == 7
    assert result["ctr"]["log_loss"] == pytest.approx(metrics.log_loss(CTR_LABELS, CTR_SCORES))
    assert "weighted_auc" not in result["ctr"] and "oracle_auc" not in result["ctr"]
    assert result["l2r"]["auc"] == pytest.approx(3 / 4)
    # weighted: the buy (w 5) at .7 beats both negatives; the click at .3 beats one of two.
    assert result["l2r"]["weighted_auc"] == pytest.approx((5 * 2 + 1 * 1) / (6 * 2))
    power = result["power"]
    assert power["n"] == 6 and power["accuracy"] == pytest.approx(0.5)
    np.testing.assert_allclose(power["precision"], [1.0, 0.5, 0.0, 0, 0, 0, 0])
    np.testing.assert_allclose(power["recall"], [0.5, 2 / 3, 0.0, 0, 0, 0, 0])


def test_oracle_auc_joined_on_request_and_item(examples, contract, tmp_path):
    raw = tmp_path / "raw"
    oracle_dir = raw / "_oracle" / "impressions" / f"dt={DATE}"
    oracle_dir.mkdir(parents=True)
    # The oracle knows 6 of the 7 impressions (not i6), plus one impression of another request.
    # Its probabilities rank the known ones perfectly except i3 (a positive) below i2.
    frame = pd.DataFrame({"request_id": ["r0", "r0", "r0", "r1", "r1", "r1", "r9"],
                          "item_id": ["i0", "i1", "i2", "i3", "i4", "i5", "i0"],
                          "click_prob": [0.9, 0.8, 0.5, 0.4, 0.1, 0.2, 0.99]})
    frame.to_parquet(oracle_dir / "part-00000.parquet")
    oracle = evaluate.read_oracle(raw, DATE)
    result = evaluate.evaluate_model(StandInModel(), contract, evaluate.example_files(examples, DATE, ["ctr"]),
                                     oracle=oracle)
    ctr = result["ctr"]
    assert ctr["oracle_n"] == 6
    # positives .9 .8 .4 against negatives .5 .1 .2: 3 + 3 + 2 of 9 pairs.
    assert ctr["oracle_auc"] == pytest.approx(8 / 9)
    # the model's AUC on the same 6 samples: the hand-checked 7/9.
    assert ctr["auc_on_oracle_samples"] == pytest.approx(7 / 9)
    assert evaluate.read_oracle(raw, "2026-11-13") is None
    assert "blind_oracle_auc" not in ctr and "blind_prob" not in oracle   # old data: no column


def test_blind_oracle_auc_where_the_column_exists(examples, contract, tmp_path):
    raw = tmp_path / "raw"
    oracle_dir = raw / "_oracle" / "impressions" / f"dt={DATE}"
    oracle_dir.mkdir(parents=True)
    # The blind oracle ranks the positives (i0, i1, i3) .9 .3 .4 against negatives .5 .1 .2:
    # 3 + 2 + 2 of 9 pairs; the oracle is perfect.
    pd.DataFrame({"request_id": ["r0", "r0", "r0", "r1", "r1", "r1"],
                  "item_id": ["i0", "i1", "i2", "i3", "i4", "i5"],
                  "click_prob": [0.9, 0.8, 0.5, 0.7, 0.1, 0.2],
                  "blind_prob": [0.9, 0.3, 0.5, 0.4, 0.1, 0.2]}).to_parquet(oracle_dir / "part-00000.parquet")
    oracle = evaluate.read_oracle(raw, DATE)
    ctr = evaluate.evaluate_model(StandInModel(), contract, evaluate.example_files(examples, DATE, ["ctr"]),
                                  oracle=oracle)["ctr"]
    assert ctr["oracle_auc"] == pytest.approx(1.0)
    assert ctr["blind_oracle_auc"] == pytest.approx(7 / 9)


def test_missing_head_is_named(examples, contract):
    files = {"shop": evaluate.example_files(examples, DATE)["ctr"]}
    with pytest.raises(KeyError, match="no 'shop' head"):
        evaluate.evaluate_model(StandInModel(), contract, files)


def test_main_prints_and_writes_json_for_the_published_model(examples, config, monkeypatch, capsys):
    work = examples.parent
    (work / "published" / "run-1").mkdir(parents=True)
    (work / "published" / "LATEST").write_text("run-1\n")
    (work / "manifest.json").write_text(json.dumps({"2026-11-11": {"inputs": {"raw": "/nowhere"}}}))
    loaded = []
    monkeypatch.setattr(evaluate, "load_model", lambda d: loaded.append(d) or (config, StandInModel()))
    assert evaluate.main(["--work", str(work), "--date", DATE, "--json"]) == 0
    assert loaded == [work / "published" / "run-1"]
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"ctr", "l2r", "power"}     # talent: a head without examples
    assert set(printed["ctr"]) >= {"auc", "n"} and set(printed["power"]) >= {
        "accuracy", "precision", "recall", "n"}
    assert len(printed["power"]["precision"]) == 7
    assert json.loads((work / "eval" / f"{DATE}.json").read_text()) == printed
    assert evaluate.find_raw(work).as_posix() == "/nowhere"


def test_main_fails_clearly_without_published_model(tmp_path, capsys):
    assert evaluate.main(["--work", str(tmp_path), "--date", DATE]) == 1
    assert "no published model" in capsys.readouterr().err


def test_nan_metrics_become_null_in_json(tmp_path):
    metrics.write_metrics(tmp_path / "e.json", {"ctr": {"auc": float("nan"), "n": 0}})
    assert json.loads((tmp_path / "e.json").read_text()) == {"ctr": {"auc": None, "n": 0}}


def test_json_shape_of_a_tiny_trained_model(capsys):
    """The real path: a dupn-all run trained by pipeline.training.train on the tiny work dir, loaded from
    its model dir; the raw root (and so the oracle) found through the manifest."""
    from tiny_work import DAYS, ablation_work
    work = ablation_work()
    model_dir = work / "experiments" / "runs" / "ablation" / "dupn-all"
    capsys.readouterr()
    assert evaluate.main(["--work", str(work), "--model", str(model_dir), "--date", DAYS[1], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["ctr", "l2r", "talent", "power"]      # the run's heads, in task order
    for task in ("ctr", "l2r", "talent"):
        assert 0.0 <= printed[task]["auc"] <= 1.0 and printed[task]["n"] > 0
    assert printed["ctr"]["n"] == printed["ctr"]["oracle_n"] == 24 * 3 * 4   # every impression joined
    assert printed["ctr"]["oracle_auc"] > 0.65
    assert "weighted_auc" in printed["l2r"]                          # buys weigh 5
    power = printed["power"]
    assert power["n"] == 24 and 0.0 <= power["accuracy"] <= 1.0
    assert len(power["precision"]) == len(power["recall"]) == 7
    assert json.loads((work / "eval" / f"{DAYS[1]}.json").read_text()) == printed


class ESMMStandIn(StandInModel):
    """A stand-in whose ctr head is ESMM's: scores() adds cvr and ctcvr from rank_features[:, 2:4]."""

    def scores(self, inputs, training=False):
        features_ = inputs["rank_features"]
        return {**self(inputs), "ctr": features_[:, 0], "cvr": features_[:, 2], "ctcvr": features_[:, 3]}


def esmm_rows():
    """ctr rows: click, buy (the fifth a buy logged without a click), pCVR and pCTCVR."""
    clicks, buys = [1, 1, 1, 0, 0, 1], [1, 0, 1, 0, 1, 0]
    cvr, ctcvr = [0.9, 0.4, 0.45, 0.2, 0.99, 0.5], [0.5, 0.3, 0.2, 0.1, 0.6, 0.05]
    return [{**row, "label_buy": float(b), "rank_features": [0.5, 0.0, v, w] + [0.0] * 4}
            for row, b, v, w in zip(binary_rows(0, clicks, [0.5] * 6), buys, cvr, ctcvr)]


def test_an_esmm_model_adds_ctcvr_and_cvr_auc_to_the_ctr_entry(tmp_path, contract):
    write_records(tmp_path / "ctr" / f"dt={DATE}" / "part-00000.tfrecord.gz", esmm_rows(), contract)
    files = evaluate.example_files(tmp_path, DATE, ["ctr"])
    ctr = evaluate.evaluate_model(ESMMStandIn(), contract, files, batch_size=4)["ctr"]
    # conversions (click and buy): rows 0 and 2. pCTCVR .5 beats .3 .1 .05 (not .6: the unclicked
    # buy counts as none); .2 beats .1 and .05: 5 of 2 * 4 pairs.
    assert ctr["ctcvr_auc"] == pytest.approx(5 / 8)
    # clicked rows 0, 1, 2, 5: pCVR .9 beats .4 and .5, .45 beats .4: 3 of 4 pairs.
    assert ctr["cvr_auc"] == pytest.approx(3 / 4)
    assert ctr["buy_rate"] == pytest.approx(2 / 6) and ctr["buy_rate_of_clicks"] == pytest.approx(2 / 4)
    plain = evaluate.evaluate_model(StandInModel(), contract, files, batch_size=4)["ctr"]
    assert not {"ctcvr_auc", "cvr_auc", "buy_rate"} & set(plain)


def test_the_publish_gate_skips_conversion_aucs_the_data_cannot_define():
    from pipeline.jobs.publish import gate
    ctr = {"auc": 0.7, "positive_rate": 0.3, "n": 10, "ctcvr_auc": float("nan"), "buy_rate": 0.0,
           "cvr_auc": float("nan"), "buy_rate_of_clicks": 0.0}
    assert gate({"ctr": ctr}, None, 0.01) == []
    assert gate({"ctr": {**ctr, "buy_rate": 0.1}}, None, 0.01) == ["ctr ctcvr_auc is nan"]


def test_a_keras_esmm_model_is_evaluated_through_its_scores(tmp_path):
    from models.dupn import build_model
    from tiny_work import OVERRIDES, write_day
    config = load_config("small", [*OVERRIDES, "model.esmm=true"])
    contract_ = Contract.from_config(config)
    write_day(tmp_path / "examples", tmp_path / "raw", DATE, contract_, users=8)
    model = build_model(config, contract_)
    files = evaluate.example_files(tmp_path / "examples", DATE, ["ctr"])
    ctr = evaluate.evaluate_model(model, contract_, files, batch_size=32)["ctr"]
    assert ctr["n"] == 8 * 3 * 4 and 0.0 < ctr["buy_rate"] < ctr["positive_rate"]
    for name in ("auc", "ctcvr_auc", "cvr_auc"):
        assert 0.0 <= ctr[name] <= 1.0, name


def test_the_publish_gate_compares_the_configured_headline_metric():
    from pipeline.jobs.publish import gate, headline
    old = {"ctr": {"auc": 0.70, "gauc": 0.60, "gauc_users": 50, "gauc_se": 0.01, "n": 10_000,
                   "positive_rate": 0.1},
           "l2r": {"auc": 0.60, "gauc": 0.55, "ndcg_at_10": 0.50, "ndcg_requests": 40,
                   "ndcg_at_10_se": 0.01, "gauc_users": 40, "gauc_se": 0.01, "n": 10_000,
                   "positive_rate": 0.2}}
    # AUC holds, the per-user metrics drop by 0.05 (five standard errors).
    new = {"ctr": {**old["ctr"], "gauc": 0.55}, "l2r": {**old["l2r"], "ndcg_at_10": 0.45}}
    assert headline("ctr") == "auc" and headline("power", "gauc") == "accuracy"
    assert headline("l2r", "gauc") == "ndcg_at_10" and headline("talent", "gauc") == "gauc"
    assert gate(new, old, 0.01) == []            # the default keeps today's gate: AUC
    reasons = gate(new, old, 0.01, "gauc")
    assert len(reasons) == 2 and reasons[0].startswith("ctr gauc 0.5500")
    assert reasons[1].startswith("l2r ndcg_at_10 0.4500")
    # A drop within the measured standard error passes.
    wide = {"ctr": {**new["ctr"], "gauc_se": 0.1}, "l2r": {**new["l2r"], "ndcg_at_10_se": 0.1}}
    assert gate(wide, old, 0.01, "gauc") == []
    # A GAUC no user defines (every user one class) is not a reason to refuse.
    assert gate({"ctr": {**old["ctr"], "gauc": float("nan"), "gauc_users": 0}}, None, 0.01, "gauc") == []


def test_evaluate_reports_gauc_per_user_and_ndcg_per_request(tmp_path, contract):
    # l2r rows: request r0 = user u0 (rows 0-2), r1 = u1 (rows 3-5).
    # u0/r0: labels 1 0 1, weights 5 1 1, scores .2 .6 .4: AUC 0 (both positives below the
    #   negative .6), gains 5 0 1 ranked .6 .4 .2 ->
    #   0, 1, 5: DCG 1 / log2(3) + 5 / 2; ideal 5, 1, 0: 5 + 1 / log2(3).
    # u1/r1: labels 0 1 0, scores .1 .9 .3: AUC 1, gain 1 ranked first: NDCG 1.
    rows = binary_rows(1, [1, 0, 1, 0, 1, 0], [0.2, 0.6, 0.4, 0.1, 0.9, 0.3],
                       [5.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    for i, row in enumerate(rows):
        row["user_id"] = f"u{i // 3}"
    path = tmp_path / "l2r" / f"dt={DATE}" / "part-00000.tfrecord.gz"
    write_records(path, rows, contract)
    result = evaluate.evaluate_model(StandInModel(), contract, {"l2r": [str(path)]}, batch_size=4)
    l2r = result["l2r"]
    assert l2r["gauc"] == pytest.approx((3 * 0.0 + 3 * 1.0) / 6)
    assert l2r["gauc_users"] == 2 and l2r["gauc_users_excluded"] == 0
    r0 = (1 / np.log2(3) + 5 / 2) / (5 + 1 / np.log2(3))
    assert l2r["ndcg_at_10"] == pytest.approx((r0 + 1.0) / 2)
    assert l2r["ndcg_requests"] == 2
