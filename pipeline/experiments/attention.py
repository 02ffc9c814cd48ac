"""The attention experiment: where the query-aware attention looks in a behaviour sequence.

Two views of a trained DUPN model on one day's CTR examples: the mean attention weight by
behaviour type × time bucket (a heatmap), and one user's attention over its history under
different queries (the same history, only the query changed).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import BEHAVIOR_TYPES, LABELS, NUM_TIME_BUCKETS, TIME_BUCKET_EDGES_S
from pipeline.experiments import plots
from pipeline.evaluation.evaluate import example_files
from pipeline.experiments.run import Setup, train_run, with_variant

TIME_BUCKET_LABELS = ("<1m", "<5m", "<30m", "<2h", "<1d", "<3d", "<7d", "older")
assert len(TIME_BUCKET_LABELS) == NUM_TIME_BUCKETS - 1 == len(TIME_BUCKET_EDGES_S) + 1


def mean_attention_by_type_and_bucket(weights: np.ndarray, types: np.ndarray,
                                      buckets: np.ndarray) -> pd.DataFrame:
    """Mean attention on the behaviours of each (type, time bucket) over many sequences.

    Because a sequence's weights sum to 1 over its real behaviours, a short history gets larger
    weights; `relative_weight` (weight × the sequence's length, 1 = uniform attention) compares
    sequences of any length, and is what the heatmap shows.

    Args:
      weights: [n, N] attention weights (0 on padding).
      types: [n, N] behaviour type ids (1..4, 0 = padding).
      buckets: [n, N] time buckets (1..8, 0 = padding).
    Returns:
      one row per type and bucket: behaviour, time_bucket, mean_weight, relative_weight, count
      (NaN weights where no behaviour fell in the cell).
    """
    weights, types, buckets = (np.asarray(a) for a in (weights, types, buckets))
    valid = types > 0
    length = valid.sum(axis=1, keepdims=True)
    relative = weights * np.maximum(length, 1)
    rows = []
    for t, name in enumerate(BEHAVIOR_TYPES, start=1):
        for b, label in enumerate(TIME_BUCKET_LABELS, start=1):
            cell = valid & (types == t) & (buckets == b)
            count = int(cell.sum())
            rows.append({"behaviour": name, "time_bucket": label,
                         "mean_weight": float(weights[cell].mean()) if count else float("nan"),
                         "relative_weight": float(relative[cell].mean()) if count else float("nan"),
                         "count": count})
    return pd.DataFrame(rows)


def heatmap_matrix(cells: pd.DataFrame, value: str = "relative_weight") -> np.ndarray:
    """[4 behaviour types, 8 time buckets] of one column of mean_attention_by_type_and_bucket."""
    table = cells.pivot(index="behaviour", columns="time_bucket", values=value)
    return table.loc[list(BEHAVIOR_TYPES), list(TIME_BUCKET_LABELS)].to_numpy(dtype=np.float64)


def run(setup: Setup):
    """Returns (table, png): the type x bucket cells and one user's attention under each query."""
    model_dir = attention_model_dir(setup)
    from features.contract import Contract
    from pipeline.training.checkpoints import load_model
    config, model = load_model(model_dir)
    if not hasattr(model, "attention_weights"):
        raise ValueError(f"{model_dir} holds a {config.model.variant} model, which has no attention "
                         "(give --model a DUPN model dir)")
    contract = Contract.from_config(config)
    files = example_files(setup.examples, setup.eval_date, ["ctr"]).get("ctr")
    if not files:
        raise FileNotFoundError(f"no ctr examples on {setup.eval_date} under {setup.examples}")
    limit = setup.max_eval_examples or MAX_EXAMPLES
    weights, types, buckets, raw = collect(model, contract, files, config.trainer.batch_size, limit)
    cells = mean_attention_by_type_and_bucket(weights, types, buckets)
    user = one_user_under_queries(model, contract, raw, weights)
    setup.log(f"{model_dir} ({config.model.variant}) on {weights.shape[0]} ctr examples of "
              f"{setup.eval_date}; user {user['user_id']} under {len(user['queries'])} queries")
    table = pd.concat([cells.assign(view="type x time bucket"), user_rows(user)], ignore_index=True)
    table = table[["view", "behaviour", "time_bucket", "mean_weight", "relative_weight", "count",
                   "query", "position", "weight"]]
    labels = [f"{b}/{t}" for b, t in zip(user["behaviour"], user["time_bucket"])]
    png = plots.heatmap_and_lines(
        heatmap_matrix(cells), list(BEHAVIOR_TYPES), list(TIME_BUCKET_LABELS),
        {q: w for q, w in zip(user["queries"], user["weights"])}, labels,
        setup.out_dir / "attention.png",
        f"Attention of {config.model.variant} on {setup.eval_date} ({weights.shape[0]} sequences)",
        "mean attention x sequence length (1 = uniform)",
        f"user {user['user_id']}: attention over its last {len(labels)} behaviours (oldest first), "
        f"by query\n(largest change between queries: {np.ptp(user['weights'], axis=0).max():.1e})")
    return table, png


MAX_EXAMPLES = 20000   # ctr examples read for the averages (enough for every cell of the heatmap)
QUERIES = 4            # the user's own query and this many of the day's most frequent others


def attention_model_dir(setup: Setup):
    """--model, else the published model if it is a DUPN, else the ablation's dupn-all run, else
    a dupn-all run trained here on the setup's window."""
    from pipeline.training.checkpoints import latest_checkpoint, load_config_of
    from pipeline.layout import published_model_dir
    if setup.options.get("model"):
        return setup.options["model"]
    try:
        published = published_model_dir(setup.work)
        if load_config_of(published).model.variant.startswith("dupn"):
            return published
    except FileNotFoundError:
        pass
    ablation = setup.runs_dir("ablation") / "dupn-all"
    if latest_checkpoint(ablation):
        return ablation
    run_dir = setup.runs_dir("attention") / "dupn-all"
    train_run(setup, with_variant(setup.config, "dupn-all"), run_dir)
    return run_dir


def collect(model, contract, files, batch_size: int, limit: int):
    """Attention weights with the behaviours' types and time buckets over the first `limit` examples.

    Returns:
      weights, types, buckets: [n, N] arrays; raw: the parsed (unhashed) features of the examples
      as numpy arrays, for picking a user and queries.
    """
    import tensorflow as tf

    from features.tfrecord import hash_features, parse_batch
    ds = (tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit).batch(batch_size)
          .map(lambda s: parse_batch(s, contract, hash_ids=False)))
    attend = tf.function(model.attention_weights, reduce_retracing=True)
    parts = []
    for raw in ds:
        inputs = {k: v for k, v in hash_features(raw, contract).items() if k not in LABELS}
        parts.append({"weights": attend(inputs).numpy(),
                      **{k: v.numpy() for k, v in raw.items()}})
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return joined.pop("weights"), joined["seq_type"], joined["seq_time_bucket"], joined


def one_user_under_queries(model, contract, raw: dict, weights: np.ndarray) -> dict:
    """The attention over one history (the example with the longest one, most behaviour types
    among those) under its own query and the day's most frequent other queries.

    Returns:
      dict: user_id; queries [Q] (text); weights [Q, L] over the history's L real behaviours;
      behaviour, time_bucket [L] (labels).
    """
    import tensorflow as tf

    from features.tfrecord import hash_features
    valid = raw["seq_type"] > 0
    lengths = valid.sum(axis=1)
    variety = np.array([len(set(row[row > 0])) for row in raw["seq_type"]])
    pick = int(np.lexsort((variety, lengths))[-1])          # longest, then most varied
    texts = [" ".join(t.decode() for t in row if t) for row in raw["query"]]
    own = texts[pick]
    counts = pd.Series([t for t in texts if t and t != own]).value_counts()
    queries = ([own] if own else []) + list(counts.index[:QUERIES])
    rows = {k: np.repeat(v[pick:pick + 1], len(queries), axis=0) for k, v in raw.items()
            if k not in LABELS}
    width = raw["query"].shape[1]
    rows["query"] = np.array([(q.split() + [""] * width)[:width] for q in queries], dtype=object)
    hashed = hash_features({k: tf.constant(v) for k, v in rows.items()}, contract)
    attention = model.attention_weights(hashed).numpy()[:, valid[pick]]
    types = raw["seq_type"][pick][valid[pick]]
    buckets = raw["seq_time_bucket"][pick][valid[pick]]
    return {"user_id": raw["user_id"][pick].decode(),
            "queries": [f"own: {q}" if i == 0 and own else q or "(no query)" for i, q in enumerate(queries)],
            "weights": attention,
            "behaviour": [BEHAVIOR_TYPES[t - 1] for t in types],
            "time_bucket": [TIME_BUCKET_LABELS[b - 1] if b > 0 else "?" for b in buckets]}


def user_rows(user: dict) -> pd.DataFrame:
    rows = []
    for query, weights in zip(user["queries"], user["weights"]):
        for position, weight in enumerate(weights):
            rows.append({"view": f"user {user['user_id']}", "query": query, "position": position,
                         "behaviour": user["behaviour"][position],
                         "time_bucket": user["time_bucket"][position], "weight": float(weight)})
    return pd.DataFrame(rows)
