"""Hash stability: the id -> embedding row mapping and the held-out users, pinned to values computed
once (2026-11, TensorFlow's FarmHash fingerprint) and written here. Every saved model's embedding
rows and every evaluation's held-out users depend on them: a change of hash function, bucket
count or offset is a change of every model, and must show up here first."""
import tensorflow as tf

from features.contract import Contract
from features.tfrecord import hash_features
from pipeline.beam.samples import stable_hash
from pipeline.jobs.daydata import HASH_BUCKETS, holdout_mask
from train_helpers import tiny_config

IDS = ["u0", "u1", "u17", "u999", "1000001", "", "店铺"]
# Rows in [1, buckets) of configs/small.yaml's tables (item 20011, shop 2003, category 1009); '' -> 0.
ROWS = {
    "item_id": [17450, 5950, 10109, 15412, 17151, 0, 13098],
    "shop_id": [328, 954, 531, 1630, 235, 0, 182],
    "category_id": [650, 940, 797, 916, 585, 0, 630],
}
USERS = ["u0", "u1", "u2", "u17", "u21", "u33", "u999"]
USER_BUCKETS = [8009, 6459, 697, 4908, 307, 506, 1091]      # of HASH_BUCKETS = 10000
HELD_OUT_10 = [False, False, True, False, True, True, False]  # bucket < 1000
HELD_OUT_50 = [False, False, True, True, True, True, True]    # bucket < 5000


def test_id_rows_are_pinned():
    contract = Contract.from_config(tiny_config())
    assert {t: contract.tables[t][0] for t in ROWS} == {"item_id": 20011, "shop_id": 2003,
                                                         "category_id": 1009}
    rows = hash_features({name: tf.constant(IDS) for name in ROWS}, contract)
    assert {name: rows[name].numpy().tolist() for name in ROWS} == ROWS


def test_held_out_users_are_pinned():
    assert HASH_BUCKETS == 10_000
    assert tf.strings.to_hash_bucket_fast(USERS, HASH_BUCKETS).numpy().tolist() == USER_BUCKETS
    assert holdout_mask(tf.constant(USERS), 0.1).numpy().tolist() == HELD_OUT_10
    assert holdout_mask(tf.constant(USERS), 0.5).numpy().tolist() == HELD_OUT_50


def test_beam_hash_is_pinned():
    # Negatives drawn, shards and sampled users of the Beam job (beam/samples.py): CRC-32.
    assert [stable_hash(i) for i in IDS] == [893956064, 1112514422, 3550204180, 127816735,
                                             1828447563, 0, 1514179166]
