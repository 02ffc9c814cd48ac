"""`dupn transfer`: the shop task learnt four ways (rs, ra, rt, ft), each above chance where it
depends on the history, with AUC against training seconds recorded for each; ft warm-starts from
the published model, every variable of it, with only the new shop head's own variables left as built."""
import csv

import numpy as np
import tensorflow as tf

from features.contract import Contract
from pipeline.jobs import transfer
from pipeline.layout import read_json
from pipeline.training.checkpoints import RunCheckpoints, load_config_of, make_optimizer, new_model
from train_helpers import checkpoint_values


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


def test_every_mode_learns_the_shop_task_above_chance_and_records_auc_against_time(tmp_path):
    # tests/tiny_work.py's shop task: a user likes the shop of the category most of their history
    # is in and not another; neither user nor shop alone tells which (each user likes one of their
    # two shops, each shop is liked by one category's users and not by another's). The test day's
    # users are new: only what their history says generalises.
    from pipeline.jobs.publish import publish
    from pipeline.training.train import head_tasks, range_data, train
    from tiny_work import write_day
    from train_helpers import tiny_config
    config = tiny_config()
    contract = Contract.from_config(config)
    work, days = tmp_path / "work", ("2026-11-01", "2026-11-02", "2026-11-03")
    for i, day in enumerate(days):
        write_day(work / "examples", tmp_path / "raw", day, contract, users=96, seed=i,
                  first_user=0 if day < days[2] else 1000)
    train(config, range_data(work / "examples", days[0], days[0], head_tasks(config)),
          work / "runs" / "base", log=lambda message: None)
    published = publish(work / "runs" / "base", work, "base", keep=1)
    assert transfer.main(["--mode", "rs,ft", "--work", str(work), "--epochs", "3"]) == 0
    # ra trains every task's samples (five times rs's): one pass shows its heads and counts.
    assert transfer.main(["--mode", "ra", "--work", str(work), "--epochs", "1"]) == 0
    # rt's shallow network on frozen features learns more slowly (and costs little a pass).
    assert transfer.main(["--mode", "rt", "--work", str(work), "--epochs", "10"]) == 0
    aucs = {m: read_json(work / "transfer" / f"{m}.json")["final_auc"] for m in transfer.MODES}
    # Chance is 0.5; 192 test samples: an AUC's standard error is about 0.04.
    assert aucs["rs"] > 0.8 and aucs["ft"] > 0.8 and aucs["rt"] > 0.6, aucs

    # The curves: every mode's passes in order (modes run apart accumulate), AUC against seconds.
    with (work / "transfer" / "transfer.csv").open() as f:
        rows = list(csv.DictReader(f))
    epochs = {"rs": 3, "ra": 1, "rt": 10, "ft": 3}
    assert [(r["mode"], int(r["epoch"])) for r in rows] == [
        (m, e) for m in transfer.MODES for e in range(1, epochs[m] + 1)]
    for mode in transfer.MODES:
        curve = [r for r in rows if r["mode"] == mode]
        seconds = [float(r["seconds"]) for r in curve]
        assert 0 < seconds[0] and seconds == sorted(seconds)
        assert all(0.0 <= float(r["auc"]) <= 1.0 for r in curve)
        summary = read_json(work / "transfer" / f"{mode}.json")
        assert summary["test_date"] == days[2] and summary["train"] == [days[0], days[1]]
        assert summary["final_auc"] == float(curve[-1]["auc"])
    stats = [read_json(work / "examples" / "_stats" / f"dt={d}.json")["tasks"] for d in days[:2]]
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
    steps = int([r for r in rows if r["mode"] == "ft"][-1]["steps"])
    assert end.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == \
        start.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") + steps
    assert read_json(work / "transfer" / "ft.json")["source"] == str(published)
