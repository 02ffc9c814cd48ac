"""A tiny work directory for the evaluation and experiment tests: examples of every task on a few
days (EXAMPLES/<task>/dt=D/, EXAMPLES/_stats/dt=D.json) and the oracle click probabilities.

Clicks are likelier when the shown item's category is the one the user's history is mostly in,
so a model has something to learn; the oracle holds exactly that probability.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from features.contract import TASK_INDEX, Contract
from features.tfrecord import encode_example

DAYS = ("2026-11-01", "2026-11-02")
# Sizes that trace and train fast: a short sequence, narrow layers, small batches.
OVERRIDES = ["data.sequence_length=5", "model.lstm_units=8", "model.attention_units=8",
             "model.shared_dim=16", "trainer.batch_size=64", "trainer.steps_per_execution=1"]


def _history(rng, favourite: int, length: int) -> dict:
    categories = [favourite if rng.random() < 0.7 else int(rng.integers(0, 6)) for _ in range(length)]
    items = [f"i{c * 20 + int(rng.integers(0, 20))}" for c in categories]
    return {"seq_item_id": items, "seq_category_id": [f"c{c}" for c in categories],
            "seq_type": rng.choice([1, 1, 1, 2, 3, 4], length).tolist(),
            "seq_time_bucket": rng.integers(1, 9, length).tolist(),
            "seq_scene": rng.integers(1, 5, length).tolist()}


def write_day(examples_root, raw_root, date: str, contract: Contract, users: int = 24, seed: int = 0,
              first_user: int = 0) -> dict:
    """Writes one day's examples and oracle (users u<first_user>, ...); returns samples per task."""
    rng = np.random.default_rng(seed)
    rows = {task: [] for task in TASK_INDEX}
    oracle = []
    for u in range(first_user, first_user + users):
        favourite = u % 6
        profile = {"user_id": f"u{u}", "age_bucket": 1 + u % 7, "gender": 1 + u % 3}
        for r in range(3):
            request = f"{date}-u{u}-r{r}"
            query = [f"kw{int(rng.integers(0, 5))}", f"kw{5 + int(rng.integers(0, 5))}"]
            history = _history(rng, favourite, int(rng.integers(1, 6)))
            for k in range(4):
                category = favourite if rng.random() < 0.4 else int(rng.integers(0, 6))
                item = f"i{category * 20 + int(rng.integers(0, 20))}"
                click_prob = 0.7 if category == favourite else 0.15
                click = float(rng.random() < click_prob)
                base = {**profile, **history, "request_id": request, "item_id": item,
                        "category_id": f"c{category}", "shop_id": f"s{category}", "query": query,
                        "rank_features": rng.normal(size=8).round(3).tolist(), "ts": 1_790_000_000 + r}
                bought = float(click and k == 0)     # the first item, when clicked, is bought
                rows["ctr"].append({**base, "task": TASK_INDEX["ctr"], "label": click, "weight": 1.0,
                                    "label_buy": bought})
                rows["l2r"].append({**base, "task": TASK_INDEX["l2r"], "label": click,
                                    "weight": 5.0 if bought else 1.0})
                oracle.append({"request_id": request, "item_id": item, "click_prob": click_prob})
        history = _history(rng, favourite, 5)
        rows["power"].append({**profile, **history, "task": TASK_INDEX["power"],
                              "label": float(favourite % 7), "weight": 1.0})
        for t in range(2):
            liked = t == 0
            rows["talent"].append({**profile, **history, "task": TASK_INDEX["talent"],
                                   "talent_id": f"t{favourite if liked else (favourite + 3) % 6}",
                                   "label": float(liked), "weight": 1.0})
            rows["shop"].append({**profile, **history, "task": TASK_INDEX["shop"],
                                 "shop_id": f"s{favourite if liked else (favourite + 2) % 6}",
                                 "label": float(liked), "weight": 1.0})
    for task, examples in rows.items():
        folder = Path(examples_root) / task / f"dt={date}"
        folder.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(folder / "part-00000.tfrecord.gz"), "GZIP") as writer:
            for example in examples:
                writer.write(encode_example(example, contract))
    stats = Path(examples_root) / "_stats"
    stats.mkdir(parents=True, exist_ok=True)
    counts = {task: len(examples) for task, examples in rows.items()}
    (stats / f"dt={date}.json").write_text(json.dumps(
        {"date": date, "examples": sum(counts.values()),
         "tasks": {t: {"samples": n, "positives": int(sum(e["label"] > 0 for e in rows[t]))}
                   for t, n in counts.items()}}))
    oracle_dir = Path(raw_root) / "_oracle" / "impressions" / f"dt={date}"
    oracle_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(oracle).to_parquet(oracle_dir / "part-00000.parquet")
    return counts


def make_work(root, contract: Contract) -> tuple[Path, Path]:
    """(work dir with examples/ for DAYS, raw root with the oracle); a manifest names the raw root."""
    work, raw = Path(root) / "work", Path(root) / "raw"
    for i, date in enumerate(DAYS):
        write_day(work / "examples", raw, date, contract, seed=i)
    (work / "manifest.json").write_text(json.dumps({"dates": {}, "published": [],
                                                    "inputs": {"raw": str(raw)}}))
    return work, raw


def experiment_argv(work, name: str, *extra) -> list[str]:
    """argv of `dupn experiment NAME` on a tiny work dir at the tiny sizes."""
    sets = [arg for o in OVERRIDES for arg in ("--set", o)]
    return [name, "--work", str(work), "--small", "--config", "small", *sets, *extra]


_TRAINED = {}


def ablation_work() -> Path:
    """A tiny work dir on which the ablation has trained wide and dupn-all (once per test process:
    the evaluation and experiment tests share it)."""
    if "work" not in _TRAINED:
        import atexit
        import shutil
        import tempfile

        from configs.loader import load_config
        from pipeline.experiments import run as experiment
        root = tempfile.mkdtemp(prefix="dupn-tiny-")
        atexit.register(shutil.rmtree, root, True)
        work, _ = make_work(root, Contract.from_config(load_config("small", OVERRIDES)))
        code = experiment.main(experiment_argv(work, "ablation", "--variants", "wide,dupn-all"))
        assert code == 0, "the ablation on the tiny work dir failed"
        _TRAINED["work"] = work
    return _TRAINED["work"]
