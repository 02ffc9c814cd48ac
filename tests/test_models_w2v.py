"""Skip-gram item embeddings: the pairs by hand, items that co-occur end up close, the same table for the same seed."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from features.contract import Contract
from models.w2v import item_table_from_files, skipgram_pairs, train_item_embeddings
from models_batches import tiny_config, write_examples


def test_skipgram_pairs_by_hand():
    sequences = tf.constant([[5, 6, 7, 0], [8, 0, 0, 0]], tf.int64)
    targets, contexts = skipgram_pairs(sequences, window=2)
    pairs = sorted(zip(targets.numpy().tolist(), contexts.numpy().tolist()))
    # padding never pairs; a lone item has no pair
    assert pairs == sorted([(5, 6), (6, 5), (6, 7), (7, 6), (5, 7), (7, 5)])


def test_items_that_co_occur_end_up_close():
    rng = np.random.default_rng(0)
    clusters, per_cluster, users, steps = 6, 15, 256, 16
    sequences = []
    for _ in range(4):
        cluster = rng.integers(0, clusters, size=users)
        items = 1 + cluster[:, None] * per_cluster + rng.integers(0, per_cluster, (users, steps))
        items[:, 12:] *= rng.random((users, 1)) < 0.5          # some sequences are shorter
        sequences.append(items)
    dataset = tf.data.Dataset.from_tensor_slices(np.concatenate(sequences)).batch(256)
    table, losses = train_item_embeddings(dataset, buckets=500, dim=12, epochs=3, seed=1)
    assert table.shape == (500, 12) and np.all(table[0] == 0.0)
    assert losses[-1] < 0.6 * losses[0]
    vectors = table[1:1 + clusters * per_cluster]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    label = np.repeat(np.arange(clusters), per_cluster)
    same = (label[:, None] == label[None]) & ~np.eye(len(label), dtype=bool)
    assert similarity[same].mean() > similarity[label[:, None] != label[None]].mean() + 0.2
    np.fill_diagonal(similarity, -1.0)
    nearest = label[similarity.argmax(axis=1)]
    assert np.mean(nearest == label) > 0.95     # an item's nearest item is of its own cluster


def test_item_table_from_example_files(tmp_path):
    contract = Contract.from_config(tiny_config())
    write_examples(tmp_path / "part-0.tfrecord.gz", contract, 64, seed=2)
    table = item_table_from_files(str(tmp_path / "*.tfrecord.gz"), contract, batch_size=32)
    assert table.shape == tuple(contract.tables["item_id"])
    assert np.all(table[0] == 0.0) and np.any(table[1:] != 0.0)


def test_pretraining_from_files_is_the_same_for_the_same_seed(tmp_path):
    # Several files: read in parallel without a seed, their batches came in a varying order.
    contract = Contract.from_config(tiny_config())
    for i in range(6):
        write_examples(tmp_path / f"part-{i}.tfrecord.gz", contract, 48, seed=10 + i)
    files = str(tmp_path / "*.tfrecord.gz")
    first, second = (item_table_from_files(files, contract, batch_size=16, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, item_table_from_files(files, contract, batch_size=16, seed=4))
