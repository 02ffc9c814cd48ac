"""Quotient-remainder embeddings (`features.<table>.embedding: qr`): a unique pair of rows per id
at a plain table's memory, and a model with them saves, loads, warm-starts and splits exactly."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from configs.loader import ConfigError, load_config
from features.contract import Contract, qr_rows
from features.tfrecord import hash_features
from models.config import contract_config
from models.dupn import build_model
from models.qr_embedding import QREmbedding, qr_pair
from models_batches import as_dataset, batches, tiny_config, write_examples
from pipeline.serving import export
from pipeline.training.checkpoints import RunCheckpoints, make_optimizer
from test_train_export import assert_split_equals_whole
from train_helpers import tiny_config as export_config

QR = ("features.item_id.embedding=qr", "features.shop_id.embedding=qr")


def test_distinct_ids_in_range_get_distinct_row_pairs():
    # Exhaustively for a small table, and at small.yaml's item table on ids spread over its range.
    for buckets, ids in ((11, np.arange(30)), (20011, None)):
        quotient_rows, remainder_rows = qr_rows(buckets)
        assert quotient_rows + remainder_rows == buckets
        id_range = quotient_rows * remainder_rows
        if ids is None:
            ids = np.unique(np.r_[np.random.default_rng(0).integers(0, id_range, 200_000),
                                  0, 1, id_range - 2, id_range - 1])
        quotient, remainder = (t.numpy() for t in qr_pair(tf.constant(ids, tf.int64), remainder_rows))
        assert quotient.min() >= 0 and quotient.max() < quotient_rows
        assert remainder.min() >= 0 and remainder.max() < remainder_rows
        assert len(set(zip(quotient, remainder))) == len(ids)
    assert qr_rows(11) == (6, 5)


def test_every_id_of_a_small_table_embeds_to_its_own_vector_at_equal_memory():
    layer = QREmbedding(11, 4)
    vectors = layer(tf.range(30, dtype=tf.int64)).numpy()
    assert len({tuple(v) for v in vectors}) == 30          # a plain table of 11 rows has 11
    assert sum(int(np.prod(w.shape)) for w in layer.weights) == 11 * 4


def test_the_parser_hashes_qr_tables_into_their_id_range():
    contract = Contract.from_config(tiny_config(*QR))
    buckets = contract.tables["item_id"][0]
    assert contract.id_range("item_id") == np.prod(qr_rows(buckets)) > 1000 * buckets
    assert contract.id_range("brand_id") == contract.tables["brand_id"][0]       # still plain
    names = tf.constant([f"item{i}" for i in range(3000)] + [""])
    ids = hash_features({"item_id": names}, contract)["item_id"].numpy()
    assert ids[-1] == 0 and ids[:-1].min() >= 1 and ids.max() < contract.id_range("item_id")
    assert ids.max() > buckets                  # plain hashing would stay below the buckets
    assert len(set(ids[:-1])) == 3000           # no two of these names share an id


def test_a_default_contract_describes_itself_as_before():
    # Models keep this dict in get_config: without qr it has no "embeddings" key, as saved
    # models from before the choice have none.
    assert "embeddings" not in contract_config(Contract.from_config(tiny_config()))
    config = contract_config(Contract.from_config(tiny_config(*QR)))
    assert config["embeddings"] == {"item_id": "qr", "shop_id": "qr"}


@pytest.mark.parametrize("overrides, message", [
    (["features.item_id.embedding=hashed"], "features.item_id.embedding: 'hashed' is not one of plain, qr"),
    (["features.talent_type.buckets=3", "features.talent_type.embedding=qr"],
     "features.talent_type.buckets: a qr embedding needs at least 4 buckets, got 3"),
    (["model.variant=dupn-w2v", "features.item_id.embedding=qr"],
     "features.item_id.embedding: dupn-w2v pre-trains a plain item table"),
])
def test_bad_embedding_settings_fail_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("small", overrides)


def qr_batches(contract, count: int, size: int, seed: int):
    """Random batches whose item and shop ids spread over the qr id range (not only the buckets)."""
    out = []
    for i, (inputs, labels) in enumerate(batches(contract, count, size, seed=seed)):
        rng = np.random.default_rng(seed + i)
        inputs = dict(inputs)
        for table, names in (("item_id", ("item_id", "seq_item_id")), ("shop_id", ("shop_id", "seq_shop_id"))):
            for name in names:
                ids = inputs[name].numpy()
                spread = rng.integers(1, contract.id_range(table), ids.shape)
                inputs[name] = tf.constant(np.where(ids == 0, 0, spread))
        out.append((inputs, labels))
    return out


@pytest.fixture(scope="module")
def trained():
    config = tiny_config(*QR)
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    model.compile(optimizer=make_optimizer(config.trainer, model))
    data = qr_batches(contract, 3, 64, seed=5)
    losses = model.fit(as_dataset(data), epochs=4, verbose=0).history["loss"]
    return config, contract, model, data, losses


def test_a_qr_model_trains_and_its_tables_keep_the_plain_memory(trained):
    config, contract, model, data, losses = trained
    assert losses[-1] < losses[0] - 0.05, losses
    item = model.embeddings.tables["item_id"]
    assert isinstance(item, QREmbedding)
    assert sorted(w.shape[0] for w in item.weights) == sorted(qr_rows(config.features.item_id.buckets))
    assert sum(int(np.prod(w.shape)) for w in item.weights) == \
        config.features.item_id.buckets * config.features.item_id.dim
    assert any(i > config.features.item_id.buckets for i in data[0][0]["item_id"].numpy())


def test_a_qr_model_saves_loads_and_splits_exactly(trained, tmp_path):
    _, _, model, data, _ = trained
    inputs = data[0][0]
    predictions = model(inputs)
    model.save(tmp_path / "qr.keras")
    loaded = keras.models.load_model(tmp_path / "qr.keras")
    assert isinstance(loaded.embeddings.tables["item_id"], QREmbedding)
    for head, value in loaded(inputs).items():
        np.testing.assert_allclose(value, predictions[head], atol=1e-6, err_msg=head)
    split = model.score_items(model.user_representation(inputs), inputs)
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose(split[head], predictions[head], atol=1e-5, err_msg=head)


def test_a_qr_model_warm_starts_exactly(trained, tmp_path):
    config, contract, model, data, _ = trained
    RunCheckpoints(model, model.optimizer, tmp_path / "source").save()
    target = build_model(config, contract)
    optimizer = make_optimizer(config.trainer, target)
    target.compile(optimizer=optimizer)
    RunCheckpoints(target, optimizer, tmp_path / "target").warm_start(tmp_path / "source")
    inputs = data[1][0]
    for head, value in target(inputs).items():
        np.testing.assert_allclose(value, model(inputs)[head], atol=1e-6, err_msg=head)
    for a, b in zip(model.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.name)


def test_an_exported_qr_model_splits_as_the_whole_model(tmp_path):
    config = export_config(*QR)
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    write_examples(tmp_path / "part-0.tfrecord.gz", contract, 24, seed=3)
    serialized = next(iter(tf.data.TFRecordDataset([str(tmp_path / "part-0.tfrecord.gz")],
                                                   "GZIP").batch(24)))
    export.export(model, contract, tmp_path / "export")
    assert_split_equals_whole(tmp_path / "export", model, contract, serialized, 24)
