"""ESMM on the ctr head: pCTCVR = pCTR·pCVR, the loss by hand, entire-space gradients, training,
save/load, the serving split, and the same head in the baselines."""
import math

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from features.contract import TASK_INDEX, Contract
from models.dupn import build_model
from models.esmm import EntireSpaceTask
from models.heads import mlp_head
from models.towers import MLPTower, Twin
from models.multitask import RepresentationModel
from models_batches import as_dataset, batches, tiny_config

CTR, L2R = TASK_INDEX["ctr"], TASK_INDEX["l2r"]
ESMM = "model.esmm=true"
CTR_L2R = ("model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
           "{name: l2r, weight: 1.0, hidden_units: [8]}]")    # fewer heads trace faster


def labels(tasks, clicks, buys):
    return {"task": tf.constant(tasks, tf.int64), "label": tf.constant(clicks, tf.float32),
            "weight": tf.ones([len(tasks)]), "label_buy": tf.constant(buys, tf.float32)}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(tiny_config())


@pytest.fixture(scope="module")
def data(contract):
    return batches(contract, 3, 96, seed=5)


@pytest.fixture(scope="module")
def model(contract):
    return build_model(tiny_config(ESMM), contract)


def test_the_loss_is_click_and_ctcvr_cross_entropy_over_ctr_rows_by_hand():
    head = mlp_head("ctr", hidden_units=[4], esmm=True)
    # rows: bought; clicked only; shown only; an l2r row (ignored); a buy logged without a click
    # (ESMM's conversion is post-click: no conversion); a confident click and buy that did not happen.
    logits = np.array([[0.5, 1.0], [-0.3, 0.2], [1.2, -2.0], [9.0, 9.0], [0.0, 3.0], [40.0, 40.0]])
    y = labels([CTR, CTR, CTR, L2R, CTR, CTR], [1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0])
    loss, rows = head.loss(y, tf.constant(logits, tf.float32))
    p, q = sigmoid(logits[:, 0]), sigmoid(logits[:, 1])
    click = np.array([1, 1, 0, 0, 0, 0])
    bought = np.array([1, 0, 0, 0, 0, 0])
    not_p, not_q = sigmoid(-logits[:, 0]), sigmoid(-logits[:, 1])   # 1 - p, exact at logit 40
    ctr_ce = -(click * np.log(p) + (1 - click) * np.log(not_p))
    # 1 - pq as (1 - p) + p(1 - q): in float64 that stays > 0 at logits (40, 40) too
    ctcvr_ce = -(bought * np.log(p * q) + (1 - bought) * np.log(not_p + p * not_q))
    ctr_rows = np.array([1, 1, 1, 0, 1, 1], bool)
    assert float(rows) == 5.0
    assert float(loss) == pytest.approx(np.mean((ctr_ce + ctcvr_ce)[ctr_rows]), rel=1e-5)
    # the last row alone: -log(1 - σ(40)²) = 40 - log 2 (+ tiny), finite where 1 - pq in float32 is 0
    last, _ = head.loss(labels([CTR], [0], [0]), tf.constant([[40.0, 40.0]]))
    assert float(last) == pytest.approx(40.0 + (40.0 - math.log(2.0)), rel=1e-5)


def test_gradients_are_finite_at_saturated_logits():
    head = mlp_head("ctr", hidden_units=[4], esmm=True)
    logits = tf.Variable([[60.0, 60.0], [-60.0, -60.0], [60.0, -60.0]])
    with tf.GradientTape() as tape:
        loss, _ = head.loss(labels([CTR] * 3, [0, 1, 1], [0, 1, 1]), logits)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(tape.gradient(loss, logits).numpy()))


def test_pctcvr_is_pctr_times_pcvr_and_the_model_still_returns_pctr(model, data):
    inputs = data[0][0]
    scores = model.scores(inputs)
    assert {"ctr", "cvr", "ctcvr"} <= set(scores)
    np.testing.assert_array_equal(scores["ctcvr"].numpy(), (scores["ctr"] * scores["cvr"]).numpy())
    np.testing.assert_array_equal(model(inputs)["ctr"].numpy(), scores["ctr"].numpy())
    assert set(model(inputs)) == {"ctr", "l2r", "talent", "power", "shop"}   # heads only
    logits = model.head_logits(inputs)["ctr"]
    assert logits.shape == (96, 2)
    np.testing.assert_allclose(scores["cvr"], tf.sigmoid(logits[:, 1]), rtol=1e-6)


def test_non_clicked_impressions_train_the_cvr_tower(model, contract):
    """The entire-space point: a batch of shown-only impressions moves pCVR's weights (a CVR
    model fitted on clicked rows would get nothing from it)."""
    (inputs, y), = batches(contract, 1, 32, tasks=("ctr",), seed=9)
    shown_only = {**y, "label": tf.zeros_like(y["label"]), "label_buy": tf.zeros_like(y["label"])}
    head = model.heads[0]
    with tf.GradientTape() as tape:
        total, _ = model.task_losses(shown_only, model.head_logits(inputs, training=True))
    cvr_weights = [w for layer in (*head.cvr_hidden, head.cvr_out) for w in layer.trainable_weights]
    gradients = tape.gradient(total, cvr_weights)
    assert cvr_weights and all(g is not None for g in gradients)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in gradients) > 0.0


def test_training_lowers_the_loss_and_reports_the_conversion_aucs(contract, data):
    model = build_model(tiny_config(ESMM, CTR_L2R), contract)
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    history = model.fit(as_dataset(data), epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] - 0.05, history["loss"]
    assert history["ctr_loss"][-1] < history["ctr_loss"][0]
    assert {"ctr_auc", "ctcvr_auc", "cvr_auc"} <= set(history)
    assert 0.0 < history["ctcvr_auc"][-1] <= 1.0 and 0.0 < history["cvr_auc"][-1] <= 1.0


def test_save_load_round_trip_and_the_split_equals_the_whole(model, data, tmp_path):
    inputs = data[0][0]
    whole = model.scores(inputs)
    path = tmp_path / "esmm.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    head = loaded.heads[0]
    assert type(head.objective) is EntireSpaceTask and type(head.network) is Twin
    assert type(head.network.first) is MLPTower and loaded.get_config()["heads"][0]["esmm"] is True
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    reloaded = loaded.scores(inputs)
    for name in whole:
        np.testing.assert_allclose(reloaded[name], whole[name], atol=1e-6, err_msg=name)
    split = model.score_items(model.user_representation(inputs), inputs)
    assert set(split) == {"ctr", "cvr", "ctcvr", "l2r"}
    for name in split:
        np.testing.assert_allclose(split[name], whole[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("variant", ["wide", "wide-deep", "dssm", "cnn-max"])
def test_the_baselines_take_the_esmm_ctr_head(variant, contract, data, tmp_path):
    model = build_model(tiny_config(f"model.variant={variant}", ESMM, CTR_L2R), contract)
    assert isinstance(model.heads[0].objective, EntireSpaceTask)
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    losses = model.fit(as_dataset(data), epochs=2, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    inputs = data[0][0]
    scores = model.scores(inputs)
    np.testing.assert_array_equal(scores["ctcvr"].numpy(), (scores["ctr"] * scores["cvr"]).numpy())
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras").scores(inputs)
    np.testing.assert_allclose(reloaded["ctcvr"], scores["ctcvr"], atol=1e-6)
    if isinstance(model, RepresentationModel):
        split = model.score_items(model.user_representation(inputs), inputs)
        np.testing.assert_allclose(split["ctcvr"], scores["ctcvr"], atol=1e-5)


def test_esmm_needs_a_ctr_head_and_the_labels_buy(contract):
    with pytest.raises(ValueError, match="model.esmm needs a ctr head"):
        build_model(tiny_config(ESMM, "model.heads=[{name: l2r, weight: 1.0, hidden_units: [8]}]"),
                    contract)
    with pytest.raises(ValueError, match="ESMM is a ctr head"):
        mlp_head("l2r", esmm=True)
    head = mlp_head("ctr", hidden_units=[4], esmm=True)
    without_buy = {k: v for k, v in labels([CTR], [1], [1]).items() if k != "label_buy"}
    with pytest.raises(ValueError, match="label_buy"):
        head.loss(without_buy, tf.zeros([1, 2]))
