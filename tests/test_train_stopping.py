"""The stopping rule of multi-pass training: held-out users apart from the trained ones, the best
pass's weights kept when a pass does not make them significantly better, and a stopped run that
a resume leaves alone."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from features.contract import Contract
from models.dupn import build_model
from models.weight_average import WeightAverage
from models_batches import as_dataset, batches, tiny_config as tiny_model_config
from pipeline.layout import read_json
from pipeline.training import stopping, train as training
from train_helpers import DAYS, tiny_config, tiny_examples


def test_held_out_users_are_a_stable_share_apart_from_the_rest():
    users = tf.constant([f"u{k}" for k in range(4000)])
    held = stopping.held_out(users, 0.1).numpy()
    assert 0.08 < held.mean() < 0.12
    np.testing.assert_array_equal(held, stopping.held_out(users, 0.1).numpy())
    assert not stopping.held_out(users, 0.0).numpy().any()
    inputs = {"user_id": users[:64], "x": tf.range(64)}
    labels = {"label": tf.range(64)}
    ds = tf.data.Dataset.from_tensors((inputs, labels))
    kept = next(iter(stopping.keep_rows(ds, 0.5, held=False)))[0]["user_id"].numpy()
    out = next(iter(stopping.keep_rows(ds, 0.5, held=True)))[0]["user_id"].numpy()
    assert len(kept) + len(out) == 64 and not set(kept) & set(out)
    # A batch without a held-out user is no held-out batch at all (not an empty one).
    user = next(u for u in ("u0", "u1", "u2", "u3") if not stopping.held_out(tf.constant([u]), 0.5)[0])
    nobody = tf.data.Dataset.from_tensors(({"user_id": tf.constant([user] * 8)}, {"label": tf.range(8)}))
    assert list(stopping.keep_rows(nobody, 0.5, held=True)) == []
    assert len(list(stopping.keep_rows(nobody, 0.5, held=False))) == 1


def _rows(mean: float, n: int = 400) -> np.ndarray:
    """n held-out rows' losses of that mean, spread alike in every pass."""
    return mean + np.linspace(-0.2, 0.2, n)


def test_a_pass_is_better_only_beyond_the_noise_of_the_paired_difference():
    rng = np.random.default_rng(0)
    best = rng.exponential(0.4, 2000)
    noise = rng.normal(0.0, 0.05, 2000)            # the SE of the paired mean: about 0.0011
    assert stopping.improves(best, best - 0.01 + noise)        # ~9 SE lower
    assert not stopping.improves(best, best - 0.0005 + noise)  # lower on average, within noise
    assert not stopping.improves(best, best + 0.01 + noise)    # worse
    # Without pairs (other rows, or too few), the means decide.
    assert stopping.improves(best, np.full(100, best.mean() - 0.001))
    assert not stopping.improves(best[:1], best[:1])


def test_the_rows_losses_average_to_the_models_own_loss_of_each_head():
    contract = Contract.from_config(tiny_model_config())
    model = build_model(tiny_model_config(), contract)
    data = batches(contract, 2, 64, seed=3)
    for task in ("ctr", "l2r", "power"):      # binary, weighted (l2r), multi-class
        rows = stopping.validation_losses(stopping.loss_function(model, task), as_dataset(data))
        means = [model.head_losses(y, model.head_logits(x))[task] for x, y in data]
        count = sum(float(n) for _, n in means)
        assert len(rows) == count > 0
        np.testing.assert_allclose(rows.mean(), sum(float(m * n) for m, n in means) / count,
                                   rtol=1e-5)


class _Steps:
    """Stands in for RunCheckpoints: the run's step count, and no weight average."""
    steps_done = 0
    average = None


def test_a_worse_pass_brings_the_best_weights_back_and_stops(monkeypatch):
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    losses = iter([_rows(0.5), _rows(0.4), _rows(0.45)])
    monkeypatch.setattr(stopping, "loss_function", lambda *args: None)
    monkeypatch.setattr(stopping, "validation_losses", lambda *args: next(losses))
    steps = _Steps()
    stopper = stopping.StopWhenWorse(steps, steps_per_pass=10, validation=None, task="ctr",
                                     log=lambda m: None)
    stopper.set_model(model)
    snapshots = []
    for step in (4, 10, 14, 20, 24, 30):   # batch callbacks every few steps cross pass ends
        steps.steps_done = step
        model.layers[0].kernel.assign(tf.fill([2, 1], float(step)))
        stopper.on_train_batch_end(0)
        snapshots.append(model.layers[0].kernel.numpy().copy())
        if model.stop_training:
            break
    assert steps.steps_done == 30 and model.stop_training
    # Pass 2 (step 20, loss 0.40) was best; pass 3 (0.45) is worse: pass 2's weights are back.
    np.testing.assert_array_equal(snapshots[-1], np.full([2, 1], 20.0))
    assert stopper.stopped == {"after_pass": 3, "kept_pass": 2, "validation_losses": [0.5, 0.4, 0.45]}


def test_multi_pass_training_measures_held_out_users_and_a_stopped_run_stays_stopped(tmp_path):
    examples = tiny_examples(tmp_path, DAYS[:2])
    config = tiny_config("trainer.epochs=3", "trainer.validation_share=0.3",
                         "trainer.learning_rate=0.05")
    data = training.range_data(examples, DAYS[0], DAYS[1], training.head_tasks(config))
    messages = []
    run = training.train(config, data, tmp_path / "run", log=messages.append)
    checks = [m for m in messages if "held-out ctr loss" in m]
    assert 1 <= len(checks) <= 3
    if "stopped" in run:      # the rule fired: the run is finished, and a resume trains nothing
        assert run["stopped"]["after_pass"] == len(checks) >= 2
        again = training.train(config, data, tmp_path / "run", log=messages.append)
        assert again["steps_this_call"] == 0 and again["stopped"] == run["stopped"]
    else:
        assert run["steps"] == run["target_steps"] and len(checks) == 3
    assert read_json(tmp_path / "run" / "run.json")["finished"]


def test_with_a_weight_average_the_rule_judges_and_keeps_the_averaged_weights(monkeypatch):
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,), use_bias=False)])
    kernel = model.layers[0].kernel
    judged, losses = [], iter([_rows(0.5), _rows(0.4), _rows(0.45)])

    def loss_of_the_judged_weights(*args):
        judged.append(float(kernel.numpy()[0, 0]))
        return next(losses)
    monkeypatch.setattr(stopping, "loss_function", lambda *args: None)
    monkeypatch.setattr(stopping, "validation_losses", loss_of_the_judged_weights)
    steps = _Steps()
    steps.average = WeightAverage(model.trainable_variables, momentum=0.9)
    stopper = stopping.StopWhenWorse(steps, steps_per_pass=10, validation=None, task="ctr",
                                     log=lambda m: None)
    stopper.set_model(model)
    for step in (10, 20, 30):
        steps.steps_done = step
        kernel.assign(tf.fill([2, 1], float(step)))        # the raw weights
        steps.average.averages[0].assign(tf.fill([2, 1], step + 0.5))   # their average
        stopper.on_train_batch_end(0)
    assert judged == [10.5, 20.5, 30.5] and model.stop_training
    # Pass 2's average is back, in the weights and as the average the run will swap in.
    np.testing.assert_array_equal(kernel.numpy(), np.full([2, 1], 20.5))
    np.testing.assert_array_equal(steps.average.averages[0].numpy(), np.full([2, 1], 20.5))
