"""Test helpers for the model tests: small configs, random batches and tiny TFRecord files."""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from configs.loader import load_config
from features.contract import TASKS, Contract
from features.tfrecord import encode_example
from pipeline.bench.random_batch import random_batch, random_examples

# Smaller than configs/small.yaml so that nine variants train in seconds.
TINY = ["data.sequence_length=8", "features.tags_per_item=2", "features.query_terms=3",
        "features.rank_features=4", "model.lstm_units=12", "model.attention_units=8",
        "model.shared_dim=16", "model.heads=[{name: ctr, weight: 1.0, hidden_units: [16, 8]}, "
        "{name: l2r, weight: 1.0, hidden_units: [8]}, {name: talent, weight: 1.0, "
        "hidden_units: [8]}, {name: power, weight: 1.0, hidden_units: [8]}, "
        "{name: shop, weight: 1.0, hidden_units: [8]}]"]


def tiny_config(*overrides):
    """configs/small.yaml shrunk further (TINY), with every head, plus overrides."""
    return load_config("small", [*TINY, *overrides])


def batches(contract: Contract, count: int, size: int, tasks=TASKS, seed: int = 0) -> list:
    """`count` (inputs, labels) batches as read_dataset yields them."""
    return [random_batch(contract, size, seed=seed + i, tasks=tasks) for i in range(count)]


def as_dataset(batch_list) -> tf.data.Dataset:
    """The batches, in order, as a tf.data.Dataset (what model.fit takes)."""
    spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, batch_list[0])
    return tf.data.Dataset.from_generator(lambda: iter(batch_list), output_signature=spec)


def write_examples(path, contract: Contract, count: int, seed: int = 0) -> None:
    """A gzipped TFRecord of `count` random examples, ids written as strings ('' = padding)."""
    rows = random_examples(contract, count, seed=seed)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for r in range(count):
            values = {}
            for name, spec in contract.features.items():
                value = rows[name][r]
                if spec.table is not None:     # hashed ids: back to strings, 0 -> padding
                    value = np.where(value == 0, "", np.char.add("id", value.astype(str)))
                    value = value.tolist() if np.ndim(value) else str(value)
                values[name] = value
            writer.write(encode_example(values, contract))


def assert_split_exact(model, inputs: dict, representation) -> None:
    """The split (user part once, item part per candidate) scores ctr as the whole model does, and
    one user's [1, D] row scores every candidate as that row repeated for each would."""
    whole = model.scores(inputs)["ctr"].numpy()
    split = model.score_items(representation, inputs)["ctr"].numpy()
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)
    rows = len(whole)
    one = model.score_items(representation[:1], inputs)["ctr"].numpy()
    single = model.score_items(tf.repeat(representation[:1], rows, axis=0), inputs)["ctr"].numpy()
    np.testing.assert_allclose(one, single, rtol=1e-5, atol=1e-6)
