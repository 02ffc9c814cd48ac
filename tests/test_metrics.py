"""The numpy metrics against values computed by hand."""
import itertools
import math

import numpy as np
import pytest

from pipeline.evaluation import metrics


def test_auc_with_ties_by_hand():
    # positives score .8 .6 .4, negatives .6 .2 .4. Per positive, pairs won (ties 1/2):
    # .8 -> 3, .6 -> 0.5 + 1 + 1, .4 -> 0 + 1 + 0.5; 7 of 9 pairs.
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.8, 0.6, 0.6, 0.4, 0.2, 0.4]
    assert metrics.auc(labels, scores) == pytest.approx(7 / 9)


def test_weighted_auc_by_hand():
    # Same ranking; weights: positives .8:1 .6:2 .4:1, negatives .6:1 .2:1 .4:3.
    # Pairs weigh w_pos * w_neg: .8 -> 5, .6 -> 2 * (0.5 + 1 + 3) = 9, .4 -> 1 + 1.5 = 2.5;
    # total 16.5 of 4 * 5 = 20.
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.8, 0.6, 0.6, 0.4, 0.2, 0.4]
    weights = [1, 2, 1, 1, 1, 3]
    assert metrics.auc(labels, scores, weights) == pytest.approx(16.5 / 20)


def test_auc_extremes_and_order_only():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert metrics.auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # A monotone transform of the scores leaves the AUC unchanged.
    labels, scores = [1, 0, 1, 0, 0], [3.0, 1.0, 2.0, 2.0, -1.0]
    assert metrics.auc(labels, scores) == metrics.auc(labels, np.exp(scores))


def test_auc_matches_pair_count_on_random_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = rng.integers(0, 6, 60) / 5.0          # many ties
    weights = rng.uniform(0.1, 3.0, 60)
    won = total = 0.0
    for i, j in itertools.product(np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)):
        pair = weights[i] * weights[j]
        total += pair
        won += pair * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
    assert metrics.auc(labels, scores, weights) == pytest.approx(won / total)


def test_auc_undefined_with_one_class():
    assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.auc([1, 0], [0.1, 0.2], weights=[1.0, 0.0]))
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        metrics.auc([1, 0], [0.1, 0.2, 0.3])


def test_log_loss_by_hand():
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    probs = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    assert metrics.log_loss([0, 2], probs) == pytest.approx(-(math.log(0.7) + math.log(0.8)) / 2)
    # Weighted: the second sample counts three times.
    expected = -(math.log(0.8) + 3 * math.log(0.6)) / 4
    assert metrics.log_loss([1, 0], [0.8, 0.4], weights=[1, 3]) == pytest.approx(expected)
    # A certain wrong answer is clipped, not infinite.
    assert math.isfinite(metrics.log_loss([1], [0.0]))


def test_precision_recall_of_a_confusion_matrix_by_hand():
    labels = [0, 0, 1, 1, 1, 2]
    predicted = [0, 1, 1, 1, 2, 1]
    cm = metrics.confusion_matrix(labels, predicted, 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    precision, recall = metrics.precision_recall(labels, predicted, 4)
    # precision: column-wise 1/1, 2/4, 0/1, class 3 never predicted -> zero_division (0)
    np.testing.assert_allclose(precision, [1.0, 0.5, 0.0, 0.0])
    # recall: row-wise 1/2, 2/3, 0/1, class 3 never present -> zero_division (0)
    np.testing.assert_allclose(recall, [0.5, 2 / 3, 0.0, 0.0])
    precision, recall = metrics.precision_recall(labels, predicted, 4, zero_division=float("nan"))
    assert math.isnan(precision[3]) and math.isnan(recall[3]) and precision[2] == 0.0
    assert metrics.accuracy(labels, predicted) == pytest.approx(3 / 6)


def test_confusion_matrix_rejects_out_of_range_class():
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)


def test_nan_to_none_makes_json_safe_values():
    value = {"a": float("nan"), "b": [np.float32(0.5), np.nan], "c": np.int64(3)}
    assert metrics.nan_to_none(value) == {"a": None, "b": [0.5, None], "c": 3}


def test_gauc_by_hand_weights_users_by_samples_and_counts_single_class_users():
    # user a: labels 1 0 0, scores .9 .5 .7 -> the positive beats both: AUC 1, 3 samples.
    # user b: labels 1 0 1 0, scores .2 .4 .6 .1 -> pairs won: .2 > .1 and .6 > both: 3 of 4.
    # user c: all negative -> excluded. GAUC = (3 * 1 + 4 * 0.75) / 7 = 6 / 7.
    users = ["a", "b", "a", "c", "b", "a", "b", "b", "c"]
    labels = [1, 1, 0, 0, 0, 0, 1, 0, 0]
    scores = [0.9, 0.2, 0.5, 0.3, 0.4, 0.7, 0.6, 0.1, 0.8]
    result = metrics.group_auc(users, labels, scores)
    assert result["gauc"] == pytest.approx(6 / 7)
    assert result["gauc_users"] == 2 and result["gauc_users_excluded"] == 1
    # Weighted spread: sqrt((9 * (1 - 6/7)^2 + 16 * (0.75 - 6/7)^2) * 2 / 1) / 7.
    expected_se = math.sqrt((9 * (1 / 7) ** 2 + 16 * (0.75 - 6 / 7) ** 2) * 2) / 7
    assert result["gauc_se"] == pytest.approx(expected_se)


def test_gauc_without_a_user_of_both_classes_is_nan():
    result = metrics.group_auc(["a", "a", "b"], [1, 1, 0], [0.1, 0.2, 0.3])
    assert math.isnan(result["gauc"]) and result["gauc_users"] == 0
    assert result["gauc_users_excluded"] == 2 and result["gauc_se"] == 0.0


def test_ndcg_at_k_by_hand():
    # request r1: gains 0 5 1 scored .9 .8 .1 -> DCG = 5 / log2(3) + 1 / log2(4) = 5 / log2(3) + 0.5;
    #   ideal order 5 1 0 -> 5 + 1 / log2(3).
    # request r2: gains 1 0 scored .3 .7 -> DCG 1 / log2(3), ideal 1: NDCG 1 / log2(3).
    # request r3: no gain -> excluded.
    groups = ["r1", "r1", "r1", "r2", "r2", "r3"]
    gains = [0, 5, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.1, 0.3, 0.7, 0.5]
    r1 = (5 / math.log2(3) + 0.5) / (5 + 1 / math.log2(3))
    r2 = 1 / math.log2(3)
    result = metrics.ndcg(groups, gains, scores, k=10)
    assert result["ndcg_at_10"] == pytest.approx((r1 + r2) / 2)
    assert result["ndcg_requests"] == 2 and result["ndcg_requests_excluded"] == 1
    assert result["ndcg_at_10_se"] == pytest.approx(abs(r1 - r2) / 2)
    # k = 1: only the top candidate counts: r1's is gain 0, r2's gain 0 too.
    assert metrics.ndcg(groups, gains, scores, k=1)["ndcg_at_1"] == 0.0
    # Perfect order scores 1.
    assert metrics.ndcg(groups, gains, gains, k=10)["ndcg_at_10"] == pytest.approx(1.0)
