"""rarespot.metrics.detection: exact hand-computed cases, plus agreement with Ultralytics."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    DetectionMatches,
    average_precision,
    box_iou,
    box_overlap,
    match_detections,
    pr_curve,
    precision_recall_f1,
)


def test_box_iou_and_ios_exact():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 2, 2]]
    assert box_iou(a, b)[0].tolist() == pytest.approx([50 / 150, 0.5, 0.0, 0.04])
    assert box_overlap(a, b, "ios")[0].tolist() == pytest.approx([0.5, 1.0, 0.0, 1.0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    with pytest.raises(ValueError, match="overlap metric"):
        box_overlap(a, b, "giou")


def test_match_is_greedy_by_score_not_by_iou():
    gt = [[0, 0, 10, 10], [50, 50, 60, 60]]
    gt_labels = [0, 1]
    preds = [
        [0, 0, 10, 8],  # score 0.9, IoU 0.8 with gt0
        [0, 0, 10, 9],  # score 0.8, IoU 0.9 with gt0: better box, but gt0 is already taken
        [50, 50, 60, 60],  # score 0.7, exact on gt1 but the wrong class
    ]
    scores = [0.9, 0.8, 0.7]
    labels = [0, 0, 0]
    assert match_detections(preds, scores, labels, gt, gt_labels).tolist() == [0, -1, -1]
    assert match_detections(preds, scores, labels, gt, gt_labels, class_aware=False).tolist() == [0, -1, 1]
    # Input order does not matter, only scores do.
    assert match_detections(preds[::-1], scores[::-1], labels, gt, gt_labels).tolist() == [-1, -1, 0]


def test_match_takes_the_best_iou_ground_truth_and_threshold_is_inclusive():
    gt = [[0, 0, 10, 10], [2, 0, 12, 10]]
    pred = [[2, 0, 12, 10]]  # IoU 0.667 with gt0, 1.0 with gt1
    assert match_detections(pred, [0.5], [0], gt, [0, 0]).tolist() == [1]
    half = [[0, 0, 10, 5]]  # IoU exactly 0.5 with gt0: COCO counts >= as a match
    assert match_detections(half, [0.5], [0], [[0, 0, 10, 10]], [0], iou=0.5).tolist() == [0]
    assert match_detections(half, [0.5], [0], [[0, 0, 10, 10]], [0], iou=0.51).tolist() == [-1]


def test_match_empty_sides():
    assert match_detections(np.zeros((0, 4)), [], [], [[0, 0, 1, 1]], [0]).tolist() == []
    assert match_detections([[0, 0, 1, 1]], [0.3], [0], np.zeros((0, 4)), []).tolist() == [-1]
    with pytest.raises(ValueError, match="differ in length"):
        match_detections([[0, 0, 1, 1]], [0.3, 0.2], [0], [], [])


def test_precision_recall_f1_counts():
    assert precision_recall_f1(3, 1, 2) == pytest.approx((0.75, 0.6, 2 * 0.75 * 0.6 / 1.35))
    assert precision_recall_f1(0, 0, 4) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(0, 2, 0) == (0.0, 0.0, 0.0)


def test_pr_curve_and_coco_ap_hand_computed():
    # Sorted: TP, FP, TP, FP with 3 ground-truth objects.
    tp = np.array([True, False, True, False])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    conf, precision, recall = pr_curve(tp[::-1], scores[::-1], 3)  # input order is irrelevant
    assert conf.tolist() == [0.9, 0.8, 0.7, 0.6]
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # Envelope [1, 2/3, 2/3, 1/2]; recall points 0..0.33 read 1 (34 points),
    # 0.34..0.66 read 2/3 (33 points), 0.67..1 are never reached (0).
    assert average_precision(tp, scores, 3) == pytest.approx((34 + 33 * 2 / 3) / 101)


def test_ap_edge_cases():
    assert average_precision([True, True], [0.9, 0.1], 2) == pytest.approx(1.0)
    assert average_precision([], [], 2) == 0.0
    assert np.isnan(average_precision([False], [0.5], 0))
    # A false positive ranked above every true positive caps precision at 1/2 at all recalls <= 1/2.
    assert average_precision([False, True], [0.9, 0.8], 1) == pytest.approx(0.5)


def test_detection_matches_counts_and_map_over_thresholds():
    m = DetectionMatches(num_classes=2)
    # Image 1: class-0 object found with IoU 0.72 (matched at 0.50..0.70: 5 of 10 thresholds), one FP of class 1.
    gt = [[0, 0, 100, 100]]
    pred = [[0, 0, 100, 72], [200, 200, 220, 220]]
    tp = m.add(pred, [0.9, 0.4], [0, 1], gt, [0])
    assert tp.shape == (2, 10)
    assert tp[0].tolist() == [True] * 5 + [False] * 5 and not tp[1].any()
    # Image 2: a class-1 object missed, and a pure negative image.
    m.add(np.zeros((0, 4)), [], [], [[10, 10, 30, 30]], [1])
    m.add(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])
    assert m.num_images == 3
    assert m.support().tolist() == [1, 1]
    assert m.counts(conf=0.5) == (1, 0, 1)
    assert m.counts(conf=0.3) == (1, 1, 1)
    assert m.counts(conf=0.3, label=1) == (0, 1, 1)
    # One confidence per class: class 0 at 0.95 drops its TP, class 1 at 0.3 keeps its FP.
    assert m.counts(conf=[0.95, 0.3]) == (0, 1, 2)
    assert m.counts(conf=[0.95, 0.3], label=0) == (0, 0, 1)
    with pytest.raises(ValueError, match="1 per-class confidences for 2 classes"):
        m.counts(conf=[0.5])
    assert m.per_class_ap(0.5).tolist() == pytest.approx([1.0, 0.0])
    assert m.mean_ap(0.5) == pytest.approx(0.5)
    assert m.mean_ap(0.75) == pytest.approx(0.0)
    # class 0: AP 1 at 5 thresholds, 0 at 5 -> 0.5; class 1: 0 -> mAP50-95 = 0.25
    assert m.mean_ap_50_95() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="was not matched"):
        m.counts(0.5, iou=0.42)


def test_class_without_ground_truth_is_left_out_of_the_mean():
    m = DetectionMatches(num_classes=3)
    m.add([[0, 0, 10, 10]], [0.9], [0], [[0, 0, 10, 10]], [0])
    aps = m.per_class_ap(0.5)
    assert aps[0] == pytest.approx(1.0) and np.isnan(aps[1]) and np.isnan(aps[2])
    assert m.mean_ap(0.5) == pytest.approx(1.0)


def test_class_agnostic_matches():
    m = DetectionMatches(num_classes=1, class_aware=False)
    m.add([[0, 0, 10, 10]], [0.9], [3], [[0, 0, 10, 10]], [1])
    assert m.counts(0.5) == (1, 0, 0)


def _random_scene(rng, n_images=30, n_classes=3):
    """Ground truth plus noisy predictions (jittered copies, misses, and false alarms)."""
    scenes = []
    for _ in range(n_images):
        k = int(rng.integers(0, 5))
        xy = rng.uniform(0, 400, (k, 2))
        wh = rng.uniform(20, 80, (k, 2))
        gt = np.hstack([xy, xy + wh])
        gl = rng.integers(0, n_classes, k)
        keep = rng.random(k) < 0.8
        jitter = rng.normal(0, 6, (k, 4))
        pb = (gt + jitter)[keep]
        pl = np.where(rng.random(k) < 0.9, gl, (gl + 1) % n_classes)[keep]
        nf = int(rng.integers(0, 3))
        fxy = rng.uniform(0, 400, (nf, 2))
        pb = np.vstack([pb, np.hstack([fxy, fxy + 40])])
        pl = np.concatenate([pl, rng.integers(0, n_classes, nf)])
        ps = rng.random(len(pb))
        scenes.append((pb, ps, pl, gt, gl))
    return scenes


def test_ap_agrees_with_ultralytics_ap_per_class():
    """Same TP flags through Ultralytics' ap_per_class: its trapezoid integration of the
    interpolated curve differs from COCO's 101-point step rule by a little only."""
    from ultralytics.utils.metrics import ap_per_class

    rng = np.random.default_rng(3)
    m = DetectionMatches(num_classes=3)
    for pb, ps, pl, gt, gl in _random_scene(rng, n_images=60):
        m.add(pb, ps, pl, gt, gl)
    tp = np.concatenate(m.tp)
    conf = np.concatenate(m.scores)
    pred_cls = np.concatenate(m.labels)
    target_cls = np.concatenate(m.gt_labels)
    ours = np.array([m.per_class_ap(t) for t in COCO_IOU_THRESHOLDS]).T  # (classes, 10)
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    theirs = result[5]  # (classes, 10) AP per class and threshold
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 0.03
    assert ours[:, 0].mean() == pytest.approx(theirs[:, 0].mean(), abs=0.015)
