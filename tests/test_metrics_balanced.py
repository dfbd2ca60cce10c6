"""Balanced accuracy (mean per-class recall) and the majority rate, from confusion counts."""
import numpy as np
import pytest

from skillneurons_jax.prompt import metrics as mx


def test_balanced_accuracy_is_the_mean_recall():
    # rows = true label: class 0 recall 8/10, class 1 recall 1/4
    conf = np.array([[8, 2], [3, 1]])
    assert mx.balanced_accuracy(conf) == pytest.approx((0.8 + 0.25) / 2)
    assert mx.accuracy(conf) == pytest.approx(9 / 14)
    assert mx.majority_rate(conf) == pytest.approx(10 / 14)


def test_always_the_majority_class_scores_one_half_however_skewed():
    for n_major, n_minor in ((90, 10), (50, 50), (999, 1)):
        conf = np.array([[n_major, 0], [n_minor, 0]])            # every example predicted 0
        assert mx.balanced_accuracy(conf) == pytest.approx(0.5)
        assert mx.accuracy(conf) == pytest.approx(n_major / (n_major + n_minor))


def test_balanced_split_gives_the_accuracy():
    conf = np.array([[40, 10], [15, 35]])
    assert mx.balanced_accuracy(conf) == pytest.approx(mx.accuracy(conf))


def test_absent_class_empty_matrix_and_leading_axes():
    assert mx.balanced_accuracy(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])) == pytest.approx((0.75 + 1) / 2)
    assert np.isnan(mx.balanced_accuracy(np.zeros((2, 2))))
    stacked = np.array([[[8, 2], [3, 1]], [[5, 0], [0, 5]]])      # [S, C, C]
    np.testing.assert_allclose(mx.balanced_accuracy(stacked), [0.525, 1.0])
    np.testing.assert_allclose(mx.majority_rate(stacked), [10 / 14, 0.5])


def test_summary_has_balanced_accuracy_and_majority_rate():
    s = mx.summary(np.array([[8, 2], [3, 1]]))
    assert s["balanced_accuracy"] == pytest.approx(0.525) and s["majority_rate"] == pytest.approx(10 / 14)
    assert s["examples"] == 14 and isinstance(s["balanced_accuracy"], float)
