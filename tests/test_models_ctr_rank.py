"""model.ctr_rank_features: the ctr head also reads the impression's ranking features (DUPN,
dssm, cnn-max); an item-side input, so the serving split still holds."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tf_keras as keras

from features.contract import Contract
from models.dupn import build_model
from models_batches import batches, tiny_config

HEADS = ("model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
         "{name: l2r, weight: 1.0, hidden_units: [8]}]")


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(tiny_config())


@pytest.fixture(scope="module")
def inputs(contract):
    return batches(contract, 1, 32, seed=41)[0][0]


def make(contract, variant, reads):
    keras.utils.set_random_seed(5)
    return build_model(tiny_config(HEADS, f"model.variant={variant}",
                                   f"model.ctr_rank_features={str(reads).lower()}"), contract)


def with_other_rank_features(inputs):
    changed = dict(inputs)
    changed["rank_features"] = inputs["rank_features"] + 1.5
    return changed


@pytest.mark.parametrize("variant", ["dupn-all", "dssm", "cnn-max"])
def test_the_ctr_score_moves_with_the_rank_features_only_when_asked(contract, inputs, variant):
    changed = with_other_rank_features(inputs)
    reading = make(contract, variant, True)
    assert np.abs(reading(inputs)["ctr"].numpy() - reading(changed)["ctr"].numpy()).max() > 1e-4
    plain = make(contract, variant, False)
    np.testing.assert_array_equal(plain(inputs)["ctr"], plain(changed)["ctr"])


def test_split_scoring_equals_the_whole_model_and_the_flag_survives_save_and_load(
        contract, inputs, tmp_path):
    model = make(contract, "dupn-all", True)
    whole = model(inputs)
    representation = model.user_representation(inputs)
    split = model.score_items(representation, inputs)
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose(split[head], whole[head], atol=1e-5, err_msg=head)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.ctr_rank_features
    np.testing.assert_allclose(loaded(inputs)["ctr"], whole["ctr"], atol=1e-6)
