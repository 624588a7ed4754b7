"""Class weights: hand-computed values and the limits of the class-balanced formula."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.imbalance.weights import (
    class_balanced_weights,
    effective_number,
    inverse_frequency_weights,
    sqrt_inverse_frequency_weights,
)


def test_effective_number_hand_computed():
    # E_n = (1 - 0.5^n) / (1 - 0.5): n=1 -> 1, n=2 -> 1.5, n=3 -> 1.75
    np.testing.assert_allclose(effective_number([1, 2, 3], beta=0.5), [1.0, 1.5, 1.75])
    np.testing.assert_allclose(effective_number([4, 0], beta=1.0), [4.0, 0.0])
    np.testing.assert_allclose(effective_number([4, 0], beta=0.0), [1.0, 0.0])


def test_class_balanced_weights_hand_computed():
    # raw w = 1/E = [1, 2/3, 4/7]; sum = 1 + 2/3 + 4/7 = 47/21; scale to 3.
    raw = np.array([1.0, 2 / 3, 4 / 7])
    expected = raw * 3 / raw.sum()
    w = class_balanced_weights([1, 2, 3], beta=0.5)
    np.testing.assert_allclose(w, expected)
    assert w.sum() == pytest.approx(3.0)


def test_beta_zero_is_no_weighting():
    np.testing.assert_allclose(class_balanced_weights([1000, 10, 1], beta=0.0), [1.0, 1.0, 1.0])


def test_beta_to_one_tends_to_inverse_frequency():
    counts = [1000, 100, 10, 1]
    inv = inverse_frequency_weights(counts)
    far = np.abs(class_balanced_weights(counts, beta=0.9) - inv).max()
    near = np.abs(class_balanced_weights(counts, beta=0.999999) - inv).max()
    assert near < 1e-3 < far
    np.testing.assert_allclose(class_balanced_weights(counts, beta=1.0), inv)


def test_inverse_and_sqrt_inverse_frequency():
    np.testing.assert_allclose(inverse_frequency_weights([1, 3]), [1.5, 0.5])  # 1 : 1/3, sum 2
    # 1/sqrt(1) : 1/sqrt(4) = 1 : 0.5 -> scaled to sum 2
    np.testing.assert_allclose(sqrt_inverse_frequency_weights([1, 4]), [4 / 3, 2 / 3])
    np.testing.assert_allclose(inverse_frequency_weights([7, 7, 7]), [1.0, 1.0, 1.0])


def test_absent_class_gets_rarest_present_weight():
    # present raw 1/2 and 1/4 -> absent gets 1/2; [0.5, 0.25, 0.5] scaled to sum 3
    np.testing.assert_allclose(inverse_frequency_weights([2, 4, 0]), [1.2, 0.6, 1.2])
    np.testing.assert_allclose(class_balanced_weights([0, 0], beta=0.9), [1.0, 1.0])


@pytest.mark.parametrize("bad", [[], [-1, 2], [np.nan, 1]])
def test_bad_counts_rejected(bad):
    with pytest.raises(ValueError):
        class_balanced_weights(bad)


def test_bad_beta_rejected():
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights([1, 2], beta=1.5)
