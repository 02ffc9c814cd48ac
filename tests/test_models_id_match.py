"""The id match: hand-checked weighted counts per field, padding and missing ids ignored, weights
from the properties only where the attention reads them, and the serving split exact with it."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf

from configs.loader import load_config
from features.contract import Contract
from models.dupn import build_model
from models.id_match import IdMatch
from models_batches import assert_split_exact
from pipeline.bench.random_batch import random_batch


def sequence(item, shop, brand, category, tags):
    """Time-major sequence features of one user ([N, 1], tags [N, 1, T]) from per-step lists."""
    column = lambda values: tf.constant(values, tf.int64)[:, None]
    return {"seq_item_id": column(item), "seq_shop_id": column(shop),
            "seq_brand_id": column(brand), "seq_category_id": column(category),
            "seq_tags": tf.constant(tags, tf.int64)[:, None]}


def test_counts_weighted_matches_per_field_and_ignores_padding():
    layer = IdMatch(weightings=2, steps=3, tags=2)
    seq = sequence(item=[5, 6, 5], shop=[1, 1, 9], brand=[2, 3, 2], category=[7, 7, 7],
                   tags=[[4, 8], [8, 0], [4, 8]])
    valid = tf.constant([[1.0], [1.0], [0.0]])                       # the third step is padding
    properties = tf.constant([[[1.0]], [[2.0]], [[1.0]]])            # one property value per step
    layer.history(seq, valid, properties)
    layer.weigh.kernel.assign([[1.0, 0.0]])
    layer.weigh.bias.assign([0.0, 1.0])
    flat = layer.history(seq, valid, properties)
    candidate = {"item_id": tf.constant([5, 0], tf.int64), "shop_id": tf.constant([1, 1], tf.int64),
                 "brand_id": tf.constant([3, 3], tf.int64),
                 "category_id": tf.constant([7, 4], tf.int64),
                 "tags": tf.constant([[8, 4], [0, 0]], tf.int64)}
    softplus = lambda x: np.log1p(np.exp(x))
    w = np.array([[softplus(1.0), softplus(1.0)], [softplus(2.0), softplus(1.0)]])   # [step, k]
    m1 = np.array([[1, 0], [1, 1], [0, 1], [1, 1], [2, 1]])          # [field, step], candidate 1
    m2 = np.array([[0, 0], [1, 1], [0, 1], [0, 0], [0, 0]])          # item id 0 and no tags match nothing
    for serving in (False, True):                                    # compared, looked up
        out = layer.match(flat, candidate, serving=serving).numpy()  # one user's history, 2 items
        np.testing.assert_allclose(out[0], np.log1p(m1 @ w).ravel(), rtol=1e-5)
        np.testing.assert_allclose(out[1], np.log1p(m2 @ w).ravel(), rtol=1e-5)


def test_signed_weights_let_a_behaviour_count_against_the_candidate():
    # Strength 1 - p: the first step (p = -1) counts +2 x its decay, the second (p = 2) -1 x its
    # decay; both share the candidate's category, so that count is their signed sum, through asinh.
    layer = IdMatch(weightings=1, steps=2, tags=1, signed=True)
    seq = sequence(item=[5, 6], shop=[0, 0], brand=[0, 0], category=[7, 7], tags=[[0], [0]])
    properties = tf.constant([[[-1.0]], [[2.0]]])
    layer.history(seq, tf.ones([2, 1]), properties)
    layer.weigh.kernel.assign([[0.5]])
    layer.weigh.bias.assign([0.0])
    layer.strength.kernel.assign([[-1.0]])
    layer.strength.bias.assign([1.0])
    flat = layer.history(seq, tf.ones([2, 1]), properties)
    zero = tf.zeros([1], tf.int64)
    candidate = {"item_id": tf.constant([6], tf.int64), "shop_id": zero, "brand_id": zero,
                 "category_id": tf.constant([7], tf.int64), "tags": tf.zeros([1, 1], tf.int64)}
    softplus = lambda x: np.log1p(np.exp(x))
    w = np.array([2.0 * softplus(-0.5), -1.0 * softplus(1.0)])       # [step]
    for serving in (False, True):
        out = layer.match(flat, candidate, serving=serving).numpy()[0]   # item, shop, brand, cat, tags
        np.testing.assert_allclose(out, np.arcsinh([w[1], 0.0, 0.0, w.sum(), 0.0]), rtol=1e-5)
    assert out[3] < 0                                                  # the buy outweighs


def test_without_properties_every_behaviour_weighs_alike():
    layer = IdMatch(weightings=1, steps=2, tags=1)
    seq = sequence(item=[5, 5], shop=[1, 2], brand=[0, 0], category=[3, 3], tags=[[0], [0]])
    flat = layer.history(seq, tf.ones([2, 1])).numpy().reshape(2, -1)
    np.testing.assert_allclose(flat[:, :5], [[5, 1, 0, 3, 0], [5, 2, 0, 3, 0]])   # ids, tags
    assert flat[0, 5] == flat[1, 5] > 0                               # the weights


def history_candidates(inputs: dict) -> dict:
    """The batch with each row's candidate copied from its history's first step, so ids match."""
    out = dict(inputs)
    for field in ("item_id", "shop_id", "brand_id", "category_id", "tags"):
        out[field] = inputs[f"seq_{field}"][:, 0]
    return out


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("variant", ["dupn-all", "dupn-nobp"])
def test_the_split_stays_exact_with_id_match(variant, signed):
    config = load_config("small", [f"model.variant={variant}", "model.id_match=3",
                                   "model.target_attention=0", f"model.id_match_signed={signed}"])
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    inputs, _ = random_batch(contract, 16, seed=3)
    inputs = history_candidates(inputs)
    assert "id_match" in model.heads[0].candidate_inputs
    representation = model.user_representation(inputs)
    matches = model.matcher.match(model.split_representation(representation)[1]["ids"],
                                  inputs).numpy()
    assert (matches > 0).any(axis=1).mean() > 0.5                    # the counts see the copies
    assert_split_exact(model, inputs, representation)


def test_weights_read_properties_only_where_the_attention_does():
    widths = {}
    for variant in ("dupn-all", "dupn-bplstm"):
        config = load_config("small", [f"model.variant={variant}", "model.id_match=2"])
        widths[variant] = build_model(config, Contract.from_config(config)).matcher.weigh.kernel.shape[0]
    contract = Contract.from_config(load_config("small"))
    assert widths == {"dupn-all": contract.property_embedding_dim, "dupn-bplstm": 1}


def test_ids_beyond_float32_precision_still_match_exactly():
    # 2^24 and 2^24 + 1 are one float32; a quotient-remainder table hashes ids that far.
    big = 2 ** 24
    layer = IdMatch(weightings=1, steps=2, tags=1)
    seq = sequence(item=[big, big + 1], shop=[0, 0], brand=[0, 0], category=[0, 0], tags=[[0], [0]])
    flat = layer.history(seq, tf.ones([2, 1]))
    zero = tf.zeros([1], tf.int64)
    candidate = {"item_id": tf.constant([big + 1], tf.int64), "shop_id": zero, "brand_id": zero,
                 "category_id": zero, "tags": tf.zeros([1, 1], tf.int64)}
    weight = flat.numpy().reshape(2, -1)[1, -1]
    np.testing.assert_allclose(layer.match(flat, candidate).numpy()[0, 0], np.log1p(weight),
                               rtol=1e-6)                        # one match, not two


def test_one_users_steps_serve_candidates_in_a_graph_of_static_shapes():
    layer = IdMatch(weightings=2, steps=2, tags=1)
    seq = sequence(item=[5, 6], shop=[1, 2], brand=[0, 0], category=[3, 3], tags=[[7], [0]])
    flat = layer.history(seq, tf.ones([2, 1]))                        # [1, W]: one user
    candidate = {"item_id": tf.constant([5, 6, 9], tf.int64), "shop_id": tf.constant([1, 1, 1], tf.int64),
                 "brand_id": tf.zeros([3], tf.int64), "category_id": tf.constant([3, 4, 3], tf.int64),
                 "tags": tf.constant([[7], [0], [7]], tf.int64)}
    graph = tf.function(layer.match)(flat, candidate)                 # shapes known when traced
    np.testing.assert_allclose(graph, layer.match(flat, candidate), rtol=1e-6)


@pytest.mark.parametrize("signed", [False, True])
def test_serving_lookup_gives_the_counts_of_comparing_every_step(signed):
    # Serving one user's history against many candidates takes the lookup (per-id totals, a
    # binary search per candidate id); the same history copied to every row, or not serving,
    # takes the compare. Small id ranges so ids and tags repeat, zeros (padding, no id) included.
    rng = np.random.default_rng(5)
    steps, tags, candidates = 30, 3, 64
    layer = IdMatch(weightings=3, steps=steps, tags=tags, signed=signed)
    seq = sequence(*(rng.integers(0, 6, steps) for _ in range(4)), tags=rng.integers(0, 5, (steps, tags)))
    valid = tf.constant((np.arange(steps) < 25).astype(np.float32)[:, None])    # 5 padding steps
    properties = tf.constant(rng.normal(size=(steps, 1, 2)), tf.float32)
    flat = layer.history(seq, valid, properties)                                 # [1, W]
    candidate = {f: tf.constant(rng.integers(0, 6, candidates)) for f in
                 ("item_id", "shop_id", "brand_id", "category_id")}
    candidate["tags"] = tf.constant(rng.integers(0, 5, (candidates, tags)))
    looked_up = layer.match(flat, candidate, serving=True).numpy()
    assert (looked_up != 0).mean() > 0.5
    for compared in (layer.match(tf.tile(flat, [candidates, 1]), candidate, serving=True),
                     layer.match(flat, candidate)):
        np.testing.assert_allclose(looked_up, compared.numpy(), rtol=1e-6, atol=1e-7)
    # Training's graph holds the compare alone (no lookup branch to trace), serving's both.
    def ops(serving):
        graph = tf.function(lambda f, c: layer.match(f, c, serving)).get_concrete_function(
            flat, candidate).graph.as_graph_def()
        return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "Unique" in ops(True) and "Unique" not in ops(False)
