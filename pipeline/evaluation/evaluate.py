"""`dupn evaluate`: per-task metrics of a model on one day's examples, beside the oracle's CTR AUC.

AUC (and log loss) for the binary tasks ctr, l2r, talent and shop, and their GAUC (per-user AUCs
weighted by the user's samples; users with one class only left out and counted); NDCG@10 per
request for l2r (gains: label x weight, a buy above a click); accuracy and per-class precision
and recall for the 7-class purchasing power; the sample count n of each. Where the
synthetic generator wrote the true click probabilities (RAW/_oracle/impressions/dt=D), the ctr
entry also holds the oracle AUC: the AUC of those probabilities against the labels of the same
samples (joined on request_id + item_id), the ceiling any model can reach on that day; and,
where the oracle file has the column blind_prob (worlds of `dupn synth --world`), blind_oracle_auc:
the same world's best score without behaviour type and age. A model
whose ctr head is ESMM's adds to the ctr entry ctcvr_auc (click·buy vs pCTCVR, every ctr
sample), cvr_auc (buy vs pCVR, clicked samples only) and the data's buy_rate (click·buy over
the samples) and buy_rate_of_clicks, the rates that tell whether those AUCs are defined.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import tensorflow as tf
import tf_keras as keras

from configs.loader import add_config_args, load_config
from features.contract import NUM_POWER_LEVELS, TASKS, Contract
from features.tfrecord import hash_features, list_files, parse_batch, split_labels
from pipeline.evaluation import metrics
from pipeline import layout
from pipeline.layout import find_raw, published_model_dir
from pipeline.rawlogs.schema import ORACLE, oracle_dir
from pipeline.training.summaries import log_evaluation

BINARY_TASKS = ("ctr", "l2r", "talent", "shop")
KEYS = ("user_id", "request_id", "item_id")   # raw ids kept beside each prediction
NDCG_AT = 10


def example_files(examples_root, date: str, tasks=TASKS) -> dict[str, list[str]]:
    """task -> the day's TFRecord files (EXAMPLES/<task>/dt=D/part-*.tfrecord.gz); tasks without files are left out."""
    found = {}
    for task in tasks:
        files = list_files(layout.example_pattern(examples_root, task, date))
        if files:
            found[task] = files
    return found


def read_oracle(raw_root, date: str) -> pd.DataFrame | None:
    """The generator's true click probability of each impression on `date`, or None if absent.

    Returns:
      DataFrame with columns request_id, item_id (str), click_prob (float64) and, where every
      file has it, blind_prob (float64; older data lacks it), one row per pair.
    """
    folder = oracle_dir(raw_root, date)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return None
    columns = ["request_id", "item_id", "click_prob"]
    if all("blind_prob" in pq.read_schema(f).names for f in files):
        columns.append("blind_prob")
    frame = pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
    frame["request_id"] = frame["request_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    return frame.drop_duplicates(["request_id", "item_id"], keep="last")


def _decode(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def predictor(model):
    """model.scores(inputs, training=False) as a function (model(...) when it has no scores): the
    heads' probabilities and an ESMM ctr head's cvr and ctcvr. A Keras model is traced once, for
    any batch size.

    The input signature (batch axis unknown) is taken from the first batch, so the short last
    batch of every file set does not trigger another trace.
    """
    scores = getattr(model, "scores", model)
    if not isinstance(model, keras.Model):
        return lambda inputs: scores(inputs, training=False)
    traced = []

    def predict(inputs):
        if not traced:
            spec = {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype) for k, v in inputs.items()}
            traced.append(tf.function(lambda x: scores(x, training=False), input_signature=[spec]))
        return traced[0](inputs)
    return predict


def read_batches(files, contract: Contract, batch_size: int, max_examples: int | None = None):
    """tf.data of (inputs, labels, raw keys {user_id, request_id, item_id}) batches of the files, in order.

    Args:
      max_examples: stop after this many examples (rounded up to whole batches), in file order.
    """
    found = list_files(files)
    if not found:
        raise FileNotFoundError(f"evaluate: no example files match {files}")
    files = found

    def parse(serialized):
        raw = parse_batch(serialized, contract, hash_ids=False)
        inputs, labels = split_labels(hash_features(raw, contract))
        return inputs, labels, {k: raw[k] for k in KEYS}

    ds = (tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    return ds.take(-(-max_examples // batch_size)) if max_examples else ds


def predict_task(model, task: str, batches, predict=None) -> dict:
    """Runs the model's `task` head over every batch of read_batches.

    Args:
      batches: read_batches(...) or a list of its elements (parsed once, evaluated many times).
      predict: predictor(model), to share one traced function between tasks.
    Returns:
      dict of numpy arrays over the n examples: label [n], weight [n], prediction [n] (binary
      heads) or [n, 7] (power), user_id, request_id and item_id [n] (the raw ids, str); for an ESMM
      ctr head also label_buy, cvr and ctcvr [n].
    """
    predict = predict or predictor(model)
    parts = {k: [] for k in ("label", "weight", "prediction", *KEYS)}
    for inputs, labels, keys in batches:
        outputs = predict(inputs)
        if task not in outputs:
            raise KeyError(f"evaluate: the model has no '{task}' head (it has: {', '.join(sorted(outputs))})")
        if task == "ctr" and "ctcvr" in outputs:
            for name, value in (("label_buy", labels["label_buy"]), ("cvr", outputs["cvr"]),
                                ("ctcvr", outputs["ctcvr"])):
                parts.setdefault(name, []).append(np.asarray(value, dtype=np.float64))
        parts["prediction"].append(np.asarray(outputs[task], dtype=np.float64))
        parts["label"].append(labels["label"].numpy())
        parts["weight"].append(labels["weight"].numpy())
        for key in KEYS:
            parts[key].append(_decode(keys[key].numpy()))
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    if task == "power":
        out["prediction"] = out["prediction"].reshape(-1, NUM_POWER_LEVELS)
    else:
        out["prediction"] = out["prediction"].reshape(-1)
    return out


def task_metrics(task: str, predicted: dict, oracle: pd.DataFrame | None = None) -> dict:
    """The metrics of one task from predict_task's arrays (and the oracle's, for ctr)."""
    y, p, w = predicted["label"], predicted["prediction"], predicted["weight"]
    n = int(y.shape[0])
    if task == "power":
        classes = y.astype(np.int64)
        chosen = np.argmax(p, axis=1) if n else np.zeros(0, np.int64)
        precision, recall = metrics.precision_recall(classes, chosen, NUM_POWER_LEVELS)
        return {"accuracy": metrics.accuracy(classes, chosen),
                "precision": precision.tolist(), "recall": recall.tolist(),
                "log_loss": metrics.log_loss(classes, p), "n": n}
    result = {"auc": metrics.auc(y, p), "log_loss": metrics.log_loss(y, p),
              "positive_rate": float(np.mean(y > 0)) if n else float("nan"), "n": n}
    if np.any(w != 1.0):   # l2r weighs buys above clicks: the AUC that training optimises
        result["weighted_auc"] = metrics.auc(y, p, w)
    result.update(metrics.group_auc(predicted["user_id"], y, p))
    if task == "l2r":
        result.update(metrics.ndcg(predicted["request_id"], y * w, p, NDCG_AT))
    if task == "ctr" and "ctcvr" in predicted:
        result.update(_conversion_metrics(predicted))
    if task == "ctr" and oracle is not None:
        result.update(_oracle_metrics(predicted, oracle))
    return result


def _conversion_metrics(predicted: dict) -> dict:
    """An ESMM ctr head's: ctcvr_auc over every sample, cvr_auc over the clicked ones."""
    clicked = predicted["label"] > 0
    bought = clicked & (predicted["label_buy"] > 0)      # ESMM's conversion is post-click
    n, clicks = bought.shape[0], int(clicked.sum())
    return {"ctcvr_auc": metrics.auc(bought, predicted["ctcvr"]),
            "cvr_auc": metrics.auc(bought[clicked], predicted["cvr"][clicked]),
            "buy_rate": float(bought.mean()) if n else float("nan"),
            "buy_rate_of_clicks": float(bought.sum() / clicks) if clicks else float("nan")}


def _oracle_metrics(predicted: dict, oracle: pd.DataFrame) -> dict:
    samples = pd.DataFrame({"request_id": predicted["request_id"], "item_id": predicted["item_id"],
                            "label": predicted["label"], "prediction": predicted["prediction"]})
    joined = samples.merge(oracle, on=["request_id", "item_id"], how="inner")
    out = {"oracle_auc": metrics.auc(joined["label"], joined["click_prob"]),
           "oracle_n": int(len(joined))}
    if "blind_prob" in joined:
        out["blind_oracle_auc"] = metrics.auc(joined["label"], joined["blind_prob"])
    if len(joined) != len(samples):   # the model's AUC on exactly the samples the oracle scored
        out["auc_on_oracle_samples"] = metrics.auc(joined["label"], joined["prediction"])
    return out


def evaluate_model(model, contract: Contract, files_by_task: dict, batch_size: int = 512,
                   oracle: pd.DataFrame | None = None, max_examples: int | None = None,
                   predict=None, cache: dict | None = None) -> dict:
    """Per-task metrics of `model` on the given example files.

    Args:
      model: callable(inputs dict, training=False) -> dict head name -> probabilities
        ([B] or [B, 1] for binary heads, [B, 7] for power).
      files_by_task: task -> TFRecord files or glob patterns; every task needs a model head.
      oracle: read_oracle's frame of true click probabilities, for the ctr entry.
      max_examples: evaluate each task on its first examples only (quick experiments).
      predict: predictor(model), reused when the same model is evaluated again with other weights.
      cache: a dict the caller keeps between calls on the same files: the parsed batches are
        kept there in memory and not read again (checkpoints of one run, evaluated in turn).
    Returns:
      dict task -> metrics (see task_metrics), in the order of TASKS; NaN where undefined.
    """
    unknown = set(files_by_task) - set(TASKS)
    if unknown:
        raise ValueError(f"evaluate: unknown tasks {sorted(unknown)} (tasks: {', '.join(TASKS)})")
    predict = predict or predictor(model)
    result = {}
    for task in TASKS:
        if task not in files_by_task:
            continue
        if cache is None:
            batches = read_batches(files_by_task[task], contract, batch_size, max_examples)
        else:
            if task not in cache:
                cache[task] = list(read_batches(files_by_task[task], contract, batch_size, max_examples))
            batches = cache[task]
        result[task] = task_metrics(task, predict_task(model, task, batches, predict), oracle)
    return result


def load_model(model_dir):
    """(config, model) of a model directory, through the training jobs' loader."""
    from pipeline.training.checkpoints import load_model as load
    return load(model_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="work directory (examples/, published/, eval/)")
    parser.add_argument("--date", required=True, help="day of examples to evaluate on, YYYY-MM-DD")
    parser.add_argument("--model", help="model directory (default: the published one, WORK/published/LATEST)")
    parser.add_argument("--examples", help="examples root (default: WORK/examples)")
    parser.add_argument("--raw", help="raw-log root holding _oracle/ (default: from WORK/manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--batch-size", type=int, help="examples per batch (default: trainer.batch_size)")
    add_config_args(parser, default=None)
    args = parser.parse_args(argv)
    work = Path(args.work)
    try:
        model_dir = Path(args.model) if args.model else published_model_dir(work)
        config, model = load_model(model_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"dupn evaluate: {err}", file=sys.stderr)
        return 1
    if args.config or args.overrides:
        # The model's own configuration fixes its contract; --config only sets the batch size.
        batch_size = load_config(args.config or "dupn", args.overrides).trainer.batch_size
    else:
        batch_size = config.trainer.batch_size
    batch_size = args.batch_size or batch_size
    heads = [h.name for h in config.model.heads]
    files = example_files(args.examples or layout.examples_dir(work), args.date, [t for t in TASKS if t in heads])
    missing = [t for t in heads if t not in files]
    if missing:
        print(f"dupn evaluate: no examples on {args.date} for {', '.join(missing)}", file=sys.stderr)
    if not files:
        print(f"dupn evaluate: no examples for any head of {model_dir} on {args.date} "
              f"under {args.examples or layout.examples_dir(work)}", file=sys.stderr)
        return 1
    raw = Path(args.raw) if args.raw else find_raw(work)
    oracle = read_oracle(raw, args.date) if raw else None
    if "ctr" in files and oracle is None:
        print(f"dupn evaluate: no oracle click probabilities for {args.date} "
              f"({'no raw root known' if raw is None else raw / ORACLE}); oracle AUC left out",
              file=sys.stderr)
    result = evaluate_model(model, Contract.from_config(config), files, batch_size, oracle)
    out = layout.eval_file(work, args.date)
    metrics.write_metrics(out, result)
    board = log_evaluation(work, args.date, result)
    print(f"dupn evaluate: {model_dir} on {args.date} -> {out}, {board}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics.nan_to_none(result)))
    else:
        print(format_table(result))
    return 0


def format_table(result: dict) -> str:
    """One line per task: its scalar metrics."""
    lines = []
    for task, values in result.items():
        shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in values.items() if not isinstance(v, list))
        lines.append(f"{task:<7} {shown}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
