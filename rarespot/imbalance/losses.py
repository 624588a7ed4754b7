"""Classification losses for imbalanced data (torch).

- ``sigmoid_focal_loss`` / ``softmax_focal_loss``: focal loss (Lin et al. 2017;
  seed 001 eq. 3): FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t). gamma = 0 gives
  (alpha-weighted) cross-entropy exactly.
- ``class_balanced_loss``: any of CE / BCE / focal, each sample weighted by
  the class-balanced weight of its class (Cui et al. 2019; seed 003 eq. 13).
- ``GHMCLoss``: gradient harmonizing mechanism (Li et al. 2019; seed 002 §4).
- ``FocalLoss`` / ``ClassBalancedLoss``: nn.Module wrappers for training loops.

Conventions shared by every function here:

* ``reduction="mean"`` is the plain mean over the loss elements (samples for
  softmax losses, sample x class entries for sigmoid losses), *not* torch's
  weight-normalised mean of ``F.cross_entropy(weight=...)``: with weights that
  sum to the number of classes this keeps the loss scale comparable to the
  unweighted loss and makes "rare class counts more" literal.
* ``alpha`` (sigmoid losses): weight alpha on the positive term and 1 - alpha
  on the negative term of every class, alpha_t = alpha t + (1 - alpha)(1 - t).
  alpha = 0.25 is RetinaNet's default (with gamma = 2 it *down*-weights the
  positives, because the modulating factor already removes the many easy
  negatives). ``alpha=None`` means no alpha term at all.
* ``alpha`` (softmax losses): None, a float (uniform scale), or one value per
  class (alpha_t = alpha[y]), which is how a per-class prior is usually given.
* ``weight``: per-class weights, e.g. from ``rarespot.imbalance.weights``.
  Sigmoid losses broadcast it over the last (class) axis; softmax losses use
  weight[y] per sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rarespot.imbalance.weights import class_balanced_weights

_REDUCTIONS = ("mean", "sum", "none")
LOSS_TYPES = ("ce", "bce", "focal", "softmax_focal")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _as_tensor(values, like: torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(device=like.device, dtype=like.dtype)
    return torch.as_tensor(np.asarray(values, dtype=np.float64), device=like.device, dtype=like.dtype)


def _check_gamma(gamma: float) -> None:
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    weight: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary / multi-label focal loss on logits.

    targets has the shape of logits, 0/1 or soft in [0, 1]. The modulating
    factor is |t - p|^gamma: for 0/1 targets this is exactly (1 - p_t)^gamma;
    for soft targets (YOLO's IoU-aware class scores) it is the Quality Focal
    Loss of Li et al. 2020, which is zero when the prediction equals the target.
    """
    _check_gamma(gamma)
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = ce
    if gamma != 0:
        prob = torch.sigmoid(logits)
        loss = loss * (targets - prob).abs().pow(gamma)
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        loss = loss * (alpha * targets + (1.0 - alpha) * (1.0 - targets))
    if weight is not None:
        loss = loss * _as_tensor(weight, loss)
    return _reduce(loss, reduction)


def softmax_focal_loss(
    logits: torch.Tensor,
    target_idx: torch.Tensor,
    alpha: float | Sequence[float] | torch.Tensor | None = None,
    gamma: float = 2.0,
    weight: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss. logits (N, C, ...), target_idx (N, ...) int class indices."""
    _check_gamma(gamma)
    target_idx = target_idx.long()
    if logits.ndim < 2 or logits.shape[0] != target_idx.shape[0] or logits.shape[2:] != target_idx.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(target_idx.shape)} do not match")
    num_classes = logits.shape[1]
    if target_idx.numel() and (target_idx.min() < 0 or target_idx.max() >= num_classes):
        raise ValueError(f"target indices must be in [0, {num_classes}), got {target_idx.min()}..{target_idx.max()}")
    log_prob = F.log_softmax(logits, dim=1)
    log_pt = log_prob.gather(1, target_idx.unsqueeze(1)).squeeze(1)
    loss = -log_pt
    if gamma != 0:
        loss = loss * (1.0 - log_pt.exp()).clamp(min=0).pow(gamma)
    if alpha is not None:
        if isinstance(alpha, (int, float)):
            loss = loss * float(alpha)
        else:
            loss = loss * _as_tensor(alpha, loss)[target_idx]
    if weight is not None:
        loss = loss * _as_tensor(weight, loss)[target_idx]
    return _reduce(loss, reduction)


def _sample_weights_for(targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """One weight per sample: its class's weight (index targets) or, for
    multi-hot targets, the weight of its rarest positive class (1 when none)."""
    if targets.ndim == 1 or not targets.is_floating_point():
        return class_weights[targets.long()]
    positive = targets > 0.5
    per_entry = torch.where(positive, class_weights.expand_as(targets), torch.zeros_like(targets))
    best = per_entry.max(dim=-1).values
    return torch.where(positive.any(dim=-1), best, torch.ones_like(best))


def class_balanced_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    counts: Sequence[int] | np.ndarray,
    beta: float = 0.999,
    loss_type: str = "focal",
    gamma: float = 2.0,
    alpha: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Class-balanced loss (seed 003 eq. 13): w_y * L(p, y), w from effective numbers.

    logits (N, C); targets (N,) class indices, or (N, C) multi-hot for the
    sigmoid losses. counts: training samples per class.
    loss_type: "ce" (softmax CE), "softmax_focal", "bce" (sigmoid, one-hot
    targets) or "focal" (sigmoid focal, as in Cui et al.'s experiments).
    Every entry of a sample is weighted by the weight of the sample's class.
    beta = 0 gives the unweighted loss; beta -> 1 inverse-frequency weighting.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    num_classes = logits.shape[-1] if loss_type in ("bce", "focal") else logits.shape[1]
    counts = np.asarray(counts).reshape(-1)
    if len(counts) != num_classes:
        raise ValueError(f"{len(counts)} class counts for {num_classes} classes")
    class_weights = _as_tensor(class_balanced_weights(counts, beta), logits)
    return _weighted_loss(logits, targets, class_weights, loss_type, gamma, alpha, reduction)


def _weighted_loss(logits, targets, class_weights, loss_type, gamma, alpha, reduction):
    num_classes = class_weights.shape[0]
    if loss_type == "ce":
        return softmax_focal_loss(logits, targets, alpha, 0.0, class_weights, reduction)
    if loss_type == "softmax_focal":
        return softmax_focal_loss(logits, targets, alpha, gamma, class_weights, reduction)
    # Sigmoid losses: one-hot index targets, weight every entry of a sample by its class.
    sample_w = _sample_weights_for(targets, class_weights)
    if targets.ndim == 1 or not targets.is_floating_point():
        targets = F.one_hot(targets.long(), num_classes).to(logits.dtype)
    per_entry = sample_w.unsqueeze(-1)
    g = 0.0 if loss_type == "bce" else gamma
    a = None if loss_type == "bce" else alpha
    return sigmoid_focal_loss(logits, targets, a, g, per_entry, reduction)


class FocalLoss(nn.Module):
    """Focal loss as a module.

    mode="softmax": targets are class indices (single-label, e.g. 4-class lung sounds).
    mode="sigmoid": targets are 0/1 (or soft) with the shape of logits, or
    class indices (turned into one-hot).
    weight: optional per-class weights (e.g. ``class_balanced_weights(counts)``).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        mode: str = "softmax",
        reduction: str = "mean",
    ):
        super().__init__()
        if mode not in ("softmax", "sigmoid"):
            raise ValueError(f"mode must be 'softmax' or 'sigmoid', got {mode!r}")
        _check_gamma(gamma)
        self.gamma, self.alpha, self.mode, self.reduction = gamma, alpha, mode, reduction
        w = None if weight is None else torch.as_tensor(np.asarray(weight, dtype=np.float32))
        self.register_buffer("weight", w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.mode == "softmax":
            return softmax_focal_loss(logits, targets, self.alpha, self.gamma, self.weight, self.reduction)
        if targets.shape != logits.shape:
            targets = F.one_hot(targets.long(), logits.shape[-1])
        return sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, self.weight, self.reduction)


class ClassBalancedLoss(nn.Module):
    """Class-balanced loss as a module, configured once with the training counts.

    >>> crit = ClassBalancedLoss(counts=[900, 80, 20], beta=0.999, loss_type="softmax_focal", gamma=2.0)
    >>> loss = crit(logits, labels)   # logits (N, 3), labels (N,)
    """

    def __init__(
        self,
        counts: Sequence[int] | np.ndarray,
        beta: float = 0.999,
        loss_type: str = "focal",
        gamma: float = 2.0,
        alpha: float | None = None,
        reduction: str = "mean",
    ):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        _check_gamma(gamma)
        self.beta, self.loss_type, self.gamma, self.alpha, self.reduction = beta, loss_type, gamma, alpha, reduction
        weights = class_balanced_weights(counts, beta)
        self.register_buffer("class_weights", torch.as_tensor(weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = self.class_weights.to(logits.dtype)
        return _weighted_loss(logits, targets, w, self.loss_type, self.gamma, self.alpha, self.reduction)


class GHMCLoss(nn.Module):
    """Gradient Harmonizing Mechanism for (sigmoid) classification, GHM-C (Li et al. 2019).

    The gradient norm of BCE on a logit is g = |p - t|. Entries are binned by
    g; each entry is weighted by N / (number of entries in its bin) / (number
    of non-empty bins), so the many easy entries (g ~ 0) and the few outliers
    (g ~ 1) are both down-weighted. With ``momentum`` > 0 the bin counts are
    an exponential moving average across training calls (the paper uses
    0.75); in eval mode each batch uses its own counts.

    targets: same shape as logits (0/1 or soft), or class indices (one-hot).
    label_weight (optional, same shape as logits): 0 excludes an entry.
    Returns sum(w * BCE) / N, N = number of valid entries.
    """

    def __init__(self, bins: int = 10, momentum: float = 0.75):
        super().__init__()
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.bins, self.momentum = bins, momentum
        edges = torch.arange(bins + 1, dtype=torch.float32) / bins
        edges[-1] += 1e-6  # so g = 1 falls in the last bin
        self.register_buffer("edges", edges)
        self.register_buffer("acc_sum", torch.zeros(bins))
        self.register_buffer("initialised", torch.zeros(bins, dtype=torch.bool))

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, label_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if targets.shape != logits.shape:
            targets = F.one_hot(targets.long(), logits.shape[-1])
        targets = targets.to(logits.dtype)
        valid = torch.ones_like(logits, dtype=torch.bool) if label_weight is None else label_weight > 0
        g = (torch.sigmoid(logits.detach()) - targets).abs()
        total = valid.sum().clamp(min=1).to(logits.dtype)
        # Bin index of every entry (vectorised: one bincount instead of a mask per bin).
        idx = torch.bucketize(g.contiguous(), self.edges.to(g.dtype), right=True).sub_(1).clamp_(0, self.bins - 1)
        counts = torch.bincount(idx[valid], minlength=self.bins).to(self.acc_sum.dtype)
        non_empty = counts > 0
        if self.momentum > 0 and self.training:
            # Seed a bin's average with its first count instead of 0, which would
            # inflate the first batches' weights by 1 / (1 - momentum).
            smoothed = self.momentum * self.acc_sum + (1 - self.momentum) * counts
            acc = torch.where(self.initialised, smoothed, counts)
            self.acc_sum.copy_(torch.where(non_empty, acc, self.acc_sum))
            self.initialised |= non_empty
            per_bin = self.acc_sum
        else:
            per_bin = counts  # no momentum, or evaluation: this batch's own counts, state untouched
        n_non_empty = int(non_empty.sum())
        inverse_density = total / per_bin.clamp(min=1e-12).to(logits.dtype)
        bin_weight = torch.where(non_empty, inverse_density, torch.zeros_like(inverse_density))
        weights = bin_weight[idx] * valid.to(logits.dtype)
        if n_non_empty:
            weights = weights / n_non_empty
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (bce * weights).sum() / total
