"""Merging the boxes of overlapping tiles into one answer per object.

Two methods over boxes already shifted into full-image pixels:

- ``nms``: greedy non-maximum suppression; the highest-scoring box of a
  cluster survives unchanged.
- ``wbf``: weighted box fusion (Solovyev et al. 2021); a cluster becomes one
  box whose corners are the score-weighted mean of its members.

Both are class-aware by default (a knife never suppresses a gun) or class
agnostic, and match boxes by IoU or by IoS (intersection over the smaller
box, SAHI's default: it also merges the cut-off part of an object that one tile
saw only partly into the whole box the next tile saw).

Hand-written in numpy rather than taken from a package: torchvision's
``batched_nms`` would pull torch into the light core and has no IoS or fusion,
and ``ensemble-boxes`` (the reference WBF) needs numba and works in
normalised coordinates with per-model lists. Both are ~40 lines here and
tested against exact hand-computed cases, NMS against torchvision's
``batched_nms`` and WBF against ensemble-boxes' ``weighted_boxes_fusion``, in
tests/test_detect_merge.py.
"""

from __future__ import annotations

import numpy as np

from rarespot.metrics.detection import box_overlap

MERGE_METHODS = ("nms", "wbf")
MATCH_METRICS = ("iou", "ios")
_NMS_ROWS = 256  # rows of the overlap matrix NMS holds at once (bounded memory for large n)


def _grouped(labels: np.ndarray, class_agnostic: bool) -> list[np.ndarray]:
    """Index groups that may merge with each other: one per class, or everything."""
    if class_agnostic or len(labels) == 0:
        return [np.arange(len(labels))]
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def _nms_indices(boxes: np.ndarray, scores: np.ndarray, iou: float, metric: str) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    # Overlaps _NMS_ROWS rows at a time, against the lower-scoring boxes only: a full (n, n) matrix
    # would take GBs for the thousands of boxes an evaluation sweep (conf 0.001) brings to one scan.
    for start in range(0, len(order), _NMS_ROWS):
        overlap = box_overlap(boxes[start : start + _NMS_ROWS], boxes[start:], metric)
        for i in range(start, min(start + _NMS_ROWS, len(order))):
            if suppressed[i]:
                continue
            keep.append(int(order[i]))
            suppressed[start:] |= overlap[i - start] > iou
    return keep


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    iou: float = 0.5,
    class_agnostic: bool = False,
    metric: str = "iou",
) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when it overlaps (``> iou``) a higher-scoring kept box of
    the same class (any class when ``class_agnostic``). Ties keep input order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    keep: list[int] = []
    for group in _grouped(labels, class_agnostic):
        if len(group):
            keep.extend(group[_nms_indices(boxes[group], scores[group], iou, metric)].tolist())
    keep_arr = np.asarray(keep, dtype=np.int64)
    return keep_arr[np.argsort(-scores[keep_arr], kind="stable")]


def _wbf_group(boxes: np.ndarray, scores: np.ndarray, iou: float, metric: str):
    """Clusters by descending score: a box joins the cluster whose fused box it overlaps most (if > iou)."""
    order = np.argsort(-scores, kind="stable")
    fused: list[np.ndarray] = []  # current fused box per cluster
    weight: list[float] = []  # sum of member scores
    weighted: list[np.ndarray] = []  # sum of score * corners
    # index of the member that opened the cluster; its score is the cluster's highest (members come by descending score)
    founder: list[int] = []
    for i in order:
        box, score = boxes[i], scores[i]
        if fused:
            overlap = box_overlap(box[None], np.asarray(fused), metric)[0]
            j = int(np.argmax(overlap))
            if overlap[j] > iou:
                weighted[j] = weighted[j] + score * box
                weight[j] += score
                fused[j] = weighted[j] / weight[j] if weight[j] > 0 else fused[j]
                continue
        fused.append(box.copy())
        weighted.append(score * box)
        weight.append(score)
        founder.append(int(i))
    founder_arr = np.asarray(founder, dtype=np.int64)
    return np.asarray(fused).reshape(-1, 4), scores[founder_arr], founder_arr


def weighted_box_fusion(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    iou: float = 0.5,
    class_agnostic: bool = False,
    metric: str = "iou",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse overlapping boxes: returns (boxes, scores, labels), highest score first.

    Corners are the score-weighted mean of a cluster's members. The fused score
    is the cluster's highest score (ensemble-boxes' ``conf_type="max"``), not the
    mean: a partial view of an object in a neighbouring tile must not lower the
    confidence of the tile that saw it whole. With ``class_agnostic`` a fused
    box takes the label of its highest-scoring member.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    out_boxes, out_scores, out_labels = [], [], []
    for group in _grouped(labels, class_agnostic):
        if not len(group):
            continue
        fused, best, founder = _wbf_group(boxes[group], scores[group], iou, metric)
        out_boxes.append(fused)
        out_scores.append(best)
        out_labels.append(labels[group][founder])
    if not out_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    b, s, l = np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_labels)
    order = np.argsort(-s, kind="stable")
    return b[order], s[order], l[order]


def merge_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    method: str = "nms",
    iou: float = 0.5,
    class_agnostic: bool = False,
    metric: str = "iou",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge boxes from overlapping tiles with ``method`` ("nms" or "wbf"); highest score first."""
    if method == "nms":
        keep = nms(boxes, scores, labels, iou, class_agnostic, metric)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return boxes[keep], np.asarray(scores, dtype=np.float64)[keep], np.asarray(labels, dtype=np.int64)[keep]
    if method == "wbf":
        return weighted_box_fusion(boxes, scores, labels, iou, class_agnostic, metric)
    raise ValueError(f"merge method must be one of {MERGE_METHODS}, got {method!r}")
