"""The moving average of the weights: its decay, a run that ends with it in place, checkpoints that
keep the model's and the optimizer's keys, and a warm start that begins it anew."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.weight_average import WeightAverage
from pipeline.training import train as training
from features.contract import Contract
from pipeline.training.checkpoints import RunCheckpoints, latest_checkpoint, make_optimizer, new_model
from train_helpers import DAYS, tiny_config, tiny_examples


def test_the_average_follows_the_weights_with_a_decay_that_grows_with_the_steps():
    weights = [tf.Variable([1.0, 2.0]), tf.Variable(3.0)]
    average = WeightAverage(weights, momentum=0.5)
    weights[0].assign([3.0, 6.0])
    weights[1].assign(5.0)
    average.update(weights)                       # step 1: decay min(0.5, 2 / 11)
    decay = 2 / 11
    np.testing.assert_allclose(average.averages[0].numpy(),
                               decay * np.array([1, 2]) + (1 - decay) * np.array([3, 6]), rtol=1e-6)
    for _ in range(20):                           # later steps: the momentum caps the decay
        average.update(weights)
    weights[1].assign(7.0)
    before = average.averages[1].numpy()
    average.update(weights)
    assert average.averages[1].numpy() == pytest.approx(0.5 * before + 0.5 * 7.0)
    with average.applied(weights):
        assert weights[1].numpy() == pytest.approx(average.averages[1].numpy())
    assert weights[1].numpy() == 7.0              # the weights come back after
    average.reset(weights)
    assert average.updates.numpy() == 0 and average.averages[1].numpy() == 7.0
    with pytest.raises(ValueError, match="1 variables against 2 averages"):
        average.update(weights[:1])


def _checkpoint_keys(path) -> set[str]:
    return {name for name, _ in tf.train.list_variables(path)}


def test_a_run_ends_with_its_average_saved_beside_unchanged_model_and_optimizer_keys(tmp_path):
    examples = tiny_examples(tmp_path, DAYS[:2])
    plain_config = tiny_config("trainer.learning_rate=0.05", "trainer.weight_average=0")
    config = tiny_config("trainer.learning_rate=0.05", "trainer.weight_average=0.9")
    data = training.range_data(examples, DAYS[0], DAYS[1], training.head_tasks(config))
    plain = training.train(plain_config, data, tmp_path / "plain", log=lambda m: None)
    run = training.train(config, data, tmp_path / "avg", log=lambda m: None)
    assert run["steps"] == run["target_steps"] == plain["steps"]
    last = latest_checkpoint(tmp_path / "avg")
    assert last.endswith(f"ckpt-{run['global_step']}")
    keys = _checkpoint_keys(last)
    averaged = {k for k in keys if k.startswith("weight_average/")}
    # The model's and the optimizer's keys are a plain run's: older checkpoints still restore.
    assert averaged and keys - averaged == _checkpoint_keys(latest_checkpoint(tmp_path / "plain"))

    model = new_model(config, Contract.from_config(config))
    checkpoints = RunCheckpoints(model, make_optimizer(config.trainer, model), tmp_path / "read",
                                 average_momentum=0.9)

    def gaps(path) -> list[float]:
        checkpoints.checkpoint.restore(path).assert_existing_objects_matched()
        return [float(np.max(np.abs(w.numpy() - a.numpy())))
                for w, a in zip(model.trainable_variables, checkpoints.average.averages)]
    # The last checkpoint holds the average as the weights; the one before, the raw weights.
    assert max(gaps(last)) == 0.0
    earlier = tf.train.get_checkpoint_state(tmp_path / "avg" / "checkpoints").all_model_checkpoint_paths
    assert len(earlier) >= 2 and max(gaps(earlier[-2])) > 0.0


def test_a_warm_start_begins_the_average_at_the_sources_weights(tmp_path):
    config = tiny_config("trainer.weight_average=0.9")
    source = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    source_optimizer = keras.optimizers.Adam(0.01)
    source_optimizer.build(source.trainable_variables)
    RunCheckpoints(source, source_optimizer, tmp_path / "source").save()    # no average in it
    target = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    target.average_weights = lambda average: None      # a plain Keras model keeps no hook
    optimizer = make_optimizer(config.trainer, target)
    checkpoints = RunCheckpoints(target, optimizer, tmp_path / "target",
                                 average_momentum=config.trainer.weight_average)
    checkpoints.warm_start(tmp_path / "source")
    for weight, average in zip(source.trainable_variables, checkpoints.average.averages):
        np.testing.assert_array_equal(average.numpy(), weight.numpy())
    assert checkpoints.average.updates.numpy() == 0
