"""DUPN's interest match (model.interest_match): the attended history in the item space, matched
with the CTR candidate; the representation carries it, so serving still splits."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from features.contract import Contract
from models.dupn import build_model, time_major
from models.multitask import interest_match
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
    model = build_model(tiny_config("model.interest_match=true", HEADS, *overrides), contract)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    return model


def test_interest_match_by_hand():
    candidate = tf.constant([[1.0, 2.0], [0.0, -1.0]])
    interest = tf.constant([[3.0, 0.5], [2.0, 4.0]])
    np.testing.assert_allclose(interest_match(candidate, interest),
                               [[1, 2, 3, 1, 4], [0, -1, 0, -4, -4]])


def test_the_representation_ends_with_the_attended_item_embeddings(contract, data):
    model = make(contract)
    inputs = data[0][0]
    representation = model.user_representation(inputs).numpy()
    item_dim = model.embeddings.item_dim
    assert representation.shape == (64, model.shared_dim + item_dim) and model.interest_dim == item_dim
    e, _ = model.embeddings.behaviour(time_major(inputs))            # [N, B, De]
    weights = model.attention_weights(inputs).numpy()                 # [B, N]
    by_hand = np.einsum("bn,nbd->bd", weights, e.numpy())
    np.testing.assert_allclose(representation[:, -item_dim:], by_hand, atol=1e-5)
    plain = build_model(tiny_config(HEADS, "model.interest_match=false"), contract)
    assert plain.user_representation(inputs).shape[-1] == plain.shared_dim


@pytest.mark.parametrize("sharing", ["hard", "mmoe"])
def test_split_scoring_equals_the_whole_model_and_survives_save_and_load(contract, data, sharing,
                                                                         tmp_path):
    model = make(contract, f"model.sharing={sharing}", "model.experts=2", "model.expert_units=[8]")
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
    assert loaded.interest_match
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
