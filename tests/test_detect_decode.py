"""The numpy decoding of YOLO outputs (rarespot.detect.decode) gives exactly Ultralytics'
``non_max_suppression`` rows (with torchvision's NMS kernel, as rarespot called it): same boxes,
scores and classes, bit for bit, in the same order."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_detect import make_untrained_yolo
from rarespot.detect.decode import decode_yolo, nms_torchvision


def _ultralytics(raw: np.ndarray, conf, iou, agnostic=False, max_det=300, nc=0, end2end=False) -> list[np.ndarray]:
    import torch
    import torchvision  # noqa: F401  Ultralytics takes torchvision's kernel once it is imported (rarespot's old path)
    from ultralytics.utils.nms import non_max_suppression

    out = non_max_suppression(
        torch.from_numpy(raw.copy()), conf_thres=conf, iou_thres=iou, agnostic=agnostic, max_det=max_det, nc=nc,
        end2end=end2end,
    )
    return [d.numpy() for d in out]


def _assert_same(raw, conf, iou, agnostic=False, max_det=300, nc=0, end2end=False) -> int:
    ours = decode_yolo(raw, conf, iou, agnostic=agnostic, max_det=max_det, nc=nc, end2end=end2end)
    ref = _ultralytics(raw, conf, iou, agnostic=agnostic, max_det=max_det, nc=nc, end2end=end2end)
    assert len(ours) == len(ref)
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert a.dtype == np.float32 and a.shape == b.shape, f"image {k}: {a.shape} rows, Ultralytics {b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=f"image {k}, conf {conf}, iou {iou}, agnostic {agnostic}")
    return sum(len(a) for a in ours)


@pytest.fixture(scope="module")
def network_outputs(tmp_path_factory):
    """Raw head outputs (B, 4 + nc, anchors) of random-weight YOLOs on random and structured tiles:
    2 classes (scores spread over (0, 1)), 1 class, and the flat near-tie scores of an untouched init."""
    import torch

    from rarespot.detect.backends import UltralyticsBackend

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (6, 160, 160, 3), dtype=np.uint8)
    tiles[3:, 40:100, 30:90] = 230  # bright blocks on a dark ground: objects of a kind
    tiles[3:, :20] = 0
    outputs = {}
    for name, names, lively in (("two", ["knife", "gun"], True), ("one", ["thing"], True), ("flat", ["a", "b", "c"], False)):
        backend = UltralyticsBackend(make_untrained_yolo(folder / f"{name}.pt", names, lively=lively, score_bias=-1.5),
                                     threads=1)
        raw = backend._raw(backend._prepare(tiles, 160)).float().numpy()
        outputs[name] = (raw, len(names))
    return outputs


@pytest.mark.parametrize("name", ["two", "one", "flat"])
@pytest.mark.parametrize("agnostic", [False, True])
def test_same_rows_as_ultralytics_on_network_outputs(network_outputs, name, agnostic):
    raw, nc = network_outputs[name]
    confs = (0.0005, 0.001, 0.002) if name == "flat" else (0.01, 0.065, 0.25, 0.5)
    kept = 0
    for conf in confs:
        for iou in (0.3, 0.45, 0.5, 0.7):
            kept += _assert_same(raw, conf, iou, agnostic=agnostic, nc=nc)
        _assert_same(raw, conf, 0.5, agnostic=agnostic, nc=nc, max_det=7)  # max_det cuts the kept list
        _assert_same(raw, conf, 0.5, agnostic=agnostic, nc=nc, max_det=1)
    assert kept > 200  # the comparison saw many boxes, not empty lists


def _trained_like(seed: int, batch=4, nc=3, anchors=2100, size=320, quantum=None) -> np.ndarray:
    """An output shaped like a trained detector's: near-zero background scores, and around each object
    a cluster of anchors with jittered boxes and high scores for its class (some for another class)."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((batch, 4 + nc, anchors), np.float32)
    raw[:, 0:2] = rng.uniform(0, size, (batch, 2, anchors))
    raw[:, 2:4] = rng.uniform(4, 60, (batch, 2, anchors))
    raw[:, 4:] = rng.beta(0.3, 30, (batch, nc, anchors))
    for b in range(batch):
        for _ in range(rng.integers(0, 6)):
            cx, cy, w, h = rng.uniform(20, size - 20), rng.uniform(20, size - 20), rng.uniform(8, 90), rng.uniform(8, 90)
            cls = rng.integers(nc)
            idx = rng.choice(anchors, rng.integers(5, 40), replace=False)
            raw[b, 0, idx] = cx + rng.normal(0, 2, len(idx))
            raw[b, 1, idx] = cy + rng.normal(0, 2, len(idx))
            raw[b, 2, idx] = w * rng.uniform(0.8, 1.2, len(idx))
            raw[b, 3, idx] = h * rng.uniform(0.8, 1.2, len(idx))
            raw[b, 4 + cls, idx] = rng.uniform(0.05, 0.95, len(idx))
            other = idx[: len(idx) // 3]
            raw[b, 4 + (cls + 1) % nc, other] = rng.uniform(0.05, 0.6, len(other))
    if quantum:  # coarse scores: many exact ties between boxes and between classes
        raw[:, 4:] = np.round(raw[:, 4:] / quantum) * quantum
        raw[:, :4] = np.round(raw[:, :4])
    return raw


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quantum", [None, 1 / 32])
def test_same_rows_as_ultralytics_on_trained_like_outputs_with_ties(seed, quantum):
    raw = _trained_like(seed, quantum=quantum)
    for agnostic in (False, True):
        for conf in (0.001, 0.065, 0.25):
            for iou in (0.45, 0.5, 0.7):
                _assert_same(raw, conf, iou, agnostic=agnostic, nc=3)
            _assert_same(raw, conf, 0.5, agnostic=agnostic, nc=3, max_det=3)
    assert _assert_same(raw, 0.065, 0.5, nc=3) > 0


def test_thresholds_at_their_edges():
    # Scores exactly at conf (in float32: 0.1 is 0.10000000149 as float32) are dropped, as torch drops them;
    # an IoU exactly at the threshold keeps the box (suppression needs IoU > iou).
    raw = np.zeros((1, 5, 4), np.float32)
    raw[0, :4] = np.array([[5, 5, 10, 10], [5, 10, 10, 20], [50, 50, 10, 10], [80, 80, 4, 4]], np.float32).T
    raw[0, 4] = [0.9, np.float32(0.1), 0.8, 0.25]
    for conf in (0.1, 0.25, np.nextafter(np.float32(0.1), np.float32(0)).item()):
        for iou in (0.5, np.nextafter(0.5, 0)):
            _assert_same(raw, conf, iou, nc=1)
    # boxes 0 and 1 share x, box 0 covers half of box 1: IoU exactly 0.5
    assert len(decode_yolo(raw, 0.05, 0.5)[0]) == 4
    assert len(decode_yolo(raw, 0.05, np.nextafter(0.5, 0))[0]) == 3


def test_class_ties_take_the_first_class_and_empty_outputs():
    raw = np.zeros((2, 7, 3), np.float32)
    raw[:, :4] = np.array([[10, 10, 8, 8], [40, 40, 8, 8], [70, 70, 8, 8]], np.float32).T
    raw[0, 4:, 0] = [0.5, 0.5, 0.2]
    raw[0, 4:, 1] = [0.1, 0.7, 0.7]
    raw[0, 4:, 2] = [0.3, 0.3, 0.3]
    _assert_same(raw, 0.25, 0.5, nc=3)
    assert decode_yolo(raw, 0.25, 0.5)[0][:, 5].tolist() == [1, 0, 0]
    assert decode_yolo(raw, 0.25, 0.5)[1].shape == (0, 6)  # nothing above conf: an empty (0, 6)
    _assert_same(np.zeros((2, 6, 0), np.float32), 0.25, 0.5)


def test_end_to_end_heads_are_filtered_by_conf_and_capped():
    rng = np.random.default_rng(3)
    raw = np.concatenate([rng.uniform(0, 300, (3, 50, 4)), rng.uniform(0, 1, (3, 50, 1)),
                          rng.integers(0, 4, (3, 50, 1))], axis=2).astype(np.float32)
    for conf, max_det in ((0.25, 300), (0.5, 5), (0.9, 300)):
        _assert_same(raw, conf, 0.5, max_det=max_det, nc=4, end2end=True)


def test_nms_matches_torchvision_on_dense_random_boxes():
    import torch
    import torchvision

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 50, 400):
        xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(0, 40, (n, 2)).astype(np.float32)], axis=1)
        scores = np.round(rng.uniform(0, 1, n) * 16).astype(np.float32) / 16  # many ties
        for iou in (0.0, 0.3, 0.5, 0.9, 1.0):
            ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
            np.testing.assert_array_equal(nms_torchvision(boxes, scores, iou), ref)
            np.testing.assert_array_equal(nms_torchvision(boxes, scores, iou, max_keep=3), ref[:3])


def test_bad_outputs_are_refused():
    with pytest.raises(ValueError, match="conf and iou"):
        decode_yolo(np.zeros((1, 6, 10), np.float32), 1.5, 0.5)
    with pytest.raises(ValueError, match="batch, channels, anchors"):
        decode_yolo(np.zeros((6, 10), np.float32), 0.25, 0.5)
    with pytest.raises(ValueError, match="fewer than 4 \\+ 3 classes"):
        decode_yolo(np.zeros((1, 6, 10), np.float32), 0.25, 0.5, nc=3)
