"""Candidate inputs: what a head reads besides its user representation, each kind one entry of KINDS.

A head declares the kinds it reads (Head.candidate_inputs, decided at build by head_inputs from
the model's configuration); the model joins them, in that order, for the head's tower. A kind
is a function of the batch (CandidateInputs): the model's embeddings and layers, the batch's
inputs, and the parts of the user representation (RepresentationModel.representation_parts,
e.g. DUPN's interest vector). A new kind (say a target attention over per-step vectors the
representation carries) is one more entry of KINDS and of the tasks' declarations.
"""
from __future__ import annotations

from typing import NamedTuple

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


class InterestTerms(NamedTuple):
    """interest_terms(candidate, interest) not yet computed, as serving hands them to the first
    layer of the ctr head (models.towers.JoinedDense). The terms are linear in the candidate, with
    coefficients from the user's interests, so when one user's interests [1, K * D] serve every
    candidate, that layer folds them into its kernel: candidate x (Σ_k interest_k ⊙ its kernel
    rows), one [D, units] matrix per request instead of K * D + K columns per candidate."""
    candidate: tf.Tensor
    interest: tf.Tensor

    @property
    def width(self) -> int:
        return self.interest.shape[-1] + self.interest.shape[-1] // self.candidate.shape[-1]

    def terms(self) -> tf.Tensor:
        return interest_terms(self.candidate, self.interest)

    def folded(self, kernel: tf.Tensor) -> tf.Tensor:
        """[D, units]: what the candidate multiplies for terms() x kernel [width, units], with
        one user's interests: Σ_k i_k ⊙ (the rows of candidate ⊙ i_k + the row of
        candidate · i_k)."""
        width = self.candidate.shape[-1]
        heads = self.interest.shape[-1] // width
        interests = tf.reshape(self.interest[0], [heads, width])              # [K, D]
        products = tf.reshape(kernel[:heads * width], [heads, width, -1])     # [K, D, units]
        return (tf.reduce_sum(interests[..., None] * products, 0)
                + tf.matmul(interests, kernel[heads * width:], transpose_a=True))


def join_columns(parts: list):
    """The parts side by side [B, Σ widths], or, when one is InterestTerms (serving), the tuple of
    parts in that order for JoinedDense to multiply (folded_product)."""
    if any(isinstance(p, InterestTerms) for p in parts):
        return tuple(parts)
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)


def columns(joined) -> tf.Tensor:
    """join_columns' result as one tensor [B, Σ widths]."""
    if not isinstance(joined, tuple):
        return joined
    return tf.concat([p.terms() if isinstance(p, InterestTerms) else p for p in joined], axis=-1)


def column_product(joined, kernel: tf.Tensor) -> tf.Tensor:
    """join_columns' result x kernel [Σ widths, units] -> [B, units]. A tuple whose interests are
    one user's is multiplied folded: the kernel rows are summed per tensor they multiply (the
    candidate's own rows, when it is a part itself, with the folded interest terms), then one
    product. Otherwise (rows that each have their own user) the columns are joined."""
    if not isinstance(joined, tuple):
        return tf.matmul(joined, kernel)
    terms = [p for p in joined if isinstance(p, InterestTerms)]
    one_user = tf.reduce_all([tf.equal(tf.shape(p.interest)[0], 1) for p in terms])
    return tf.cond(one_user, lambda: folded_product(joined, kernel),
                   lambda: tf.matmul(columns(joined), kernel))


def folded_product(joined: tuple, kernel: tf.Tensor) -> tf.Tensor:
    """column_product with every InterestTerms' interests one user's."""
    tensors, rows, offset = {}, {}, 0                  # by id(): the tensor, its summed rows
    for part in joined:
        folds = isinstance(part, InterestTerms)
        width = part.width if folds else int(part.shape[-1])
        x, block = part.candidate if folds else part, kernel[offset:offset + width]
        block = part.folded(block) if folds else block
        tensors[id(x)] = x
        rows[id(x)] = rows[id(x)] + block if id(x) in rows else block
        offset += width
    if len(tensors) == 1:
        (key, x), = tensors.items()
        return tf.matmul(x, rows[key])
    return tf.matmul(tf.concat(list(tensors.values()), -1), tf.concat(list(rows.values()), 0))


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

    def join(self, kinds):
        """The kinds side by side [B, Σ widths] (join_columns: in serving, a tuple when the
        interest match is among them); None for none."""
        return join_columns([self[k] for k in kinds]) if kinds else None


KINDS = {
    # The candidate item [B, item_dim], through the same tables as the behaviour sequence.
    "item": lambda c: c.model.embeddings.target_item(c.inputs),
    "talent": lambda c: c.model.embeddings.talent(c.inputs),
    "shop": lambda c: c.model.embeddings.shop(c.inputs),
    "rank_features": lambda c: tf.cast(c.inputs["rank_features"], tf.float32),
    # Reads the representation's interest part (DUPN with model.interest_match).
    "interest_match": lambda c: (InterestTerms(c["item"], c.parts["interest"]) if c.serving
                                 else interest_terms(c["item"], c.parts["interest"])),
    # Reads the representation's per-step keys (DUPN with model.target_attention).
    "target_attention": lambda c: c.model.target.match(c.parts["keys"], c["item"]),
    # Reads the representation's per-step ids and weights (DUPN with model.id_match).
    "id_match": lambda c: c.model.matcher.match(c.parts["ids"], c.inputs, serving=c.serving),
    # Reads the representation's query fingerprints (DUPN with model.query_match).
    "query_match": lambda c: c.model.query_matcher.match(c.parts["query"], c.inputs),
}
