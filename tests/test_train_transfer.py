"""`dupn transfer`: the shop task learnt four ways (rs, ra, rt, ft) on the backfilled tiny work dir;
AUC against training seconds recorded for each; ft warm-starts from the published model, every
variable of it, with only the new shop head's own variables left as built."""
import csv

import numpy as np
import tensorflow as tf

from features.contract import Contract
from pipeline.jobs import transfer
from pipeline.layout import read_json
from pipeline.training.checkpoints import RunCheckpoints, load_config_of, make_optimizer, new_model
from train_helpers import DAYS, checkpoint_values, copy_work


def test_all_four_modes_record_auc_against_training_time(tmp_path):
    work, _ = copy_work(tmp_path)
    published = work / "published" / (work / "published" / "LATEST").read_text().strip()
    assert transfer.main(["--mode", "all", "--work", str(work), "--epochs", "2"]) == 0
    with (work / "transfer" / "transfer.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["mode"], r["epoch"]) for r in rows] == [
        (m, e) for m in ("rs", "ra", "rt", "ft") for e in ("1", "2")]
    for mode in ("rs", "ra", "rt", "ft"):
        curve = [r for r in rows if r["mode"] == mode]
        assert 0 < float(curve[0]["seconds"]) < float(curve[1]["seconds"])
        assert all(0.0 <= float(r["auc"]) <= 1.0 for r in curve)   # the test day has both labels
        summary = read_json(work / "transfer" / f"{mode}.json")
        assert summary["test_date"] == DAYS[2] and summary["train"] == [DAYS[0], DAYS[1]]
        assert summary["final_auc"] == float(curve[-1]["auc"])
    stats = [read_json(work / "examples" / "_stats" / f"dt={d}.json")["tasks"] for d in DAYS[:2]]
    shop = sum(s["shop"]["samples"] for s in stats)
    assert read_json(work / "transfer" / "rt.json")["samples"] == shop
    assert read_json(work / "transfer" / "rs.json")["samples"] == shop
    assert read_json(work / "transfer" / "ra.json")["samples"] == sum(
        s[t]["samples"] for s in stats for t in ("ctr", "l2r", "power", "shop"))
    # rs learns shop alone, ra all tasks and shop, ft the published tasks plus a new shop head.
    heads = {m: [h["name"] for h in _config(work / "transfer" / m)["model"]["heads"]]
             for m in ("rs", "ra", "ft")}
    assert heads == {"rs": ["shop"], "ra": ["ctr", "l2r", "power", "shop"],
                     "ft": ["ctr", "l2r", "power", "shop"]}
    # ft went on from the published model's global step.
    start = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(published / "checkpoints")))
    end = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(work / "transfer" / "ft" / "checkpoints")))
    steps = int(rows[7]["steps"])
    assert end.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == \
        start.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") + steps
    assert read_json(work / "transfer" / "ft.json")["source"] == str(published)


def test_ft_starts_from_every_published_variable_and_adds_only_the_shop_head(shared_work, tmp_path):
    # The start of run_finetune: the published config with a shop head, warm-started with new layers
    # allowed; saved before any step and compared key by key with the published checkpoint.
    work, _ = shared_work
    published = work / "published" / (work / "published" / "LATEST").read_text().strip()
    config = transfer.with_heads(load_config_of(published), ["ctr", "l2r", "power", "shop"])
    model = new_model(config, Contract.from_config(config))
    optimizer = make_optimizer(config.trainer, model)
    model.compile(optimizer=optimizer)
    checkpoints = RunCheckpoints(model, optimizer, tmp_path / "ft")
    checkpoints.warm_start(published, allow_new_layers=True)
    start = checkpoint_values(tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "s")))
    source = checkpoint_values(tf.train.latest_checkpoint(str(published / "checkpoints")))
    assert set(source) < set(start)
    assert [k for k in source if not np.array_equal(start[k], source[k])] == []
    # The new variables: the shop head's weights (model/heads/3/...), the loss balancer's
    # tracker of the fourth task's weight, and the head's optimizer slots.
    new = sorted(set(start) - set(source))
    shop = model.task_variables("shop")
    # No talent head to copy: shop_head's [64, 32], so three kernels and three biases.
    assert len(shop) == 6 and all("/shop/" in v.name for v in shop)
    head = [k for k in new if k.startswith("model/heads/3/")]
    assert len(head) == len(shop)
    assert [k for k in new if k.startswith("model/") and k not in head] == [
        "model/balancer/weight_trackers/3/value/.ATTRIBUTES/VARIABLE_VALUE"]
    assert len([k for k in new if k.startswith("optimizer/")]) == 2 * len(shop)   # Adam's m and v


def test_unknown_mode_is_named(tmp_path, capsys):
    assert transfer.main(["--mode", "rs,xx", "--work", str(tmp_path)]) == 1
    assert "unknown xx" in capsys.readouterr().err


def _config(model_dir):
    import yaml
    return yaml.safe_load((model_dir / "config.yaml").read_text())
