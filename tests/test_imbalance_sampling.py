"""Repeat-factor sampling and class-aware object choice: exact values and seeded behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rarespot.imbalance.sampling import (
    RepeatFactorSampler,
    choose_object,
    class_aware_object_weights,
    dataset_repeat_factors,
    image_class_fractions,
    repeat_factors,
)
from rarespot.io.dataset import DetectionDataset, ImageRecord


def test_fractions_and_repeat_factors_hand_computed():
    labels = [np.array([0]), np.array([0, 0]), np.array([0, 2]), np.array([1]), np.array([], dtype=np.int64)]
    frac = image_class_fractions(labels, 3)
    np.testing.assert_allclose(frac, [3 / 5, 1 / 5, 1 / 5])
    # t = 0.5: r_0 = max(1, sqrt(0.5/0.6)) = 1, r_1 = r_2 = sqrt(0.5/0.2) = sqrt(2.5)
    r = repeat_factors(labels, 3, threshold=0.5)
    s = math.sqrt(2.5)
    np.testing.assert_allclose(r, [1.0, 1.0, s, s, 1.0])


def test_repeat_factor_is_max_over_classes_and_one_for_negatives():
    labels = [np.array([0, 1]), np.array([0]), np.array([0]), np.array([0]), np.array([], dtype=np.int64)]
    r = repeat_factors(labels, 2, threshold=1.0)
    # f_0 = 0.8 -> r_0 = sqrt(1.25); f_1 = 0.2 -> r_1 = sqrt(5)
    np.testing.assert_allclose(r, [math.sqrt(5), math.sqrt(1.25), math.sqrt(1.25), math.sqrt(1.25), 1.0])


def test_dataset_repeat_factors_matches_lists():
    recs = [
        ImageRecord("a.png", 10, 10, [[0, 0, 2, 2]], [0]),
        ImageRecord("b.png", 10, 10, [[0, 0, 2, 2]], [1]),
        ImageRecord("c.png", 10, 10),
    ]
    ds = DetectionDataset(["x", "y"], recs)
    np.testing.assert_allclose(dataset_repeat_factors(ds, 0.9), repeat_factors([r.labels for r in recs], 2, 0.9))


def test_bad_labels_and_threshold():
    with pytest.raises(ValueError, match="image 1"):
        repeat_factors([np.array([0]), np.array([5])], 2)
    with pytest.raises(ValueError, match="threshold"):
        repeat_factors([np.array([0])], 1, threshold=0)


def test_sampler_stochastic_rounding_and_determinism():
    factors = np.array([1.0, 2.5, 0.0, 1.25])
    sampler = RepeatFactorSampler(factors, seed=3)
    a, b = sampler.epoch_indices(0), sampler.epoch_indices(0)
    np.testing.assert_array_equal(a, b)
    counts = np.bincount(a, minlength=4)
    assert counts[0] == 1 and counts[1] in (2, 3) and counts[2] == 0 and counts[3] in (1, 2)
    # Over many epochs the mean count per image is the repeat factor.
    total = np.zeros(4)
    for epoch in range(2000):
        total += np.bincount(sampler.epoch_indices(epoch), minlength=4)
    np.testing.assert_allclose(total / 2000, factors, atol=0.05)
    assert len(sampler) == 5
    sampler.set_epoch(7)
    assert list(sampler) == sampler.epoch_indices(7).tolist()
    with pytest.raises(ValueError):
        RepeatFactorSampler([1.0, -1.0])


def test_class_aware_object_weights():
    np.testing.assert_allclose(class_aware_object_weights([100, 25], power=0.5), [2 / 3, 4 / 3])
    np.testing.assert_allclose(class_aware_object_weights([100, 25], power=1.0), [0.4, 1.6])
    np.testing.assert_allclose(class_aware_object_weights([100, 25], power=0.0), [1.0, 1.0])
    np.testing.assert_allclose(class_aware_object_weights([4, 0], power=1.0), [1.0, 1.0])


def test_choose_object_favours_rare_class():
    labels = np.array([0, 0, 0, 1])  # three common objects, one rare
    w = np.array([1.0, 9.0])  # rare object probability 9 / (3 + 9) = 0.75
    rng = np.random.default_rng(0)
    picks = np.array([choose_object(labels, w, rng) for _ in range(4000)])
    assert abs(np.mean(picks == 3) - 0.75) < 0.03
    # Uniform weights: each object 1/4.
    picks_u = np.array([choose_object(labels, np.ones(2), rng) for _ in range(4000)])
    assert abs(np.mean(picks_u == 3) - 0.25) < 0.03
    # Seeded: same sequence.
    r1 = [choose_object(labels, w, np.random.default_rng(5)) for _ in range(3)]
    r2 = [choose_object(labels, w, np.random.default_rng(5)) for _ in range(3)]
    assert r1 == r2
    assert choose_object(labels, np.zeros(2), rng) in range(4)


def test_choose_object_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least one"):
        choose_object(np.array([]), np.ones(2), rng)
    with pytest.raises(ValueError, match="labels must be"):
        choose_object(np.array([2]), np.ones(2), rng)
