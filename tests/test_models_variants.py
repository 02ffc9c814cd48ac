"""Every variant and baseline from configuration: trains (loss falls), saves and loads, splits."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from configs.schema import VARIANTS
from features.contract import NUM_POWER_LEVELS, Contract
from features.tfrecord import read_dataset
from models.dupn import DUPN, build_model
from models.multitask import RepresentationModel
from models.w2v import train_item_embeddings
from models_batches import as_dataset, batches, tiny_config, write_examples

SPLITTABLE = {"dupn-all", "dupn-nobp", "dupn-bplstm", "dupn-bpatt", "dupn-w2v", "dssm", "cnn-max"}


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(tiny_config())


@pytest.fixture(scope="module")
def data(contract):
    return batches(contract, 3, 96, seed=11)


@pytest.fixture(scope="module")
def item_table(contract, data):
    sequences = tf.data.Dataset.from_tensor_slices(
        tf.concat([x["seq_item_id"] for x, _ in data], 0)).batch(96)
    table, losses = train_item_embeddings(sequences, *contract.tables["item_id"], epochs=2)
    return table


def make(variant, contract, item_table, *overrides):
    config = tiny_config(f"model.variant={variant}", *overrides)
    model = build_model(config, contract, item_table if variant == "dupn-w2v" else None)
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_saves_loads_and_splits(variant, contract, data, item_table, tmp_path):
    model = make(variant, contract, item_table)
    losses = model.fit(as_dataset(data), epochs=5, verbose=0).history["loss"]
    assert losses[-1] < losses[0] - 0.05, f"{variant}: loss {losses}"
    if variant == "dupn-w2v":                     # the pre-trained item table stayed frozen
        np.testing.assert_array_equal(model.embeddings.tables["item_id"].embeddings, item_table)

    inputs = data[0][0]
    predictions = model(inputs)
    assert set(predictions) == {"ctr", "l2r", "talent", "power", "shop"}
    assert predictions["ctr"].shape == (96,)
    assert predictions["power"].shape == (96, NUM_POWER_LEVELS)
    np.testing.assert_allclose(tf.reduce_sum(predictions["power"], 1), 1.0, atol=1e-5)

    path = tmp_path / f"{variant}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):          # same construction, same order
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    reloaded = loaded(inputs)
    for head in predictions:
        np.testing.assert_allclose(reloaded[head], predictions[head], atol=1e-6, err_msg=head)

    assert isinstance(model, RepresentationModel) == (variant in SPLITTABLE)
    if variant in SPLITTABLE:
        representation = model.user_representation(inputs)
        # model.shared_dim of tiny_config, then the interest vector (model.interest_match), then
        # DUPN's target-attention keys and values: 8 steps x (2 x 16 units + the valid flag),
        # and its id match's ids and weights: 8 steps x (4 ids + the tag slots + 4 weights),
        # and the query match's query: one fingerprint per query term
        keys = 8 * (2 * 16 + 1 + 4 + contract.tag_slots + 4) if variant.startswith("dupn") else 0
        query = contract.query_terms if variant.startswith("dupn") else 0
        assert representation.shape == (96, 16 + model.interest_dim + keys + query)
        split = model.score_items(representation, inputs)
        assert set(split) == {"ctr", "l2r"}
        for head in split:
            np.testing.assert_allclose(split[head], predictions[head], atol=1e-5, err_msg=head)


def test_w2v_item_table_is_loaded_and_frozen(contract, item_table):
    model = build_model(tiny_config("model.variant=dupn-w2v"), contract, item_table)
    table = model.embeddings.tables["item_id"]
    np.testing.assert_array_equal(table.embeddings.numpy(), item_table)
    assert not any(v is table.embeddings for v in model.trainable_variables)
    with pytest.raises(ValueError, match="needs the pre-trained item table"):
        build_model(tiny_config("model.variant=dupn-w2v"), contract)
    with pytest.raises(ValueError, match="shape"):
        build_model(tiny_config("model.variant=dupn-w2v"), contract, item_table[:, :3])
    with pytest.raises(ValueError, match="only dupn-w2v"):
        build_model(tiny_config("model.variant=dupn-all"), contract, item_table)
    # a model about to be restored from a checkpoint needs no table
    restored = build_model(tiny_config("model.variant=dupn-w2v"), contract,
                           restore_item_table=True)
    restored.set_weights(model.get_weights())
    np.testing.assert_array_equal(restored.embeddings.tables["item_id"].embeddings, item_table)


def test_variants_differ_in_where_properties_go(contract):
    shapes = {}
    for variant in ("dupn-all", "dupn-nobp", "dupn-bplstm", "dupn-bpatt"):
        model = build_model(tiny_config(f"model.variant={variant}"), contract)
        shapes[variant] = (model.lstm.property_dim, model.attention.use_property,
                           any("property_kernel" in w.name for w in model.weights),
                           any("/type/" in w.name for w in model.weights))
    p = contract.property_embedding_dim
    assert shapes == {"dupn-all": (p, True, True, True), "dupn-nobp": (0, False, False, False),
                      "dupn-bplstm": (p, False, True, True), "dupn-bpatt": (0, True, False, True)}


def test_attention_weights_for_analysis(contract, data, item_table):
    model = make("dupn-all", contract, item_table, "model.peepholes=true")
    inputs = data[0][0]
    weights = model.attention_weights(inputs).numpy()
    real = inputs["seq_item_id"].numpy() != 0
    assert weights.shape == real.shape
    assert np.all(weights[~real] == 0.0)
    np.testing.assert_allclose(weights.sum(1)[real.any(1)], 1.0, atol=1e-5)


def test_single_head_config_is_single_task_training(contract, data):
    config = tiny_config("model.heads=[{name: power, weight: 1.0, hidden_units: [8]}]")
    model = build_model(config, contract)
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    history = model.fit(as_dataset(data), epochs=3, verbose=0).history
    assert set(model(data[0][0])) == {"power"}
    assert history["loss"][-1] < history["loss"][0]
    assert not any(k.startswith("ctr") for k in history)


def test_trains_on_what_read_dataset_yields(contract, tmp_path):
    write_examples(tmp_path / "part-00000.tfrecord.gz", contract, 40, seed=5)
    dataset = read_dataset(str(tmp_path / "*.tfrecord.gz"), contract, batch_size=16)
    inputs, labels = next(iter(dataset))
    assert {"user_id", "request_id", "ts"} <= set(inputs)     # meta rides along, ignored
    model = build_model(tiny_config(), contract)
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    history = model.fit(dataset, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    predictions = model(inputs)
    assert predictions["ctr"].shape == (16,) and predictions["power"].shape == (16, 7)


def test_dropout_and_l2_come_from_config(contract):
    model = build_model(tiny_config("model.dropout=0.5", "model.l2=0.01"), contract)
    assert isinstance(model, DUPN) and model.dropout == 0.5 and model.l2 == 0.01
    assert model.shared_dropout.rate == 0.5
    assert float(model.regularization_loss()) > 0.0
    config = model.get_config()
    assert DUPN.from_config(config).get_config() == config
