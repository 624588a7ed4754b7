"""Losses: hand-computed values and the limits (gamma = 0 is CE/BCE, beta = 0 is unweighted)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rarespot.imbalance.losses import (
    ClassBalancedLoss,
    FocalLoss,
    GHMCLoss,
    class_balanced_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from rarespot.imbalance.weights import class_balanced_weights

torch.manual_seed(0)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_sigmoid_focal_hand_computed():
    # p = 0.8 for a positive: -0.25 * 0.2^2 * log 0.8 ; p = 0.8 for a negative: -0.75 * 0.8^2 * log 0.2
    logits = torch.tensor([_logit(0.8), _logit(0.8)], dtype=torch.float64)
    targets = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    expected = [-0.25 * 0.04 * math.log(0.8), -0.75 * 0.64 * math.log(0.2)]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


def test_sigmoid_focal_gamma_zero_is_bce():
    logits = torch.randn(6, 4, dtype=torch.float64)
    targets = (torch.rand(6, 4) > 0.5).double()
    got = sigmoid_focal_loss(logits, targets, alpha=None, gamma=0.0)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits, targets))
    w = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    got_w = sigmoid_focal_loss(logits, targets, alpha=None, gamma=0.0, weight=w)
    torch.testing.assert_close(got_w, F.binary_cross_entropy_with_logits(logits, targets, weight=w))


def test_sigmoid_focal_soft_target_zero_at_match():
    # Soft targets (YOLO's IoU scores): the modulating factor |t - p|^gamma vanishes at p = t.
    logits = torch.tensor([_logit(0.3)], dtype=torch.float64)
    loss = sigmoid_focal_loss(logits, torch.tensor([0.3], dtype=torch.float64), alpha=None, gamma=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-15)


def test_sigmoid_focal_matches_torchvision_definition():
    # torchvision.ops.sigmoid_focal_loss, written out, for hard targets.
    logits = torch.randn(5, 3, dtype=torch.float64)
    t = (torch.rand(5, 3) > 0.5).double()
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    ref = (0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2
    torch.testing.assert_close(sigmoid_focal_loss(logits, t, 0.25, 2.0, reduction="sum"), ref.sum())


def test_softmax_focal_hand_computed():
    # logits [0, ln 3] -> p = [1/4, 3/4]; target 1: -(1/4)^2 log(3/4); target 0: -(3/4)^2 log(1/4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], dtype=torch.float64)
    target = torch.tensor([1, 0])
    loss = softmax_focal_loss(logits, target, gamma=2.0, reduction="none")
    expected = [-(0.25**2) * math.log(0.75), -(0.75**2) * math.log(0.25)]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    alpha = [0.1, 0.9]
    loss_a = softmax_focal_loss(logits, target, alpha=alpha, gamma=2.0, reduction="none")
    np.testing.assert_allclose(loss_a.numpy(), [0.9 * expected[0], 0.1 * expected[1]], rtol=1e-12)


def test_softmax_focal_gamma_zero_is_ce():
    logits = torch.randn(8, 5, dtype=torch.float64)
    target = torch.randint(0, 5, (8,))
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    w = torch.tensor([0.5, 1.0, 1.5, 0.2, 1.8], dtype=torch.float64)
    # "mean" is the plain mean of the weighted per-sample losses (documented).
    ref = F.cross_entropy(logits, target, weight=w, reduction="none").mean()
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0, weight=w), ref)


def test_softmax_focal_spatial_shapes():
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))


def test_softmax_focal_rejects_bad_targets():
    with pytest.raises(ValueError, match="target indices"):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="do not match"):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="gamma"):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), gamma=-1)


def test_class_balanced_ce_hand_computed():
    counts = [1, 2, 3]
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 2])
    w = torch.as_tensor(class_balanced_weights(counts, beta=0.5))
    ref = (F.cross_entropy(logits, target, reduction="none") * w[target]).mean()
    torch.testing.assert_close(class_balanced_loss(logits, target, counts, beta=0.5, loss_type="ce"), ref)


def test_class_balanced_beta_zero_is_unweighted():
    counts = [500, 20, 1]
    logits = torch.randn(6, 3, dtype=torch.float64)
    target = torch.tensor([0, 0, 1, 2, 0, 1])
    onehot = F.one_hot(target, 3).double()
    torch.testing.assert_close(
        class_balanced_loss(logits, target, counts, beta=0.0, loss_type="ce"), F.cross_entropy(logits, target)
    )
    torch.testing.assert_close(
        class_balanced_loss(logits, target, counts, beta=0.0, loss_type="bce"),
        F.binary_cross_entropy_with_logits(logits, onehot),
    )
    torch.testing.assert_close(
        class_balanced_loss(logits, target, counts, beta=0.0, loss_type="focal", gamma=2.0),
        sigmoid_focal_loss(logits, onehot, alpha=None, gamma=2.0),
    )


def test_class_balanced_bce_weights_whole_sample_row():
    counts = [3, 1]
    logits = torch.tensor([[0.2, -0.1], [0.5, 0.4]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    w = class_balanced_weights(counts, beta=1.0)  # inverse frequency: [0.5, 1.5]
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(target, 2).double(), reduction="none")
    ref = (bce * torch.tensor([[w[0]], [w[1]]])).mean()
    torch.testing.assert_close(class_balanced_loss(logits, target, counts, beta=1.0, loss_type="bce"), ref)


def test_class_balanced_multi_hot_uses_rarest_positive():
    counts = [3, 1]
    logits = torch.zeros(3, 2, dtype=torch.float64)
    targets = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    per_sample = class_balanced_loss(logits, targets, counts, beta=1.0, loss_type="bce", reduction="none")
    # each entry of logits 0 costs ln 2; rows weighted 1.5 (rarest positive), 0.5, 1 (no positive)
    np.testing.assert_allclose(per_sample.numpy(), np.log(2) * np.array([[1.5, 1.5], [0.5, 0.5], [1, 1]]))


def test_class_balanced_rejects_wrong_counts_and_type():
    with pytest.raises(ValueError, match="class counts"):
        class_balanced_loss(torch.zeros(2, 3), torch.tensor([0, 1]), [1, 2], loss_type="ce")
    with pytest.raises(ValueError, match="loss_type"):
        class_balanced_loss(torch.zeros(2, 3), torch.tensor([0, 1]), [1, 2, 3], loss_type="hinge")


def test_modules_match_functions_and_backprop():
    counts = [90, 9, 1]
    logits = torch.randn(7, 3, requires_grad=True)
    target = torch.tensor([0, 0, 0, 1, 1, 2, 0])
    crit = ClassBalancedLoss(counts, beta=0.99, loss_type="softmax_focal", gamma=1.0)
    loss = crit(logits, target)
    torch.testing.assert_close(
        loss, class_balanced_loss(logits, target, counts, beta=0.99, loss_type="softmax_focal", gamma=1.0)
    )
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()

    focal = FocalLoss(gamma=0.0, mode="softmax")
    torch.testing.assert_close(focal(logits, target), F.cross_entropy(logits, target))
    focal_sig = FocalLoss(gamma=0.0, alpha=None, mode="sigmoid")
    torch.testing.assert_close(
        focal_sig(logits, target), F.binary_cross_entropy_with_logits(logits, F.one_hot(target, 3).float())
    )
    with pytest.raises(ValueError, match="mode"):
        FocalLoss(mode="tanh")


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[4.0, -4.0]])
    hard = torch.tensor([[0.1, 0.0]])
    t = torch.tensor([0])
    ratio_focal = softmax_focal_loss(easy, t, gamma=2.0) / softmax_focal_loss(hard, t, gamma=2.0)
    ratio_ce = softmax_focal_loss(easy, t, gamma=0.0) / softmax_focal_loss(hard, t, gamma=0.0)
    assert ratio_focal < ratio_ce / 100


def test_ghmc_hand_computed_no_momentum():
    # g = |p - t|: 0.05, 0.05, 0.05 (bin 0) and 0.95 (bin 9). N = 4, 2 non-empty bins.
    # weights: bin 0 -> 4/3/2 = 2/3, bin 9 -> 4/1/2 = 2.
    p = torch.tensor([0.95, 0.95, 0.05, 0.05], dtype=torch.float64)
    t = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    logits = torch.log(p / (1 - p))
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    expected = (bce * torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0], dtype=torch.float64)).sum() / 4
    got = GHMCLoss(bins=10, momentum=0.0)(logits, t)
    torch.testing.assert_close(got, expected)


def test_ghmc_single_bin_is_bce_and_label_weight_excludes():
    logits = torch.tensor([2.0, 2.1, 1.9], dtype=torch.float64)  # p ~ 0.88: all g in one bin
    t = torch.ones(3, dtype=torch.float64)
    crit = GHMCLoss(bins=10, momentum=0.0)
    torch.testing.assert_close(crit(logits, t), F.binary_cross_entropy_with_logits(logits, t))
    lw = torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(crit(logits, t, lw), F.binary_cross_entropy_with_logits(logits[:2], t[:2]))


def test_ghmc_momentum_smooths_bin_counts():
    crit = GHMCLoss(bins=2, momentum=0.5)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    first = torch.tensor([3.0, -3.0], dtype=torch.float64)  # both g small -> bin 0 count 2
    crit(first, t)
    assert crit.acc_sum.tolist() == [2.0, 0.0]
    second = torch.tensor([3.0, 3.0], dtype=torch.float64)  # one easy (bin 0), one hard (bin 1)
    crit(second, t)
    assert crit.acc_sum.tolist() == [1.5, 1.0]  # 0.5 * 2 + 0.5 * 1, and bin 1 seeded with 1


def test_ghmc_matches_per_bin_reference_on_random_data():
    # The paper's per-bin loop, written out: weight = N / count(bin) / non-empty bins.
    torch.manual_seed(3)
    logits = torch.randn(40, 6, dtype=torch.float64) * 3
    t = (torch.rand(40, 6) > 0.8).double()
    g = (torch.sigmoid(logits) - t).abs()
    edges = [i / 10 for i in range(11)]
    edges[-1] += 1e-6
    w = torch.zeros_like(g)
    n = 0
    for i in range(10):
        in_bin = (g >= edges[i]) & (g < edges[i + 1])
        if in_bin.any():
            n += 1
            w[in_bin] = g.numel() / in_bin.sum()
    ref = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w / n).sum() / g.numel()
    torch.testing.assert_close(GHMCLoss(bins=10, momentum=0.0)(logits, t), ref)
