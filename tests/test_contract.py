"""features/: the contract's shapes and buckets by hand, TFRecord encode/parse round trips, read_dataset."""
import math

import numpy as np
import pytest
import tensorflow as tf

from configs.loader import load_config
from features.contract import (BEHAVIOR_INDEX, FINGERPRINTED, GENDER_INDEX, NUM_TIME_BUCKETS,
                               SCENE_INDEX, TASK_INDEX, Contract, age_bucket, fingerprint_name,
                               item_tag_slots, price_token, time_bucket)
from features.tfrecord import encode_example, hash_features, parse_batch, read_dataset

MIN, HOUR, DAY = 60, 3600, 86400


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(load_config("small"))


def test_contract_shapes_follow_the_config(contract):
    n, t = 40, 4                                   # small.yaml: sequence 40, 3 tags + the price slot
    f = contract.features
    assert f["seq_item_id"].shape == (n,) and f["seq_tags"].shape == (n, t)
    assert f["tags"].shape == (t,) and f["talent_tags"].shape == (t,)
    assert f["query"].shape == (4,) and f["rank_features"].shape == (8,)
    assert f["seq_item_id"].table == f["item_id"].table == "item_id"
    assert f["seq_tags"].table == f["talent_tags"].table == "tags"
    assert f["seq_time_bucket"].vocab == NUM_TIME_BUCKETS == 9
    assert not any(f[k].model_input for k in ("task", "label", "weight", "label_buy", "user_id",
                                               "request_id", "ts"))
    assert contract.input_dtype("seq_item_id") == "int64" and contract.input_dtype("label") == "float32"
    paper = Contract.from_config(load_config("dupn"))
    assert paper.features["seq_item_id"].shape == (100,)
    assert paper.item_embedding_dim == 32 + 24 + 24 + 16 + 28
    assert paper.property_embedding_dim == 16 * 3
    assert paper.tables["item_id"] == (1_000_003, 32)


def test_time_bucket_edges():
    cases = {0: 1, 59: 1, MIN: 2, 5 * MIN - 1: 2, 5 * MIN: 3, 30 * MIN - 1: 3, 30 * MIN: 4,
             2 * HOUR - 1: 4, 2 * HOUR: 5, DAY - 1: 5, DAY: 6, 3 * DAY - 1: 6, 3 * DAY: 7,
             7 * DAY - 1: 7, 7 * DAY: 8, 8 * DAY: 8, 400 * DAY: 8}
    for gap, bucket in cases.items():
        assert time_bucket(gap) == bucket, gap
    assert list(time_bucket(np.array(list(cases)))) == list(cases.values())


def test_age_bucket():
    cases = {17: 1, 18: 2, 24: 2, 25: 3, 29: 3, 30: 4, 35: 5, 40: 6, 49: 6, 50: 7, 99: 7}
    for age, bucket in cases.items():
        assert age_bucket(age) == bucket, age
    assert age_bucket(None) == 0 and age_bucket(float("nan")) == 0 and age_bucket(np.nan) == 0
    assert age_bucket(np.int64(30)) == 4 and age_bucket(24.9) == 2


def test_price_token():
    assert price_token(0) == "price:0"            # log2(1) = 0
    assert price_token(0.99) == "price:0"
    assert price_token(1) == "price:1"            # log2(2)
    assert price_token(2.99) == "price:1"
    assert price_token(3) == "price:2"            # log2(4)
    assert price_token(1022) == "price:9" and price_token(1023) == "price:10"
    assert price_token(2.0 ** 40) == "price:15"   # the top bucket
    for unknown in (None, float("nan"), -1.0, math.inf):
        assert price_token(unknown) == "", unknown


def test_item_tag_slots():
    assert item_tag_slots(["a", "b"], 3.0, 4) == ["a", "b", "", "price:2"]
    assert item_tag_slots(["a", "", "b", "c", "d"], None, 4) == ["a", "b", "c", ""]   # cut, '' dropped
    assert item_tag_slots([], None, 3) == ["", "", ""]
    assert item_tag_slots(None, 1.0, 2) == ["", "price:1"]
    assert item_tag_slots(["a"], 0.0, 1) == ["price:0"]
    assert item_tag_slots("red;cotton", None, 4) == ["red", "cotton", "", ""]     # a CSV list field
    assert item_tag_slots("", None, 3) == ["", "", ""]
    assert item_tag_slots(np.array(["x", "y"], dtype=object), None, 3) == ["x", "y", ""]


def full_example(contract, n=3):
    """One example with every feature; sequences hold n < N behaviours."""
    t = contract.tag_slots
    return {
        "seq_item_id": ["i1", "i2", "商品3"][:n], "seq_shop_id": ["s1", "", "s3"][:n],
        "seq_brand_id": ["b1", "b2", "b3"][:n], "seq_category_id": ["c1", "c1", "c2"][:n],
        "seq_tags": [item_tag_slots(["red", "silk"], 10.0, t), item_tag_slots([], None, t),
                     item_tag_slots(["wool"], 0.5, t)][:n],
        "seq_type": [BEHAVIOR_INDEX["click"], BEHAVIOR_INDEX["buy"], BEHAVIOR_INDEX["cart"]][:n],
        "seq_scene": [SCENE_INDEX["search"], SCENE_INDEX["other"], SCENE_INDEX["promo"]][:n],
        "seq_time_bucket": [8, 5, 1][:n],
        "item_id": "i2", "shop_id": "s2", "brand_id": "b9", "category_id": "c1",
        "tags": item_tag_slots(["silk"], 99.0, t),
        "rank_features": [0.5, -1.0, 2.25, 0, 0, 0, 0, 1e-3],
        "talent_id": "t7", "talent_type": "icon", "talent_tags": item_tag_slots(["street"], None, t),
        "query": ["silk", "dress"], "age_bucket": age_bucket(27), "gender": GENDER_INDEX["f"],
        "task": TASK_INDEX["l2r"], "label": 1.0, "weight": 5.0, "label_buy": 1.0,
        "user_id": "u1", "request_id": "r1", "ts": 1511600000,
    }


def padded(value, feature):
    """The expected dense value of `value` padded with the feature's default to its shape."""
    default = feature.default
    if feature.dtype == "string":
        encode = lambda v: v.encode() if isinstance(v, str) else v
        value = np.vectorize(encode, otypes=[object])(np.asarray(value, dtype=object))
    if not feature.shape:
        return value
    out = np.full(feature.shape, default, dtype=object)
    value = np.asarray(value, dtype=object)
    out[tuple(slice(0, s) for s in value.shape)] = value
    return out


def test_round_trip_without_hashing_pads_to_contract_shapes(contract):
    example = full_example(contract)
    assert set(example) == set(contract.features)        # the example really has every feature
    empty = {"item_id": "x"}
    batch = parse_batch(tf.constant([encode_example(example, contract),
                                     encode_example(empty, contract)]), contract, hash_ids=False)
    for name, feature in contract.features.items():
        got = batch[name].numpy()
        assert got.shape == (2, *feature.shape), name
        want = padded(example[name], feature)
        if feature.dtype == "float32":
            np.testing.assert_allclose(got[0], np.asarray(want, dtype=np.float32), err_msg=name)
        else:
            assert np.array_equal(got[0], want), (name, got[0], want)
        if name != "item_id":                                   # missing: all default
            assert np.all(got[1] == feature.default), name
    assert batch["seq_item_id"].numpy()[0, 2].decode() == "商品3"
    assert batch["seq_tags"].numpy()[0, 0].tolist() == [b"red", b"silk", b"", b"price:3"]
    assert batch["ts"].dtype == tf.int64 and batch["label"].dtype == tf.float32


def test_round_trip_with_hashing(contract):
    example = full_example(contract)
    other = dict(example, item_id="i1", seq_item_id=["i2"], talent_tags=["red", "", "", ""])
    batch = parse_batch(tf.constant([encode_example(example, contract),
                                     encode_example(other, contract)]), contract)
    for name, feature in contract.features.items():
        got = batch[name].numpy()
        if feature.table is None:
            continue
        assert got.dtype == np.int64, name
        buckets = contract.tables[feature.table][0]
        raw = padded(example[name], feature)
        empty = np.asarray(raw == b"")
        assert (got[0][empty] == 0).all(), name                 # '' and padding -> row 0
        assert ((got[0][~empty] >= 1) & (got[0][~empty] < buckets)).all(), name
    seq_item, item = batch["seq_item_id"].numpy(), batch["item_id"].numpy()
    # one string, one row, whether it is in the sequence or the target
    assert item[0] == seq_item[0, 1] == seq_item[1, 0]          # 'i2'
    assert item[1] == seq_item[0, 0]                            # 'i1'
    assert item[0] != item[1]
    assert seq_item[0, 3:].tolist() == [0] * (contract.sequence_length - 3)
    # seq_tags and talent_tags share the tags table
    assert batch["talent_tags"].numpy()[1, 0] == batch["seq_tags"].numpy()[0, 0, 0]   # 'red'
    # closed vocabularies are not hashed
    assert batch["seq_type"].numpy()[0, :3].tolist() == [1, 4, 2]
    # hashing is a function of the string alone: hash_features on raw strings agrees
    again = hash_features({"item_id": tf.constant(["i2", "i1", ""])}, contract)["item_id"].numpy()
    assert again.tolist() == [item[0], item[1], 0]


def test_the_buy_label_round_trips_and_examples_written_before_it_parse_as_no_buy(tmp_path, contract):
    bought = dict(full_example(contract), task=TASK_INDEX["ctr"], label=1.0, label_buy=1.0)
    # An example as the contract wrote them before label_buy existed: no such feature at all.
    old = tf.train.Example(features=tf.train.Features(feature={
        "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i1"])),
        "task": tf.train.Feature(int64_list=tf.train.Int64List(value=[TASK_INDEX["ctr"]])),
        "label": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])),
        "weight": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))})).SerializeToString()
    with tf.io.TFRecordWriter(str(tmp_path / "part-0.tfrecord.gz"), options="GZIP") as writer:
        writer.write(encode_example(bought, contract))
        writer.write(old)
    inputs, labels = next(iter(read_dataset(str(tmp_path / "*.tfrecord.gz"), contract, batch_size=2)))
    assert labels["label_buy"].dtype == tf.float32 and labels["label_buy"].numpy().tolist() == [1.0, 0.0]
    assert labels["label"].numpy().tolist() == [1.0, 1.0] and "label_buy" not in inputs


def test_encode_rejects_what_it_cannot_write(contract):
    with pytest.raises(KeyError, match="'colour' is not a feature"):
        encode_example({"colour": "red"}, contract)
    with pytest.raises(ValueError, match="'seq_tags'.*nested or ragged"):
        encode_example({"seq_tags": [["a", "b"], ["c"]]}, contract)
    with pytest.raises(ValueError, match="'item_id'.*nested or ragged"):
        encode_example({"item_id": ["a", "b"]}, contract)


def write_records(path, examples, contract):
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for example in examples:
            writer.write(encode_example(example, contract))


def test_read_dataset_from_gzipped_tfrecords(tmp_path, contract):
    examples = [dict(full_example(contract, n=1 + i % 3), label=float(i), user_id=f"u{i}")
                for i in range(5)]
    write_records(tmp_path / "part-00000.tfrecord.gz", examples, contract)
    ds = read_dataset(str(tmp_path / "*.tfrecord.gz"), contract, batch_size=2, seed=1)
    batches = list(ds)
    assert [len(labels["label"]) for _, labels in batches] == [2, 2, 1]
    inputs, labels = batches[0]
    assert set(labels) == {"task", "label", "weight", "label_buy"}
    assert not set(labels) & set(inputs)
    # meta stays with the inputs; the parser adds the shared-space fingerprints of the strings a
    # query term may equal (features.tfrecord.fingerprints)
    assert set(inputs) == (set(contract.features) - set(labels)
                           | {fingerprint_name(n) for n in FINGERPRINTED})
    n = contract.sequence_length
    assert inputs["seq_item_id"].shape == (2, n) and inputs["seq_tags"].shape == (2, n, 4)
    assert inputs["seq_item_id"].dtype == tf.int64                # hashed
    labels_read = np.concatenate([l["label"].numpy() for _, l in batches])
    assert labels_read.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]     # no shuffle: file order
    assert all(l["task"].numpy().tolist() == [TASK_INDEX["l2r"]] * len(l["task"]) for _, l in batches)
    lengths = np.concatenate([(i["seq_item_id"].numpy() > 0).sum(axis=1) for i, _ in batches])
    assert lengths.tolist() == [1, 2, 3, 1, 2]


def test_read_dataset_shards_files_by_input_pipeline(tmp_path, contract):
    for shard in range(2):
        write_records(tmp_path / f"part-{shard}.tfrecord.gz",
                      [dict(full_example(contract), label=float(shard))] * 3, contract)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    ds = read_dataset([str(tmp_path / "part-*.tfrecord.gz")], contract, batch_size=4,
                      input_context=context, seed=0)
    batches = [labels["label"].numpy().tolist() for _, labels in ds]
    assert batches == [[1.0, 1.0], [1.0]]           # the second file only, 4 / 2 replicas a batch


def test_read_dataset_shuffles_rows_within_a_file_the_same_way_for_a_seed(tmp_path, contract):
    write_records(tmp_path / "one.tfrecord.gz",
                  [dict(full_example(contract), label=float(k)) for k in range(8)], contract)

    def first_batch(seed):
        ds = read_dataset(str(tmp_path / "one.tfrecord.gz"), contract, batch_size=8,
                          shuffle_buffer=8, seed=seed)
        return next(iter(ds))[1]["label"].numpy().tolist()
    order = first_batch(3)
    assert sorted(order) == [float(k) for k in range(8)]
    assert order != sorted(order)                      # rows shuffled, not in file order
    assert first_batch(3) == order                     # the same seed, the same order


def test_read_dataset_without_files_fails(tmp_path, contract):
    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        read_dataset(str(tmp_path / "*.tfrecord.gz"), contract, batch_size=2)


def test_a_too_long_sequence_keeps_its_most_recent_behaviours():
    contract = Contract.from_config(load_config("small"))
    n, t = contract.sequence_length, contract.tag_slots
    items = [f"i{k}" for k in range(n + 3)]
    record = encode_example({"seq_item_id": items,
                             "seq_tags": [[f"t{k}"] + [""] * (t - 1) for k in range(n + 3)],
                             "seq_type": [1] * (n + 3)}, contract)
    parsed = parse_batch(tf.constant([record]), contract, hash_ids=False)
    assert [v.decode() for v in parsed["seq_item_id"][0].numpy()] == items[3:]
    assert parsed["seq_tags"][0, 0, 0].numpy().decode() == "t3"
