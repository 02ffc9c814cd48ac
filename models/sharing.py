"""How the task heads share the user representation (model.sharing): hard, shared-bottom, MMoE, PLE.

Every structure is a layer over the shared user representation [B, D]:
  call(representation) -> ({task: [B, D_task]} each head's input, {gate: [B, E]} expert weights)
Which tasks' losses reach which weights:
  hard           every head reads the representation as it is (DUPN); every task trains it.
  shared-bottom  one MLP (expert_units) over it, trained by every task; the heads are the towers.
  mmoe           `experts` expert MLPs mixed by one softmax gate per task (Ma et al., KDD 2018):
                 every expert is trained by every task, a task's gate by that task alone.
  ple            `ple_levels` stacked CGC levels (Tang et al., RecSys 2020), see PLE.
"""
from __future__ import annotations

import math

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from models.towers import mlp

STRUCTURES = ("hard", "shared-bottom", "mmoe", "ple")


def make_sharing(config: dict | None, tasks, dropout: float = 0.0, l2: float = 0.0) -> "Sharing":
    """The sharing layer of a models.config.sharing_config (None: hard) for the heads' tasks, in order."""
    config = dict(config or {"structure": "hard"})
    structure = config.pop("structure")
    if structure == "hard":
        return HardSharing(tasks, name="sharing")
    if structure == "shared-bottom":
        return SharedBottom(tasks, config["expert_units"], dropout, l2, name="sharing")
    if structure == "mmoe":
        return MMoE(tasks, config["experts"], config["expert_units"], dropout, l2, name="sharing")
    if structure == "ple":
        return PLE(tasks, config["experts"], config["task_experts"], config["expert_units"],
                   config["ple_levels"], dropout, l2, name="sharing")
    raise ValueError(f"unknown sharing structure '{structure}' "
                     f"(structures: {', '.join(STRUCTURES)})")


def mix(weights: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
    """Σ_e weights[:, e] experts[:, e]: [B, E] x [B, E, U] -> [B, U]."""
    return tf.einsum("be,beu->bu", weights, experts)


def _regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def gate(experts: int, l2: float, name: str) -> keras.layers.Dense:
    """A softmax gate over `experts` experts, read from the gate's input."""
    return keras.layers.Dense(experts, activation="softmax", kernel_regularizer=_regularizer(l2),
                              name=name)


@keras.saving.register_keras_serializable(package="dupn")
class Experts(keras.layers.Layer):
    """`count` expert MLPs side by side (relu at every layer): one batched matmul per depth.

    Each expert's [in, out] kernel is Glorot-uniform on its own, as a Dense layer's would be.

    Call args:
      inputs: [B, D].
    Returns:
      [B, count, units[-1]].
    """

    def __init__(self, count: int, units, dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.count = count
        self.units = list(units)
        self.dropout = dropout
        self.l2 = l2
        self.dropouts = [keras.layers.Dropout(dropout) for _ in self.units] if dropout else []

    def build(self, input_shape):
        width = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for i, units in enumerate(self.units):
            limit = math.sqrt(6.0 / (width + units))
            self.kernels.append(self.add_weight(
                f"kernel_{i}", [self.count, width, units], regularizer=_regularizer(self.l2),
                initializer=keras.initializers.RandomUniform(-limit, limit)))
            self.biases.append(self.add_weight(f"bias_{i}", [self.count, units],
                                               initializer="zeros"))
            width = units
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = tf.einsum("bd,kdu->bku", inputs, self.kernels[0])
        for i in range(len(self.units)):
            if i:
                x = tf.einsum("bkd,kdu->bku", x, self.kernels[i])
            x = tf.nn.relu(x + self.biases[i])
            if self.dropouts:
                x = self.dropouts[i](x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "count": self.count, "units": self.units,
                "dropout": self.dropout, "l2": self.l2}


class Sharing(keras.layers.Layer):
    """Base of the structures: the tasks, in the heads' order, and what analysis asks of them.

    Call args:
      representation: [B, D], the shared user representation.
    Returns:
      ({task: [B, D_task]}, {gate: [B, E]}) (no gates: {}).
    """

    def __init__(self, tasks, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(tasks)

    def task_variables(self, task: str) -> list:
        """The trainable variables that belong to `task` alone (a new task adds only these;
        other tasks' losses may still reach them, see PLE)."""
        return []

    def gate_experts(self) -> dict:
        """{gate: [name of the expert each column of its weights stands for]}."""
        return {}

    def get_config(self):
        return {**super().get_config(), "tasks": self.tasks}


@keras.saving.register_keras_serializable(package="dupn")
class HardSharing(Sharing):
    """Every head reads the representation as it is (DUPN); no variables."""

    def call(self, representation, training=None):
        return {t: representation for t in self.tasks}, {}


@keras.saving.register_keras_serializable(package="dupn")
class SharedBottom(Sharing):
    """One shared MLP (`units` wide, relu) over the representation; each head is its tower."""

    def __init__(self, tasks, units, dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(tasks, **kwargs)
        self.units = list(units)
        self.dropout = dropout
        self.l2 = l2
        self.bottom = mlp(self.units, dropout, l2, "shared_bottom")

    def call(self, representation, training=None):
        x = representation
        for layer in self.bottom:
            x = layer(x, training=training)
        return {t: x for t in self.tasks}, {}

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout, "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class MMoE(Sharing):
    """Multi-gate mixture of experts (Ma et al., KDD 2018).

    out_t = Σ_e softmax(W_t r)_e expert_e(r): `experts` shared expert MLPs (`units`), one gate
    per task over the representation. Gates: {task: [B, experts]}.
    """

    def __init__(self, tasks, experts: int, units, dropout: float = 0.0, l2: float = 0.0,
                 **kwargs):
        super().__init__(tasks, **kwargs)
        self.experts = experts
        self.units = list(units)
        self.dropout = dropout
        self.l2 = l2
        self.shared_experts = Experts(experts, self.units, dropout, l2, name="experts")
        # A dict (not a list) so checkpoints name each gate by its task: a new task adds a gate.
        self.gates = {t: gate(experts, l2, f"{t}_gate") for t in self.tasks}

    def call(self, representation, training=None):
        experts = self.shared_experts(representation, training=training)
        weights = {t: self.gates[t](representation) for t in self.tasks}
        return {t: mix(weights[t], experts) for t in self.tasks}, weights

    def task_variables(self, task):
        return list(self.gates[task].trainable_variables)

    def gate_experts(self):
        return {t: [f"shared_{k}" for k in range(self.experts)] for t in self.tasks}

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "units": self.units,
                "dropout": self.dropout, "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class CGCLevel(keras.layers.Layer):
    """One Customized Gate Control level of PLE.

    Task t's gate (over t's own input) mixes t's `task_experts` experts, then the `experts`
    shared ones. Unless `last`, a shared gate (over the shared input) mixes the shared experts,
    then every task's experts in task order, into the next level's shared input. The shared
    gate's kernel is kept in blocks, one per expert group (the same function as one Dense), so
    a new task only adds its own block.

    Call args:
      task_inputs: {task: [B, D]}; shared_input: [B, D].
    Returns:
      ({task: [B, units[-1]]}, shared output [B, units[-1]] or None when last,
       {task or "shared": gate weights [B, E]}).
    """

    def __init__(self, tasks, experts: int, task_experts: int, units, last: bool,
                 dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(tasks)
        self.experts = experts
        self.task_experts = task_experts
        self.units = list(units)
        self.last = last
        self.dropout = dropout
        self.l2 = l2
        self.shared_experts = Experts(experts, self.units, dropout, l2, name="shared_experts")
        self.own_experts = {t: Experts(task_experts, self.units, dropout, l2, name=f"{t}_experts")
                            for t in self.tasks}
        self.task_gates = {t: gate(task_experts + experts, l2, f"{t}_gate") for t in self.tasks}
        if not last:
            reg = _regularizer(l2)
            self.shared_gate_shared = keras.layers.Dense(experts, kernel_regularizer=reg,
                                                         name="shared_gate_shared")
            self.shared_gate_task = {t: keras.layers.Dense(task_experts, kernel_regularizer=reg,
                                                           name=f"shared_gate_{t}")
                                     for t in self.tasks}

    def call(self, task_inputs, shared_input, training=None):
        shared = self.shared_experts(shared_input, training=training)          # [B, S, U]
        own = {t: self.own_experts[t](task_inputs[t], training=training) for t in self.tasks}
        weights, outputs = {}, {}
        for t in self.tasks:
            weights[t] = self.task_gates[t](task_inputs[t])
            outputs[t] = mix(weights[t], tf.concat([own[t], shared], axis=1))
        if self.last:
            return outputs, None, weights
        logits = tf.concat([self.shared_gate_shared(shared_input)]
                           + [self.shared_gate_task[t](shared_input) for t in self.tasks], axis=-1)
        weights["shared"] = tf.nn.softmax(logits, axis=-1)
        every = tf.concat([shared] + [own[t] for t in self.tasks], axis=1)
        return outputs, mix(weights["shared"], every), weights

    def task_variables(self, task: str) -> list:
        layers = [self.own_experts[task], self.task_gates[task]]
        if not self.last:
            layers.append(self.shared_gate_task[task])
        return [v for layer in layers for v in layer.trainable_variables]

    def gate_experts(self) -> dict:
        shared = [f"shared_{k}" for k in range(self.experts)]
        own = {t: [f"{t}_{k}" for k in range(self.task_experts)] for t in self.tasks}
        out = {t: own[t] + shared for t in self.tasks}
        if not self.last:
            out["shared"] = shared + [name for t in self.tasks for name in own[t]]
        return out

    def get_config(self):
        return {**super().get_config(), "tasks": self.tasks, "experts": self.experts,
                "task_experts": self.task_experts, "units": self.units, "last": self.last,
                "dropout": self.dropout, "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class PLE(Sharing):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): `levels` stacked CGCLevels.

    Level 1 reads the representation for every task and for the shared experts; level l+1 reads
    task t's level-l output for t's experts and gate, and the level-l shared gate's output for
    its shared experts. Each task's head reads that task's last-level output.

    Which tasks' losses reach which weights (L = levels):
      shared experts, every level: every task.
      task t's experts at level L: task t only (they feed t's gate alone). At a level l < L
        they also feed that level's shared gate, hence level l+1's shared experts, so every
        task's loss reaches them: with L > 1 only the last level's are t's own.
      task t's gates at levels L-1 and L: task t only; at lower levels, every task (their output
        feeds t's experts at the next level, which feed a shared gate).
      shared gates (levels < L), all their blocks: every task.

    Gates: {task: [B, task_experts + experts]} of the last level; for each level l < L also
    "level{l}/{task}" and "level{l}/shared" [B, experts + tasks x task_experts] (columns:
    gate_experts()).
    """

    def __init__(self, tasks, experts: int, task_experts: int, units, levels: int,
                 dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(tasks, **kwargs)
        self.experts = experts
        self.task_experts = task_experts
        self.units = list(units)
        self.levels = levels
        self.dropout = dropout
        self.l2 = l2
        self.cgc = [CGCLevel(self.tasks, experts, task_experts, self.units, i == levels - 1,
                             dropout, l2, name=f"level{i + 1}") for i in range(levels)]

    def _key(self, level: int, gate_name: str) -> str:
        return gate_name if level == self.levels - 1 else f"level{level + 1}/{gate_name}"

    def call(self, representation, training=None):
        task_inputs = {t: representation for t in self.tasks}
        shared_input = representation
        weights = {}
        for i, level in enumerate(self.cgc):
            task_inputs, shared_input, level_weights = level(task_inputs, shared_input,
                                                             training=training)
            weights.update({self._key(i, k): w for k, w in level_weights.items()})
        return task_inputs, weights

    def task_variables(self, task):
        return [v for level in self.cgc for v in level.task_variables(task)]

    def gate_experts(self):
        return {self._key(i, k): columns for i, level in enumerate(self.cgc)
                for k, columns in level.gate_experts().items()}

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "task_experts": self.task_experts,
                "units": self.units, "levels": self.levels, "dropout": self.dropout, "l2": self.l2}
