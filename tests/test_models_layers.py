"""Layers of DUPN: the property-gated LSTM against a NumPy reference, attention masking, shared tables."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf

from features.contract import Contract
from models.attention import AttentionPooling, masked_softmax
from models.config import contract_config
from models.embedding import FeatureEmbeddings, masked_mean
from models.gated_lstm import PropertyGatedLSTM
from pipeline.bench.random_batch import random_batch
from models_batches import tiny_config

B, N, DE, DP, U = 3, 6, 5, 4, 7
RNG = np.random.default_rng(7)
E = RNG.normal(size=(B, N, DE)).astype(np.float32)
P = RNG.normal(size=(B, N, DP)).astype(np.float32)
# Row 0: two padded steps at the end; row 1: no behaviour at all; row 2: a gap in the middle.
VALID = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 0, 1, 1, 1]], np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_gated_lstm(e, p, valid, layer):
    """The paper's equations step by step, in float64, with each W_x* a separate matrix."""
    u = layer.units
    block = lambda w, k: np.asarray(w, np.float64)[:, k * u:(k + 1) * u]
    w_e, w_h, b = layer.input_kernel, layer.recurrent_kernel, np.asarray(layer.bias, np.float64)
    (w_ie, w_fe, w_oe, w_ce), (w_ih, w_fh, w_oh, w_ch) = ([block(w, k) for k in range(4)]
                                                          for w in (w_e, w_h))
    if layer.property_dim:
        w_ip, w_fp, w_op = (block(layer.property_kernel, k) for k in range(3))
    else:
        w_ip = w_fp = w_op = np.zeros((0, u))
        p = np.zeros(e.shape[:2] + (0,))
    b_i, b_f, b_o, b_c = (b[k * u:(k + 1) * u] for k in range(4))
    peep = np.asarray(layer.peephole_weights, np.float64) if layer.peepholes else np.zeros((3, u))
    h, c = np.zeros((e.shape[0], u)), np.zeros((e.shape[0], u))
    outputs = np.zeros((e.shape[0], e.shape[1], u))
    for t in range(e.shape[1]):
        e_t, p_t, m = e[:, t], p[:, t], valid[:, t, None]
        i = sigmoid(e_t @ w_ie + h @ w_ih + p_t @ w_ip + b_i + peep[0] * c)
        f = sigmoid(e_t @ w_fe + h @ w_fh + p_t @ w_fp + b_f + peep[1] * c)
        c_tilde = np.tanh(e_t @ w_ce + h @ w_ch + b_c)
        c_new = f * c + i * c_tilde
        o = sigmoid(e_t @ w_oe + h @ w_oh + p_t @ w_op + b_o + peep[2] * c_new)
        h_new = o * np.tanh(c_new)
        h, c = np.where(m > 0, h_new, h), np.where(m > 0, c_new, c)
        outputs[:, t] = m * h_new
    return outputs


def lstm_with_random_weights(property_dim, peepholes, time_major=False):
    layer = PropertyGatedLSTM(U, DE, property_dim, peepholes, time_major=time_major)
    layer.build()
    rng = np.random.default_rng(property_dim + 2 * peepholes)
    for w in layer.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape))
    return layer


@pytest.mark.parametrize("training", [True, False])    # the loop with a hand-written gradient, the lean one
@pytest.mark.parametrize("property_dim,peepholes", [(DP, False), (DP, True), (0, False), (0, True)])
def test_gated_lstm_matches_numpy_reference(property_dim, peepholes, training):
    layer = lstm_with_random_weights(property_dim, peepholes)
    got = layer(E, P if property_dim else None, VALID, training=training).numpy()
    want = numpy_gated_lstm(E.astype(np.float64), P.astype(np.float64), VALID, layer)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert np.all(got[VALID == 0] == 0.0)            # padded steps output exact zeros


def autodiff_reference(layer, e, p, valid):
    """The same equations as plain TensorFlow ops, differentiated by TensorFlow itself."""
    u = layer.units
    z = tf.einsum("bnd,dg->bng", e, layer.input_kernel) + layer.bias
    if layer.property_dim:
        z += tf.pad(tf.einsum("bnd,dg->bng", p, layer.property_kernel), [[0, 0], [0, 0], [0, u]])
    peep = layer.peephole_weights if layer.peepholes else tf.zeros([3, u])
    h = c = tf.zeros([e.shape[0], u])
    outputs = []
    for t in range(e.shape[1]):
        gi, gf, go, gc = tf.split(z[:, t] + h @ layer.recurrent_kernel, 4, axis=1)
        c_new = tf.sigmoid(gf + peep[1] * c) * c + tf.sigmoid(gi + peep[0] * c) * tf.tanh(gc)
        h_new = tf.sigmoid(go + peep[2] * c_new) * tf.tanh(c_new)
        m = valid[:, t, None]
        h, c = m * h_new + (1 - m) * h, m * c_new + (1 - m) * c
        outputs.append(m * h_new)
    return tf.stack(outputs, axis=1)


@pytest.mark.parametrize("property_dim,peepholes", [(DP, False), (DP, True), (0, False), (0, True)])
def test_hand_written_gradient_matches_autodiff(property_dim, peepholes):
    layer = lstm_with_random_weights(property_dim, peepholes)
    e, p = tf.constant(E), tf.constant(P)
    upstream = RNG.normal(size=(B, N, U)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([e, p])
        ours = tf.reduce_sum(layer(e, p if property_dim else None, VALID, training=True) * upstream)
        reference = tf.reduce_sum(autodiff_reference(layer, e, p, VALID) * upstream)
    sources = [e, p, *layer.trainable_weights] if property_dim else [e, *layer.trainable_weights]
    for got, want, src in zip(tape.gradient(ours, sources), tape.gradient(reference, sources),
                              ["e", "p", *[w.name for w in layer.trainable_weights]]
                              if property_dim else ["e", *[w.name for w in layer.trainable_weights]]):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=src)


def test_property_drives_the_gates_never_the_candidate():
    layer = lstm_with_random_weights(DP, False)
    assert layer.property_kernel.shape == (DP, 3 * U)      # i, f, o blocks only
    assert layer.input_kernel.shape == (DE, 4 * U)
    assert layer.recurrent_kernel.shape == (U, 4 * U)
    # With the three gates saturated open, the output no longer depends on the property.
    layer.bias.assign(np.concatenate([np.full(3 * U, 50.0), np.zeros(U)]))
    a = layer(E, P, VALID).numpy()
    b = layer(E, P * 3.0, VALID).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_padded_gap_leaves_state_unchanged(training):
    """A sequence with a padded step in the middle ends in the state of the same sequence
    without that step."""
    layer = lstm_with_random_weights(DP, True)
    gap = layer(E[2:], P[2:], VALID[2:], training=training).numpy()[0]
    keep = VALID[2] > 0
    dense = layer(E[2:, keep], P[2:, keep], np.ones((1, keep.sum()), np.float32),
                  training=training).numpy()[0]
    np.testing.assert_allclose(gap[keep], dense, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_time_major_equals_batch_major_and_config_round_trips(training):
    a = lstm_with_random_weights(DP, True)
    b = PropertyGatedLSTM.from_config({**a.get_config(), "time_major": True})
    b.build()
    b.set_weights(a.get_weights())
    got = b(E.transpose(1, 0, 2), P.transpose(1, 0, 2), VALID.T,
            training=training).numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(got, a(E, P, VALID, training=training).numpy(), atol=1e-6)
    assert {k: v for k, v in b.get_config().items() if k not in ("name", "time_major")} == \
        {k: v for k, v in a.get_config().items() if k not in ("name", "time_major")}


def test_attention_masks_padding_and_normalises_real_steps():
    attention = AttentionPooling(5, use_property=True)
    states = RNG.normal(size=(B, N, U)).astype(np.float32)
    context = RNG.normal(size=(B, 3)).astype(np.float32)
    representation, weights = attention(states, P, context, VALID)
    weights = weights.numpy()
    assert np.all(weights[VALID == 0] == 0.0)
    np.testing.assert_allclose(weights[[0, 2]].sum(axis=1), [1.0, 1.0], atol=1e-6)
    assert np.all(weights[1] == 0.0) and np.all(representation.numpy()[1] == 0.0)   # no steps
    np.testing.assert_allclose(representation, np.einsum("bn,bnu->bu", weights, states), atol=1e-5)


def test_attention_score_formula():
    """score_t = vᵀ tanh(W_h h_t + W_p p_t + W_q q + W_u u + b), softmax over real steps."""
    attention = AttentionPooling(4, use_property=True, time_major=False)
    states = RNG.normal(size=(B, N, U)).astype(np.float32)
    query, profile = RNG.normal(size=(B, 2)).astype(np.float32), RNG.normal(size=(B, 3)).astype(np.float32)
    _, weights = attention(states, P, np.concatenate([query, profile], 1), VALID)
    w_hp = attention.step_projection.kernel.numpy()
    w_h, w_p = w_hp[:U], w_hp[U:]
    w_qu, bias = attention.context_projection.kernel.numpy(), attention.context_projection.bias.numpy()
    w_q, w_u = w_qu[:2], w_qu[2:]
    v = attention.score.kernel.numpy()[:, 0]
    hidden = states @ w_h + P @ w_p + (query @ w_q + profile @ w_u + bias)[:, None]
    scores = np.tanh(hidden) @ v
    for row in (0, 2):
        real = VALID[row] > 0
        expected = np.exp(scores[row, real] - scores[row, real].max())
        np.testing.assert_allclose(weights.numpy()[row, real], expected / expected.sum(), atol=1e-6)
    # time-major gives the same weights
    attention_tm = AttentionPooling.from_config({**attention.get_config(), "time_major": True})
    attention_tm(states.transpose(1, 0, 2), P.transpose(1, 0, 2), np.concatenate([query, profile], 1),
                 VALID.T)
    attention_tm.set_weights(attention.get_weights())
    _, weights_tm = attention_tm(states.transpose(1, 0, 2), P.transpose(1, 0, 2),
                                 np.concatenate([query, profile], 1), VALID.T)
    np.testing.assert_allclose(weights_tm, weights, atol=1e-6)


def test_masked_softmax_all_padding_is_zero_not_nan():
    w = masked_softmax(tf.constant([[3.0, 1.0], [2.0, 2.0]]), tf.constant([[0.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(w.numpy(), [[0.0, 0.0], [1.0, 0.0]])


def test_masked_mean_ignores_padding_slots():
    embedded = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0]] * 3])
    ids = tf.constant([[4, 9, 0], [0, 0, 0]], tf.int64)
    np.testing.assert_allclose(masked_mean(embedded, ids), [[2.0, 3.0], [0.0, 0.0]])


def test_tables_are_shared_wherever_an_id_is_embedded():
    contract = Contract.from_config(tiny_config())
    emb = FeatureEmbeddings(contract_config(contract))
    inputs, _ = random_batch(contract, 6, seed=3)
    # Make row 0's target item the same item as its first behaviour.
    seq = {k: inputs[f"seq_{k}"][:, 0] for k in ("item_id", "shop_id", "brand_id", "category_id")}
    inputs = dict(inputs, **seq, tags=inputs["seq_tags"][:, 0], talent_tags=inputs["seq_tags"][:, 0])
    e, valid = emb.behaviour(inputs)
    np.testing.assert_allclose(emb.target_item(inputs), e[:, 0], atol=0)
    d_item, d_shop = contract.tables["item_id"][1], contract.tables["shop_id"][1]
    np.testing.assert_allclose(emb.shop(inputs), e[:, 0, d_item:d_item + d_shop], atol=0)
    tags_width = contract.tables["tags"][1]
    np.testing.assert_allclose(emb.talent(inputs)[:, -tags_width:], e[:, 0, -tags_width:], atol=0)
    assert emb.behaviour_properties(inputs).shape == (6, contract.sequence_length,
                                                      contract.property_embedding_dim)
    np.testing.assert_array_equal(valid, (inputs["seq_item_id"].numpy() != 0).astype(np.float32))
    # one variable per table, however many places use it
    names = sorted(v.name.split("/")[-2] for v in emb.trainable_variables)
    assert len(names) == len(set(names))
