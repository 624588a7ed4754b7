"""Cross-tile merging: exact hand-computed NMS and weighted-box-fusion cases, and randomized cross-checks
of NMS against torchvision and of WBF against ensemble-boxes."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.detect.merge import merge_detections, nms, weighted_box_fusion

A = [0, 0, 10, 10]
A_SHIFTED = [1, 0, 11, 10]  # IoU with A = 90 / 110 = 0.818


def test_nms_class_aware_and_agnostic():
    boxes = [A, A_SHIFTED, A_SHIFTED]
    scores = [0.9, 0.8, 0.7]
    labels = [0, 0, 1]
    assert nms(boxes, scores, labels, iou=0.5).tolist() == [0, 2]
    assert nms(boxes, scores, labels, iou=0.5, class_agnostic=True).tolist() == [0]
    assert nms(boxes, scores, labels, iou=0.85).tolist() == [0, 1, 2]


def test_nms_suppresses_only_strictly_above_threshold():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5]]  # IoU exactly 0.5
    assert nms(boxes, [0.9, 0.8], [0, 0], iou=0.5).tolist() == [0, 1]
    assert nms(boxes, [0.9, 0.8], [0, 0], iou=0.49).tolist() == [0]


def test_nms_output_sorted_by_score_and_handles_empty():
    boxes = [[100, 100, 110, 110], A, A_SHIFTED]
    assert nms(boxes, [0.2, 0.3, 0.9], [1, 0, 0]).tolist() == [2, 0]
    assert nms(np.zeros((0, 4)), [], []).tolist() == []


def test_ios_folds_a_cut_off_part_into_the_whole_box():
    whole = [0, 0, 100, 100]
    part = [0, 0, 20, 100]  # what a neighbouring tile saw: IoU 0.2, IoS 1.0
    assert nms([whole, part], [0.9, 0.5], [0, 0], iou=0.5, metric="iou").tolist() == [0, 1]
    assert nms([whole, part], [0.9, 0.5], [0, 0], iou=0.5, metric="ios").tolist() == [0]


def test_wbf_fuses_corners_by_score_and_keeps_the_max_score():
    boxes = [[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]]  # first two: IoU 80/120 = 0.667
    scores = [0.9, 0.3, 0.4]
    fused, fscores, flabels = weighted_box_fusion(boxes, scores, [0, 0, 0], iou=0.5)
    np.testing.assert_allclose(fused, [[0.5, 0, 10.5, 10], [50, 50, 60, 60]])
    assert fscores.tolist() == pytest.approx([0.9, 0.4])
    assert flabels.tolist() == [0, 0]


def test_wbf_class_aware_keeps_classes_apart_agnostic_takes_top_label():
    boxes = [[0, 0, 10, 10], [2, 0, 12, 10]]
    fused, scores, labels = weighted_box_fusion(boxes, [0.3, 0.9], [0, 1], iou=0.5)
    assert len(fused) == 2 and labels.tolist() == [1, 0]
    fused, scores, labels = weighted_box_fusion(boxes, [0.3, 0.9], [0, 1], iou=0.5, class_agnostic=True)
    np.testing.assert_allclose(fused, [[1.5, 0, 11.5, 10]])
    assert scores.tolist() == pytest.approx([0.9]) and labels.tolist() == [1]


def test_wbf_compares_with_the_running_fused_box():
    # b joins a's cluster; c overlaps the fused (a+b) box enough but not a alone.
    a, b, c = [0, 0, 10, 10], [4, 0, 14, 10], [7, 0, 17, 10]
    # IoU(a, c) = 30/170 = 0.18; fused(a, b) with equal scores = [2, 0, 12, 10]; IoU with c = 50/150 = 0.33
    fused, _, _ = weighted_box_fusion([a, b, c], [0.5, 0.5, 0.5], [0, 0, 0], iou=0.3)
    np.testing.assert_allclose(fused, [[11 / 3, 0, 41 / 3, 10]])



def _clustered_unit_boxes(rng, n: int, classes: int):
    """``n`` boxes in normalised [0, 1] coordinates (what ensemble-boxes requires), jittered around 40 objects."""
    centres = rng.uniform(0.1, 0.9, (40, 2))
    sizes = rng.uniform(0.03, 0.1, (40, 2))
    which = rng.integers(0, 40, n)
    xy = centres[which] + rng.normal(0, 0.01, (n, 2))
    wh = sizes[which] * rng.uniform(0.8, 1.2, (n, 2))
    boxes = np.clip(np.hstack([xy - wh / 2, xy + wh / 2]), 0, 1)
    scores = rng.permutation(n) / n + 0.001  # distinct: tie order is each implementation's own
    return boxes, scores, rng.integers(0, classes, n)


@pytest.mark.parametrize("models", [1, 3])
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wbf_equals_ensemble_boxes(seed, class_agnostic, models):
    """The reference: ensemble-boxes' ``weighted_boxes_fusion`` (Solovyev et al.'s own code), on clustered
    random boxes, under the settings that mean what rarespot's WBF means:

    - ``conf_type="max"``: rarespot's fused score is the cluster's highest score by design (a partial view in
      a neighbouring tile must not lower the confidence of the tile that saw the object whole);
      ensemble-boxes' default ``"avg"`` averages the members' scores (scaled by how many models voted).
    - the tiles' boxes are one list: splitting them into several equal-weight "models" changes nothing with
      ``"max"`` (ensemble-boxes pools every model's boxes of a label and sorts them by score), checked too.
    - class-agnostic: ensemble-boxes always fuses per label, so it gets one label for every box; rarespot's
      fused box takes the label of its highest-scoring member, checked against the input.
    - ensemble-boxes needs normalised coordinates (it clips to [0, 1]) and fuses in float32, hence the
      tolerances; it has no IoS matching, so only IoU is compared.
    """
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    rng = np.random.default_rng(seed)
    boxes, scores, labels = _clustered_unit_boxes(rng, 300, 3)
    model_of = rng.integers(0, models, len(boxes))
    ref_labels_in = np.zeros_like(labels) if class_agnostic else labels
    split = [np.flatnonzero(model_of == m) for m in range(models)]
    for iou in (0.3, 0.55, 0.7):
        ours = weighted_box_fusion(boxes, scores, labels, iou=iou, class_agnostic=class_agnostic)
        ref = ensemble_boxes.weighted_boxes_fusion(
            [boxes[i] for i in split], [scores[i] for i in split], [ref_labels_in[i] for i in split],
            iou_thr=iou, skip_box_thr=0.0, conf_type="max",
        )
        assert 30 < len(ours[0]) < len(boxes)  # clusters did fuse, and not into one
        assert len(ours[0]) == len(ref[0])
        np.testing.assert_allclose(ours[0], ref[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(ours[1], ref[1], rtol=0, atol=1e-6)
        if class_agnostic:  # the label of the member whose score the fused box carries
            founder = np.abs(ours[1][:, None] - scores[None, :]).argmin(1)
            assert ours[2].tolist() == labels[founder].tolist()
        else:
            assert ours[2].tolist() == ref[2].astype(np.int64).tolist()

def test_merge_dispatch_and_errors():
    boxes, scores, labels = merge_detections([A, A_SHIFTED], [0.9, 0.8], [0, 0], "nms")
    assert boxes.tolist() == [A] and scores.tolist() == [0.9] and labels.dtype == np.int64
    boxes, scores, labels = merge_detections(np.zeros((0, 4)), [], [], "wbf")
    assert boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="merge method"):
        merge_detections([A], [0.9], [0], "soft-nms")
    with pytest.raises(ValueError, match="overlap metric"):
        merge_detections([A], [0.9], [0], "nms", metric="giou")


@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_equals_torchvision_batched_nms(seed, class_agnostic):
    """The reference: torchvision's NMS kernel (what Ultralytics and SAHI run), on clustered random boxes,
    more than the 256 rows NMS holds at once."""
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1000, (60, 2))
    xy = centres[rng.integers(0, 60, 700)] + rng.normal(0, 10, (700, 2))
    boxes = np.hstack([xy, xy + rng.uniform(20, 60, (700, 2))])
    scores = rng.permutation(700) / 700 + 0.001  # distinct: tie order is each implementation's own
    labels = rng.integers(0, 3, 700)
    for iou in (0.3, 0.5, 0.7):
        ours = nms(boxes, scores, labels, iou=iou, class_agnostic=class_agnostic)
        idx = torch.zeros(700, dtype=torch.int64) if class_agnostic else torch.as_tensor(labels)
        ref = ops.batched_nms(torch.as_tensor(boxes), torch.as_tensor(scores), idx, iou).numpy()
        assert ours.tolist() == ref.tolist()
