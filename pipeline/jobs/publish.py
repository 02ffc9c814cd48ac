"""Publishing models and the work directory's manifest: atomic renames, the last K kept, one record per date.

A published copy (WORK/published/<name>/, paths in pipeline/layout.py) holds config.yaml, the
latest checkpoint only, history and run.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from pipeline.layout import latest_file, published_model_dir, published_root, read_manifest, write_manifest, \
    write_text
from pipeline.training.checkpoints import CHECKPOINT_DIR, CONFIG_FILE, latest_checkpoint

COPIED_FILES = (CONFIG_FILE, "history.json", "run.json")


def current_model(work) -> Path | None:
    """The published model in service (WORK/published/LATEST), or None before the first publish."""
    try:
        return published_model_dir(work)
    except FileNotFoundError:
        return None


def dated_manifest(work) -> dict:
    """The manifest with its "dates" and "published" entries present (empty before the first job)."""
    manifest = read_manifest(work) or {}
    manifest.setdefault("dates", {})
    manifest.setdefault("published", [])
    return manifest


def record_date(work, date: str, record: dict) -> dict:
    """Writes what the job of `date` did into WORK/manifest.json (atomically); returns the manifest."""
    from pipeline.evaluation.metrics import nan_to_none   # NaN is not JSON: a NaN metric is written as null
    manifest = dated_manifest(work)
    manifest["dates"][date] = nan_to_none({"date": date, **record})
    manifest["dates"] = dict(sorted(manifest["dates"].items()))
    write_manifest(work, manifest)
    return manifest


def publish(model_dir, work, name: str, keep: int) -> Path:
    """Publishes a trained run as WORK/published/<name> and makes it the model in service.

    The copy (config, latest checkpoint, history) is written beside the target and renamed
    into place, then LATEST is replaced by rename: a reader sees the old model or the new one,
    never half of one. Then only the `keep` most recently published models stay.

    Returns:
      the published model dir.
    """
    model_dir, root = Path(model_dir), published_root(work)
    checkpoint = latest_checkpoint(model_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{model_dir}: no checkpoint to publish")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{name}-{os.getpid()}-{time.time_ns()}"
    (staging / CHECKPOINT_DIR).mkdir(parents=True)
    for file in COPIED_FILES:
        if (model_dir / file).exists():
            shutil.copy2(model_dir / file, staging / file)
    prefix = Path(checkpoint).name
    for part in Path(checkpoint).parent.glob(f"{prefix}.*"):
        shutil.copy2(part, staging / CHECKPOINT_DIR / part.name)
    (staging / CHECKPOINT_DIR / "checkpoint").write_text(
        f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    target = root / name
    if target.exists():
        # Republishing a name (a forced rerun of the date in service): LATEST names the new copy
        # under its staging name while the old one goes aside and a hard-linked twin is renamed
        # into place, so at no moment does it name a missing folder.
        write_text(latest_file(work), staging.name + "\n")
        target.rename(root / f".replaced-{name}-{time.time_ns()}")
        twin = staging.with_name(staging.name + "-twin")
        shutil.copytree(staging, twin, copy_function=os.link)
        os.rename(twin, target)
    else:
        os.rename(staging, target)
    write_text(latest_file(work), name + "\n")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = dated_manifest(work)
    order = [n for n in manifest["published"] if n != name] + [name]
    manifest["published"] = prune(work, order, keep)
    write_manifest(work, manifest)
    # What interrupted publishes of any name left (LATEST names none of them now; the jobs that
    # publish hold WORK/.lock, so no other publish is under way).
    for leftover in (*root.glob(".replaced-*"), *root.glob(".staging-*")):
        shutil.rmtree(leftover, ignore_errors=True)
    return target


def prune(work, order: list[str], keep: int) -> list[str]:
    """Deletes published models beyond the `keep` newest of `order` (never the one in service)."""
    root = published_root(work)
    latest = latest_file(work)
    current = latest.read_text().strip() if latest.exists() else None
    kept = order[-keep:] if keep > 0 else []
    if current and current not in kept:
        kept = [current] + kept[1:] if kept else [current]
    for name in order:
        if name not in kept and (root / name).exists():
            shutil.rmtree(root / name)
    return [n for n in order if n in kept]


# ---- the publish gate --------------------------------------------------------------------------

# trainer.publish_metric -> task -> the gate's headline metric (every other task: the "*" entry);
# higher is better for all of them.
HEADLINES = {"auc": {"power": "accuracy", "*": "auc"},
             "gauc": {"power": "accuracy", "l2r": "ndcg_at_10", "*": "gauc"}}
# Facts of the data, not the model, and the per-group metrics' counts and standard errors.
DATA_METRICS = ("n", "positive_rate", "oracle_auc", "oracle_n", "buy_rate", "buy_rate_of_clicks",
                "gauc_users", "gauc_users_excluded", "gauc_se",
                "ndcg_requests", "ndcg_requests_excluded", "ndcg_at_10_se")
# A per-group metric is defined when some group counts.
GROUP_COUNTS = {"gauc": "gauc_users", "ndcg_at_10": "ndcg_requests"}
# An AUC is defined when the rate of positives among its samples lies strictly between 0 and 1.
AUC_RATES = {"auc": "positive_rate", "weighted_auc": "positive_rate",
             "auc_on_oracle_samples": "positive_rate",
             "ctcvr_auc": "buy_rate", "cvr_auc": "buy_rate_of_clicks"}   # an ESMM ctr head's


def headline(task: str, publish_metric: str = "auc") -> str:
    """The metric the gate compares for `task` under trainer.publish_metric."""
    chosen = HEADLINES[publish_metric]
    return chosen.get(task, chosen["*"])


def _defined_by_data(task: str, metric: str, values: dict) -> bool:
    """False where the evaluation data cannot define the metric (no rows, or one class only)."""
    if not values.get("n"):
        return False
    if metric in GROUP_COUNTS:
        return bool(values.get(GROUP_COUNTS[metric]))
    if metric in AUC_RATES:
        rate = values.get(AUC_RATES[metric])
        return rate is not None and 0.0 < rate < 1.0
    return True


def gate(new: dict, previous: dict | None, margin: float, publish_metric: str = "auc") -> list[str]:
    """Why a model must not be published (an empty list: it may be).

    Refused when any metric the data defines is not finite (NaN, inf, None) or a task's headline
    metric (headline(task, publish_metric): AUC or GAUC, NDCG@10 for l2r under gauc; accuracy
    for power) is below the previous model's on the same evaluation data by
    more than `margin` and more than the metric's standard error there (standard_error): on a
    day with 500 talent samples an AUC moves by 0.02 from noise alone, and a gate that refused
    such drops would keep refusing good models.

    Args:
      new, previous: {task: {metric: value}} as pipeline.evaluation.evaluate.evaluate_model returns.
    """
    import math
    reasons = []
    for task, values in new.items():
        for metric, value in values.items():
            if metric in DATA_METRICS or isinstance(value, (list, dict)):
                continue
            if not _defined_by_data(task, metric, values):
                continue
            if value is None or not math.isfinite(value):
                reasons.append(f"{task} {metric} is {value}")
        key = headline(task, publish_metric)
        old = (previous or {}).get(task, {}).get(key)
        now = values.get(key)
        if (old is not None and math.isfinite(old) and now is not None and math.isfinite(now)
                and now < old - margin):
            noise = standard_error(key, now, values)
            if old - now > noise:
                reasons.append(f"{task} {key} {now:.4f} is more than {margin} below the previous "
                               f"model's {old:.4f} (standard error {noise:.4f})")
    return reasons


def standard_error(metric: str, value: float, values: dict) -> float:
    """The standard error of a headline metric on its evaluation data: the one evaluation measured
    (<metric>_se: GAUC, NDCG over users or requests), Hanley and McNeil (1982) for an AUC (from n
    and the positive rate), the binomial one for an accuracy; 0 when unknown."""
    import math
    if f"{metric}_se" in values or metric in GROUP_COUNTS:
        se = values.get(f"{metric}_se")
        return float(se) if se is not None and math.isfinite(se) else 0.0
    n = values.get("n") or 0
    if metric == "accuracy":
        return math.sqrt(value * (1.0 - value) / n) if n else 0.0
    rate = values.get(AUC_RATES.get(metric, "positive_rate"))
    positives, negatives = n * (rate or 0.0), n * (1.0 - (rate or 0.0))
    if positives < 1 or negatives < 1:
        return 0.0
    q1, q2 = value / (2.0 - value), 2.0 * value * value / (1.0 + value)
    variance = (value * (1.0 - value) + (positives - 1.0) * (q1 - value * value)
                + (negatives - 1.0) * (q2 - value * value)) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))
