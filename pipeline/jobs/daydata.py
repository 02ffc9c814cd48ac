"""The examples a backfill or daily job trains and evaluates on: built when missing, the evaluation day
found, or a deterministic held-out share of users split off when no next day exists.

Held-out users: a user is held out when the 64-bit fingerprint of their user_id falls in the first
`share` of HASH_BUCKETS buckets; the same users are held out on every run and every machine.
"""
from __future__ import annotations

from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf

from configs.loader import dump_config, load_config
from features.tfrecord import list_files
from pipeline import layout
from pipeline.layout import shift
from pipeline.rawlogs.landing import incomplete_reason
from pipeline.rawlogs.schema import table_dir
from pipeline.training.train import (HEAD_NEEDS_EXAMPLES, TrainingData, day_stats, range_data,
                                     task_samples)

HASH_BUCKETS = 10_000


def raw_has_day(raw, date: str) -> bool:
    """Whether any raw table (folders starting with '_' are not tables) has a dt=<date> partition."""
    raw = Path(raw)
    return raw.is_dir() and any(table_dir(raw, t.name, date).is_dir() for t in raw.iterdir()
                                if t.is_dir() and not t.name.startswith(("_", ".")))


def run_config(config, run_dir):
    """The configuration a run builds its examples with: a resumed run's own (run_dir/config.yaml,
    so that its data does not change under it), else `config`, written there now."""
    path = Path(run_dir) / "config.yaml"
    if path.exists():
        return load_config(path)
    dump_config(config, run_dir)
    return config


def ensure_examples(raw, examples, dates: list[str], config, log=print) -> list[str]:
    """Runs the Beam job with `config` (a Config) for the dates whose examples are missing or
    stale; returns them.

    A day's statistics file is published last by the Beam job, so its presence means the day's
    examples were written whole. They are reused only while the raw files and example settings
    recorded in it are still those of `raw` and `config` (pipeline/beam/inputs.py): a day built
    while its logs were still landing, or with another configuration, is rebuilt, saying why.
    """
    from pipeline.beam import build_examples
    from pipeline.beam.inputs import stale_reason
    missing = []
    for d in dates:
        stats = day_stats(examples, d)
        reason = None if stats is None else stale_reason(stats, str(raw), d, config)
        if stats is None or reason:
            missing.append(d)
        if reason:
            log(f"rebuilding examples of {d}: {reason}")
    if not missing:
        return []
    # Consecutive missing days go to one Beam run each.
    for first, last in _runs_of_days(missing):
        log(f"building examples {first}..{last} from {raw}")
        code = build_examples.build_examples(config, raw, examples, first, last)
        if code != 0:
            raise RuntimeError(f"dupn build-examples {first}..{last} failed with exit code {code}")
    return missing


def _runs_of_days(dates: list[str]) -> list[tuple[str, str]]:
    runs = []
    for d in sorted(dates):
        if runs and shift(runs[-1][1]) == d:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def next_day_usable(raw, date: str, evaluation: str, log=print) -> bool:
    """Whether a job ending on `date` evaluates on date + 1: only once that day has fully landed
    (pipeline/rawlogs/landing.py), never on the part of it that is there so far.

    evaluation 'auto' falls back to held-out users and says why; 'next-day' raises
    FileNotFoundError with the reason; 'holdout' never uses the next day.
    """
    if evaluation == "holdout":
        return False
    following = shift(date)
    reason = incomplete_reason(raw, following)
    if reason is None:
        return True
    if evaluation == "next-day":
        raise FileNotFoundError(f"cannot evaluate on {following}: {reason}")
    if raw_has_day(raw, following):
        log(f"evaluating on held-out users of {date}, not on {following}: {reason}")
    return False


def day_files(examples, date: str, tasks) -> dict[str, list[str]]:
    """task -> the day's example files, for the tasks that have samples that day."""
    stats = day_stats(examples, date) or {}
    out = {}
    for task in tasks:
        files = list_files(layout.example_pattern(examples, task, date))
        if files and task_samples(stats, task):
            out[task] = files
    return out


def holdout_mask(user_ids: tf.Tensor, share: float) -> tf.Tensor:
    """[B] bool: True for held-out users. user_ids: [B] string."""
    buckets = tf.strings.to_hash_bucket_fast(user_ids, HASH_BUCKETS)
    return buckets < int(round(share * HASH_BUCKETS))


def split_day(examples, date: str, tasks, share: float, out_dir) -> tuple[TrainingData, dict]:
    """Splits a day's examples into training users and held-out users, written under out_dir.

    Returns:
      (training data of the kept users, {task: held-out files}); the split is reused when
      out_dir already holds it (its counts.json is written last).
    """
    out_dir = Path(out_dir)
    counts_file = out_dir / "counts.json"
    if not counts_file.exists():
        counts = {"train": {}, "holdout": {}}
        for task, files in day_files(examples, date, tasks).items():
            kept, held = _split_files(files, share, out_dir / "train" / task / "part-00000.tfrecord.gz",
                                      out_dir / "holdout" / task / "part-00000.tfrecord.gz")
            counts["train"][task], counts["holdout"][task] = kept, held
        layout.write_json(counts_file, {"date": date, "share": share, **counts})
    counts = layout.read_json(counts_file)
    train_files = [str(out_dir / "train" / t / "part-00000.tfrecord.gz")
                   for t in tasks if counts["train"].get(t)]
    holdout = {t: [str(out_dir / "holdout" / t / "part-00000.tfrecord.gz")]
               for t in tasks if counts["holdout"].get(t)}
    by_task = {t: counts["train"].get(t, 0) for t in tasks}
    empty = [t for t, n in by_task.items() if n == 0]
    if empty:
        raise FileNotFoundError(f"{examples}: no {', '.join(empty)} examples of training users on {date} "
                                f"{HEAD_NEEDS_EXAMPLES}")
    data = TrainingData(train_files, sum(by_task.values()), by_task,
                        {"examples": str(examples), "start": date, "end": date, "tasks": list(tasks),
                         "split": f"users outside the held-out {share:.0%}", "split_dir": str(out_dir)})
    return data, holdout


def _split_files(files, share: float, train_path: Path, holdout_path: Path) -> tuple[int, int]:
    train_path.parent.mkdir(parents=True, exist_ok=True)
    holdout_path.parent.mkdir(parents=True, exist_ok=True)
    spec = {"user_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    kept = held = 0
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
    with tf.io.TFRecordWriter(str(train_path), "GZIP") as train_out, \
            tf.io.TFRecordWriter(str(holdout_path), "GZIP") as holdout_out:
        for batch in records:
            mask = holdout_mask(tf.io.parse_example(batch, spec)["user_id"], share).numpy()
            for record, is_held in zip(batch.numpy(), mask):
                (holdout_out if is_held else train_out).write(record)
                held += int(is_held)
                kept += int(not is_held)
    return kept, held


def training_and_evaluation(raw, examples, date: str, tasks, share: float, split_dir,
                            first_day: str | None = None, evaluation: str = "auto"
                            ) -> tuple[TrainingData, dict, dict]:
    """What a job ending on `date` trains and evaluates on.

    With examples of a fully landed next day (evaluation 'auto' or 'next-day'; next_day_usable):
    trains on [first_day, date],
    evaluates on date + 1. Without them, or with evaluation 'holdout': the held-out users of
    `date` are split off; trains on the rest (and on the days before `date` from first_day),
    evaluates on them.

    Returns:
      (training data, {task: evaluation files}, description of the evaluation data).
    """
    first_day = first_day or date
    following = shift(date)
    use_next = next_day_usable(raw, date, evaluation, log=lambda _: None)
    if evaluation == "next-day" and day_stats(examples, following) is None:
        raise FileNotFoundError(f"{examples}: no examples of {following} to evaluate on "
                                "(its raw logs are missing)")
    if use_next and day_stats(examples, following) is not None:
        data = range_data(examples, first_day, date, tasks)
        evaluation = day_files(examples, following, tasks)
        return data, evaluation, {"data": "next day", "date": following}
    data, evaluation = split_day(examples, date, tasks, share, split_dir)
    if first_day != date:
        before = range_data(examples, first_day, shift(date, -1), tasks, require_every_task=False)
        data = TrainingData(before.files + data.files, before.samples + data.samples,
                            {t: before.samples_by_task[t] + data.samples_by_task[t] for t in tasks},
                            {**data.describe, "start": first_day})
    return data, evaluation, {"data": "held-out users", "date": date, "share": share}
