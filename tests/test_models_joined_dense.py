"""JoinedDense: a Dense over [left, right] without the join, so one user's representation meets the
first layer once for all candidates; equal to Dense over the joined rows, under Dense's names.
One user's interest terms fold into its kernel."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from models.head_inputs import InterestTerms, column_product, columns, interest_terms, join_columns
from models.towers import JoinedDense, MLPTower


def test_equals_dense_over_the_joined_rows_and_broadcasts_one_left_row():
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=(1, 6)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    joined = JoinedDense(4, activation="relu", name="first")
    out = joined((tf.constant(left), tf.constant(right))).numpy()
    dense = keras.layers.Dense(4, activation="relu")
    dense.build([None, 9])
    dense.set_weights(joined.get_weights())
    expected = dense(np.concatenate([np.repeat(left, 5, 0), right], 1)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.shape == (5, 4) and (out > 0).any() and (out == 0).any()
    # Rows of left, one per right row, give the same.
    tiled = joined((tf.constant(np.repeat(left, 5, 0)), tf.constant(right))).numpy()
    np.testing.assert_allclose(tiled, out, rtol=1e-6)
    assert [w.shape for w in joined.weights] == [(9, 4), (4,)]
    assert [w.name for w in joined.weights] == ["first/kernel:0", "first/bias:0"]


def test_an_mlp_tower_scores_one_users_row_against_many_candidates_as_against_copies():
    tower = MLPTower(1, [8, 4], prefix="ctr")
    rng = np.random.default_rng(1)
    user, items = tf.constant(rng.normal(size=(1, 6)), tf.float32), tf.constant(rng.normal(size=(7, 3)), tf.float32)
    one = tower(user, items).numpy()
    copies = tower(tf.repeat(user, 7, 0), items).numpy()
    assert one.shape == copies.shape == (7,)
    np.testing.assert_allclose(one, copies, rtol=1e-5, atol=1e-6)
    assert isinstance(tower.hidden[0], JoinedDense) and tower.hidden[0].kernel.shape == (9, 8)
    # Without candidate inputs the tower is a plain MLP of the representation.
    plain = MLPTower(1, [8], prefix="power", candidate=False)
    assert plain(user).shape == (1,) and type(plain.hidden[0]) is keras.layers.Dense


def test_interest_terms_fold_into_the_kernel_for_one_users_interests():
    rng = np.random.default_rng(2)
    items = tf.constant(rng.normal(size=(7, 5)), tf.float32)              # 7 candidates, D = 5
    other = tf.constant(rng.normal(size=(7, 3)), tf.float32)
    interest = tf.constant(rng.normal(size=(1, 10)), tf.float32)          # K = 2 interests
    terms = InterestTerms(items, interest)
    assert terms.width == 12
    kernel = tf.constant(rng.normal(size=(5 + 12 + 3, 4)), tf.float32)
    joined = join_columns([items, terms, other])
    assert isinstance(joined, tuple) and columns(joined).shape == (7, 20)
    expected = np.concatenate([items, interest_terms(items, interest), other], 1) @ kernel.numpy()
    np.testing.assert_allclose(column_product(joined, kernel).numpy(), expected, rtol=1e-4,
                               atol=1e-5)
    # The terms alone, and each row with its own interests (no fold): the same products.
    alone = column_product(join_columns([terms]), kernel[5:17]).numpy()
    expected_alone = interest_terms(items, interest).numpy() @ kernel[5:17].numpy()
    np.testing.assert_allclose(alone, expected_alone, rtol=1e-4, atol=1e-5)
    rows = join_columns([items, InterestTerms(items, tf.repeat(interest, 7, 0)), other])
    np.testing.assert_allclose(column_product(rows, kernel).numpy(), expected, rtol=1e-4, atol=1e-5)
    # Without interest terms the parts are simply joined.
    assert not isinstance(join_columns([items, other]), tuple)
