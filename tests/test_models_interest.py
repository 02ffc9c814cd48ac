"""DUPN's interest match (model.interest_match): the attended history in the item space, matched
with the CTR candidate; the representation carries it, so serving still splits."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from features.contract import Contract
from models.dupn import build_model, time_major
from models.head_inputs import interest_match
from models_batches import as_dataset, batches, tiny_config

HEADS = ("model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
         "{name: l2r, weight: 1.0, hidden_units: [8]}, {name: power, weight: 1.0, hidden_units: [8]}]")


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(tiny_config())


@pytest.fixture(scope="module")
def data(contract):
    return batches(contract, 3, 64, seed=31)


def make(contract, *overrides):
    keras.utils.set_random_seed(3)
    # The interest alone at the representation's end (the target attention's keys would follow it).
    model = build_model(tiny_config("model.interest_match=true", "model.target_attention=0",
                                    "model.id_match=0", "model.query_match=false", HEADS,
                                    *overrides), contract)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    return model


def test_interest_match_by_hand():
    candidate = tf.constant([[1.0, 2.0], [0.0, -1.0]])
    interest = tf.constant([[3.0, 0.5], [2.0, 4.0]])
    np.testing.assert_allclose(interest_match(candidate, interest),
                               [[1, 2, 3, 1, 4], [0, -1, 0, -4, -4]])


def test_interest_match_of_two_interests_by_hand():
    candidate = tf.constant([[1.0, 2.0]])
    interests = tf.constant([[3.0, 0.5, -1.0, 1.0]])        # interest 1: (3, 0.5), 2: (-1, 1)
    np.testing.assert_allclose(interest_match(candidate, interests),
                               [[1, 2, 3, 1, -1, 2, 4, 1]])


def test_each_interest_pools_the_item_embeddings_by_its_own_weighting(contract, data):
    model = make(contract, "model.interest_heads=3")
    inputs = data[0][0]
    item_dim = model.embeddings.item_dim
    representation = model.user_representation(inputs).numpy()
    assert representation.shape == (64, model.shared_dim + 3 * item_dim)
    seq = time_major(inputs)
    e, valid = model.embeddings.behaviour(seq)
    p = model.embeddings.behaviour_properties(seq)
    h = model.lstm(e, properties=p, valid=valid)
    context = tf.concat([model.embeddings.query(inputs), model.embeddings.profile(inputs)], -1)
    _, weights = model.attention(h, properties=p, context=context, valid=valid)
    weights = weights.numpy()                                                  # [B, K, N]
    # the first weighting is the attention's, as with one head
    np.testing.assert_allclose(weights[:, 0], model.attention_weights(inputs), atol=1e-6)
    real = np.transpose(valid.numpy())[:, None, :] > 0
    np.testing.assert_array_equal(weights[~np.broadcast_to(real, weights.shape)], 0.0)
    has_steps = real.any(-1)[:, 0]
    np.testing.assert_allclose(weights[has_steps].sum(-1), 1.0, atol=1e-5)
    assert np.abs(weights[:, 0] - weights[:, 1]).max() > 1e-4    # the heads differ
    by_hand = np.einsum("bkn,nbd->bkd", weights, e.numpy()).reshape(64, -1)
    np.testing.assert_allclose(representation[:, -3 * item_dim:], by_hand, atol=1e-5)


def test_the_representation_ends_with_the_attended_item_embeddings(contract, data):
    model = make(contract, "model.interest_heads=1")
    inputs = data[0][0]
    representation = model.user_representation(inputs).numpy()
    item_dim = model.embeddings.item_dim
    assert representation.shape == (64, model.shared_dim + item_dim) and model.interest_dim == item_dim
    e, _ = model.embeddings.behaviour(time_major(inputs))            # [N, B, De]
    weights = model.attention_weights(inputs).numpy()                 # [B, N]
    by_hand = np.einsum("bn,nbd->bd", weights, e.numpy())
    np.testing.assert_allclose(representation[:, -item_dim:], by_hand, atol=1e-5)
    plain = build_model(tiny_config(HEADS, "model.interest_match=false", "model.target_attention=0",
                                    "model.id_match=0", "model.query_match=false"),
                        contract)
    assert plain.user_representation(inputs).shape[-1] == plain.shared_dim


@pytest.mark.parametrize("sharing, heads", [("hard", 1), ("mmoe", 1), ("hard", 2)])
def test_split_scoring_equals_the_whole_model_and_survives_save_and_load(contract, data, sharing,
                                                                         heads, tmp_path):
    model = make(contract, f"model.sharing={sharing}", "model.experts=2", "model.expert_units=[8]",
                 f"model.interest_heads={heads}")
    model.fit(as_dataset(data), epochs=1, verbose=0)
    inputs = data[1][0]
    whole = model(inputs)
    representation = model.user_representation(inputs)
    split = model.score_items(representation, inputs)
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose(split[head], whole[head], atol=1e-5, err_msg=head)
    one = model.score_items(representation[:1], inputs)      # one user's row for every candidate
    repeated = model.score_items(tf.repeat(representation[:1], 64, axis=0), inputs)
    np.testing.assert_allclose(one["ctr"], repeated["ctr"], atol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.interest_match and loaded.interest_heads == heads
    np.testing.assert_allclose(loaded(inputs)["ctr"], whole["ctr"], atol=1e-6)


def test_only_the_ctr_head_reads_the_interest(contract, data):
    model = make(contract)
    inputs = data[0][0]
    representation = model.user_representation(inputs)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(representation)
        logits = model.logits_from_representation(representation, inputs)
    item_dim = model.interest_dim
    ctr = tape.gradient(logits["ctr"], representation)[:, -item_dim:]
    assert np.abs(ctr.numpy()).sum() > 0
    for task in ("l2r", "power"):
        other = tape.gradient(logits[task], representation)[:, -item_dim:]
        np.testing.assert_array_equal(other.numpy(), 0.0, err_msg=task)
