"""Training jobs, the parts that need no training: cluster arguments, the publish gate, atomic publishing
with the last K kept, the manifest, the held-out split, step counts, the resumable stream, request rows."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from features.contract import Contract
from pipeline.training import cluster
from pipeline.jobs import daydata
from pipeline import layout
from pipeline.jobs import publish
from pipeline.serving import score
from pipeline.training import train
from train_helpers import fake_run, tiny_config, tiny_examples


# ---- cluster arguments -------------------------------------------------------------------------

def test_cluster_shape_is_parsed_and_bad_ones_named():
    assert cluster.parse_cluster_shape("workers=2,ps=1") == {"worker": 2, "ps": 1}
    assert cluster.parse_cluster_shape(" ps=2 , worker=3 ") == {"worker": 3, "ps": 2}
    for bad in ("workers=2", "workers=two,ps=1", "gpus=1,ps=1", "workers=0,ps=1"):
        with pytest.raises(ValueError, match="--local-cluster"):
            cluster.parse_cluster_shape(bad)


def test_tf_config_read_and_roles():
    assert cluster.read_tf_config({}) is None
    assert cluster.task_of(None) == ("chief", 0)
    spec = {"cluster": {"worker": ["a:1"], "ps": ["b:2"], "chief": ["c:3"]},
            "task": {"type": "worker", "index": 0}}
    value = cluster.read_tf_config({"TF_CONFIG": json.dumps(spec)})
    assert cluster.task_of(value) == ("worker", 0) and cluster.uses_parameter_servers(value)
    assert not cluster.uses_parameter_servers({"cluster": {"worker": ["a:1"]}})
    with pytest.raises(ValueError, match="not valid JSON"):
        cluster.read_tf_config({"TF_CONFIG": "{cluster"})
    with pytest.raises(ValueError, match="only the chief trains"):
        cluster.make_strategy(value)


def test_free_ports_differ():
    ports = cluster.free_ports(5)
    assert len(set(ports)) == 5 and all(p > 0 for p in ports)


# ---- the publish gate --------------------------------------------------------------------------

def binary(auc, log_loss=0.4, rate=0.2, n=100):
    return {"auc": auc, "log_loss": log_loss, "positive_rate": rate, "n": n}


def test_gate_passes_a_model_no_worse_than_the_margin():
    previous = {"ctr": binary(0.70), "power": {"accuracy": 0.40, "log_loss": 1.5, "n": 50,
                                               "precision": [0.1] * 7}}
    new = {"ctr": binary(0.695), "power": {"accuracy": 0.41, "log_loss": 1.4, "n": 50,
                                          "precision": [float("nan")] * 7}}   # lists are not gated
    assert publish.gate(new, previous, margin=0.01) == []
    assert publish.gate(new, None, margin=0.01) == []


def test_gate_refuses_a_worse_headline_metric():
    previous = {"ctr": binary(0.70, n=100_000), "power": {"accuracy": 0.40, "log_loss": 1.5, "n": 5000}}
    new = {"ctr": binary(0.68, n=100_000), "power": {"accuracy": 0.35, "log_loss": 1.5, "n": 5000}}
    reasons = publish.gate(new, previous, margin=0.01)
    assert len(reasons) == 2
    assert reasons[0].startswith("ctr auc 0.6800 is more than 0.01 below the previous model's 0.7000")
    assert reasons[1].startswith("power accuracy 0.3500")
    assert publish.gate(new, previous, margin=0.1) == []


def test_gate_lets_a_drop_within_the_metrics_noise_pass():
    # AUC 0.5 on 20 positives and 80 negatives (Hanley-McNeil by hand): q1 = q2 = 1/3, so
    # variance = (0.25 + 98 / 12) / 1600 and the standard error is 0.0725.
    assert publish.standard_error("auc", 0.5, binary(0.5)) == pytest.approx(0.072529, abs=1e-6)
    assert publish.standard_error("accuracy", 0.4, {"n": 600}) == pytest.approx(0.02)
    # The same 0.05 drop: noise on 100 samples, a real loss on 100,000.
    assert publish.gate({"ctr": binary(0.55)}, {"ctr": binary(0.60)}, margin=0.01) == []
    assert publish.gate({"ctr": binary(0.55, n=100_000)}, {"ctr": binary(0.60, n=100_000)},
                        margin=0.01) != []
    assert publish.gate({"power": {"accuracy": 0.385, "n": 600}}, {"power": {"accuracy": 0.40}},
                        margin=0.01) == []


def test_gate_refuses_nan_and_none_but_not_metrics_the_data_cannot_define():
    assert publish.gate({"ctr": binary(float("nan"))}, None, 0.01) == ["ctr auc is nan"]
    assert publish.gate({"ctr": binary(0.7, log_loss=None)}, None, 0.01) == ["ctr log_loss is None"]
    assert publish.gate({"ctr": binary(0.7, log_loss=float("inf"))}, None, 0.01) == ["ctr log_loss is inf"]
    # One class only, or no rows: AUC is undefined by the data, not by the model.
    assert publish.gate({"ctr": binary(float("nan"), rate=0.0)}, None, 0.01) == []
    assert publish.gate({"ctr": binary(float("nan"), log_loss=float("nan"), n=0)}, None, 0.01) == []
    # The oracle's AUC is a fact of the data: never a reason.
    assert publish.gate({"ctr": {**binary(0.7), "oracle_auc": float("nan")}}, None, 0.01) == []


# ---- publishing ----------------------------------------------------------------------------------

def test_publish_copies_the_latest_checkpoint_and_keeps_the_last_k(tmp_path):
    work = tmp_path / "work"
    names = ["2026-11-01-backfill", "2026-11-02-daily", "2026-11-03-daily", "2026-11-04-daily"]
    for name in names:
        target = publish.publish(fake_run(work, name), work, name, keep=2)
        assert (work / "published" / "LATEST").read_text().strip() == name
        assert sorted(p.name for p in (target / "checkpoints").iterdir()) == [
            "checkpoint", "ckpt-20.data-00000-of-00001", "ckpt-20.index"]
        assert tf.train.latest_checkpoint(str(target / "checkpoints")).endswith("ckpt-20")
    kept = sorted(p.name for p in (work / "published").iterdir())
    assert kept == ["2026-11-03-daily", "2026-11-04-daily", "LATEST"]   # no staging left behind
    assert publish.dated_manifest(work)["published"] == names[2:]
    assert publish.current_model(work) == work / "published" / names[-1]


def test_prune_never_removes_the_model_in_service(tmp_path):
    work = tmp_path / "work"
    for name in ("a", "b", "c"):
        publish.publish(fake_run(work, name), work, name, keep=3)
    (work / "published" / "LATEST").write_text("a\n")   # an operator rolled back to a
    assert publish.prune(work, ["a", "b", "c"], keep=1) == ["a"]
    assert sorted(p.name for p in (work / "published").iterdir()) == ["LATEST", "a"]


def test_manifest_records_dates_in_order_with_nan_as_null(tmp_path):
    publish.record_date(tmp_path, "2026-11-03",
                        {"status": "refused", "metrics": {"ctr": {"auc": float("nan")}}})
    publish.record_date(tmp_path, "2026-11-01", {"status": "published"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["dates"]) == ["2026-11-01", "2026-11-03"]
    assert manifest["dates"]["2026-11-03"] == {"date": "2026-11-03", "status": "refused",
                                               "metrics": {"ctr": {"auc": None}}}


# ---- data of a run -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return tiny_examples(tmp_path_factory.mktemp("units"), ["2026-11-01", "2026-11-02"])


def test_range_data_counts_from_the_statistics_and_names_what_is_missing(examples):
    data = train.range_data(examples, "2026-11-01", "2026-11-02", ["ctr", "power"])
    stats = [json.loads((examples / "_stats" / f"dt={d}.json").read_text())
             for d in ("2026-11-01", "2026-11-02")]
    assert data.samples_by_task == {t: sum(s["tasks"][t]["samples"] for s in stats) for t in ("ctr", "power")}
    assert len(data.files) == 4
    with pytest.raises(FileNotFoundError, match=r"_stats/dt=2026-11-03.json: no examples for 2026-11-03"):
        train.range_data(examples, "2026-11-02", "2026-11-03", ["ctr"])
    config = tiny_config()
    assert train.target_steps(data.samples, config.trainer) == math.ceil(data.samples / 32)
    assert train.target_steps(65, config.trainer, steps_multiple=2) == 4   # 3 batches -> 2 executions
    assert layout.days_between("2026-10-30", "2026-11-02") == ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]


def test_resumed_stream_goes_on_where_the_checkpoint_stopped(examples):
    """Skipping k batches of the seeded stream gives exactly batches k, k+1, ... of a fresh start."""
    config = tiny_config()
    contract = Contract.from_config(config)
    data = train.range_data(examples, "2026-11-01", "2026-11-02", ["ctr", "l2r", "power"])

    def requests(stream, count):
        return [b[0]["request_id"].numpy().tolist() + b[0]["user_id"].numpy().tolist()
                for b in stream.take(count)]

    whole = requests(train.training_stream(data, contract, config), 7)
    assert requests(train.training_stream(data, contract, config, skip=4), 3) == whole[4:7]
    assert whole[0] != whole[4]


def test_holdout_split_is_by_user_and_deterministic(examples, tmp_path):
    ids = tf.constant([f"u{i}" for i in range(20_000)])
    mask = daydata.holdout_mask(ids, 0.1).numpy()
    assert 0.08 < mask.mean() < 0.12
    assert (daydata.holdout_mask(ids, 0.1).numpy() == mask).all()
    tasks = ["ctr", "power"]
    data, held = daydata.split_day(examples, "2026-11-01", tasks, 0.25, tmp_path / "split")
    counts = json.loads((tmp_path / "split" / "counts.json").read_text())
    total = json.loads((examples / "_stats" / "dt=2026-11-01.json").read_text())["tasks"]
    for task in tasks:
        assert counts["train"][task] + counts["holdout"][task] == total[task]["samples"]

    def users(files):
        records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(10_000)
        spec = {"user_id": tf.io.FixedLenFeature([], tf.string)}
        return {u for b in records for u in tf.io.parse_example(b, spec)["user_id"].numpy()}

    train_users, held_users = users(data.files), users([f for fs in held.values() for f in fs])
    assert held_users and train_users and not train_users & held_users
    assert daydata.holdout_mask(tf.constant(sorted(held_users)), 0.25).numpy().all()
    assert not daydata.holdout_mask(tf.constant(sorted(train_users)), 0.25).numpy().any()
    assert data.samples == sum(counts["train"][t] for t in tasks)


# ---- request rows (dupn score) -------------------------------------------------------------------

def test_request_values_are_padded_cut_and_named_when_wrong():
    contract = Contract(sequence_length=3, tag_slots=2, query_terms=2, rank_features=2,
                        tables={}, property_dims={})
    value = score.feature_value
    # The most recent behaviours are kept, oldest first; strings split on ';' (query on spaces too).
    assert value("a;b;c;d", "seq_item_id", contract, "r").tolist() == ["b", "c", "d"]
    assert value([1, 4], "seq_type", contract, "r").tolist() == [1, 4, 0]
    assert value("x|y|z;w", "seq_tags", contract, "r").tolist() == [["x", "y"], ["w", ""], ["", ""]]
    assert value("red  shoe big", "query", contract, "r").tolist() == ["red", "shoe"]
    assert value(None, "age_bucket", contract, "r").tolist() == 0
    assert value(7, "item_id", contract, "r").tolist() == "7"
    np.testing.assert_allclose(value("0.5", "rank_features", contract, "r"), [0.5, 0.0])
    with pytest.raises(score.RequestError, match=r"req.jsonl row 3: field rank_features: 3 values"):
        value([1, 2, 3], "rank_features", contract, "req.jsonl row 3")
    with pytest.raises(score.RequestError, match=r"field age_bucket"):
        value("old", "age_bucket", contract, "req.jsonl row 1")


# ---- the daily job's decision, with training and evaluation scripted -----------------------------

def scripted_job(monkeypatch, work, new_metrics, old_metrics, final_loss=0.5):
    """Runs jobrun.train_evaluate_publish on fake model dirs; training and evaluation return
    the given results, so only the job's decision is exercised."""
    from pipeline.training import checkpoints
    from pipeline.evaluation import evaluate
    from pipeline.jobs import jobrun
    from pipeline.training import train as training
    previous = publish.publish(fake_run(work, "2026-11-01-backfill"), work, "2026-11-01-backfill", keep=3)
    run_dir = fake_run(work, "2026-11-02-daily", steps=(30,))
    config = tiny_config()
    monkeypatch.setattr(training, "train", lambda *a, **k: {
        "steps": 10, "global_step": 30, "resumed_from": None, "final": {"loss": final_loss}})
    monkeypatch.setattr(checkpoints, "load_model",
                        lambda path: (config, "old" if path == previous else "new"))

    def evaluated(model, *args, **kwargs):   # new_metrics may be the error the evaluation raises
        result = new_metrics if model == "new" else old_metrics
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(evaluate, "evaluate_model", evaluated)
    code = jobrun.train_evaluate_publish(
        work=work, date="2026-11-02", kind="daily", config=config, run_dir=run_dir,
        data=train.TrainingData([], 100, {"ctr": 100}, {}), evaluation={"ctr": ["f"]},
        eval_info={"data": "next day", "date": "2026-11-03"}, raw=None, warm_start=previous,
        compare_with=previous, log=lambda m: None)
    return code, publish.dated_manifest(work)["dates"]["2026-11-02"]


def test_daily_decision_keeps_the_old_model_when_the_new_one_is_worse(monkeypatch, tmp_path):
    from pipeline.jobs import jobrun
    work = tmp_path / "work"
    code, entry = scripted_job(monkeypatch, work, {"ctr": binary(0.60)}, {"ctr": binary(0.70)})
    assert code == jobrun.EXIT_REFUSED
    assert entry["status"] == "refused" and entry["published"] is False
    assert entry["reason"] == ("ctr auc 0.6000 is more than 0.01 below the previous model's 0.7000 "
                               "(standard error 0.0735)")
    assert (work / "published" / "LATEST").read_text().strip() == "2026-11-01-backfill"
    # The evaluation file describes the model in service: the old one.
    assert json.loads((work / "eval" / "2026-11-03.json").read_text()) == {"ctr": binary(0.70)}


def test_daily_decision_publishes_a_model_within_the_margin(monkeypatch, tmp_path):
    from pipeline.jobs import jobrun
    work = tmp_path / "work"
    code, entry = scripted_job(monkeypatch, work, {"ctr": binary(0.695)}, {"ctr": binary(0.70)})
    assert code == jobrun.EXIT_OK and entry["status"] == "published"
    assert (work / "published" / "LATEST").read_text().strip() == "2026-11-02-daily"
    assert json.loads((work / "eval" / "2026-11-03.json").read_text()) == {"ctr": binary(0.695)}


def test_daily_decision_refuses_a_nan_training_loss(monkeypatch, tmp_path):
    from pipeline.jobs import jobrun
    code, entry = scripted_job(monkeypatch, tmp_path / "work", {"ctr": binary(0.8)}, {"ctr": binary(0.7)},
                               final_loss=float("nan"))
    assert code == jobrun.EXIT_REFUSED and entry["reason"] == "training loss is nan"


def test_daily_decision_refuses_a_model_whose_evaluation_failed(monkeypatch, tmp_path):
    # NaN scores cannot be ranked: the evaluation raises, and the model in service stays.
    from pipeline.jobs import jobrun
    work = tmp_path / "work"
    code, entry = scripted_job(monkeypatch, work, ValueError("Input contains NaN"), {"ctr": binary(0.7)})
    assert code == jobrun.EXIT_REFUSED
    assert entry["status"] == "refused" and entry["published"] is False
    assert entry["reason"] == "evaluation of the new model failed: Input contains NaN"
    assert "metrics" not in entry and entry["previous_metrics"] == {"ctr": binary(0.7)}
    assert (work / "published" / "LATEST").read_text().strip() == "2026-11-01-backfill"
    assert json.loads((work / "eval" / "2026-11-03.json").read_text()) == {"ctr": binary(0.7)}


def test_a_configured_head_without_examples_is_named_with_what_to_do(tmp_path):
    # Logs without a table (no follows: no talent samples) against a configuration with its head.
    layout.write_json(layout.stats_file(tmp_path, "2026-11-02"), {"tasks": {"ctr": {"samples": 0}}})
    with pytest.raises(FileNotFoundError, match=r"no ctr, talent examples from 2026-11-02 to "
                                                r"2026-11-02 .*leave the head out of model.heads"):
        train.range_data(tmp_path, "2026-11-02", "2026-11-02", ["ctr", "talent"])
    assert train.range_data(tmp_path, "2026-11-02", "2026-11-02", ["ctr"],
                            require_every_task=False).samples == 0
