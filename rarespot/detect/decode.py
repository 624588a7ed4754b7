"""YOLO head outputs -> boxes per tile, in numpy: what Ultralytics' ``non_max_suppression`` does
for rarespot's case, without torch.

The ONNX back-ends (OpenVINO, onnxruntime) return numpy arrays; decoding them with
Ultralytics' function meant importing torch and torchvision (with torch._dynamo behind it),
about 2.5 CPU seconds at the start of every ``rarespot detect batch`` for a few milliseconds
of work. This port gives the same rows, bit for bit (tests/test_detect_decode.py compares it
with Ultralytics on real network outputs: random-weight and trained-like heads, several
classes and one, class-aware and agnostic, ``max_det``, tied scores):

1. candidates: best class score ``> conf`` (strictly, compared in float32 like torch does);
2. boxes: centre/size -> corners, in float32 (``xy -/+ wh / 2``);
3. class-aware NMS by Ultralytics' offset trick: each box shifted by ``class * 7680`` px
   (``max_wh``), then one NMS over all boxes (agnostic: no shift);
4. NMS as torchvision's CPU kernel computes it (the kernel Ultralytics calls when torchvision
   is imported, as it always was in rarespot): scores sorted descending with a stable sort,
   greedy, IoU in float32 as ``inter / (area_i + area_j - inter)``, a box dropped when its IoU
   with a kept one is ``> iou`` (compared in double); at most ``max_det`` kept.

Why not ``cv2.dnn.NMSBoxes`` (OpenCV is already loaded): it takes (x, y, w, h) rectangles and
computes overlaps in double precision, so boxes whose IoU sits within float32 rounding of the
threshold would be decided differently from Ultralytics, and it has no class offset; a numpy
loop over the kept boxes (each step one vectorised IoU row) is exact and, for the tens of
candidates a tile has at an operating confidence, as fast.

Not ported (rarespot never uses them): ``classes``, ``multi_label``, rotated boxes, masks, and
the NMS time limit (Ultralytics stops decoding a batch after 2 s + 50 ms per image, dropping
the remaining tiles' boxes; this port always decodes every tile). Above ``max_nms`` (30,000)
candidates in one tile (a network input of ~1,200 px or more at a very low confidence) the top
30,000 are kept with a stable sort, where torch's sort leaves the order of equal scores open.
"""

from __future__ import annotations

import numpy as np

#: Ultralytics' per-class coordinate offset for class-aware NMS in one pass (pixels).
MAX_WH = 7680
#: Ultralytics' cap on candidates going into NMS per image.
MAX_NMS = 30000


def nms_torchvision(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS, computed as torchvision's CPU ``nms`` computes it (float32
    boxes), highest score first; stops after ``max_keep`` (the same first indices)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")  # torch.sort(stable=True, descending=True): ties keep input order
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[order, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_keep is None else max(0, int(max_keep))
    zero = np.float32(0)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 (two empty boxes) is NaN: not > iou, as in C++
        for i in range(n):
            if len(keep) >= limit:
                break
            if suppressed[i]:
                continue
            keep.append(i)
            if i + 1 == n:
                break
            w = np.maximum(zero, np.minimum(x2[i], x2[i + 1 :]) - np.maximum(x1[i], x1[i + 1 :]))
            h = np.maximum(zero, np.minimum(y2[i], y2[i + 1 :]) - np.maximum(y1[i], y1[i + 1 :]))
            inter = w * h
            overlap = inter / (areas[i] + areas[i + 1 :] - inter)  # float32, the kernel's order of operations
            suppressed[i + 1 :] |= overlap.astype(np.float64) > iou  # float vs double threshold, as in C++
    return order[np.asarray(keep, dtype=np.int64)]


def decode_yolo(
    raw: np.ndarray,
    conf: float,
    iou: float,
    agnostic: bool = False,
    max_det: int = 300,
    nc: int = 0,
    end2end: bool = False,
) -> list[np.ndarray]:
    """Per image, a float32 (n, 6) array of x1, y1, x2, y2, score, class, in network pixels.

    raw: the head's output, (B, 4 + nc, anchors) with centre/size boxes and class scores, or an
    end-to-end head's (B, n, 6) final boxes (``end2end``, or a last axis of 6).
    """
    if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
        raise ValueError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3:
        raise ValueError(f"expected a (batch, channels, anchors) network output, got shape {raw.shape}")
    threshold = np.float32(conf)  # torch compares a float32 tensor with a Python float in float32
    if raw.shape[-1] == 6 or end2end:
        return [pred[np.flatnonzero(pred[:, 4] > threshold)[:max_det]].copy() for pred in raw]
    nc = nc or raw.shape[1] - 4
    if raw.shape[1] < 4 + nc:
        raise ValueError(f"network output has {raw.shape[1]} channels, fewer than 4 + {nc} classes")
    out: list[np.ndarray] = []
    for pred in raw:
        cls = pred[4 : 4 + nc]
        best = cls.max(axis=0)
        cand = np.flatnonzero(best > threshold)
        if not len(cand):
            out.append(np.zeros((0, 6), dtype=np.float32))
            continue
        x = pred[:4, cand].T  # (n, 4) centre x, centre y, width, height
        half = x[:, 2:] / np.float32(2)
        det = np.empty((len(cand), 6), dtype=np.float32)
        det[:, :2] = x[:, :2] - half
        det[:, 2:4] = x[:, :2] + half
        det[:, 4] = best[cand]
        det[:, 5] = cls[:, cand].argmax(axis=0)  # first of equal class scores, as torch.max
        if len(det) > MAX_NMS:
            det = det[np.argsort(-det[:, 4], kind="stable")[:MAX_NMS]]
        shifted = det[:, :4] + det[:, 5:6] * np.float32(0 if agnostic else MAX_WH)
        out.append(det[nms_torchvision(shifted, det[:, 4], iou, max_keep=max_det)])
    return out
