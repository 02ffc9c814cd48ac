"""Checkpoints of a training run: resume a run from its own latest one, warm-start a new run from another's.

Two named operations, never mixed up:
  resume      the same run (same model dir) continues after a crash from its latest checkpoint;
  warm start  a new run (an empty model dir) starts from another run's latest checkpoint:
              its weights, optimizer slots and global step.
A checkpoint holds the model, the optimizer (its `iterations` is the global step) and
`run_start_step`, the global step at which this run began, so steps done in this run =
global step - run_start_step, whichever way the run began.

A model dir: config.yaml (the resolved configuration), checkpoints/, history.json, run.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from configs.loader import dump_config, load_config
from features.contract import Contract
from models.weight_average import WeightAverage

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
KEEP_CHECKPOINTS = 3


def new_model(config, contract: Contract, pretrain_files=None):
    """A freshly built model of the configuration (its variables exist).

    dupn-w2v freezes an item table pre-trained by skip-gram: learnt here from `pretrain_files`
    (a new run's training examples), or, without them, left for a checkpoint restore to fill.
    """
    from models.dupn import build_model
    if config.model.variant != "dupn-w2v":
        return build_model(config, contract)
    if pretrain_files is None:
        return build_model(config, contract, restore_item_table=True)
    from models.w2v import item_table_from_files
    table = item_table_from_files(pretrain_files, contract, seed=config.runtime.seed)
    return build_model(config, contract, pretrained_item_table=table)


def make_optimizer(trainer, model) -> keras.optimizers.Optimizer:
    """The optimizer named by trainer.optimizer at trainer.learning_rate, built for the model's
    variables in optimizer_order (call it before model.compile, which would build it otherwise)."""
    kinds = {"adagrad": keras.optimizers.Adagrad, "adam": keras.optimizers.Adam,
             "sgd": keras.optimizers.SGD}
    optimizer = kinds[trainer.optimizer](learning_rate=trainer.learning_rate)
    optimizer.build(optimizer_order(model))
    return optimizer


def optimizer_order(model) -> list:
    """The model's trainable variables with each task's own last, task by task: its head's, its
    gates and experts in the sharing structure (model.task_variables), then its learnt loss
    weight if the loss balancing has one (models/balance.py).

    The optimizer saves its slots as a list in the order it was built with; with the tasks' last,
    a model that adds a head (a fine-tune with a new task) still finds every old slot at its index.
    """
    variables = list(model.trainable_variables)
    balancer = getattr(model, "balancer", None)
    heads = [list(model.task_variables(h.task)) + (balancer.task_variables(h.task) if balancer else [])
             for h in getattr(model, "heads", [])]
    in_heads = {id(v) for head in heads for v in head}
    return [v for v in variables if id(v) not in in_heads] + [v for head in heads for v in head]


def checkpoint_dir(model_dir) -> Path:
    return Path(model_dir) / CHECKPOINT_DIR


class UnreadableCheckpoints(FileNotFoundError):
    """Every checkpoint of a model dir is damaged (the message names each and why)."""


def checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint at `path` (a prefix) cannot be restored, or None when every tensor reads.

    Reading each tensor checks its length and checksum: a truncated or corrupt file shows here,
    not halfway through a restore that has already overwritten some variables.
    """
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, OSError) as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def checkpoint_paths(model_dir) -> list[str]:
    """Every checkpoint prefix in the model dir, newest (highest step) first; from the files, so
    that a damaged `checkpoint` state file hides none."""
    folder = checkpoint_dir(model_dir)
    prefixes = {str(index.with_suffix("")) for index in folder.glob("*.index")} if folder.is_dir() else set()
    return sorted(prefixes, key=lambda p: int(p.rsplit("-", 1)[-1]) if p.rsplit("-", 1)[-1].isdigit() else -1,
                  reverse=True)


def latest_checkpoint(model_dir, warn=None) -> str | None:
    """Path prefix of the model dir's newest readable checkpoint, or None when it has none.

    A damaged checkpoint (a crash or a full disk while it was written, a truncated copy) is
    skipped for the one before it, and `warn` (default: stderr) names it; when every checkpoint
    is damaged, UnreadableCheckpoints names them all.
    """
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    skipped = []
    for path in checkpoint_paths(model_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            for bad, why in skipped:
                warn(f"skipped damaged checkpoint {bad} ({why}); using {path}")
            return path
        skipped.append((path, problem))
    if skipped:
        listed = "; ".join(f"{bad} ({why})" for bad, why in skipped)
        raise UnreadableCheckpoints(f"{checkpoint_dir(model_dir)}: no readable checkpoint: {listed}. "
                                    "Delete the folder to start the run again, or, for a published "
                                    "model, write an older name into WORK/published/LATEST")
    return None


class RunCheckpoints:
    """Model + optimizer + run_start_step of one run, saved to MODEL_DIR/checkpoints.

    Create it inside the strategy's scope; the optimizer must be built (make_optimizer), so a
    restore fills its slots at once instead of waiting for the first step.
    """

    def __init__(self, model, optimizer, model_dir, max_to_keep: int = KEEP_CHECKPOINTS,
                 average_momentum: float = 0.0):
        self.model = model
        self.optimizer = optimizer
        self.run_start_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="run_start_step")
        parts = {}
        # The weight average belongs to the run (a resume continues it); a warm start begins anew.
        self.average = None
        if average_momentum:
            self.average = parts["weight_average"] = WeightAverage(model.trainable_variables,
                                                                   average_momentum)
            model.average_weights(self.average)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              run_start_step=self.run_start_step, **parts)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(checkpoint_dir(model_dir)), max_to_keep=max_to_keep,
            step_counter=optimizer.iterations, checkpoint_name="ckpt")

    @property
    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    @property
    def steps_done(self) -> int:
        """Steps this run has trained (resumed ones included, warm-start ones not)."""
        return self.global_step - int(self.run_start_step.numpy())

    def resume(self) -> str | None:
        """Restores this run's latest checkpoint; returns its path, or None for a fresh run."""
        path = latest_checkpoint(Path(self.manager.directory).parent)
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def warm_start(self, source_model_dir, allow_new_layers: bool = False) -> str:
        """Starts this (fresh) run from another run's latest checkpoint.

        Weights, optimizer slots and the global step come from the source; run_start_step
        becomes that step, so this run's own step count starts at 0.

        Args:
          allow_new_layers: let this model have layers the source has not (a new head), which
            keep their initial values; without it every variable must be found in the source.
        """
        if self.manager.latest_checkpoint:
            raise ValueError(f"{self.manager.directory} already holds checkpoints: a warm start "
                             "begins a new run (resume it instead, or use an empty model dir)")
        path = latest_checkpoint(source_model_dir)
        if path is None:
            raise FileNotFoundError(f"{checkpoint_dir(source_model_dir)}: no checkpoint to warm-start from")
        # The new run's configuration sets its learning rate, not the source's (a saved variable).
        learning_rate = float(self.optimizer.learning_rate.numpy())
        # Only model and optimizer: the source's run_start_step belongs to the source's run.
        status = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer).restore(path)
        if allow_new_layers:
            status.expect_partial()
        else:
            status.assert_existing_objects_matched().expect_partial()
        self.optimizer.learning_rate.assign(learning_rate)
        self.start_fresh()
        return path

    def start_fresh(self) -> None:
        self.run_start_step.assign(self.global_step)
        if self.average is not None:
            self.average.reset(self.model.trainable_variables)

    def save(self) -> str:
        return self.manager.save(checkpoint_number=self.global_step)


def variables_digest(variables) -> dict[str, float]:
    """name -> sum of the variable's values: a cheap fingerprint to check where weights came from."""
    out = {}
    for v in variables:
        out[_name(v)] = float(np.sum(np.asarray(tf.convert_to_tensor(v), np.float64)))
    return out


def _name(variable) -> str:
    # A ShardedVariable has no single name of its own; its shards' names end in /part_K.
    name = getattr(variable, "name", None) or variable.variables[0].name
    return name.split("/part_")[0].removesuffix(":0")


def load_config_of(model_dir):
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a model dir (no {CONFIG_FILE})")
    return load_config(path)


def load_model(model_dir, with_optimizer: bool = False):
    """(config, model) of a model dir: the model rebuilt from its config.yaml, its latest checkpoint restored.

    Args:
      with_optimizer: also restore the optimizer (model.optimizer), for further training.
    """
    config = load_config_of(model_dir)
    path = latest_checkpoint(model_dir)
    if path is None:
        raise FileNotFoundError(f"{checkpoint_dir(model_dir)}: no checkpoint")
    model = new_model(config, Contract.from_config(config))
    if with_optimizer:
        optimizer = make_optimizer(config.trainer, model)
        model.compile(optimizer=optimizer)
        status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path)
    else:
        status = tf.train.Checkpoint(model=model).restore(path)
    status.assert_existing_objects_matched().expect_partial()
    return config, model


__all__ = ["RunCheckpoints", "load_model", "latest_checkpoint", "make_optimizer", "new_model",
           "variables_digest", "dump_config"]
