"""`dupn transfer`: the shop-preference task (task 'shop') learnt four ways, AUC against training time.

    dupn transfer --mode rs|ra|rt|ft|all --work WORK [--model MODEL_DIR] [--test-date D]
        [--start D1 --end D2] [--epochs 5] [--set k=v]

  rs  retrain the whole network from scratch on the shop task alone
  ra  retrain the whole network from scratch on all five tasks (the published tasks + shop)
  rt  a shallow network (one hidden layer) on the published model's frozen user representation
      and frozen shop embedding
  ft  fine-tune the published network, warm-started (weights, optimizer slots, step), with a new
      shop head, on the shop task
Trains on the shop examples of [D1, D2] (default: every day before the test day), evaluates the
shop AUC on the test day (default: the last day with shop examples) after every epoch. Writes
WORK/transfer/<mode>.json and WORK/transfer/transfer.csv (mode, epoch, steps, seconds, auc):
seconds count training only (for rt: computing the frozen representations too), not evaluation.
"""
from __future__ import annotations

import copy
import csv
import math
import sys
import time
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from configs.loader import ConfigError, load_config
from configs.schema import HeadConfig
from features.contract import TASK_INDEX, Contract
from features.tfrecord import list_files, parse_batch, read_dataset, split_labels
from pipeline.dispatch import command_parser
from pipeline.evaluation import metrics
from pipeline import layout
from pipeline.training.checkpoints import RunCheckpoints, dump_config, make_optimizer, new_model
from pipeline.training.summaries import TRAIN_DIR, TensorBoardLog, progress_verbosity
from pipeline.training.train import head_tasks, range_data

MODES = ("rs", "ra", "rt", "ft")
SHOP = "shop"


def shop_head(config) -> HeadConfig:
    """The new shop head: shaped like the talent head (both score a user's taste for an entity)."""
    talent = [h for h in config.model.heads if h.name == "talent"]
    return HeadConfig(SHOP, 1.0, list(talent[0].hidden_units) if talent else [64, 32])


def with_heads(config, names):
    """A copy of config whose heads are `names` (existing ones kept as configured, shop added)."""
    out = copy.deepcopy(config)
    by_name = {h.name: h for h in config.model.heads}
    out.model.heads = [copy.deepcopy(by_name[n]) if n in by_name else shop_head(config) for n in names]
    return out


def shop_days(examples) -> list[str]:
    """Days whose statistics count shop samples, oldest first."""
    from pipeline.training.train import day_stats, task_samples
    found = []
    for date in layout.stats_days(examples):
        if task_samples(day_stats(examples, date) or {}, SHOP):
            found.append(date)
    return found


def shop_auc(model, contract: Contract, files, batch_size: int, predict, cache: dict) -> float:
    """The shop AUC on `files`; predict (evaluate.predictor) and cache (the parsed batches) are
    kept by the caller across its epochs."""
    from pipeline.evaluation.evaluate import evaluate_model
    return evaluate_model(model, contract, {SHOP: files}, batch_size, predict=predict,
                          cache=cache)[SHOP]["auc"]


def fit_and_track(mode: str, model, contract, config, data, test_files, epochs: int, log,
                  out_dir, started_seconds: float = 0.0) -> list[dict]:
    """Trains `epochs` passes over `data`, evaluating the shop AUC after each; one row per epoch.
    TensorBoard scalars of the training and the shop AUC go to OUT_DIR/tensorboard."""
    trainer = config.trainer
    steps = math.ceil(data.samples / trainer.batch_size)
    board = TensorBoardLog(Path(out_dir) / TRAIN_DIR, trainer.batch_size)
    rows, elapsed = [], started_seconds
    from pipeline.evaluation.evaluate import predictor
    # one trace of the scoring function and one read of the test day, for every epoch's AUC
    predict, test_batches = predictor(model), {}
    for epoch in range(1, epochs + 1):
        dataset = read_dataset(data.files, contract, trainer.batch_size, trainer.shuffle_buffer,
                               repeat=True, seed=config.runtime.seed + epoch)
        began = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[board],
                  verbose=progress_verbosity())
        elapsed += time.perf_counter() - began
        auc = shop_auc(model, contract, test_files, trainer.batch_size, predict, test_batches)
        with board.writer.as_default(step=int(model.optimizer.iterations.numpy())):
            tf.summary.scalar("shop/test_auc", auc)
        rows.append({"mode": mode, "epoch": epoch, "steps": epoch * steps,
                     "seconds": round(elapsed, 3), "auc": auc})
        log(f"{mode} epoch {epoch}: shop AUC {auc:.4f} after {elapsed:.1f} s")
    return rows


def run_retrain(mode: str, config, examples, train_days, test_files, epochs, out_dir, log):
    """rs / ra: a new network from scratch on shop alone (rs) or on every task plus shop (ra)."""
    names = [SHOP] if mode == "rs" else list(dict.fromkeys(head_tasks(config) + [SHOP]))
    config = with_heads(config, names)
    contract = Contract.from_config(config)
    data = range_data(examples, train_days[0], train_days[-1], head_tasks(config))
    model = new_model(config, contract)
    model.compile(optimizer=make_optimizer(config.trainer, model))
    rows = fit_and_track(mode, model, contract, config, data, test_files, epochs, log, out_dir)
    _save(model, config, out_dir)
    return rows, data.samples


def run_finetune(published, config, examples, train_days, test_files, epochs, out_dir, log):
    """ft: the published network with a new shop head, warm-started from its checkpoint."""
    config = with_heads(config, list(dict.fromkeys(head_tasks(config) + [SHOP])))
    contract = Contract.from_config(config)
    data = range_data(examples, train_days[0], train_days[-1], [SHOP])
    model = new_model(config, contract)
    optimizer = make_optimizer(config.trainer, model)
    model.compile(optimizer=optimizer)
    checkpoints = RunCheckpoints(model, optimizer, Path(out_dir))
    source = checkpoints.warm_start(published, allow_new_layers=True)
    log(f"ft: warm start from {source} (global step {checkpoints.global_step})")
    rows = fit_and_track("ft", model, contract, config, data, test_files, epochs, log, out_dir)
    checkpoints.save()
    dump_config(config, out_dir)
    return rows, data.samples


def representations(model, contract: Contract, files, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """([n, rep + shop dim] frozen features, [n] labels) of the shop examples in `files`.

    The representation is its shared part, the universal user vector; the parts carried after it
    for the ctr head's item side (the target attention's keys, the id match's raw ids) are
    machinery for scoring candidates, not features (raw ids as inputs stall a dense layer)."""
    @tf.function(reduce_retracing=True)
    def frozen(inputs):
        shared, _ = model.split_representation(model.user_representation(inputs, training=False))
        return tf.concat([shared, model.embeddings.shop(inputs)], axis=-1)

    features_, labels = [], []
    dataset = tf.data.TFRecordDataset(list_files(files), compression_type="GZIP").batch(batch_size)
    for serialized in dataset:
        inputs, label = split_labels(parse_batch(serialized, contract))
        keep = tf.equal(label["task"], TASK_INDEX[SHOP])
        features_.append(tf.boolean_mask(frozen(inputs), keep).numpy())
        labels.append(tf.boolean_mask(label["label"], keep).numpy())
    return np.concatenate(features_), np.concatenate(labels)


def run_frozen(published, examples, train_days, test_files, epochs, out_dir, log):
    """rt: a shallow network on the published model's frozen representation and shop embedding."""
    from pipeline.training.checkpoints import load_model
    config, model = load_model(published)
    contract = Contract.from_config(config)
    trainer = config.trainer
    data = range_data(examples, train_days[0], train_days[-1], [SHOP])
    began = time.perf_counter()
    x_train, y_train = representations(model, contract, data.files, trainer.batch_size)
    prepare = time.perf_counter() - began
    x_test, y_test = representations(model, contract, test_files, trainer.batch_size)
    keras.utils.set_random_seed(config.runtime.seed)
    shallow = keras.Sequential([keras.layers.Input([x_train.shape[1]]),
                                keras.layers.Dense(shop_head(config).hidden_units[0], activation="relu"),
                                keras.layers.Dense(1, activation="sigmoid")], name="shop_on_frozen")
    shallow.compile(optimizer=make_optimizer(trainer, shallow), loss="binary_crossentropy")
    rows, elapsed = [], prepare
    board = TensorBoardLog(Path(out_dir) / TRAIN_DIR, trainer.batch_size)
    for epoch in range(1, epochs + 1):
        began = time.perf_counter()
        shallow.fit(x_train, y_train, batch_size=trainer.batch_size, epochs=1,
                    verbose=progress_verbosity(), shuffle=True, callbacks=[board])
        elapsed += time.perf_counter() - began
        auc = metrics.auc(y_test, shallow.predict(x_test, batch_size=trainer.batch_size, verbose=0)[:, 0])
        steps = epoch * math.ceil(len(y_train) / trainer.batch_size)
        rows.append({"mode": "rt", "epoch": epoch, "steps": steps, "seconds": round(elapsed, 3), "auc": auc})
        log(f"rt epoch {epoch}: shop AUC {auc:.4f} after {elapsed:.1f} s")
    return rows, int(len(y_train))


def _save(model, config, out_dir) -> None:
    """A checkpoint and config.yaml, so pipeline.training.checkpoints.load_model reads the mode's model."""
    out_dir = Path(out_dir)
    dump_config(config, out_dir)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=model.optimizer),
                                         str(out_dir / "checkpoints"), max_to_keep=1)
    manager.save(checkpoint_number=int(model.optimizer.iterations.numpy()))


def write_csv(folder: Path) -> Path:
    """WORK/transfer/transfer.csv from every mode's JSON there (modes run separately accumulate)."""
    import json
    rows = []
    for mode in MODES:
        path = folder / f"{mode}.json"
        if path.exists():
            rows += json.loads(path.read_text())["curve"]
    out = folder / "transfer.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["mode", "epoch", "steps", "seconds", "auc"])
        writer.writeheader()
        writer.writerows(metrics.nan_to_none(rows))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("dupn transfer", __doc__)
    parser.add_argument("--mode", required=True, help="rs, ra, rt, ft, a comma list or all")
    parser.add_argument("--work", required=True, help="work directory (examples/, published/)")
    parser.add_argument("--model", help="model dir for rt and ft (default: the published one)")
    parser.add_argument("--test-date",
                        help="day the AUC is measured on (default: the last with shop examples)")
    parser.add_argument("--start", help="first training day (default: the first with shop examples)")
    parser.add_argument("--end", help="last training day (default: the day before the test day)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="passes over the training days (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the published model's configuration (trainer.*)")
    args = parser.parse_args(argv)
    modes = MODES if args.mode == "all" else tuple(m.strip() for m in args.mode.split(","))
    work = Path(args.work)
    examples, out = layout.examples_dir(work), layout.transfer_dir(work)
    log = lambda message: print(f"dupn transfer: {message}", flush=True)  # noqa: E731
    from pipeline.layout import published_model_dir
    try:
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"--mode {args.mode}: unknown {', '.join(unknown)} "
                             f"(modes: {', '.join(MODES)}, all)")
        published = Path(args.model) if args.model else published_model_dir(work)
        config = load_config(published / "config.yaml", args.overrides)
        available = shop_days(examples)
        test_date = args.test_date or (available[-1] if available else None)
        if test_date is None:
            raise FileNotFoundError(f"{examples}: no shop examples (task 'shop') on any day")
        start = args.start or (available[0] if available else test_date)
        end = args.end or layout.shift(test_date, -1)
        train_days = layout.days_between(start, end, names=("--start", "--end"))
        test_files = list_files(layout.example_pattern(examples, SHOP, test_date))
        if not test_files:
            raise FileNotFoundError(f"{layout.example_dir(examples, SHOP, test_date)}: no shop examples to test on")
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"dupn transfer: {err}", file=sys.stderr)
        return 1
    log(f"train {train_days[0]}..{train_days[-1]}, test {test_date}, from {published}")
    for mode in modes:
        try:
            if mode in ("rs", "ra"):
                rows, samples = run_retrain(mode, config, examples, train_days, test_files, args.epochs,
                                            out / mode, log)
            elif mode == "ft":
                rows, samples = run_finetune(published, config, examples, train_days, test_files,
                                             args.epochs, out / mode, log)
            else:
                rows, samples = run_frozen(published, examples, train_days, test_files, args.epochs,
                                           out / mode, log)
        except FileNotFoundError as err:
            print(f"dupn transfer: {mode}: {err}", file=sys.stderr)
            return 1
        metrics.write_metrics(out / f"{mode}.json", {
            "mode": mode, "train": [train_days[0], train_days[-1]], "test_date": test_date,
            "samples": samples, "source": str(published), "curve": rows,
            "final_auc": rows[-1]["auc"], "seconds": rows[-1]["seconds"]})
    log(f"-> {write_csv(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
