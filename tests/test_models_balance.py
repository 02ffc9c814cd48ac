"""Loss balancing (models/balance.py): each method's step checked by hand, `fixed` equal to the
plain weighted sum, training with every method on batches where tasks have no rows, save/load."""
import json
import math
import textwrap

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from configs.schema import TrainerConfig
from features.contract import Contract
from models.balance import (METHODS, DynamicWeightAverage, GradNorm, LatestValue, PCGrad,
                            UncertaintyWeighting, dwa_weights, gradnorm_weight_gradients,
                            pcgrad_project)
from models.config import balance_spec
from models.dupn import build_model
from models_batches import as_dataset, batches, tiny_config

TWO = ["ctr", "power"]


def test_pcgrad_projects_conflicting_gradients_onto_each_others_normal_plane():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])        # g1 · g2 = -1: they conflict
    projected = pcgrad_project(tf.constant([g1, g2], tf.float32)).numpy()
    # g1 - (g1·g2 / |g2|²) g2 = [1, 0] + ½ [-1, 1];  g2 - (g2·g1 / |g1|²) g1 = [-1, 1] + [1, 0]
    np.testing.assert_allclose(projected, [[0.5, 0.5], [0.0, 1.0]], atol=1e-7)
    assert projected[0] @ g2 == pytest.approx(0.0, abs=1e-7)
    assert projected[1] @ g1 == pytest.approx(0.0, abs=1e-7)
    agreeing = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)    # g1 · g2 = 1: left alone
    np.testing.assert_array_equal(pcgrad_project(tf.constant(agreeing)).numpy(), agreeing)
    # A task without rows has a zero gradient: it conflicts with nothing, nothing NaN.
    with_zero = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]], np.float32)
    out = pcgrad_project(tf.constant(with_zero)).numpy()
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.0, 1.0], [0.0, 0.0]], atol=1e-7)


def test_pcgrad_gradients_project_shared_variables_only_and_keep_embedding_rows_sparse():
    balancer = PCGrad(TWO, [1.0, 1.0])
    w = tf.Variable([0.0, 0.0])                       # shared, dense
    table = tf.Variable(tf.zeros([3, 2]))             # shared, looked up: IndexedSlices
    a = tf.Variable(1.0)                              # only ctr's loss reaches it (a head's)
    variables = [w, table, a]
    with tf.GradientTape(persistent=True) as tape:
        row = tf.gather(table, [1])[0]
        task_losses = [w[0] + row[0] + 2.0 * a, -w[0] + w[1] + row[1]]
        regularization = a * a
        objective, _ = balancer.objective(tf.stack(task_losses), tf.constant([1.0, 1.0]))
    gradients = balancer.gradients(tape, objective + regularization, task_losses, None,
                                   regularization, variables, 1)
    # Shared parts [w | table row 1]: g1 = [1, 0 | 1, 0], g2 = [-1, 1 | 0, 1], g1 · g2 = -1:
    # g1 + g2 / 3 = [2/3, 1/3 | 1, 1/3] and g2 + g1 / 2 = [-1/2, 1 | 1/2, 1], summed.
    np.testing.assert_allclose(gradients[0], [1 / 6, 4 / 3], rtol=1e-6)
    assert isinstance(gradients[1], tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(gradients[1]),
                               [[0, 0], [1.5, 4 / 3], [0, 0]], rtol=1e-6)
    assert float(gradients[2]) == pytest.approx(2.0 + 2.0)   # its own task's 2, plus 2a


def test_dwa_weights_from_loss_ratios_by_hand():
    # 2 softmax([1.2, 0.8] / 2) = 2 / (1 + e^{-0.2}), 2 / (1 + e^{0.2})
    weights = dwa_weights(tf.constant([1.2, 0.8]), 2.0).numpy()
    np.testing.assert_allclose(weights, [2 / (1 + math.exp(-0.2)), 2 / (1 + math.exp(0.2))],
                               rtol=1e-6)
    assert weights.sum() == pytest.approx(2.0)


def test_dwa_weights_come_from_the_last_two_windows_of_steps():
    dwa = DynamicWeightAverage(TWO, temperature=2.0, window=2)

    def step(losses, counts):
        _, weights = dwa.objective(tf.constant(losses), tf.constant(counts))
        dwa.update(tf.constant(losses), tf.constant(counts))
        return weights.numpy()

    # Windows 0 and 1: weights 1. Means: window 0 (1, 2); window 1 ctr 0.6 and power 1.6 (its
    # step without rows, loss 0, is not part of the mean).
    for losses, counts in [([1.0, 2.0], [3.0, 2.0]), ([1.0, 2.0], [1.0, 4.0]),
                           ([0.6, 1.6], [2.0, 2.0]), ([0.6, 0.0], [2.0, 0.0])]:
        np.testing.assert_array_equal(step(losses, counts), [1.0, 1.0])
    # Window 2: ratios 0.6 / 1 and 1.6 / 2; power fell less, so it gets the larger weight:
    # 2 softmax([0.3, 0.4]).
    expected = [2 / (1 + math.exp(0.1)), 2 / (1 + math.exp(-0.1))]
    np.testing.assert_allclose(step([0.5, 1.0], [1.0, 1.0]), expected, rtol=1e-6)
    np.testing.assert_allclose(step([0.3, 1.2], [1.0, 1.0]), expected, rtol=1e-6)
    # Window 3: window 2's means (0.4, 1.1) over window 1's (0.6, 1.6).
    np.testing.assert_allclose(step([0.1, 0.1], [1.0, 1.0]),
                               dwa_weights(tf.constant([0.4 / 0.6, 1.1 / 1.6]), 2.0), rtol=1e-6)
    assert int(dwa.steps.numpy()) == 7


def test_uncertainty_gradient_on_its_log_variances_by_hand():
    tasks = ["ctr", "l2r", "power"]
    balancer = UncertaintyWeighting(tasks)
    balancer.log_variances[1].assign(math.log(2.0))
    losses, counts = tf.constant([2.0, 3.0, 0.0]), tf.constant([4.0, 5.0, 0.0])
    with tf.GradientTape() as tape:
        total, weights = balancer.objective(losses, counts)
    grads = tape.gradient(total, balancer.log_variances)
    # exp(-s) L + log(1 + exp(s)): s = 0, L = 2 -> 2 + ln 2;  s = ln 2, L = 3 -> 3/2 + ln 3.
    assert float(total) == pytest.approx(2 + math.log(2) + 1.5 + math.log(3), rel=1e-6)
    np.testing.assert_allclose(weights, [1.0, 0.5, 1.0], rtol=1e-6)
    # d/ds = -exp(-s) L + sigmoid(s): -2 + 1/2 and -3/2 + 2/3; power has no rows: 0, not drifting.
    np.testing.assert_allclose([float(g) for g in grads], [-1.5, -1.5 + 2 / 3, 0.0], rtol=1e-6)


def test_gradnorm_gives_the_task_that_trains_slower_more_weight():
    # Equal gradient norms; ctr's loss is where it started (ratio 1), power's halved (0.5):
    # r = [4/3, 2/3], alpha 1: targets above and below mean(G) = 1.
    grads = gradnorm_weight_gradients(tf.constant([1.0, 1.0]), tf.constant([1.0, 1.0]),
                                      tf.constant([3.0, 3.0]), tf.constant([3.0, 6.0]),
                                      tf.constant([1.0, 1.0]), 1.0).numpy()
    np.testing.assert_array_equal(grads, [-1.0, 1.0])      # descent raises ctr, lowers power

    # The same through a tape and a real shared layer: h = W x, W = [1, 1], x = [1, 2], both
    # losses h = 3, so ∇_W L_t = x for both, ‖x‖ = √5.
    balancer = GradNorm(TWO, alpha=1.0)
    balancer.initial_losses[1].assign(6.0)        # ctr's is unset (0): this step sets it to 3
    shared = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    x = tf.constant([[1.0, 2.0]])
    shared(x)
    variables = [*shared.trainable_variables, *balancer.learnt_weights]
    counts = tf.constant([1.0, 1.0])
    with tf.GradientTape(persistent=True) as tape:
        h = shared(x)[0, 0]
        task_losses = [tf.identity(h), tf.identity(h)]
        losses = tf.stack(task_losses)
        objective, weights = balancer.objective(losses, counts)
    gradients = balancer.gradients(tape, objective, task_losses, counts, tf.constant(0.0),
                                   variables, 1, shared)
    np.testing.assert_allclose(gradients[0].numpy().ravel(), [2.0, 4.0])   # Σ w_t x, w constant
    root5 = math.sqrt(5.0)
    np.testing.assert_allclose([float(g) for g in gradients[1:]], [-root5, root5], rtol=1e-6)
    keras.optimizers.SGD(0.1).apply_gradients(zip(gradients, variables))
    balancer.update(losses, counts)
    new = [float(w) for w in balancer.learnt_weights]
    np.testing.assert_allclose(new, [1 + 0.1 * root5, 1 - 0.1 * root5], rtol=1e-6)
    assert sum(new) == pytest.approx(2.0)                     # renormalised to sum to T
    assert [float(v) for v in balancer.initial_losses] == [3.0, 6.0]


def test_weight_metrics_report_the_latest_step_not_an_average():
    metric = LatestValue("ctr_loss_weight")
    metric.update_state(1.0)
    metric.update_state(3.0)
    assert float(metric.result()) == 3.0      # a Mean would say 2
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(tiny_config())


WEIGHTED = ("model.l2=0.001", "model.heads=[{name: ctr, weight: 2.0, hidden_units: [8]}, "
            "{name: l2r, weight: 1.0, hidden_units: [8]}, {name: power, weight: 0.5, "
            "hidden_units: [8]}]")


def plain_weighted_step(model, data):
    """The train step before balancing existed: Σ head weight × head loss + regularization."""
    inputs, labels = data
    with tf.GradientTape() as tape:
        logits = model.head_logits(inputs, training=True)
        task_loss, _ = model.task_losses(labels, logits)
        total = task_loss + model.regularization_loss()
    variables = model.trainable_variables
    gradients = tape.gradient(total, variables)
    model.optimizer.apply_gradients(
        (g, v) for g, v in zip(gradients, variables) if g is not None)
    return total


def test_fixed_is_the_configured_weighted_sum(contract):
    config = tiny_config(*WEIGHTED)
    assert config.trainer.loss_balance == "fixed"
    model, reference = build_model(config, contract), build_model(config, contract)
    reference.set_weights(model.get_weights())
    assert model.balancer.weights == []                    # no state: nothing else to save
    for m in (model, reference):
        m.compile(optimizer=keras.optimizers.SGD(0.1))
    balanced, plain = tf.function(model.train_step), tf.function(
        lambda d: plain_weighted_step(reference, d))
    for data in batches(contract, 3, 32, seed=4):
        model.reset_metrics()                  # so the loss metric is this step's
        logs, total = balanced(data), plain(data)
        np.testing.assert_allclose(logs["loss"], total, rtol=1e-6)   # via a Mean metric
    for a, b in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    assert {t: float(logs[f"{t}_loss_weight"]) for t in ("ctr", "l2r", "power")} == {
        "ctr": 2.0, "l2r": 1.0, "power": 0.5}


GAPPY_HEADS = ("model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
               "{name: talent, weight: 1.0, hidden_units: [8]}, "
               "{name: power, weight: 1.0, hidden_units: [8]}]")


def gappy_batches(contract):
    """Batches where some tasks have no rows: talent never, power in some only."""
    subsets = [("ctr",), ("ctr", "power"), ("power",)]
    return [b for i, tasks in enumerate(subsets)
            for b in batches(contract, 1, 48, tasks=tasks, seed=20 + i)]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_without_nan_where_tasks_have_no_rows(method, contract, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr("models.balance.DWA_WINDOW_STEPS", 2)   # windows complete within the run
    model = build_model(tiny_config(GAPPY_HEADS, f"trainer.loss_balance={method}"), contract)
    # At 0.3 the evaluation loss falls by 0.08 to 0.3 in 12 steps over seeds 0-5 (0.05-0.1 at 0.1).
    model.compile(optimizer=keras.optimizers.Adagrad(0.3))
    data = as_dataset(gappy_batches(contract))
    before = model.evaluate(data, verbose=0, return_dict=True)
    history = model.fit(data, epochs=4, verbose=0).history
    after = model.evaluate(data, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"] - 0.05, (method, before["loss"], after["loss"])
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)
    tasks = ("ctr", "talent", "power")
    weights = np.array([history[f"{t}_loss_weight"] for t in tasks])
    assert np.isfinite(weights).all() and (weights > 0).all()
    assert not any(k.endswith("_loss_weight") for k in after)     # training metrics only
    if method in ("gradnorm", "dwa"):
        assert weights.sum(0) == pytest.approx([3.0] * 4, rel=1e-5)   # Σ w = T
    if method in ("fixed", "pcgrad"):
        assert (weights == 1.0).all()
    else:
        assert not np.allclose(weights, 1.0)   # the method moved them
    if method == "uncertainty":   # talent never had rows: its log-variance never moved
        assert float(model.balancer.log_variances[1]) == 0.0

    # The balancer's state round-trips through .keras files.
    path = tmp_path / f"{method}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config()["loss_balance"]["method"] == method
    assert len(loaded.balancer.weights) == len(model.balancer.weights)
    for a, b in zip(model.balancer.weights, loaded.balancer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_balancer_state_is_in_checkpoints_and_by_each_head_in_the_optimizer(contract, tmp_path):
    from pipeline.training.checkpoints import make_optimizer, optimizer_order
    config = tiny_config("trainer.loss_balance=uncertainty")
    model = build_model(config, contract)
    order = optimizer_order(model)
    position = {v.ref(): i for i, v in enumerate(order)}
    # ctr's head, then ctr's log-variance, then the next head: a model that adds a head keeps
    # every old optimizer slot at its index.
    ctr_last = max(position[v.ref()] for v in model.heads[0].trainable_variables)
    assert position[model.balancer.log_variances[0].ref()] == ctr_last + 1
    model.balancer.log_variances[0].assign(0.25)
    model.compile(optimizer=make_optimizer(config.trainer, model))
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    restored = build_model(config, contract)
    status = tf.train.Checkpoint(model=restored).read(str(tmp_path / "ckpt"))
    status.assert_existing_objects_matched()
    assert float(restored.balancer.log_variances[0]) == 0.25


def test_gradnorm_needs_a_shared_layer_and_the_spec_comes_from_the_trainer(contract):
    with pytest.raises(ValueError, match="gradnorm needs a layer every head reads through"):
        build_model(tiny_config("model.variant=wide", "trainer.loss_balance=gradnorm"), contract)
    for variant in ("dupn-all", "wide-deep", "dssm", "cnn-max"):
        model = build_model(tiny_config(f"model.variant={variant}"), contract)
        assert isinstance(model.last_shared_layer, keras.layers.Dense), variant
    trainer = TrainerConfig(loss_balance="dwa", dwa_temperature=0.5, gradnorm_alpha=0.7)
    spec = balance_spec(trainer)
    assert (spec["method"], spec["dwa_temperature"], spec["gradnorm_alpha"]) == ("dwa", 0.5, 0.7)
    model = build_model(tiny_config("trainer.loss_balance=dwa", "trainer.dwa_temperature=0.5"),
                        contract)
    assert isinstance(model.balancer, DynamicWeightAverage) and model.balancer.temperature == 0.5



def test_a_balanced_run_records_its_weights_checkpoints_its_state_and_resumes(tmp_path):
    """pipeline.training.train with gradnorm (learnt weights with optimizer slots): history.json has the
    weights, the checkpoint the balancer's state, and a resume or a load finds all of it."""
    from pipeline.training import train
    from pipeline.training.checkpoints import RunCheckpoints, load_model, make_optimizer, new_model
    from train_helpers import tiny_config as train_config, tiny_examples
    day = "2026-11-01"
    config = train_config("trainer.loss_balance=gradnorm", "trainer.checkpoint_every_steps=10")
    data = train.range_data(tiny_examples(tmp_path, [day]), day, day, train.head_tasks(config))
    run = train.train(config, data, tmp_path / "run", log=lambda message: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    weights = [[entry[f"{t}_loss_weight"] for t in ("ctr", "l2r", "power")] for entry in history]
    assert np.sum(weights, 1) == pytest.approx([3.0] * len(history), rel=1e-5)
    assert weights[-1] != [1.0, 1.0, 1.0]

    _, loaded = load_model(tmp_path / "run", with_optimizer=True)
    learnt = [float(w) for w in loaded.balancer.learnt_weights]
    assert sum(learnt) == pytest.approx(3.0, rel=1e-5) and learnt != [1.0, 1.0, 1.0]
    assert all(float(v) > 0 for v in loaded.balancer.initial_losses)
    # What a resumed run does: a fresh model and optimizer in the same dir, restored.
    contract = Contract.from_config(config)
    model = new_model(config, contract)
    optimizer = make_optimizer(config.trainer, model)
    model.compile(optimizer=optimizer)
    checkpoints = RunCheckpoints(model, optimizer, tmp_path / "run")
    assert checkpoints.resume() and checkpoints.global_step == run["global_step"]
    assert [float(w) for w in model.balancer.learnt_weights] == learnt
    slots = [v for v in optimizer.variables if "gradnorm_weight" in v.name]
    # Adam's m and v of each task's weight, restored (not their initial zeros)
    assert len(slots) == 2 * 3 and any(float(v) != 0.0 for v in slots)


PARAMETER_SERVERS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import features
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    import models.balance
    from features.contract import Contract
    from models.dupn import build_model
    from models_batches import batches, tiny_config
    from train_helpers import in_process_cluster

    models.balance.DWA_WINDOW_STEPS = 1      # DWA's weights move within the run
    strategy, servers = in_process_cluster(workers=1, ps=2)
    heads = "model.heads=[{{name: ctr, weight: 1.0, hidden_units: [8]}}, " \\
            "{{name: power, weight: 1.0, hidden_units: [8]}}]"
    contract = Contract.from_config(tiny_config())
    data = batches(contract, 2, 32, seed=3, tasks=("ctr", "power"))
    stacked = tf.nest.map_structure(lambda *x: np.stack(x), *data)
    dataset_fn = lambda context: tf.data.Dataset.from_tensor_slices(stacked).repeat()
    result = {{}}
    for method in {methods!r}:
        config = tiny_config(heads, "model.variant=dupn-all", f"trainer.loss_balance={{method}}")
        with strategy.scope():
            model = build_model(config, contract)
            model.compile(optimizer=keras.optimizers.Adagrad(0.1), steps_per_execution=2)
        table = model.embeddings.tables["item_id"].embeddings
        before = [v.numpy() for v in table.variables]
        history = model.fit(keras.utils.experimental.DatasetCreator(dataset_fn), epochs=2,
                            steps_per_epoch=2, verbose=0).history
        b = model.balancer
        result[method] = {{
            "history": {{k: [float(x) for x in v] for k, v in history.items()}},
            "devices": sorted({{v.device.split("/task:")[0] for v in b.weights}}),
            "table_shards": len(table.variables),
            "table_moved": any(not np.array_equal(a, v.numpy())
                               for a, v in zip(before, table.variables)),
            "state": {{v.name.split("/")[-1].split(":")[0]: np.asarray(v.numpy()).tolist()
                       for v in b.weights}}}}
    print("RESULT " + json.dumps(result))
""")


def test_balancing_methods_train_under_parameter_servers(tmp_path):
    """One worker, two ps (the item table in two shards): every method trains 4 steps there,
    its state on the ps, where the methods' steps left it."""
    from train_helpers import TESTS, run_python
    methods = ["uncertainty", "gradnorm", "dwa", "pcgrad"]
    script = PARAMETER_SERVERS.format(tests=str(TESTS), methods=methods)
    done = run_python(["-c", script], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    for method in methods:
        run = result[method]
        history, state = run["history"], run["state"]
        assert np.isfinite(history["loss"]).all() and history["loss"][1] < history["loss"][0]
        assert {"ctr_loss_weight", "power_loss_weight"} <= set(history)
        assert run["table_shards"] == 2 and run["table_moved"], method
        if method != "pcgrad":    # pcgrad keeps no state
            assert run["devices"] == ["/job:ps/replica:0"], (method, run["devices"])
    assert all(v != 0.0 for k, v in result["uncertainty"]["state"].items())
    gradnorm = result["gradnorm"]["state"]
    assert gradnorm["ctr_gradnorm_weight"] + gradnorm["power_gradnorm_weight"] == \
        pytest.approx(2.0, rel=1e-5)
    assert gradnorm["ctr_gradnorm_weight"] != 1.0 and gradnorm["ctr_initial_loss"] > 0
    dwa = result["dwa"]
    assert dwa["state"]["dwa_steps"] == 4
    assert dwa["history"]["ctr_loss_weight"][1] != 1.0    # windows of 1 step: ratios from step 2
