"""The multi-task Keras model: loss = Σ head weight × head loss + regularization, fit/evaluate ready.

Subclasses provide head_logits(inputs, training) -> {head: logits}. How training weights the
heads' losses is the model's balancer (models/balance.py, trainer.loss_balance; by default the
heads' configured weights). The train and test steps keep no Python-side state (losses and
metrics are tensors and Keras metrics), so the same model trains under ParameterServerStrategy.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from features.contract import FINGERPRINTED, Contract, fingerprint_name
from models.balance import make_balancer
from models.config import contract_from_config
from models.head_inputs import CandidateInputs
from models.heads import Head
from models.sharing import make_sharing

SCORED_ITEM_HEADS = ("ctr", "l2r")   # heads a serving item scorer computes from a representation


class MultiTaskModel(keras.Model):
    """Heads over a shared network; model(inputs) returns {head: probabilities}.

    Args:
      contract: models.config.contract_config(contract) (kept so the model can rebuild itself
        on load).
      heads: Head layers (models/heads.py), one per configured head.
      loss_balance: models.config.balance_spec of the training's loss balancing (None: fixed).
    """

    def __init__(self, contract: dict, heads: list[Head], loss_balance: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.contract = contract
        self.heads = list(heads)
        names = [h.task for h in self.heads]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"heads must be a non-empty list of distinct tasks, got {names}")
        self.loss_tracker = keras.metrics.Mean("loss")
        self.regularization_tracker = keras.metrics.Mean("regularization_loss")
        self.loss_balance = dict(loss_balance) if loss_balance else None
        self.balancer = make_balancer(self.loss_balance, names, [h.weight for h in self.heads])
        self.weight_average = None

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def average_weights(self, average) -> None:
        """Every training step also updates `average` (models/weight_average.py), which is saved
        beside the model, not in it (its checkpoint keys and exports stay the model's own)."""
        self.weight_average = average

    @property
    def last_shared_layer(self):
        """The last layer every head reads through (GradNorm's W), or None when there is none."""
        return None

    def head_logits(self, inputs: dict, training=False) -> dict:
        raise NotImplementedError

    def task_variables(self, task: str) -> list:
        """The trainable variables that belong to `task` alone (those a new task adds)."""
        return [v for h in self.heads if h.task == task for v in h.trainable_variables]

    def compile(self, optimizer="adagrad", **kwargs):
        """Keras compile (no loss argument: the heads own theirs). The optimizer's slots are
        created here when the model is built, so the train function is traced once, not twice."""
        super().compile(optimizer=optimizer, **kwargs)
        if self.built and hasattr(self.optimizer, "build"):
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=False):
        logits = self.head_logits(inputs, training=training)
        return {h.task: h.probabilities(logits[h.task]) for h in self.heads}

    def scores(self, inputs, training=False) -> dict:
        """model(inputs) and the heads' further scores (the ESMM ctr head's cvr and ctcvr)."""
        logits = self.head_logits(inputs, training=training)
        return {k: v for h in self.heads for k, v in h.scores(logits[h.task]).items()}

    def head_losses(self, labels: dict, logits: dict) -> dict:
        """{head: (mean loss over its rows, rows)}."""
        return {h.task: h.loss(labels, logits[h.task]) for h in self.heads}

    def task_losses(self, labels: dict, logits: dict) -> tuple[tf.Tensor, dict]:
        """(Σ configured weight × loss over heads, head_losses)."""
        per_head = self.head_losses(labels, logits)
        total = tf.add_n([h.weight * per_head[h.task][0] for h in self.heads])
        return total, per_head

    def regularization_loss(self) -> tf.Tensor:
        return tf.add_n(self.losses) if self.losses else tf.constant(0.0)

    def _update_metrics(self, labels, logits, per_head, total, regularization,
                        task_weights=None) -> dict:
        """Updates the metrics; the balancer's <task>_loss_weight ones only when training (given
        task_weights), and only then are they reported."""
        for h in self.heads:
            h.update_metrics(labels, logits[h.task], *per_head[h.task])
        self.loss_tracker.update_state(total)
        self.regularization_tracker.update_state(regularization)
        if task_weights is not None:
            self.balancer.update_metrics(task_weights)
            return {m.name: m.result() for m in self.metrics}
        training_only = {id(m) for m in self.balancer.weight_trackers}
        return {m.name: m.result() for m in self.metrics if id(m) not in training_only}

    # Nothing here branches on tensors, so AutoGraph has nothing to convert (and tracing is faster).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        inputs, labels = data[0], data[1]
        balancer = self.balancer
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape(persistent=balancer.persistent_tape) as tape:
            logits = self.head_logits(inputs, training=True)
            per_head = self.head_losses(labels, logits)
            task_losses = [per_head[h.task][0] for h in self.heads]
            losses = tf.stack(task_losses)
            counts = tf.stack([per_head[h.task][1] for h in self.heads])
            task_loss, task_weights = balancer.objective(losses, counts)
            regularization = self.regularization_loss()
            total = task_loss + regularization
            # Replicas' gradients are summed when applied; scale so the sum is the mean.
            scaled = total / replicas
        variables = self.trainable_variables
        gradients = balancer.gradients(tape, scaled, task_losses, counts, regularization,
                                       variables, replicas, self.last_shared_layer)
        del tape
        self.optimizer.apply_gradients(
            (g, v) for g, v in zip(gradients, variables) if g is not None)
        balancer.update(losses, counts)
        if self.weight_average is not None:
            self.weight_average.update(variables)
        return self._update_metrics(labels, logits, per_head, total, regularization, task_weights)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        inputs, labels = data[0], data[1]
        logits = self.head_logits(inputs, training=False)
        task_loss, per_head = self.task_losses(labels, logits)
        regularization = self.regularization_loss()
        return self._update_metrics(labels, logits, per_head, task_loss + regularization,
                                    regularization)

    def predict_step(self, data):
        inputs = data[0] if isinstance(data, (tuple, list)) else data
        return self(inputs, training=False)

    # Rebuilding on load: the model creates its variables by running on a dummy batch of its
    # contract, so weights saved in .keras files find every variable they belong to.
    def get_build_config(self):
        return {"contract": self.contract}

    def build_from_config(self, config):
        self(dummy_inputs(contract_from_config(self.contract)), training=False)

    def get_config(self):
        return {"contract": self.contract, "loss_balance": self.loss_balance and
                dict(self.loss_balance)}


class RepresentationModel(MultiTaskModel):
    """A model whose heads all read one user representation, so it splits for serving:
    user_representation(inputs) once per request, score_items(rep, inputs) per candidate.

    Between the representation and the heads sits the sharing structure (models/sharing.py):
    each head reads its task's output of it (hard sharing: the representation itself).
    Each head reads its candidate inputs (Head.candidate_inputs, models/head_inputs.py): item-side
    inputs, and parts of the representation (representation_parts), so the split holds.
    Subclasses set self.embeddings (FeatureEmbeddings) and implement user_representation.

    Args:
      contract, heads: as MultiTaskModel.
      sharing: models.config.sharing_config (None: hard).
      dropout, l2: of the sharing structure's layers.
      ctr_rank_features: model.ctr_rank_features, with which the heads were built (kept for
        get_config).
    """

    def __init__(self, contract: dict, heads: list[Head], sharing: dict | None = None,
                 dropout: float = 0.0, l2: float = 0.0, ctr_rank_features: bool = False,
                 **kwargs):
        super().__init__(contract, heads, **kwargs)
        self.ctr_rank_features = ctr_rank_features
        self.sharing_config = dict(sharing) if sharing else {"structure": "hard"}
        self.sharing = make_sharing(self.sharing_config, [h.task for h in self.heads], dropout, l2)

    def user_representation(self, inputs: dict, training=False) -> tf.Tensor:
        """[B, shared_dim] from the behaviour sequence, query and profile only."""
        raise NotImplementedError

    # Width of DUPN's interest vector at the end of the representation (0: none).
    interest_dim = 0

    @property
    def representation_parts(self) -> dict:
        """{name: width} of the vectors the user representation carries at its end, in order,
        for the heads' candidate inputs to read (DUPN's interest vector); the sharing structure
        reads what is before them. (A property: a dict attribute would be a checkpoint object.)"""
        return {}

    def split_representation(self, representation) -> tuple[tf.Tensor, dict]:
        """(what the sharing structure reads, {part: [B, width]} of representation_parts)."""
        parts, offset = {}, 0                          # offset: columns taken from the end
        for name, width in reversed(list(self.representation_parts.items())):
            parts[name] = representation[:, -(offset + width):(-offset or None)]
            offset += width
        shared = representation[:, :-offset] if offset else representation
        return shared, dict(reversed(list(parts.items())))

    def task_logits(self, task_representations: dict, inputs: dict, training=False,
                    tasks=None, parts=None, serving=False) -> dict:
        """{head: logits} of the heads (those in `tasks`), each reading its task's input and its
        candidate inputs, joined from the batch and the representation's parts (serving:
        head_inputs.CandidateInputs)."""
        candidates = CandidateInputs(self, inputs, parts, serving)
        return {h.task: h(task_representations[h.task], candidates.join(h.candidate_inputs),
                          training=training)
                for h in self.heads if tasks is None or h.task in tasks}

    def logits_from_representation(self, representation, inputs: dict, training=False,
                                   tasks=None) -> dict:
        shared, parts = self.split_representation(representation)
        task_representations, _ = self.sharing(shared, training=training)
        return self.task_logits(task_representations, inputs, training, tasks, parts)

    def head_logits(self, inputs, training=False):
        return self.logits_from_representation(self.user_representation(inputs, training),
                                               inputs, training)

    def task_variables(self, task):
        return self.sharing.task_variables(task) + super().task_variables(task)

    def score_items(self, representation, inputs: dict) -> dict:
        """{ctr, l2r (those configured): probabilities [B]} of candidates for given representations,
        and cvr, ctcvr when the ctr head is ESMM's.

        The sharing structure runs here, on the representation's rows, before they are repeated
        for the candidates: one user's [1, D] is mixed by its experts once, not once per item.

        Args:
          representation: [B, shared_dim] from user_representation, one row per candidate, or
            [1, shared_dim]: one user's, for all B candidates.
          inputs: the candidates' item_id, shop_id, brand_id, category_id, tags, rank_features.
        """
        shared, parts = self.split_representation(representation)
        task_representations, _ = self.sharing(shared, training=False)
        # The representations and parts stay [1, width] for one user: the towers and the
        # candidate inputs that read them broadcast (an MLP's first layer meets the user's row
        # once, models.towers.JoinedDense; the target attention's keys would be rows x N x 2d floats
        # copied). Logits that read no candidate are then repeated for the rows.
        logits = self.task_logits(task_representations, inputs, training=False,
                                  tasks=SCORED_ITEM_HEADS, parts=parts, serving=True)
        rows = tf.shape(inputs["item_id"])[:1]
        logits = {t: tf.broadcast_to(v, tf.concat([rows, tf.shape(v)[1:]], 0))
                  for t, v in logits.items()}
        return {k: v for h in self.heads if h.task in logits
                for k, v in h.scores(logits[h.task]).items()}

    def gate_weights(self, inputs: dict) -> dict:
        """{gate: [B, experts]} expert weights of each task's gate (mmoe, ple; {} otherwise), for
        analysis: rows sum to 1; columns named by self.sharing.gate_experts()."""
        shared, _ = self.split_representation(self.user_representation(inputs, training=False))
        return self.sharing(shared, training=False)[1]

    def get_config(self):
        return {**super().get_config(), "sharing": self.sharing_config,
                "ctr_rank_features": self.ctr_rank_features}


def dummy_inputs(contract: Contract, batch_size: int = 2) -> dict:
    """Zero-valued model inputs of the contract's shapes and dtypes (all padding), the parser's
    fingerprints (features.tfrecord.fingerprints) included."""
    inputs = {name: tf.zeros([batch_size, *f.shape], contract.input_dtype(name))
              for name, f in contract.model_inputs.items()}
    inputs.update({fingerprint_name(name): tf.zeros_like(inputs[name]) for name in FINGERPRINTED})
    return inputs

