"""Detection metrics: one-to-one matching, precision/recall/F1, COCO-style AP.

Pure numpy, so evaluation needs no deep-learning stack and the numbers do not
change with a framework upgrade. Hand-written because the maintained
implementations each miss something here: pycocotools/faster-coco-eval need a
COCO json round-trip and a C extension, torchmetrics needs one of them, and
Ultralytics' ``ap_per_class`` integrates a linearly interpolated curve with the
trapezoid rule, which is not COCO's 101-point step rule. The rules below follow
COCO's ``COCOeval`` (``evaluateImg`` + ``accumulate``) for boxes without crowd
or area ranges; tests check hand-computed cases and agreement with Ultralytics
to within its interpolation difference.

Conventions: boxes are pixel ``xyxy``; a ratio whose denominator is 0
(precision with no predictions, recall with no ground truth) is 0.0, and the
support columns tell the two cases apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: IoU thresholds of mAP50-95 (COCO): 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
#: Recall points of COCO's interpolated AP.
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_overlap(a: np.ndarray, b: np.ndarray, metric: str = "iou") -> np.ndarray:
    """(len(a), len(b)) IoU, or IoS (intersection over the smaller box), of xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    if metric == "iou":
        denom = area_a[:, None] + area_b[None, :] - inter
    elif metric == "ios":
        denom = np.minimum(area_a[:, None], area_b[None, :])
    else:
        raise ValueError(f"overlap metric must be 'iou' or 'ios', got {metric!r}")
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of xyxy boxes."""
    return box_overlap(a, b, "iou")


def _match_from_iou(
    ious: np.ndarray, order: np.ndarray, same_class: np.ndarray, threshold: float
) -> np.ndarray:
    """COCO's greedy rule: each prediction, by descending score, takes the
    unmatched ground truth it overlaps most (IoU >= threshold)."""
    n_pred, n_gt = ious.shape
    gt_index = np.full(n_pred, -1, dtype=np.int64)
    taken = np.zeros(n_gt, dtype=bool)
    for i in order:
        candidates = np.where(same_class[i] & ~taken, ious[i], -1.0)
        j = int(np.argmax(candidates)) if n_gt else -1
        if j >= 0 and candidates[j] >= threshold:
            gt_index[i] = j
            taken[j] = True
    return gt_index


def match_detections(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_labels: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    iou: float = 0.5,
    class_aware: bool = True,
) -> np.ndarray:
    """Match one image's predictions to its ground truth, one to one.

    Returns, per prediction (input order), the index of the ground-truth box it
    matched or -1 (a false positive). Predictions are taken by descending score
    (ties keep input order); each takes the still-unmatched ground truth of the
    same class (any class if not ``class_aware``) with the highest IoU, if that
    IoU is >= ``iou``. Ground truth left unmatched are the false negatives.
    """
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    pred_labels = np.asarray(pred_labels).reshape(-1)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    if not (len(pred_boxes) == len(pred_scores) == len(pred_labels)):
        raise ValueError("pred_boxes, pred_scores and pred_labels differ in length")
    if len(gt_boxes) != len(gt_labels):
        raise ValueError("gt_boxes and gt_labels differ in length")
    ious = box_iou(pred_boxes, gt_boxes)
    same = pred_labels[:, None] == gt_labels[None, :] if class_aware else np.ones(ious.shape, dtype=bool)
    order = np.argsort(-pred_scores, kind="mergesort")
    return _match_from_iou(ious, order, same, iou)


def precision_recall_f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0.0 where a denominator is 0)."""
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


def pr_curve(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall after each prediction by descending score.

    Returns (scores_sorted, precision, recall); entry k holds the values when
    every prediction with score >= scores_sorted[k] is kept.
    """
    tp = np.asarray(tp, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    ctp = np.cumsum(tp[order])
    cfp = np.cumsum(~tp[order])
    precision = ctp / np.maximum(ctp + cfp, 1)
    recall = ctp / n_gt if n_gt > 0 else np.zeros(len(ctp))
    return scores[order], precision.astype(np.float64), recall.astype(np.float64)


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP of one class at one IoU threshold.

    ``tp`` flags each prediction as matched; ``n_gt`` counts the ground truth.
    Precision is first made non-increasing from the right (the envelope), then
    read at recall 0, 0.01, ..., 1 (the first point reaching that recall; 0
    past the highest recall reached). NaN when there is no ground truth (COCO
    leaves such a class out of the mean).
    """
    if n_gt <= 0:
        return float("nan")
    if len(np.asarray(tp).reshape(-1)) == 0:
        return 0.0
    _, precision, recall = pr_curve(tp, scores, n_gt)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
    sampled = np.where(idx < len(recall), envelope[np.minimum(idx, len(recall) - 1)], 0.0)
    return float(np.mean(sampled))


@dataclass
class DetectionMatches:
    """Matches of a whole data set at every COCO IoU threshold, for the metrics.

    Add one image at a time with :meth:`add`; predictions should come at a low
    confidence (e.g. 0.001) so the curves reach high recall. Counts at any
    confidence ``c`` are then exact: greedy matching by descending score gives a
    prediction above ``c`` the same match whether or not lower ones exist.
    """

    num_classes: int
    class_aware: bool = True
    iou_thresholds: np.ndarray = field(default_factory=lambda: COCO_IOU_THRESHOLDS.copy())
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    tp: list[np.ndarray] = field(default_factory=list)  # (n_pred, n_thresholds) bool per image
    gt_labels: list[np.ndarray] = field(default_factory=list)
    num_images: int = 0

    def add(self, pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels) -> np.ndarray:
        """Match one image at every threshold; returns its (n_pred, n_thresholds) TP flags."""
        pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        pred_labels = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
        ious = box_iou(pred_boxes, gt_boxes)
        if self.class_aware:
            same = pred_labels[:, None] == gt_labels[None, :]
        else:
            same = np.ones(ious.shape, dtype=bool)
        order = np.argsort(-pred_scores, kind="mergesort")
        tp = np.stack([_match_from_iou(ious, order, same, t) >= 0 for t in self.iou_thresholds], axis=1)
        tp = tp.reshape(len(pred_scores), len(self.iou_thresholds))
        self.scores.append(pred_scores)
        self.labels.append(pred_labels)
        self.tp.append(tp)
        self.gt_labels.append(gt_labels)
        self.num_images += 1
        return tp

    # -- pooled arrays -----------------------------------------------------
    def _threshold_index(self, iou: float) -> int:
        hits = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if not len(hits):
            raise ValueError(f"IoU {iou} was not matched; thresholds are {self.iou_thresholds.tolist()}")
        return int(hits[0])

    def _pooled(self, iou: float, label: int | None):
        t = self._threshold_index(iou)
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, dtype=np.int64)
        tp = np.concatenate([m[:, t] for m in self.tp]) if self.tp else np.zeros(0, dtype=bool)
        gt = np.concatenate(self.gt_labels) if self.gt_labels else np.zeros(0, dtype=np.int64)
        if label is None:
            return tp, scores, int(len(gt))
        keep = labels == label
        return tp[keep], scores[keep], int(np.sum(gt == label))

    def support(self) -> np.ndarray:
        """Ground-truth objects per class."""
        gt = np.concatenate(self.gt_labels) if self.gt_labels else np.zeros(0, dtype=np.int64)
        return np.bincount(gt, minlength=self.num_classes)[: self.num_classes]

    # -- metrics -----------------------------------------------------------
    def counts(self, conf, iou: float = 0.5, label: int | None = None) -> tuple[int, int, int]:
        """(tp, fp, fn) keeping predictions with score >= ``conf``; one class or all pooled.

        ``conf`` is one confidence, or one per class (class-wise operating points: the best
        threshold differs between classes, seed 002 sections 4.1.3 and 4.4.4); pooled counts are the
        sums of each class's counts at its own confidence."""
        if np.ndim(conf):
            conf = np.asarray(conf, dtype=np.float64).reshape(-1)
            if len(conf) != self.num_classes:
                raise ValueError(f"{len(conf)} per-class confidences for {self.num_classes} classes")
            if label is not None:
                return self.counts(float(conf[label]), iou, label)
            per_class = [self.counts(float(conf[c]), iou, c) for c in range(self.num_classes)]
            return tuple(int(sum(col)) for col in zip(*per_class))
        tp, scores, n_gt = self._pooled(iou, label)
        kept = scores >= conf
        n_tp = int(np.sum(tp & kept))
        return n_tp, int(np.sum(~tp & kept)), n_gt - n_tp

    def curve(self, iou: float = 0.5, label: int | None = None):
        """(scores, precision, recall) by descending score; one class or all pooled."""
        tp, scores, n_gt = self._pooled(iou, label)
        return pr_curve(tp, scores, n_gt)

    def ap(self, iou: float = 0.5, label: int | None = None) -> float:
        tp, scores, n_gt = self._pooled(iou, label)
        return average_precision(tp, scores, n_gt)

    def per_class_ap(self, iou: float = 0.5) -> np.ndarray:
        """AP of each class (NaN for a class without ground truth)."""
        if not self.class_aware:
            return np.array([self.ap(iou, None)])
        return np.array([self.ap(iou, c) for c in range(self.num_classes)])

    def mean_ap(self, iou: float = 0.5) -> float:
        """Mean AP over the classes that have ground truth (COCO); 0.0 if none do."""
        aps = self.per_class_ap(iou)
        aps = aps[~np.isnan(aps)]
        return float(np.mean(aps)) if len(aps) else 0.0

    def mean_ap_50_95(self) -> float:
        """mAP averaged over IoU 0.50:0.05:0.95 (COCO's headline number)."""
        return float(np.mean([self.mean_ap(t) for t in COCO_IOU_THRESHOLDS]))
