"""The query match: fingerprints of raw strings in one shared space, hand-checked counts, padding
and price tokens never matching, and the serving split exact with it (model and exported parts)."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from configs.loader import load_config
from features.contract import Contract, fingerprint_name
from features.tfrecord import encode_example, hash_features
from models.dupn import build_model
from models.query_match import QueryMatch
from models_batches import assert_split_exact
from pipeline.bench.random_batch import random_examples
from pipeline.serving.export import (EXAMPLES, ITEM_FEATURES, REPRESENTATION, USER_FEATURES,
                                     make_parts)


def raw_candidates(tags, brand, category, shop):
    return {"tags": tf.constant(tags), "brand_id": tf.constant(brand),
            "category_id": tf.constant(category), "shop_id": tf.constant(shop)}


def test_fingerprints_share_one_space_and_blank_and_price_tokens_are_zero():
    contract = Contract.from_config(load_config("small"))
    hashed = hash_features({"query": tf.constant([["tag5", "B7", "", "price:3"]]),
                            "tags": tf.constant([["tag5", "", "x", "price:3"]]),
                            "brand_id": tf.constant(["b7"]), "category_id": tf.constant([""]),
                            "shop_id": tf.constant(["tag5"])}, contract)
    q, t = hashed["query_fp"].numpy()[0], hashed["tags_fp"].numpy()[0]
    assert q[0] == t[0] == hashed["shop_id_fp"].numpy()[0] > 0        # same string, any field
    assert q[1] == hashed["brand_id_fp"].numpy()[0] > 0                # case-folded
    assert q[2] == q[3] == t[1] == t[3] == hashed["category_id_fp"].numpy()[0] == 0
    assert q.max() < 2 ** 24                                           # exact in float32


def test_counts_by_field_and_padding_never_matches():
    layer = QueryMatch(terms=4)
    # Query of one request: terms 5, 7, 9 and a padding 0; three candidates.
    query = tf.constant([[5.0, 7.0, 9.0, 0.0]])
    candidate = {"tags_fp": tf.constant([[5, 9, 0, 0], [0, 0, 0, 0], [5, 5, 0, 0]], tf.int64),
                 "brand_id_fp": tf.constant([7, 0, 3], tf.int64),
                 "category_id_fp": tf.constant([9, 0, 0], tf.int64),
                 "shop_id_fp": tf.constant([1, 0, 0], tf.int64)}
    out = layer.match(query, candidate).numpy()
    # [tags, brand, category, shop, each / 3 terms, terms matched by any / 3]
    np.testing.assert_allclose(out[0], [2, 1, 1, 0, 2 / 3, 1 / 3, 1 / 3, 0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], np.zeros(9))       # all-empty candidate vs padding term
    # a tag held twice counts once
    np.testing.assert_allclose(out[2], [1, 0, 0, 0, 1 / 3, 0, 0, 0, 1 / 3], rtol=1e-6)
    # No query at all: nothing matches, even a candidate with empty fields.
    empty = layer.match(tf.zeros([1, 4]), candidate).numpy()
    np.testing.assert_allclose(empty, np.zeros((3, 9)))
    # One request's [1, Q] row for every candidate equals that row repeated.
    np.testing.assert_allclose(layer.match(tf.tile(query, [3, 1]), candidate).numpy(), out)


def test_counts_from_raw_strings_through_the_parser():
    contract = Contract.from_config(load_config("small"))
    raw = {"query": tf.constant([["kw1", "tag3", "b9", ""], ["kw1", "tag3", "b9", ""]]),
           **raw_candidates([["tag3", "", "", "price:2"], ["tag4", "", "", "price:2"]],
                            ["b9", "b8"], ["c1", "c1"], ["s1", "s1"])}
    hashed = hash_features(raw, contract)
    layer = QueryMatch(terms=4)
    out = layer.match(layer.request(hashed), hashed).numpy()
    np.testing.assert_allclose(out[:, :4], [[1, 1, 0, 0], [0, 0, 0, 0]])
    # A query term "price:2" never matches the price token.
    hashed = hash_features({**raw, "query": tf.constant([["price:2", "", "", ""]] * 2)}, contract)
    assert layer.match(layer.request(hashed), hashed).numpy().sum() == 0


def string_rows(contract, count, seed):
    """Random examples as raw strings ('' padding), queries naming the candidate's first tag or
    brand in some rows so that matches occur."""
    rows = random_examples(contract, count, seed=seed, tasks=("ctr",))
    out = {}
    for name, spec in contract.model_inputs.items():
        value = rows[name]
        if spec.table is not None:
            value = np.where(value == 0, "", np.char.add(f"{name[:2]}", value.astype(str)))
        out[name] = value
    out["tags"] = np.where(out["tags"] == "", "", np.char.add("t", out["tags"]))
    out["tags"][:, -1] = "price:3"
    out["query"][::2, 0] = out["tags"][::2, 0]
    out["query"][1::2, 1] = out["brand_id"][1::2]
    return {k: tf.constant(v) for k, v in out.items()}


def test_the_split_stays_exact_with_query_match():
    config = load_config("small", ["model.query_match=true"])
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    assert "query_match" in model.heads[0].candidate_inputs
    raw = string_rows(contract, 16, seed=3)
    hashed = hash_features(raw, contract)
    representation = model.user_representation(hashed)
    query = model.split_representation(representation)[1]["query"]
    np.testing.assert_array_equal(query.numpy(), hashed[fingerprint_name("query")].numpy())
    matches = model.query_matcher.match(query, hashed).numpy()
    assert (matches[:, :4] > 0).any(axis=1).mean() > 0.4              # the planted terms match
    assert_split_exact(model, hashed, representation)
    # The exported parts: the user part once per request, the item part per candidate, as the
    # whole model scores each row (raw strings in, hashing and fingerprints inside).
    parts = make_parts(model, contract)
    user = parts["user"].serve({k: raw[k] for k in USER_FEATURES})[REPRESENTATION]
    item = parts["item"].serve({**{k: raw[k] for k in ITEM_FEATURES}, REPRESENTATION: user})
    whole = parts["whole"].serve({k: raw[k] for k in USER_FEATURES + ITEM_FEATURES})
    np.testing.assert_allclose(item["ctr"].numpy(), whole["ctr"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole["ctr"].numpy(), model.scores(hashed)["ctr"].numpy(),
                               rtol=1e-5, atol=1e-6)
    # One request's representation [1, D] for all its candidates.
    one = parts["item"].serve({**{k: raw[k] for k in ITEM_FEATURES}, REPRESENTATION: user[:1]})
    single = model.score_items(tf.repeat(representation[:1], 16, axis=0), hashed)
    np.testing.assert_allclose(one["ctr"].numpy(), single["ctr"].numpy(), rtol=1e-5, atol=1e-6)
    # Serialized examples (the from_examples signature) fingerprint their strings alike.
    values = {k: v.numpy() for k, v in raw.items()}
    examples = [encode_example({k: np.asarray(v[r]).tolist() for k, v in values.items()}, contract)
                for r in range(16)]
    parsed = parts["whole"].serve_examples({EXAMPLES: tf.constant(examples)})
    np.testing.assert_allclose(parsed["ctr"].numpy(), whole["ctr"].numpy(), rtol=1e-5, atol=1e-6)


def test_the_switch_off_is_the_model_without_it():
    assert load_config("small").model.query_match is True        # on in configs/small.yaml
    config = load_config("small", ["model.query_match=false"])
    model = build_model(config, Contract.from_config(config))
    assert model.query_matcher is None and "query" not in model.representation_parts
    assert "query_match" not in model.heads[0].candidate_inputs
