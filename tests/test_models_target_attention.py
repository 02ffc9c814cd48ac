"""The target attention: hand-checked pooling and soft count, padding ignored, and the serving split
exact with it (the user part's keys, the item part's query)."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf

from configs.loader import load_config
from features.contract import Contract
from models.dupn import build_model
from models.target_attention import TargetAttention
from models_batches import assert_split_exact
from pipeline.bench.random_batch import random_batch


def identity_layer(units=2, steps=3):
    """Keys = values = the embedded steps (non-negative, so relu passes them), query = the
    candidate: identity kernels, zero biases."""
    layer = TargetAttention(units, steps)
    e = tf.constant([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])       # [N=3, B=1, 2]
    layer.keys(e, tf.ones([3, 1]))
    layer.match(tf.zeros([1, layer.width]), tf.zeros([1, units]))
    first = tf.concat([tf.eye(units), tf.zeros([units, units])], axis=0)     # hidden -> its first d
    for dense, kernel in ((layer.step, tf.transpose(first)), (layer.key, first),
                          (layer.value, first), (layer.query, tf.eye(units))):
        dense.kernel.assign(kernel)
        dense.bias.assign(tf.zeros_like(dense.bias))
    layer.count_bias.assign(0.0)
    return layer, e


def test_match_pools_by_softmax_counts_by_sigmoid_and_peaks():
    layer, e = identity_layer()
    valid = tf.constant([[1.0], [1.0], [0.0]])                        # the third step is padding
    keys = layer.keys(e, valid)
    # Per step: key (2), value (2); padding zeroed; then the valid flags.
    np.testing.assert_allclose(keys.numpy(), [[1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0]])
    out = layer.match(keys, tf.constant([[2.0, 0.0]])).numpy()[0]
    s = np.array([2.0, 0.0]) / np.sqrt(2)                              # q · k_t / sqrt(d), real steps
    v = np.array([[1.0, 0.0], [0.0, 1.0]])
    w = np.exp(s) / np.exp(s).sum()
    gate = 1 / (1 + np.exp(-s))
    np.testing.assert_allclose(out[:2], w @ v, rtol=1e-5)                       # focus
    np.testing.assert_allclose(out[2:4], gate @ v, rtol=1e-5)                    # mass
    np.testing.assert_allclose(out[4], np.log1p(gate.sum()), rtol=1e-5)          # intensity
    np.testing.assert_allclose(out[5], s.max(), rtol=1e-5)                       # peak


def test_no_history_gives_zeros_but_the_count_of_nothing():
    layer, e = identity_layer()
    keys = layer.keys(e, tf.zeros([3, 1]))
    out = layer.match(keys, tf.constant([[1.0, 1.0]])).numpy()[0]
    np.testing.assert_array_equal(out, np.zeros(6))


@pytest.mark.parametrize("variant", ["dupn-all", "dupn-nobp"])
def test_the_split_stays_exact_with_target_attention(variant):
    config = load_config("small", [f"model.variant={variant}", "model.target_attention=8",
                                   "model.id_match=0", "model.query_match=false"])
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    inputs, _ = random_batch(contract, 16, seed=3)
    assert "target_attention" in model.heads[0].candidate_inputs
    representation = model.user_representation(inputs)
    assert representation.shape[1] == config.model.shared_dim + 2 * contract.item_embedding_dim \
        + contract.sequence_length * 17
    # One user's [1, D] representation scores all candidates: the user part runs once.
    assert_split_exact(model, inputs, representation)


def test_keys_read_properties_only_where_the_attention_does():
    widths = {}
    for variant in ("dupn-all", "dupn-nobp"):
        config = load_config("small", [f"model.variant={variant}", "model.target_attention=8"])
        model = build_model(config, Contract.from_config(config))
        widths[variant] = model.target.step.kernel.shape[0]
    contract = Contract.from_config(load_config("small"))
    assert widths["dupn-all"] == contract.item_embedding_dim + contract.property_embedding_dim
    assert widths["dupn-nobp"] == contract.item_embedding_dim
