"""Small-vocabulary ids outside their vocabulary (behaviour type, scene, time bucket, age, gender)
read the unknown row 0, the same in the Keras model, the split and a compiled user part."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from features.contract import Contract
from models.dupn import build_model
from pipeline.bench.random_batch import random_batch
from train_helpers import tiny_config

OUT_OF_VOCABULARY = {"seq_type": 99, "seq_scene": -4, "seq_time_bucket": 1000, "age_bucket": -1,
                     "gender": 7}


def with_values(inputs: dict, value_of) -> dict:
    """The batch with each OUT_OF_VOCABULARY feature set to value_of(name) (sequence features only
    at real steps, so padding stays padding)."""
    out = dict(inputs)
    real = tf.not_equal(inputs["seq_item_id"], 0)
    for name, bad in OUT_OF_VOCABULARY.items():
        value = tf.fill(tf.shape(inputs[name]), tf.constant(value_of(name, bad), tf.int64))
        out[name] = tf.where(real, value, inputs[name]) if name.startswith("seq_") else value
    return out


def test_out_of_vocabulary_ids_score_as_unknown_everywhere():
    config = tiny_config()
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    inputs, _ = random_batch(contract, 8, seed=4)
    bad = with_values(inputs, lambda name, value: value)
    unknown = with_values(inputs, lambda name, value: 0)
    scores = model.scores(bad)
    for head, expected in model.scores(unknown).items():
        np.testing.assert_allclose(scores[head], expected, atol=1e-6, err_msg=head)
        assert np.isfinite(scores[head].numpy()).all()
    compiled = tf.function(model.user_representation, jit_compile=True)   # as `dupn export --xla`
    numeric = {k: v for k, v in bad.items() if v.dtype != tf.string}
    np.testing.assert_allclose(compiled(numeric), model.user_representation(unknown), atol=1e-5)
    split = model.score_items(model.user_representation(bad), bad)["ctr"]
    np.testing.assert_allclose(split, scores["ctr"], atol=1e-5)
