"""Random batches shaped exactly as read_dataset yields them, with a learnable signal (tests, benchmarks).

Each user has a favourite category that most of their behaviours fall in; a CTR item is clicked
when it is of that category (and bought, label_buy, when clicked by a user of age bucket 4 or
more), an L2R item when its first ranking feature (plus the category
match) is high, a talent is followed when its type matches the favourite category, the
purchasing power follows the age bucket and a shop is preferred when the user visited it.
"""
from __future__ import annotations

import numpy as np

from features.contract import (BEHAVIOR_TYPES, FINGERPRINTED, LABELS, NUM_TIME_BUCKETS, SCENES,
                               TASK_INDEX, TASKS, Contract, fingerprint_name)

CATEGORIES = 12


def random_examples(contract: Contract, batch_size: int, seed: int = 0, tasks=TASKS,
                    full_sequences: bool = False) -> dict:
    """numpy arrays of every contract feature [batch, *shape], ids already hashed (0 = padding).

    Args:
      tasks: the tasks rows cycle through (task of row r is tasks[r % len(tasks)]).
      full_sequences: every row has N real behaviours (otherwise 0..N, right-padded).
    """
    rng = np.random.default_rng(seed)
    n, t, b = contract.sequence_length, contract.tag_slots, batch_size
    rows = {f: np.zeros((b, *spec.shape), np.float32 if spec.dtype == "float32" else np.int64)
            for f, spec in contract.features.items() if spec.dtype != "string" or spec.table}
    bucket = {k: v[0] for k, v in contract.tables.items()}

    def item_fields(category):
        """ids of items of the given categories (any shape): item, shop, brand, category, tags."""
        j = rng.integers(0, 50, size=np.shape(category))
        item = 1 + (category * 50 + j) % (bucket["item_id"] - 1)
        shop = 1 + (category * 7 + j % 7) % (bucket["shop_id"] - 1)
        brand = 1 + (category * 5 + j % 5) % (bucket["brand_id"] - 1)
        cat = 1 + category % (bucket["category_id"] - 1)
        tags = 1 + (category[..., None] * 3 + rng.integers(0, 3, size=(*np.shape(category), t))) \
            % (bucket["tags"] - 1)
        tags[..., :-1] *= rng.random((*np.shape(category), t - 1)) < 0.7   # some empty tag slots
        return item, shop, brand, cat, tags

    favourite = rng.integers(0, CATEGORIES, size=b)
    lengths = np.full(b, n) if full_sequences else rng.integers(0, n + 1, size=b)
    valid = np.arange(n)[None, :] < lengths[:, None]
    seq_category = np.where(rng.random((b, n)) < 0.7, favourite[:, None],
                            rng.integers(0, CATEGORIES, size=(b, n)))
    for name, value in zip(("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id",
                            "seq_tags"), item_fields(seq_category)):
        rows[name] = value * (valid if value.ndim == 2 else valid[..., None])
    rows["seq_type"] = rng.integers(1, len(BEHAVIOR_TYPES) + 1, size=(b, n)) * valid
    rows["seq_scene"] = rng.integers(1, len(SCENES) + 1, size=(b, n)) * valid
    rows["seq_time_bucket"] = rng.integers(1, NUM_TIME_BUCKETS, size=(b, n)) * valid
    rows["query"] = rng.integers(1, bucket["query"], size=(b, contract.query_terms)) * (
        rng.random((b, contract.query_terms)) < 0.5)
    rows["age_bucket"] = rng.integers(0, 8, size=b)
    rows["gender"] = rng.integers(0, 4, size=b)

    task = np.array([TASK_INDEX[tasks[r % len(tasks)]] for r in range(b)])
    label = np.zeros(b, np.float32)
    weight = np.ones(b, np.float32)
    is_task = {name: task == TASK_INDEX[name] for name in TASKS}
    item_rows = is_task["ctr"] | is_task["l2r"]
    target_category = np.where(rng.random(b) < 0.5, favourite, rng.integers(0, CATEGORIES, size=b))
    for name, value in zip(("item_id", "shop_id", "brand_id", "category_id", "tags"),
                           item_fields(target_category)):
        rows[name] = value * (item_rows if value.ndim == 1 else item_rows[:, None])
    match = (target_category == favourite).astype(np.float32)
    label[is_task["ctr"]] = match[is_task["ctr"]]
    # A buy only after a click (ESMM's label), from the profile: a signal the CVR tower can learn.
    rows["label_buy"] = (is_task["ctr"] & (match > 0) & (rows["age_bucket"] >= 4)).astype(np.float32)
    rank = rng.normal(size=(b, contract.rank_features)).astype(np.float32)
    rows["rank_features"] = rank * is_task["l2r"][:, None]
    l2r_label = (rank[:, 0] + 2 * match - 1 > 0).astype(np.float32)
    label[is_task["l2r"]] = l2r_label[is_task["l2r"]]
    weight[is_task["l2r"]] = np.where(l2r_label[is_task["l2r"]] > 0, 5.0, 1.0)

    talent_type = rng.integers(0, CATEGORIES, size=b)
    talent_rows = is_task["talent"]
    rows["talent_type"] = (1 + talent_type % (bucket["talent_type"] - 1)) * talent_rows
    rows["talent_id"] = (1 + (talent_type * 11 + rng.integers(0, 11, size=b))
                         % (bucket["talent_id"] - 1)) * talent_rows
    rows["talent_tags"] = item_fields(talent_type)[4] * talent_rows[:, None]
    label[talent_rows] = (talent_type == favourite)[talent_rows]

    label[is_task["power"]] = np.clip(rows["age_bucket"] - 1, 0, 6)[is_task["power"]]

    shop_rows = is_task["shop"]
    visited = rows["seq_shop_id"][np.arange(b), rng.integers(0, np.maximum(lengths, 1))]
    other = 1 + rng.integers(0, bucket["shop_id"] - 1, size=b)
    liked = rng.random(b) < 0.5
    rows["shop_id"] = np.where(shop_rows, np.where(liked & (lengths > 0), visited, other),
                               rows["shop_id"])
    label[shop_rows] = (liked & (lengths > 0))[shop_rows]

    # The parser's shared-space fingerprints (features.tfrecord.fingerprints), stood in for by
    # the ids: the tags' last slot is the price token, which fingerprints as 0.
    for name in FINGERPRINTED:
        rows[fingerprint_name(name)] = rows[name].copy()
    rows[fingerprint_name("tags")][:, -1] = 0
    rows["task"], rows["label"], rows["weight"] = task, label, weight
    rows["user_id"] = np.array([f"u{seed}-{r}".encode() for r in range(b)], dtype=object)
    rows["request_id"] = np.array([f"r{seed}-{r}".encode() for r in range(b)], dtype=object)
    rows["ts"] = 1_790_000_000 + rng.integers(0, 86_400, size=b)
    return rows


def random_batch(contract: Contract, batch_size: int, seed: int = 0, tasks=TASKS,
                 full_sequences: bool = False):
    """(inputs, labels) tensors as read_dataset yields them: meta features included in inputs."""
    import tensorflow as tf

    rows = random_examples(contract, batch_size, seed, tasks, full_sequences)
    tensors = {k: tf.constant(v) for k, v in rows.items()}
    labels = {k: tensors.pop(k) for k in LABELS}
    return tensors, labels
