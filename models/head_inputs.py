"""Candidate inputs: what a head reads besides its user representation, each kind one entry of KINDS.

A head declares the kinds it reads (Head.candidate_inputs, decided at build by head_inputs from
the model's configuration); the model joins them, in that order, for the head's tower. A kind
is a function of the batch (CandidateInputs): the model's embeddings and layers, the batch's
inputs, and the parts of the user representation (RepresentationModel.representation_parts,
e.g. DUPN's interest vector). A new kind (say a target attention over per-step vectors the
representation carries) is one more entry of KINDS and of the tasks' declarations.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf

# The kinds each task's head reads in the paper's model; head_inputs adds our extensions.
READS = {"ctr": ("item",), "l2r": ("rank_features",), "talent": ("talent",), "shop": ("shop",),
         "power": ()}


def head_inputs(task: str, interest_match: bool = False, ctr_rank_features: bool = False,
                target_attention: bool = False, id_match: bool = False,
                query_match: bool = False) -> tuple:
    """The kinds the head of `task` reads under the model's configuration: the ctr head also
    reads the interest vector's match with the item (model.interest_match), the target
    attention's match of the item with the history (model.target_attention) and the ranking
    features (model.ctr_rank_features; the wide baselines' logits always do) and the counts of
    the history's behaviours that share its ids (model.id_match) and the counts of the query's
    terms equal to its tags, brand, category or shop (model.query_match)."""
    extensions = {"ctr": (("interest_match",) if interest_match else ())
                  + (("target_attention",) if target_attention else ())
                  + (("id_match",) if id_match else ())
                  + (("query_match",) if query_match else ())
                  + (("rank_features",) if ctr_rank_features else ())}
    return READS[task] + extensions.get(task, ())


def interest_terms(candidate: tf.Tensor, interest: tf.Tensor) -> tf.Tensor:
    """[candidate ⊙ interest_k for each k, candidate · interest_k for each k]: how much each of
    the user's attended interests resembles the item, explicit (an MLP over a concatenation
    learns products slowly).

    Args:
      candidate: [B, D]; interest: [B, K * D], K interests of width D side by side.
    """
    width = candidate.shape[-1]
    interests = tf.reshape(interest, [-1, interest.shape[-1] // width, width])   # [B, K, D]
    product = candidate[:, None] * interests
    return tf.concat([tf.reshape(product, [-1, interest.shape[-1]]),
                      tf.reduce_sum(product, -1)], axis=-1)


def interest_match(candidate: tf.Tensor, interest: tf.Tensor) -> tf.Tensor:
    """[candidate, interest_terms]: what the ctr head reads as "item" then "interest_match"."""
    return tf.concat([candidate, interest_terms(candidate, interest)], axis=-1)


class CandidateInputs:
    """One batch's candidate inputs, each kind computed once however many heads read it.

    Args:
      model: the model (its embeddings, and any layer a kind needs).
      inputs: the batch's features.
      parts: {name: [B, width]} the user representation's parts (representation_parts).
      serving: candidates scored against representations (score_items), which may be one
        user's [1, width] for all of them.
    """

    def __init__(self, model, inputs: dict, parts: dict | None = None, serving: bool = False):
        self.model = model
        self.inputs = inputs
        self.parts = parts or {}
        self.serving = serving
        self._cache = {}

    def __getitem__(self, kind: str) -> tf.Tensor:
        if kind not in self._cache:
            if kind not in KINDS:
                raise ValueError(f"unknown candidate input '{kind}' (kinds: {', '.join(KINDS)})")
            self._cache[kind] = KINDS[kind](self)
        return self._cache[kind]

    def join(self, kinds) -> tf.Tensor | None:
        """The kinds side by side [B, Σ widths]; None for none."""
        if not kinds:
            return None
        tensors = [self[k] for k in kinds]
        return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis=-1)


KINDS = {
    # The candidate item [B, item_dim], through the same tables as the behaviour sequence.
    "item": lambda c: c.model.embeddings.target_item(c.inputs),
    "talent": lambda c: c.model.embeddings.talent(c.inputs),
    "shop": lambda c: c.model.embeddings.shop(c.inputs),
    "rank_features": lambda c: tf.cast(c.inputs["rank_features"], tf.float32),
    # Reads the representation's interest part (DUPN with model.interest_match).
    "interest_match": lambda c: interest_terms(c["item"], c.parts["interest"]),
    # Reads the representation's per-step keys (DUPN with model.target_attention).
    "target_attention": lambda c: c.model.target.match(c.parts["keys"], c["item"]),
    # Reads the representation's per-step ids and weights (DUPN with model.id_match).
    "id_match": lambda c: c.model.matcher.match(c.parts["ids"], c.inputs, serving=c.serving),
    # Reads the representation's query fingerprints (DUPN with model.query_match).
    "query_match": lambda c: c.model.query_matcher.match(c.parts["query"], c.inputs),
}
