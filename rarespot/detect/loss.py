"""Imbalance-aware classification term for Ultralytics YOLO detection training.

Ultralytics' ``v8DetectionLoss`` computes its classification term as
``self.bce(pred_scores, target_scores)`` (elementwise, shape batch x anchors x
classes), then sums it and divides by ``target_scores_sum``. We replace only
that elementwise criterion, so the task-aligned assigner, the box/DFL losses,
the normalisation and the ``hyp.cls`` gain all stay Ultralytics' own code.

cls_loss:
  bce       Ultralytics' loss, unchanged.
  focal     sigmoid focal loss (alpha, gamma) on the same soft IoU-aware
            targets; for soft targets the modulating factor is |t - p|^gamma.
  cb-bce    BCE, each *foreground* anchor weighted by the class-balanced
            weight of the class it was assigned (Cui et al. 2019, beta);
            background anchors keep weight 1 (background is not a counted class).
  cb-focal  focal loss with the same class-balanced anchor weights.

The training helper calls :func:`build_detection_loss` from its
DetectionModel subclass's ``init_criterion`` with the class counts of the
(remapped) training set.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss

from rarespot.detect.config import CLS_LOSSES
from rarespot.imbalance.losses import sigmoid_focal_loss
from rarespot.imbalance.weights import class_balanced_weights


class ElementwiseClsLoss(nn.Module):
    """Drop-in for ``nn.BCEWithLogitsLoss(reduction="none")`` inside v8DetectionLoss.

    Same call and output shape (batch, anchors, classes): focal modulation and
    optional per-anchor class-balanced weights. With gamma = 0, alpha = None
    and no class weights it is exactly BCE.
    """

    def __init__(self, gamma: float = 0.0, alpha: float | None = None, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha
        cw = None if class_weights is None else torch.as_tensor(np.asarray(class_weights, dtype=np.float32))
        self.register_buffer("class_weights", cw)

    def forward(self, pred_scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
        loss = sigmoid_focal_loss(pred_scores, target_scores, self.alpha, self.gamma, reduction="none")
        if self.class_weights is not None:
            # An anchor's class is the one the assigner gave it (its one non-zero target).
            cw = self.class_weights.to(device=loss.device, dtype=loss.dtype)
            foreground = target_scores.amax(dim=-1) > 0
            assigned = target_scores.argmax(dim=-1)
            assigned_w = cw[assigned]
            anchor_w = torch.where(foreground, assigned_w, torch.ones_like(assigned_w))
            loss = loss * anchor_w.unsqueeze(-1)
        return loss


class ImbalanceDetectionLoss(v8DetectionLoss):
    """v8DetectionLoss whose classification criterion is an :class:`ElementwiseClsLoss`."""

    def __init__(
        self,
        model: nn.Module,
        tal_topk: int = 10,
        tal_topk2: int | None = None,
        *,
        gamma: float = 0.0,
        alpha: float | None = None,
        class_weights: Sequence[float] | None = None,
    ):
        super().__init__(model, tal_topk=tal_topk, tal_topk2=tal_topk2)
        self.bce = ElementwiseClsLoss(gamma, alpha, class_weights).to(self.device)


def build_detection_loss(
    model: nn.Module,
    cls_loss: str = "bce",
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    beta: float = 0.999,
    class_counts: Sequence[int] | np.ndarray | None = None,
):
    """The training criterion for ``model`` (an Ultralytics DetectionModel with ``model.args`` set).

    Returns a ``v8DetectionLoss`` (an :class:`ImbalanceDetectionLoss` unless
    cls_loss is "bce"), or Ultralytics' ``E2ELoss`` wrapping it for end-to-end
    heads (YOLO26). class_counts: objects per class in the training set,
    required for the cb-* losses. alpha applies to the focal losses only.
    """
    if cls_loss not in CLS_LOSSES:
        raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")
    end2end = getattr(model.model[-1], "one2one_cv2", None) is not None
    if cls_loss == "bce":
        return E2ELoss(model) if end2end else v8DetectionLoss(model)

    nc = int(model.model[-1].nc)
    class_weights = None
    if cls_loss.startswith("cb-"):
        if class_counts is None:
            raise ValueError(f"cls_loss={cls_loss!r} needs class_counts (objects per class in the training set)")
        counts = np.asarray(class_counts).reshape(-1)
        if len(counts) != nc:
            raise ValueError(f"class_counts has {len(counts)} entries but the model has {nc} classes")
        class_weights = class_balanced_weights(counts, beta)
    focal = cls_loss.endswith("focal")
    loss_cls = functools.partial(
        ImbalanceDetectionLoss,
        gamma=gamma if focal else 0.0,
        alpha=alpha if focal else None,
        class_weights=class_weights,
    )
    return E2ELoss(model, loss_cls) if end2end else loss_cls(model)


class RarespotDetectionModel(DetectionModel):
    """Ultralytics' DetectionModel whose classification loss is chosen by ``cls_loss_options``
    (focal, class-balanced; see :func:`build_detection_loss`).

    Only runs that ask for a non-default loss use it, so plain-BCE checkpoints stay plain
    Ultralytics models that load without rarespot. Checkpoints pickle it by this module path;
    older ones name ``rarespot.detect.model.RarespotDetectionModel``, which still resolves here.
    """

    cls_loss_options: dict | None = None

    def init_criterion(self):
        opts = self.cls_loss_options or {}
        if not opts or opts.get("cls_loss", "bce") == "bce":
            return super().init_criterion()
        return build_detection_loss(self, **opts)
