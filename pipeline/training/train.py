"""`dupn train`: trains a model on a date range of examples, in one process or with parameter servers.

    dupn train --examples EXAMPLES --start D1 --end D2 --model-dir DIR [--config C] [--set k=v]
        [--warm-start OTHER_MODEL_DIR] [--local-cluster workers=2,ps=1]

Steps: one pass over the range's samples (EXAMPLES/_stats/dt=D.json) per trainer.epochs, in
batches of trainer.batch_size, from a repeated, seeded, shuffled stream. With more than one pass,
trainer.validation_share of the users are held out and training stops at the first pass that
does not improve their loss (pipeline/training/stopping.py). A checkpoint is saved
every trainer.checkpoint_every_steps steps and TensorBoard scalars go to MODEL_DIR/tensorboard
(pipeline/training/summaries.py; a progress bar on a terminal). Started again with the same
--model-dir, a run resumes from its latest checkpoint and trains only the remaining steps. --warm-start begins a
NEW run from another run's latest checkpoint (weights, optimizer slots, global step).

TF_CONFIG with parameter servers: this process (the chief) coordinates a
ParameterServerStrategy; run `python -m pipeline.training.cluster serve` (or this same command) on every
worker and ps. --local-cluster starts such a cluster on this machine for the duration of the run.
Examples may be local or remote (s3://, hdfs://, gs://: tensorflow-io registers the first two).
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from configs.example_settings import example_settings, settings_difference
from configs.loader import ConfigError, add_config_args, config_from_args, dump_config, to_dict
from configs.schema import Config
from features.contract import TASKS, Contract
from features.tfrecord import list_files, read_dataset
from pipeline import layout
from pipeline.dispatch import command_parser
from pipeline.training import cluster
from pipeline.training.stopping import StopWhenWorse, keep_rows
from pipeline.training.summaries import TRAIN_DIR, TensorBoardLog, progress_verbosity
from pipeline.training.checkpoints import (CONFIG_FILE, KEEP_CHECKPOINTS, RunCheckpoints, latest_checkpoint, make_optimizer, new_model,
                                  variables_digest)
from pipeline.layout import read_json, write_json

RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
REMOTE_SCHEMES = ("s3://", "hdfs://")


class DamagedExamples(OSError):
    """Examples files that cannot be read to their end (a truncated or corrupt shard)."""

    def __init__(self, damaged: list[tuple[str, str]], err):
        days = sorted({layout.stats_file(Path(f).parents[2], layout.partition_day(Path(f).parent.name))
                       for f, _ in damaged})
        named = "; ".join(f"{f}: {why}" for f, why in damaged) or f"a file of this run ({err.message})"
        super().__init__(f"damaged examples: {named}. Delete the statistics of their days "
                         f"({', '.join(map(str, days)) or 'EXAMPLES/_stats/dt=DAY.json'}) and rebuild "
                         "them (dupn build-examples; the daily and backfill jobs rebuild a day "
                         "without statistics)")


def damaged_files(files) -> list[tuple[str, str]]:
    """(file, TensorFlow's reason) of each examples file that does not read to its end."""
    damaged = []
    for path in files:
        try:
            tf.data.TFRecordDataset(path, compression_type="GZIP").reduce(0, lambda n, _: n + 1)
        except tf.errors.DataLossError as err:
            # TF's message wraps the reason in the function's name and the op's: keep the reason
            damaged.append((path, re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", err.message.splitlines()[0])))
    return damaged


def register_filesystems(*paths) -> None:
    """Imports tensorflow-io when a path is on S3 or HDFS: importing it registers those schemes."""
    if any(str(p).startswith(REMOTE_SCHEMES) for p in paths):
        import tensorflow_io  # noqa: F401


def day_stats(examples_root, date: str) -> dict | None:
    """EXAMPLES/_stats/dt=D.json (written last by the Beam job: the day is complete), or None."""
    path = layout.stats_file(examples_root, date)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def task_samples(stats: dict, task: str) -> int:
    """Samples of a task in one day's statistics (0 when the task has none that day)."""
    entry = (stats.get("tasks") or {}).get(task)
    return int(entry["samples"]) if entry else 0


# What to do when a configured head finds no examples (logs without its table).
HEAD_NEEDS_EXAMPLES = ("(a configured head needs them: for logs without its table, leave the head "
                       "out of model.heads)")


@dataclass
class TrainingData:
    """The example files a run trains on and how many samples they hold.

    describe: what the files are (dates, tasks, split), recorded in run.json and manifests.
    """
    files: list[str]
    samples: int
    samples_by_task: dict[str, int] = field(default_factory=dict)
    describe: dict = field(default_factory=dict)


def range_data(examples_root, start: str, end: str, tasks, require_every_task: bool = True) -> TrainingData:
    """The examples of `tasks` on every day of [start, end], counted from the days' statistics.

    Raises FileNotFoundError naming the first day without statistics, or a task without examples
    (unless require_every_task is False).
    """
    register_filesystems(examples_root)
    files, by_task = [], {t: 0 for t in tasks}
    for date in layout.days_between(start, end, names=("--start", "--end")):
        stats = day_stats(examples_root, date)
        if stats is None:
            raise FileNotFoundError(f"{layout.stats_file(examples_root, date)}: no examples "
                                    f"for {date} (run dupn build-examples for that day)")
        for task in tasks:
            day_files = list_files(layout.example_pattern(examples_root, task, date))
            n = task_samples(stats, task)
            if n and not day_files:
                raise FileNotFoundError(f"{layout.example_dir(examples_root, task, date)}: the statistics "
                                        f"count {n} {task} samples but no files are there")
            files += day_files
            by_task[task] += n
    empty = [t for t, n in by_task.items() if n == 0]
    if empty and require_every_task:
        raise FileNotFoundError(f"{examples_root}: no {', '.join(empty)} examples from {start} to {end} "
                                f"{HEAD_NEEDS_EXAMPLES}")
    return TrainingData(files, sum(by_task.values()), by_task,
                        {"examples": str(examples_root), "start": start, "end": end,
                         "tasks": list(tasks)})


def settings_mismatch(examples_root, start: str, end: str, config: Config) -> str | None:
    """Why the examples of [start, end] do not fit `config` (built with other example settings,
    as recorded in their _stats by the Beam job), or None. Days without a record are not judged."""
    for date in layout.days_between(start, end, names=("--start", "--end")):
        recorded = ((day_stats(examples_root, date) or {}).get("build") or {}).get("settings")
        changed = recorded and settings_difference(recorded, example_settings(config))
        if changed:
            return (f"the examples of {date} were built with other settings ({changed}; "
                    f"recorded -> this configuration): rebuild them with dupn build-examples, "
                    f"or train with the configuration they were built with")
    return None


def head_tasks(config: Config) -> list[str]:
    """The tasks of the configured heads, in TASKS order."""
    names = {h.name for h in config.model.heads}
    return [t for t in TASKS if t in names]


def target_steps(samples: int, trainer, steps_multiple: int = 1) -> int:
    """trainer.epochs passes over `samples` in batches, rounded up to a multiple of steps_multiple."""
    steps = trainer.epochs * math.ceil(samples / trainer.batch_size)
    return max(steps_multiple, math.ceil(steps / steps_multiple) * steps_multiple)


def sharded_tables(model) -> dict[str, int]:
    """name -> shard count of the model's embedding tables that are split across parameter servers."""
    out = {}
    for layer in model.submodules:
        table = getattr(layer, "embeddings", None)
        if isinstance(table, tf.__internal__.distribute.ShardedVariable):
            out[layer.name] = len(table.variables)
    return out


def checkpoint_interval(target: int, trainer) -> tuple[int, int]:
    """(interval, target) of a parameter-server run: fit epochs of `interval` steps, each a whole
    number of executions and at most checkpoint_every_steps long (rounded to executions), as even as
    the target allows; the target grows by less than one execution per interval so they divide it.

    Batch-level callbacks are not allowed under ParameterServerStrategy, so an epoch is the only
    place to checkpoint; and a partial execution would change steps_per_execution while earlier
    steps are still queued.
    """
    spe = trainer.steps_per_execution
    every = max(spe, trainer.checkpoint_every_steps // spe * spe)
    intervals = math.ceil(target / every)
    interval = math.ceil(math.ceil(target / intervals) / spe) * spe
    return interval, interval * intervals


def _floats(logs) -> dict:
    return {k: float(v) for k, v in (logs or {}).items()}


class _SaveEvery(keras.callbacks.Callback):
    """One process: saves a checkpoint when the run's step count crosses a multiple of `every`;
    with a weight average, not at the run's last step (train saves that one, averaged)."""

    def __init__(self, checkpoints: RunCheckpoints, every: int, history: list, log, target: int):
        super().__init__()
        self.checkpoints, self.every, self.history, self.log, self.target = (
            checkpoints, every, history, log, target)
        self.last_saved = checkpoints.steps_done
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        done = self.checkpoints.steps_done
        if done >= self.target and self.checkpoints.average is not None:
            return
        if done // self.every > self.last_saved // self.every:
            self.last_saved = done
            _record(self.checkpoints, self.history, logs, self.started, self.log, self.target)


class _SaveAtEpochEnd(keras.callbacks.Callback):
    """Parameter servers: batch-level callbacks are not allowed, so an epoch is one checkpoint
    interval; at its end the coordinator has joined every scheduled step."""

    def __init__(self, checkpoints: RunCheckpoints, history: list, log, target: int):
        super().__init__()
        self.checkpoints, self.history, self.log, self.target = checkpoints, history, log, target
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.checkpoints.steps_done >= self.target and self.checkpoints.average is not None:
            return       # the last one: train saves it with the weight average in place
        _record(self.checkpoints, self.history, logs, self.started, self.log, self.target)


def _record(checkpoints, history, logs, started, log, target) -> None:
    """Appends the step and metrics to history.json, then saves the checkpoint. A crash between the
    two leaves an entry without its checkpoint, which a resume drops (see train)."""
    entry = {"step": checkpoints.steps_done, "global_step": checkpoints.global_step,
             "seconds": round(time.monotonic() - started, 3), **_floats(logs)}
    history.append(entry)
    write_json(Path(checkpoints.manager.directory).parent / HISTORY_FILE, history)
    path = checkpoints.save()
    log(f"step {entry['step']}/{target} (global {entry['global_step']}): loss "
        f"{entry.get('loss', float('nan')):.4f}, {entry['seconds']:.1f} s -> {Path(path).name}")


class WarmStartError(ValueError):
    """The warm start's source holds another network (a variable missing or of another shape)."""


def _check_same_config(model_dir: Path, config: Config) -> None:
    saved = model_dir / CONFIG_FILE
    if saved.exists():
        import yaml
        if yaml.safe_load(saved.read_text()) != to_dict(config):
            raise ValueError(f"{model_dir} holds a run of another configuration ({saved}); "
                             "resume it with that configuration or train into a new --model-dir")


def train(config: Config, data: TrainingData, model_dir, *, warm_start=None,
          allow_new_layers: bool = False, strategy: tf.distribute.Strategy | None = None,
          keep_checkpoints: int = KEEP_CHECKPOINTS, log=print) -> dict:
    """Trains (or resumes) the run in `model_dir` on `data`; returns the run's summary.

    Args:
      warm_start: model dir of another run to begin from (ignored when resuming this run).
      allow_new_layers: the warm start may leave layers the source lacks (a new head) as built.
      strategy: default: the one TF_CONFIG asks for (cluster.make_strategy).
      keep_checkpoints: the newest checkpoints kept (the multitask experiment keeps more, as
        points of its curves).
    Returns:
      run.json's content: target_steps, steps this run trained in total and in this call,
      resumed_from (checkpoint or None), warm_start, global_step, seconds, final metrics.
    """
    started = time.monotonic()
    model_dir = Path(model_dir)
    strategy = strategy or cluster.make_strategy()
    parameter_servers = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    contract = Contract.from_config(config)
    trainer = config.trainer
    spe = trainer.steps_per_execution
    _check_same_config(model_dir, config)
    run = read_json(model_dir / RUN_FILE, {})
    history = read_json(model_dir / HISTORY_FILE, [])

    # A new run of dupn-w2v pre-trains its item table on its own data; a resumed or warm-started
    # one restores it from the checkpoint.
    fresh = latest_checkpoint(model_dir) is None and not warm_start
    # runtime.seed fixes the initial weights and dropout: the same configuration and data give
    # the same model, and a daily run can be replayed.
    keras.utils.set_random_seed(config.runtime.seed)
    with strategy.scope():
        model = new_model(config, contract, pretrain_files=data.files if fresh else None)
        optimizer = make_optimizer(trainer, model)
        model.compile(optimizer=optimizer, steps_per_execution=spe)
        checkpoints = RunCheckpoints(model, optimizer, model_dir, keep_checkpoints,
                                     average_momentum=trainer.weight_average)
    resumed_from = checkpoints.resume()
    if resumed_from:
        log(f"resuming {model_dir} from {Path(resumed_from).name}: {checkpoints.steps_done} steps done")
        target = run["target_steps"]
        history = [entry for entry in history if entry["step"] <= checkpoints.steps_done]
        if warm_start:
            log(f"--warm-start {warm_start} ignored: this run began from {run.get('warm_start')}")
    else:
        target = target_steps(data.samples, trainer)
        interval = None
        if parameter_servers:
            interval, target = checkpoint_interval(target, trainer)
        if warm_start:
            try:
                source = checkpoints.warm_start(warm_start, allow_new_layers)
            except (AssertionError, ValueError) as err:   # a missing variable; another shape
                raise WarmStartError(f"warm start: {warm_start} holds a model that does not match "
                                     f"this configuration: {str(err).splitlines()[0]}") from None
            log(f"warm start of {model_dir} from {source} (global step {checkpoints.global_step})")
        else:
            checkpoints.start_fresh()
        run = {"target_steps": target, "samples": data.samples, "samples_by_task": data.samples_by_task,
               "files": len(data.files), "data": data.describe,
               "warm_start": str(source) if warm_start else None, "checkpoint_interval": interval,
               "initial_global_step": checkpoints.global_step,
               "initial_digest": {"model": sum(variables_digest(model.trainable_variables).values()),
                                  "optimizer": sum(variables_digest(optimizer.variables).values())},
               "strategy": type(strategy).__name__, "sharded_tables": sharded_tables(model),
               "finished": False}
        write_json(model_dir / RUN_FILE, run)
    # Only now: a refused warm start leaves no configuration behind to pin the next attempt's.
    dump_config(config, model_dir)

    done_before = checkpoints.steps_done
    remaining = 0 if run.get("stopped") else target - done_before
    logs, stopped = None, None
    try:
        if remaining <= 0:
            log(f"{model_dir}: all {target} steps already trained" if not run.get("stopped") else
                f"{model_dir}: stopped after pass {run['stopped']['after_pass']} (held-out users)")
        elif parameter_servers:
            interval = run.get("checkpoint_interval")
            if not interval or remaining % interval:   # a run begun in one process, resumed here
                interval, padded = checkpoint_interval(remaining, trainer)
                target += padded - remaining
                remaining = padded
                run.update(target_steps=target, checkpoint_interval=interval)
            logs = _fit_with_parameter_servers(model, checkpoints, data, contract, config, remaining,
                                               history, log, target, interval)
        else:
            logs, stopped = _fit_one_process(model, checkpoints, data, contract, config, remaining,
                                             history, log, target)
    except tf.errors.DataLossError as err:   # TF names its iterator, not the file: find it
        raise DamagedExamples(damaged_files(data.files), err) from None
    if not history or history[-1]["global_step"] != checkpoints.global_step:
        # The run's last checkpoint, written here only: with a weight average, after the average
        # has replaced the weights (a crash before leaves an earlier checkpoint to resume from).
        if checkpoints.average is not None:
            checkpoints.average.swap_in(model.trainable_variables)
        _record(checkpoints, history, logs, started, log, target)
    if stopped:
        run["stopped"] = stopped
    run.update({"finished": True, "steps": checkpoints.steps_done, "global_step": checkpoints.global_step,
                "resumed_from": str(resumed_from) if resumed_from else None,
                "steps_this_call": checkpoints.steps_done - done_before,
                "seconds_this_call": round(time.monotonic() - started, 3),
                "final": {k: v for k, v in (history[-1] if history else {}).items()
                          if k not in ("step", "global_step", "seconds")}})
    write_json(model_dir / RUN_FILE, run)
    return run


def training_stream(data: TrainingData, contract: Contract, config: Config, skip: int = 0) -> tf.data.Dataset:
    """The one-process run's endless stream of (inputs, labels) batches, after `skip` batches.

    Seeded shuffles make the stream the same on every start, so a resumed run skips exactly the
    batches its checkpoint has seen and goes on with the ones it has not.
    """
    trainer = config.trainer
    return read_dataset(data.files, contract, trainer.batch_size, trainer.shuffle_buffer,
                        repeat=True, seed=config.runtime.seed).skip(skip)


def _fit_one_process(model, checkpoints, data, contract, config, remaining, history, log, target):
    """(the last logs, the stopping rule's record or None)."""
    trainer = config.trainer
    dataset = training_stream(data, contract, config, skip=checkpoints.steps_done)
    callbacks = [_SaveEvery(checkpoints, trainer.checkpoint_every_steps, history, log, target),
                 TensorBoardLog(_board_dir(checkpoints), trainer.batch_size)]
    stopper = None
    if trainer.epochs > 1 and trainer.validation_share > 0:
        share = trainer.validation_share
        dataset = keep_rows(dataset, share, held=False)
        # A seed makes the files' interleave deterministic: the rule pairs rows across passes.
        held = keep_rows(read_dataset(data.files, contract, trainer.batch_size,
                                      seed=config.runtime.seed), share, held=True)
        stopper = StopWhenWorse(checkpoints, target // trainer.epochs, held,
                                config.model.heads[0].name, log)   # the headline head
        callbacks.insert(0, stopper)     # first: a checkpoint at the same step gets its weights
    fitted = model.fit(dataset, epochs=1, steps_per_epoch=remaining, callbacks=callbacks,
                       verbose=progress_verbosity())
    return _last(fitted), stopper and stopper.stopped


def _board_dir(checkpoints) -> Path:
    """MODEL_DIR/tensorboard, beside the run's checkpoints."""
    return Path(checkpoints.manager.directory).parent / TRAIN_DIR


def _last(fitted) -> dict:
    """The last epoch's logs of a History."""
    return {k: v[-1] for k, v in fitted.history.items() if v}


def _fit_with_parameter_servers(model, checkpoints, data, contract, config, remaining, history, log,
                                target, interval):
    trainer = config.trainer

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Under ParameterServerStrategy every worker is its own input pipeline (the context says
        # one pipeline); unseeded shuffles give each worker its own order of the files.
        return read_dataset(data.files, contract, trainer.batch_size, trainer.shuffle_buffer,
                            repeat=True, seed=None, input_context=input_context)

    creator = keras.utils.experimental.DatasetCreator(dataset_fn)
    callback = _SaveAtEpochEnd(checkpoints, history, log, target)
    board = TensorBoardLog(_board_dir(checkpoints), trainer.batch_size, per_batch=False)
    # One fit: a second one would build every worker's dataset and functions again. On a
    # terminal a line per epoch (verbose 2): the progress bar is a batch-level callback.
    fitted = model.fit(creator, epochs=remaining // interval, steps_per_epoch=interval,
                       callbacks=[callback, board], verbose=2 * progress_verbosity())
    return _last(fitted)


def parse_args(argv):
    parser = command_parser("dupn train", __doc__)
    parser.add_argument("--examples", required=True, help="examples root (EXAMPLES/<task>/dt=D/)")
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", help="last day, YYYY-MM-DD (default: --start)")
    parser.add_argument("--model-dir", required=True, help="this run's directory")
    parser.add_argument("--warm-start", metavar="MODEL_DIR", help="begin from this run's latest checkpoint")
    parser.add_argument("--local-cluster", metavar="workers=N,ps=M",
                        help="start N worker and M ps processes here and train with parameter servers")
    add_config_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        tf_config = cluster.read_tf_config()
        kind, _ = cluster.task_of(tf_config)
        if kind in cluster.SERVER_JOBS:   # the same command on every machine: workers and ps serve
            cluster.serve(tf_config)
            return 0
        config = config_from_args(args)
        _check_same_config(Path(args.model_dir), config)   # a refusal, not a traceback from train()
        shape = cluster.parse_cluster_shape(args.local_cluster) if args.local_cluster else None
        data = range_data(args.examples, args.start, args.end or args.start, head_tasks(config))
        mismatch = settings_mismatch(args.examples, args.start, args.end or args.start, config)
        if mismatch:
            raise ValueError(mismatch)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"dupn train: {err}", file=sys.stderr)
        return 2 if isinstance(err, (ConfigError, ValueError)) else 1
    log = lambda message: print(f"dupn train: {message}", flush=True)  # noqa: E731
    if shape and not cluster.in_private_network():
        # TF's servers listen on every interface: rerun this command, chief and servers, in a
        # network of its own (loopback only) where the system allows one.
        if layout.is_remote(args.examples):
            command, why = None, "the examples are remote: the run needs the network"
        else:
            command, why = cluster.private_network_command(
                [sys.executable, "-m", "pipeline.training.train", *argv])
        if command:
            return cluster.run_in_private_network(command)
        print(f"dupn train: the local cluster's ports listen on every interface, with no "
              f"authentication ({why}); see docs/OPERATIONS.md", file=sys.stderr, flush=True)
    try:
        if shape:
            if cluster.in_private_network():
                cluster.loopback_up()
                log("local cluster: in a network namespace of its own (loopback only)")
            with cluster.LocalCluster(shape["worker"], shape["ps"],
                                      log_dir=Path(args.model_dir) / "cluster-logs"):
                log(f"local cluster: {shape['worker']} workers, {shape['ps']} ps")
                run = train(config, data, args.model_dir, warm_start=args.warm_start, log=log)
        else:
            run = train(config, data, args.model_dir, warm_start=args.warm_start, log=log)
    except WarmStartError as err:   # found only once the model is built: a refusal, one line
        print(f"dupn train: {err}", file=sys.stderr)
        return 2
    except DamagedExamples as err:
        print(f"dupn train: {err}", file=sys.stderr)
        return 1
    log(f"{args.model_dir}: {run['steps']} of {run['target_steps']} steps "
        f"({run['steps_this_call']} now), global step {run['global_step']}, "
        f"{run['seconds_this_call']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
