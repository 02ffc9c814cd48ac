"""Heads: one task (models/tasks.py, models/esmm.py) composed with one tower (models/towers.py).

The task owns the loss, metrics and scores, the tower maps the head's inputs to logits, and the
head declares which candidate inputs (models/head_inputs.py) the model joins for its tower. A
variant is a new composition: ESMM's entire-space task over two MLPs, two cosines or one wide
regression two wide. The head keeps the task's metrics and the tower's layers as its own
attributes, so checkpoints name them as before tasks and towers were apart.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tf_keras as keras

from models.esmm import EntireSpaceTask
from models.tasks import Task, plain_task
from models.towers import CosineTower, MLPTower, RankTower, Tower, Twin, WideTower


@keras.saving.register_keras_serializable(package="dupn")
class Head(keras.layers.Layer):
    """A task over a tower; named after the task.

    Args:
      objective: the Task (loss, metrics, scores).
      tower: the Tower (inputs -> logits of the task's output_width).
      candidate_inputs: the kinds of candidate input it reads, in order (head_inputs.KINDS).

    Call args:
      representation: [B, D] (the wide tower: the hashed ids); candidate: the joined candidate
        inputs [B, C] or None (the wide tower: rank_features).
    Returns:
      logits [B] (binary) or [B, output_width].
    """

    def __init__(self, objective: Task, tower: Tower, candidate_inputs=(), **kwargs):
        kwargs.setdefault("name", objective.name)
        super().__init__(**kwargs)
        if tower.width != objective.output_width:
            raise ValueError(f"{objective.name}: the tower gives {tower.width} logits, the task "
                             f"reads {objective.output_width}")
        self.objective = objective
        # Not `tower`: that attribute is DSSM's candidate tower's layers (a checkpoint path).
        self.network = tower
        # A string, not a tuple: a tracked tuple would be a new checkpoint object.
        self._candidate_inputs = ",".join(candidate_inputs)
        for attribute, metric in objective.metrics().items():
            setattr(self, attribute, metric)
        tower.attach(self)

    @property
    def candidate_inputs(self) -> tuple[str, ...]:
        return tuple(self._candidate_inputs.split(",")) if self._candidate_inputs else ()

    @property
    def task(self) -> str:
        return self.objective.name

    @property
    def weight(self) -> float:
        return self.objective.weight

    @property
    def output_width(self) -> int:
        return self.objective.output_width

    @property
    def score_names(self) -> tuple[str, ...]:
        return self.objective.score_names

    def probabilities(self, logits):
        return self.objective.probabilities(logits)

    def scores(self, logits) -> dict:
        return self.objective.scores(logits)

    def loss(self, labels: dict, logits):
        return self.objective.loss(labels, logits)

    def row_losses(self, labels: dict, logits):
        return self.objective.row_losses(labels, logits)

    def update_metrics(self, labels: dict, logits, loss, count) -> None:
        self.objective.update_metrics(labels, logits, loss, count)

    def call(self, representation, candidate=None, training=None):
        return self.network(representation, candidate, training=training)

    def get_config(self):
        return {**super().get_config(), "task": self.task, "weight": self.weight,
                "candidate_inputs": list(self.candidate_inputs)}


def make_task(name: str, weight: float = 1.0, esmm: bool = False) -> Task:
    """ESMM's entire-space task (ctr only) with esmm, else the task of that name."""
    return EntireSpaceTask(name, weight) if esmm else plain_task(name, weight)


def _one_per_logit(task: Task, build) -> Tower:
    """build(prefix, slot, width) for the task; the entire-space task gets two stacked (click,
    conversion: the second's layers named cvr_..., its attributes cvr_...)."""
    if isinstance(task, EntireSpaceTask):
        return Twin(build(task.name, "", 1), build("cvr", "cvr_", 1))
    return build(task.name, "", task.output_width)


def mlp_head(name: str, weight: float = 1.0, hidden_units=(128, 64), dropout: float = 0.0,
             l2: float = 0.0, esmm: bool = False, candidate_inputs=()) -> Head:
    """The task over an MLP of [representation, candidate inputs] (two MLPs with esmm)."""
    task = make_task(name, weight, esmm)
    return Head(task, _one_per_logit(task, lambda prefix, slot, width: MLPTower(
        width, hidden_units, dropout, l2, prefix, slot, candidate=bool(candidate_inputs))),
        candidate_inputs)


def rank_head(name: str = "l2r", weight: float = 1.0, hidden_units=(128,), rank_features: int = 8,
              dropout: float = 0.0, l2: float = 0.0, candidate_inputs=("rank_features",)) -> Head:
    """The task over the ranking features weighted per user (RankTower)."""
    return Head(plain_task(name, weight), RankTower(hidden_units, rank_features, dropout, l2, name),
                candidate_inputs)


def cosine_head(name: str, weight: float = 1.0, hidden_units=(64,), dropout: float = 0.0,
                l2: float = 0.0, esmm: bool = False, candidate_inputs=()) -> Head:
    """The task over DSSM's scaled cosine (two cosines, each its own towers, with esmm)."""
    task = make_task(name, weight, esmm)
    return Head(task, _one_per_logit(task, lambda prefix, slot, width: CosineTower(
        hidden_units, dropout, l2, prefix, slot)), candidate_inputs)


def wide_head(name: str, weight: float = 1.0, buckets: int = 1 << 18, l2: float = 0.0,
              esmm: bool = False) -> Head:
    """The task over one regression on the wide features (its output_width logits at once)."""
    task = make_task(name, weight, esmm)
    return Head(task, WideTower(task.output_width, buckets, l2, name))


def make_head(head: dict, rank_features: int, dropout: float, l2: float,
              candidate_inputs=()) -> Head:
    """A DUPN head from its configuration {name, weight, hidden_units, esmm (ctr only, optional)}:
    l2r over the RankTower, every other task over an MLP."""
    if head["name"] == "l2r" and not head.get("esmm"):
        return rank_head("l2r", head["weight"], head["hidden_units"], rank_features, dropout, l2,
                         candidate_inputs)
    return mlp_head(head["name"], head["weight"], head["hidden_units"], dropout, l2,
                    bool(head.get("esmm")), candidate_inputs)
