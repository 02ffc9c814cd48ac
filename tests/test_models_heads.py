"""Heads: each loss over its own rows only (checked by hand), the weighted multi-task total, metrics."""
import math

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from features.contract import Contract, TASK_INDEX
from models.dupn import build_model
from models.head_inputs import head_inputs
from models.heads import mlp_head, rank_head
from models_batches import as_dataset, batches, tiny_config

CTR, L2R, POWER, TALENT = (TASK_INDEX[t] for t in ("ctr", "l2r", "power", "talent"))


def labels(tasks, values, weights=None):
    return {"task": tf.constant(tasks, tf.int64), "label": tf.constant(values, tf.float32),
            "weight": tf.constant(weights or [1.0] * len(tasks), tf.float32)}


def test_binary_head_loss_ignores_other_tasks_rows():
    head = mlp_head("ctr")
    y = labels([CTR, L2R, CTR, POWER], [1.0, 1.0, 0.0, 3.0])
    # ctr rows: sigmoid(0) = 1/2 with label 1 -> ln 2; sigmoid(ln 3) = 3/4 with label 0 -> ln 4.
    logits = tf.constant([0.0, -50.0, math.log(3.0), 50.0])
    loss, rows = head.loss(y, logits)
    assert float(rows) == 2.0
    assert float(loss) == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    # Other rows may hold anything: changing them changes nothing.
    loss2, _ = head.loss(y, tf.constant([0.0, 9.0, math.log(3.0), -9.0]))
    assert float(loss2) == pytest.approx(float(loss), rel=1e-7)


def test_l2r_loss_is_weighted_per_row_and_averaged_over_its_rows():
    head = rank_head("l2r", rank_features=2)
    y = labels([L2R, L2R, CTR], [1.0, 0.0, 1.0], [5.0, 1.0, 7.0])
    loss, rows = head.loss(y, tf.constant([0.0, 0.0, 3.0]))
    assert float(rows) == 2.0
    assert float(loss) == pytest.approx((5 * math.log(2) + 1 * math.log(2)) / 2, rel=1e-6)


def test_power_head_cross_entropy_over_seven_classes():
    head = mlp_head("power")
    logits = np.zeros((3, 7), np.float32)
    logits[1, 4] = math.log(8.0)          # p(class 4) = 8 / (8 + 6) on the second power row
    y = labels([POWER, POWER, CTR], [2.0, 4.0, 1.0])
    loss, rows = head.loss(y, tf.constant(logits))
    assert float(rows) == 2.0
    assert float(loss) == pytest.approx((math.log(7) + math.log(14 / 8)) / 2, rel=1e-6)
    assert head.probabilities(tf.constant(logits)).shape == (3, 7)


def test_head_without_rows_contributes_zero_not_nan():
    head = mlp_head("talent")
    logits = tf.Variable([0.3, -0.2])
    with tf.GradientTape() as tape:
        loss, rows = head.loss(labels([CTR, POWER], [1.0, 5.0]), logits)
    assert float(loss) == 0.0 and float(rows) == 0.0
    assert np.all(np.isfinite(tape.gradient(loss, logits)))


@pytest.fixture(scope="module")
def weighted_model():
    config = tiny_config("model.variant=dupn-all", "model.l2=0.001",
                         "model.heads=[{name: ctr, weight: 2.0, hidden_units: [8]}, "
                         "{name: l2r, weight: 1.0, hidden_units: [8]}, "
                         "{name: power, weight: 0.5, hidden_units: [8]}]")
    contract = Contract.from_config(config)
    return build_model(config, contract), contract


def test_total_loss_is_weighted_sum_of_head_losses_plus_regularization(weighted_model):
    model, contract = weighted_model
    (inputs, y), = batches(contract, 1, 32, tasks=("ctr", "l2r", "power", "talent"))
    probabilities = {k: v.numpy().astype(np.float64) for k, v in model(inputs).items()}
    task, label, weight = (y[k].numpy() for k in ("task", "label", "weight"))

    def log_loss(name, w=None):
        rows = task == TASK_INDEX[name]
        p, t = probabilities[name][rows], label[rows]
        ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        return np.mean(ce * (w[rows] if w is not None else 1.0))

    rows = task == POWER
    power = -np.mean(np.log(probabilities["power"][rows, label[rows].astype(int)]))
    expected = 2.0 * log_loss("ctr") + 1.0 * log_loss("l2r", weight) + 0.5 * power
    logits = model.head_logits(inputs, training=False)
    total, per_head = model.task_losses(y, logits)
    assert float(total) == pytest.approx(expected, rel=1e-4)
    assert float(per_head["power"][0]) == pytest.approx(power, rel=1e-4)
    # talent rows belong to no configured head: they change no loss
    assert sum(float(r) for _, r in per_head.values()) == np.sum(task != TALENT)
    regularization = float(model.regularization_loss())
    assert regularization > 0.0                       # l2 from the config reaches the kernels
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    result = model.evaluate(as_dataset([(inputs, y)]), return_dict=True, verbose=0)
    assert result["loss"] == pytest.approx(expected + regularization, rel=1e-4)
    assert result["ctr_loss"] == pytest.approx(log_loss("ctr"), rel=1e-4)


def test_metrics_are_named_after_heads_and_a_missing_task_is_zero(weighted_model):
    model, contract = weighted_model
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    only_ctr = batches(contract, 2, 16, tasks=("ctr",))
    result = model.evaluate(as_dataset(only_ctr), return_dict=True, verbose=0)
    expected = {"loss", "regularization_loss", "ctr_loss", "ctr_auc", "l2r_loss", "l2r_auc",
                "power_loss", "power_accuracy",
                *(f"power_{m}_{k}" for m in ("precision", "recall") for k in range(7))}
    assert set(result) == expected
    assert result["l2r_loss"] == 0.0 and result["power_loss"] == 0.0
    assert all(np.isfinite(v) for v in result.values())
    assert 0.0 < result["ctr_auc"] <= 1.0


def test_power_metrics_match_hand_counts():
    head = mlp_head("power")
    logits = np.full((4, 7), -5.0, np.float32)
    predicted = [2, 2, 3, 0]
    logits[range(4), predicted] = 5.0
    y = labels([POWER, POWER, POWER, CTR], [2.0, 3.0, 3.0, 0.0])
    loss, rows = head.loss(y, tf.constant(logits))
    head.update_metrics(y, tf.constant(logits), loss, rows)
    assert float(head.accuracy.result()) == pytest.approx(2 / 3)
    assert float(head.precisions[2].result()) == pytest.approx(1 / 2)   # predicted 2 twice, right once
    assert float(head.recalls[3].result()) == pytest.approx(1 / 2)      # true 3 twice, found once
    assert float(head.precisions[0].result()) == 0.0                    # the ctr row does not count


def test_each_head_declares_its_candidate_inputs_from_the_configuration():
    config = tiny_config("model.interest_match=true", "model.ctr_rank_features=true")
    model = build_model(config, Contract.from_config(config))
    assert {h.task: h.candidate_inputs for h in model.heads} == {
        "ctr": ("item", "interest_match", "target_attention", "id_match", "query_match",
                "rank_features"),
        "l2r": ("rank_features",), "talent": ("talent",), "power": (), "shop": ("shop",)}
    assert head_inputs("ctr") == ("item",)                  # all off: the paper's ctr head
    # small.yaml's target attention: 16 units over tiny_config's 8 steps, keys, values and a flag;
    # its id match: 4 ids, 3 tag slots and 4 weights per step; its query match: 3 query terms
    assert model.representation_parts == {"interest": model.interest_dim, "keys": 8 * (2 * 16 + 1),
                                           "ids": 8 * (4 + 3 + 4), "query": 3}
