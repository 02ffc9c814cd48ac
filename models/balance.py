"""Loss balancing between the task heads: fixed weights, uncertainty, GradNorm, DWA and PCGrad.

A balancer turns the heads' losses of a batch into the gradients the optimizer applies and
reports the per-task weights of its latest step (metrics `<task>_loss_weight`).
MultiTaskModel.train_step calls, in this order:
  objective(losses, counts)  inside the gradient tape: (the loss the method minimises, weights [T])
  gradients(tape, ...)       the gradient of every trainable variable (None where it has none);
                             per-task gradients come from the heads' own loss tensors, so a
                             variable one task's loss does not reach gets None from that task
  update(losses, counts)     after the optimizer's step: the method's own state
Its state is variables made in the constructor, one set per task and named after it, so
checkpoints keep it, parameter servers hold it, and a model given a new head (a warm start with
allow_new_layers) still finds the old tasks' state. A task without rows in a batch has loss 0 and
count 0: every method leaves it out of that step (no gradient on its weight, no NaN, its loss
ratio stays 1).
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

METHODS = ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad")
# DWA's "epoch": we train few epochs, so its loss means are over windows of this many steps.
DWA_WINDOW_STEPS = 100
# GradNorm weights are kept above this before they are renormalised to sum to T.
GRADNORM_MIN_WEIGHT = 1e-3


def make_balancer(spec: dict | None, tasks, weights) -> "LossBalancer":
    """The balancer of a models.config.balance_spec (None: fixed), for the heads' tasks and
    configured weights."""
    spec = dict(spec or {"method": "fixed"})
    method = spec.get("method", "fixed")
    if method == "fixed":
        return FixedWeights(tasks, weights)
    if method == "uncertainty":
        return UncertaintyWeighting(tasks)
    if method == "gradnorm":
        return GradNorm(tasks, spec.get("gradnorm_alpha", 1.5))
    if method == "dwa":
        return DynamicWeightAverage(tasks, spec.get("dwa_temperature", 2.0),
                                    spec.get("dwa_window", DWA_WINDOW_STEPS))
    if method == "pcgrad":
        return PCGrad(tasks, weights)
    raise ValueError(f"unknown loss_balance '{method}' (methods: {', '.join(METHODS)})")


@keras.saving.register_keras_serializable(package="dupn")
class LatestValue(keras.metrics.Metric):
    """The value given at the latest update: a weight as it is now, not averaged since the epoch
    began (pipeline.training.train logs every checkpoint interval of a single long epoch)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_weight("value", initializer="zeros",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def update_state(self, value, sample_weight=None):
        self.value.assign(tf.cast(value, self.dtype))

    def result(self):
        return tf.identity(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def _present(counts: tf.Tensor) -> tf.Tensor:
    """[T] float: 1 for tasks with rows in the batch."""
    return tf.cast(counts > 0, tf.float32)


class LossBalancer(keras.layers.Layer):
    """The common interface; on its own it applies the given constant weights.

    Args:
      tasks: the heads' tasks, in the model's head order.
    """

    persistent_tape = False   # True when gradients() takes more than one gradient from the tape

    def __init__(self, tasks, **kwargs):
        kwargs.setdefault("name", "loss_balance")
        super().__init__(**kwargs)
        self.tasks = list(tasks)
        self.weight_trackers = [LatestValue(f"{t}_loss_weight") for t in self.tasks]
        self.built = True   # every variable is made here

    def objective(self, losses: tf.Tensor, counts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(Σ weight × loss (+ the method's own terms), weights [T]).

        Args:
          losses: [T] the heads' mean losses; counts: [T] their rows in the batch.
        """
        raise NotImplementedError

    def gradients(self, tape, target, task_losses, counts, regularization, variables, replicas,
                  shared_layer=None) -> list:
        """One gradient (or None) per variable.

        Args:
          tape: the tape that recorded target, task_losses and regularization.
          target: (objective + regularization) / replicas, what plain training differentiates.
          task_losses: the heads' loss tensors [T scalars] (not their stack: through a stack,
            every task would reach every variable, with zeros).
          counts: [T] the heads' rows in the batch.
          replicas: replicas in sync (their gradients are summed when applied).
          shared_layer: the model's last_shared_layer (GradNorm measures gradients there).
        """
        return tape.gradient(target, variables)

    def update(self, losses: tf.Tensor, counts: tf.Tensor) -> None:
        """The method's state after the optimizer's step (nothing by default)."""

    def task_variables(self, task: str) -> list:
        """The trainable variables of one task's weight (optimizer_order puts them by its head)."""
        return []

    def update_metrics(self, weights: tf.Tensor) -> None:
        for i, tracker in enumerate(self.weight_trackers):
            tracker.update_state(weights[i])


class FixedWeights(LossBalancer):
    """The heads' configured weights: Σ weight_t × L_t, exactly as without a balancer."""

    def __init__(self, tasks, weights, **kwargs):
        super().__init__(tasks, **kwargs)
        self.fixed = [float(w) for w in weights]

    def objective(self, losses, counts):
        total = tf.add_n([w * losses[i] for i, w in enumerate(self.fixed)])
        return total, tf.constant(self.fixed, tf.float32)


class UncertaintyWeighting(LossBalancer):
    """Kendall, Gal & Cipolla (CVPR 2018) with the regulariser of Liebel & Körner (2018).

    Σ_t [exp(-s_t) L_t + log(1 + exp(s_t))] over the tasks with rows, s_t = log σ_t² learnt.
    exp(-s_t) is Kendall's weight of a classification loss. Kendall's own regulariser s_t makes
    the total Σ (1 + log L_t) at its best s_t: negative once a loss is below 1/e (most of ours),
    with an easy task's weight growing as 1/L_t; log(1 + σ²) keeps the total positive and the
    weight growing about as 1/√L_t. A task without rows leaves its term out, so its s_t does not
    drift.
    """

    def __init__(self, tasks, **kwargs):
        super().__init__(tasks, **kwargs)
        self.log_variances = [self.add_weight(f"{t}_log_variance", shape=[], initializer="zeros",
                                              trainable=True) for t in self.tasks]

    def objective(self, losses, counts):
        s = tf.stack(self.log_variances)
        weights = tf.exp(-s)
        terms = weights * losses + tf.math.softplus(s)
        return tf.reduce_sum(_present(counts) * terms), weights

    def task_variables(self, task):
        return [self.log_variances[self.tasks.index(task)]]


def gradnorm_weight_gradients(weights, grad_norms, losses, initial_losses, present, alpha):
    """∂/∂w of GradNorm's loss Σ_t |G_t - mean(G) r_t^α| over the tasks present, target constant.

    G_t = w_t ‖∇_W L_t‖, r_t = (L_t / L_t(0)) / mean over tasks of (L / L(0)), so
    ∂/∂w_t = sign(G_t - target_t) ‖∇_W L_t‖: a task whose loss fell less than the others'
    (r_t > 1) has a target above its G_t and its weight grows.

    Args (all [T]):
      weights: w_t; grad_norms: ‖∇_W L_t‖; losses: L_t;
      initial_losses: L_t(0) (> 0 where present); present: 1 for tasks with rows;
      alpha: the restoring force.
    """
    n = tf.maximum(tf.reduce_sum(present), 1.0)
    g = weights * grad_norms
    mean_g = tf.reduce_sum(present * g) / n
    ratios = present * tf.math.divide_no_nan(losses, initial_losses)
    r = tf.math.divide_no_nan(ratios, tf.reduce_sum(ratios) / n)
    target = mean_g * tf.pow(r, alpha)
    return present * tf.sign(g - target) * grad_norms


class GradNorm(LossBalancer):
    """Chen, Badrinarayanan, Lee & Rabinovich (ICML 2018).

    Learnt weights w_t, renormalised to sum to T after every step (and kept above
    GRADNORM_MIN_WEIGHT); the network follows Σ w_t L_t with w held constant, the weights follow
    the gradient of the GradNorm loss (gradnorm_weight_gradients) through the same optimizer.
    W is the model's last_shared_layer; L_t(0) is a task's first loss, kept in a variable (0 until
    the task has had rows).
    """

    persistent_tape = True

    def __init__(self, tasks, alpha: float = 1.5, **kwargs):
        super().__init__(tasks, **kwargs)
        self.alpha = float(alpha)
        self.learnt_weights = [self.add_weight(f"{t}_gradnorm_weight", shape=[],
                                               initializer="ones", trainable=True)
                               for t in self.tasks]
        self.initial_losses = [self.add_weight(f"{t}_initial_loss", shape=[], initializer="zeros",
                                               trainable=False) for t in self.tasks]

    def objective(self, losses, counts):
        weights = tf.stop_gradient(tf.stack(self.learnt_weights))
        return tf.reduce_sum(weights * losses), weights

    def gradients(self, tape, target, task_losses, counts, regularization, variables, replicas,
                  shared_layer=None):
        if shared_layer is None:
            raise ValueError("loss_balance gradnorm needs the model's last shared layer "
                             "(this model has none)")
        gradients = tape.gradient(target, variables)
        shared = shared_layer.trainable_variables
        norms = tf.stack([tf.linalg.global_norm(tape.gradient(loss, shared))
                          for loss in task_losses])
        losses = tf.stack(task_losses)
        initial = tf.stack(self.initial_losses)
        initial = tf.where(initial > 0, initial, losses)   # a task's first step: ratio 1
        weight_gradients = gradnorm_weight_gradients(
            tf.stack(self.learnt_weights), norms, losses, initial, _present(counts),
            self.alpha) / replicas
        by_variable = {w.ref(): weight_gradients[i] for i, w in enumerate(self.learnt_weights)}
        return [by_variable.get(v.ref(), g) for v, g in zip(variables, gradients)]

    def update(self, losses, counts):
        present = counts > 0
        for i, initial in enumerate(self.initial_losses):
            initial.assign(tf.where((initial == 0.0) & present[i], losses[i], initial))
        weights = tf.maximum(tf.stack(self.learnt_weights), GRADNORM_MIN_WEIGHT)
        weights = weights * (len(self.tasks) / tf.reduce_sum(weights))
        for i, w in enumerate(self.learnt_weights):
            w.assign(weights[i])

    def task_variables(self, task):
        return [self.learnt_weights[self.tasks.index(task)]]


def dwa_weights(ratios: tf.Tensor, temperature: float) -> tf.Tensor:
    """T softmax(ratios / temperature): DWA's weights from L_t(k-1) / L_t(k-2), [T]."""
    return tf.cast(tf.size(ratios), tf.float32) * tf.nn.softmax(ratios / temperature)


class DynamicWeightAverage(LossBalancer):
    """Liu, Johns & Davison (CVPR 2019): w_t = T softmax((L_t(k-1) / L_t(k-2)) / temperature).

    The paper's k counts epochs; here it counts windows of `window` steps, L_t(k) being the mean
    loss over the window's steps where the task had rows. Weights are 1 until two windows are
    complete, and a task's ratio is 1 while either window has no rows of it.

    State: a ring of the last three windows (per task: loss sums and counts; shared: the window
    each slot holds) and a step counter. A step resets its slot when the slot still holds an older
    window, so workers that update it concurrently under parameter servers can at worst lose a
    step's loss from a mean, never mix windows up.
    """

    SLOTS = 3

    def __init__(self, tasks, temperature: float = 2.0, window: int = DWA_WINDOW_STEPS, **kwargs):
        super().__init__(tasks, **kwargs)
        self.temperature = float(temperature)
        self.window = int(window)
        self.steps = self.add_weight("dwa_steps", shape=[], dtype=tf.int64, initializer="zeros",
                                     trainable=False)
        self.slot_window = self.add_weight(
            "dwa_slot_window", shape=[self.SLOTS], dtype=tf.int64, trainable=False,
            initializer=keras.initializers.Constant(-1))
        self.loss_sums = [self.add_weight(f"{t}_dwa_loss_sums", shape=[self.SLOTS],
                                          initializer="zeros", trainable=False)
                          for t in self.tasks]
        self.loss_counts = [self.add_weight(f"{t}_dwa_loss_counts", shape=[self.SLOTS],
                                            initializer="zeros", trainable=False)
                            for t in self.tasks]

    def _window_means(self, window):
        """([T] mean losses of `window`, [T] bool: the mean exists)."""
        slot = window % self.SLOTS
        held = (window >= 0) & (tf.gather(self.slot_window, slot) == window)
        sums = tf.stack([tf.gather(s, slot) for s in self.loss_sums])
        counts = tf.stack([tf.gather(c, slot) for c in self.loss_counts])
        return tf.math.divide_no_nan(sums, counts), held & (counts > 0)

    def current_weights(self) -> tf.Tensor:
        window = self.steps // self.window
        last, has_last = self._window_means(window - 1)
        before, has_before = self._window_means(window - 2)
        ratios = tf.where(has_last & has_before & (before > 0),
                          tf.math.divide_no_nan(last, before), 1.0)
        return dwa_weights(ratios, self.temperature)

    def objective(self, losses, counts):
        weights = self.current_weights()
        return tf.reduce_sum(weights * losses), weights

    def update(self, losses, counts):
        window = self.steps // self.window
        slot = tf.one_hot(window % self.SLOTS, self.SLOTS)
        stale = tf.cast(tf.gather(self.slot_window, window % self.SLOTS) != window, tf.float32)
        keep = 1.0 - slot * stale
        present = _present(counts)
        for i in range(len(self.tasks)):
            self.loss_sums[i].assign(self.loss_sums[i] * keep + slot * losses[i] * present[i])
            self.loss_counts[i].assign(self.loss_counts[i] * keep + slot * present[i])
        self.slot_window.assign(tf.where(slot > 0, window, self.slot_window))
        self.steps.assign_add(1)


def pcgrad_project(task_gradients: tf.Tensor) -> tf.Tensor:
    """PCGrad's projection of flattened per-task gradients [T, P], each in its own random order.

    g_i goes through the other tasks j in random order; when g_i · g_j < 0 it loses its part along
    g_j: g_i -= (g_i · g_j) / ‖g_j‖² g_j (against the original g_j). A zero g_j (a task without
    rows) conflicts with nothing. Returns the projected gradients [T, P].
    """
    count = task_gradients.shape[0]
    projected = []
    for i in range(count):
        g = task_gradients[i]
        order = tf.random.shuffle(tf.range(count))
        for k in range(count):
            j = order[k]
            other = tf.gather(task_gradients, j)
            dot = tf.reduce_sum(g * other)
            conflict = (dot < 0.0) & (j != i)
            step = tf.math.divide_no_nan(dot, tf.reduce_sum(other * other))
            g = g - tf.where(conflict, step, 0.0) * other
        projected.append(g)
    return tf.stack(projected)


class _TaskParts:
    """One shared variable's per-task gradients as flat vectors of the same length, and back.

    An embedding table's gradients are IndexedSlices over the rows a batch looked up; they become
    dense over the union of those rows only (a whole table per task would not fit).
    """

    def __init__(self, gradients: list):
        given = [g for g in gradients if g is not None]
        self.sparse = all(isinstance(g, tf.IndexedSlices) for g in given)
        if self.sparse:
            self.dense_shape = given[0].dense_shape
            self.rows, position = tf.unique(tf.concat([g.indices for g in given], 0))
            self.row_shape = tf.shape(given[0].values)[1:]
            positions = iter(tf.split(position, [tf.size(g.indices) for g in given]))
            size = tf.size(self.rows)
            self.parts = [None if g is None else tf.reshape(
                tf.math.unsorted_segment_sum(g.values, next(positions), size), [-1])
                for g in gradients]
        else:
            self.shape = tf.shape(tf.convert_to_tensor(given[0]))
            self.parts = [None if g is None else tf.reshape(tf.convert_to_tensor(g), [-1])
                          for g in gradients]
        self.size = tf.size(next(p for p in self.parts if p is not None))
        self.parts = [tf.zeros([self.size]) if p is None else p for p in self.parts]

    def rebuild(self, flat: tf.Tensor):
        if self.sparse:
            values = tf.reshape(flat, tf.concat([[-1], self.row_shape], 0))
            return tf.IndexedSlices(values, self.rows, self.dense_shape)
        return tf.reshape(flat, self.shape)


def _add(a, b):
    """Sum of two gradients, either None, dense or IndexedSlices."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


class PCGrad(FixedWeights):
    """Yu, Kumar, Gupta, Levine, Hausman & Finn (NeurIPS 2020): projecting conflicting gradients.

    Per-task gradients of weight_t × L_t (the configured weights) on the shared variables are
    projected (pcgrad_project) and summed; a variable only one task's loss reaches (its head, and
    a baseline's per-task wide part) takes that task's gradient as it is; the regularization's
    gradient is added unprojected. Costs one backward pass per task.
    """

    persistent_tape = True

    def gradients(self, tape, target, task_losses, counts, regularization, variables, replicas,
                  shared_layer=None):
        count = len(self.tasks)
        per_task = [tape.gradient(loss, variables,
                                  output_gradients=tf.constant(self.fixed[t] / replicas))
                    for t, loss in enumerate(task_losses)]
        out = tape.gradient(regularization, variables,
                            output_gradients=tf.constant(1.0 / replicas))
        shared = []
        for v in range(len(variables)):
            reached = [t for t in range(count) if per_task[t][v] is not None]
            if len(reached) == 1:
                out[v] = _add(out[v], per_task[reached[0]][v])
            elif reached:
                shared.append((v, _TaskParts([per_task[t][v] for t in range(count)])))
        if shared:
            stacked = tf.stack([tf.concat([parts.parts[t] for _, parts in shared], 0)
                                for t in range(count)])
            summed = tf.reduce_sum(pcgrad_project(stacked), 0)
            pieces = tf.split(summed, [parts.size for _, parts in shared])
            for (v, parts), piece in zip(shared, pieces):
                out[v] = _add(out[v], parts.rebuild(piece))
        return out
