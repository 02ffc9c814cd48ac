"""Checkpoints written by the models of before issue 13 restore into today's and predict the same.

tests/checkpoints_v1.py wrote them once (one Adam step each, nine models: DUPN with interest
match and ranking features, with ESMM, under shared-bottom and mmoe, and the baselines). Training
restores with assert_existing_objects_matched (pipeline/training/checkpoints.py), so every object
of today's model must find its entry; the key lists pin the other direction: today's model
writes exactly the keys (and shapes) of then, and its trainable variables in the same order (the
optimizer saves its slots as a list in that order).
"""
import json

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from checkpoints_v1 import CASES, HERE, case_config, fixed_batch, predictions, trainable_names
from features.contract import Contract
from models.dupn import build_model


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(case_config("dupn_all"))


@pytest.mark.parametrize("case", list(CASES))
def test_an_old_checkpoint_restores_and_predicts_the_same(case, contract, tmp_path):
    folder = HERE / case
    model = build_model(case_config(case), contract)
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    model.compile(optimizer=optimizer)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint.read(str(folder / "ckpt")).assert_existing_objects_matched()

    inputs, _ = fixed_batch(contract)
    expected = np.load(folder / "expected.npz")
    got = predictions(model, inputs)
    assert sorted(got) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)

    keys = [[k, list(shape)] for k, shape in tf.train.list_variables(
        checkpoint.write(str(tmp_path / "ckpt")))]
    assert keys == json.loads((folder / "keys.json").read_text())
    assert trainable_names(model) == json.loads((folder / "trainable.json").read_text())
