"""TFRecord layout of the feature contract: encode an example in Beam, parse and hash it in tf.data.

On disk every feature is a flat list of its dtype, of any length up to its shape (the sequence
holds only the behaviours a user had); parsing pads with the feature's default to the contract's
shape, so a record written with a shorter sequence length still parses.
"""
from __future__ import annotations

import glob
import os

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from features.contract import (FINGERPRINT_RANGE, FINGERPRINTED, LABELS, PRICE_PREFIX, Contract,
                               fingerprint_name)

PAD_ID = 0


_NESTED = (list, tuple, np.ndarray)
_PLAIN = frozenset((str, bytes, int, float, bool, np.str_, np.bytes_, np.int64, np.int32,
                    np.float32, np.float64))


def _nested(kinds) -> bool:
    """Whether a set of value types holds a list, tuple or array (set operations first: fast)."""
    return not kinds <= _PLAIN and any(issubclass(k, _NESTED) for k in kinds)


def _flatten(value):
    """(values in row-major order, their types); flat lists and arrays skip numpy's copy."""
    if isinstance(value, np.ndarray):
        flat = value.ravel().tolist()
        return flat, set(map(type, flat))
    if isinstance(value, (list, tuple)):
        kinds = set(map(type, value))
        if not _nested(kinds):
            return value, kinds
    flat = np.asarray(value, dtype=object).ravel()
    return flat, set(map(type, flat))


def encode_example(values: dict, contract: Contract) -> bytes:
    """Serializes one example: `values` maps feature names to scalars or (nested) lists.

    Missing features are left out (they parse to their default). Strings may be str or bytes.
    """
    example = example_pb2.Example()
    fmap = example.features.feature
    for name, value in values.items():
        spec = contract.features.get(name)
        if spec is None:
            raise KeyError(f"encode_example: '{name}' is not a feature of the contract")
        # The types present, in one C-level pass: the Beam job encodes ~1000 values per example,
        # so per-value Python checks would dominate its run time.
        flat, kinds = _flatten(value) if spec.shape else ([value], {type(value)})
        if _nested(kinds):
            # numpy keeps the rows of a ragged nested list as objects (and a scalar feature's
            # value is taken whole): they would be written as the text "['a', 'b']".
            raise ValueError(f"encode_example: '{name}' (shape {spec.shape}) got a nested or ragged "
                             f"value; rows need one length and a scalar feature one value")
        if spec.dtype == "string":
            if kinds <= {bytes}:
                data = list(flat)
            elif kinds <= {str}:
                data = list(map(str.encode, flat))
            else:
                data = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
            fmap[name].bytes_list.value.extend(data)
        elif spec.dtype == "int64":
            fmap[name].int64_list.value.extend(list(map(int, flat)))
        else:
            fmap[name].float_list.value.extend(list(map(float, flat)))
    return example.SerializeToString()


def _parse_spec(contract: Contract) -> dict:
    dtypes = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
    return {name: tf.io.RaggedFeature(dtypes[f.dtype], row_splits_dtype=tf.int64)
            for name, f in contract.features.items()}


def parse_batch(serialized: tf.Tensor, contract: Contract, hash_ids: bool = True) -> dict:
    """Parses a batch of serialized examples into dense tensors of the contract's shapes.

    Args:
      serialized: string tensor [B].
      hash_ids: replace string ids by their int64 rows in the feature's table (0 = padding).
    Returns:
      dict name -> tensor [B, *shape].
    """
    ragged = tf.io.parse_example(serialized, _parse_spec(contract))
    out = {}
    for name, f in contract.features.items():
        size = int(np.prod(f.shape)) if f.shape else 1
        values = ragged[name]
        if name.startswith("seq_"):
            values = values[:, -size:]   # a longer sequence keeps its most recent behaviours
        dense = values.to_tensor(default_value=f.default, shape=[None, size])
        dense = tf.reshape(dense, [-1, *f.shape])
        out[name] = dense
    return hash_features(out, contract) if hash_ids else out


def hash_features(values: dict, contract: Contract) -> dict:
    """Maps every string id feature with a table to int64 ids in [1, id range); '' -> 0.

    The id range is the table's buckets (plain) or its (quotient, remainder) pairs (qr)."""
    out = dict(values)
    for name, f in contract.features.items():
        if f.table is None or name not in values:
            continue
        ids = tf.strings.to_hash_bucket_fast(values[name], contract.id_range(f.table) - 1) + 1
        out[name] = tf.where(tf.equal(values[name], ""), tf.constant(PAD_ID, tf.int64), ids)
    out.update(fingerprints(values))
    return out


def fingerprints(values: dict) -> dict:
    """{<name>_fp: int64 [B, ...]} of the FINGERPRINTED string features present: each string's
    case-folded fingerprint in one shared space [1, FINGERPRINT_RANGE], so a query term can be
    compared with a candidate's tag, brand, category or shop; '' and price tokens give 0."""
    out = {}
    for name in FINGERPRINTED:
        if name not in values or values[name].dtype != tf.string:
            continue
        text = values[name]
        ids = tf.strings.to_hash_bucket_fast(tf.strings.lower(text), FINGERPRINT_RANGE) + 1
        none = tf.equal(text, "") | tf.strings.regex_full_match(text, PRICE_PREFIX + ".*")
        out[fingerprint_name(name)] = tf.where(none, tf.constant(PAD_ID, tf.int64), ids)
    return out


def split_labels(batch: dict) -> tuple[dict, dict]:
    """(model inputs, {task, label, weight, label_buy}); meta features stay with the inputs."""
    labels = {k: batch[k] for k in LABELS}
    inputs = {k: v for k, v in batch.items() if k not in labels}
    return inputs, labels


def list_files(patterns) -> list[str]:
    """Sorted files matching local glob patterns or remote ones (gs://, s3://, hdfs://)."""
    files = []
    for pattern in [patterns] if isinstance(patterns, (str, os.PathLike)) else patterns:
        pattern = str(pattern)
        found = glob.glob(pattern) if "://" not in pattern else tf.io.gfile.glob(pattern)
        files.extend(found)
    return sorted(set(files))


MAX_MIXED_FILES = 512
MIXED_CYCLE = 64


def mixed_stream(files: list[str], seed: int | None) -> tf.data.Dataset:
    """An endless stream of serialized records drawn from every file at once, each in proportion
    to its size, so that every stretch of training sees every task and day in their shares.

    Reading a few files at a time (an interleave) gives long stretches of one task-day: the
    shared layers then drift toward whichever tasks come last, and a head trained early can end
    a pass worse than it was (seen as CTR AUC at chance after one pass with one file order of
    six). Each file repeats on its own; the sizes stand in for record counts. Every file is open
    at once, so above MAX_MIXED_FILES (a cluster-sized window) files are read MIXED_CYCLE at a
    time instead, with the shuffle buffer doing the mixing.
    """
    if len(files) > MAX_MIXED_FILES:
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed).repeat()
        return ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                             cycle_length=MIXED_CYCLE, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=seed is not None)
    sizes = [max(tf.io.gfile.stat(f).length, 1) for f in files]
    total = float(sum(sizes))
    streams = [tf.data.TFRecordDataset(f, compression_type="GZIP").repeat() for f in files]
    return tf.data.Dataset.sample_from_datasets(streams, [s / total for s in sizes], seed=seed,
                                                stop_on_empty_dataset=False)


def read_dataset(files, contract: Contract, batch_size: int, shuffle_buffer: int = 0,
                 repeat: bool = False, seed: int | None = None,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """A tf.data pipeline of (inputs, labels) from gzipped TFRecord files.

    Files are sharded by input pipeline (one shard per worker under a distribution strategy).
    A shuffled, repeated (training) stream draws from every file at once (mixed_stream); a
    finite one reads a few files at a time. Records are batched, then parsed a batch at a time
    (parsing after batching is faster).
    """
    files = list_files(files)
    if not files:
        raise FileNotFoundError("read_dataset: no TFRecord files match the given paths")
    if input_context is not None and input_context.num_input_pipelines > 1:
        files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if repeat and shuffle_buffer:
        ds = mixed_stream(files, seed)
    else:
        ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle_buffer:
            ds = ds.shuffle(len(files), seed=seed)
        ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                           cycle_length=min(4, len(files)), num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=seed is not None)
        if repeat:
            ds = ds.repeat()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda s: split_labels(parse_batch(s, contract)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
