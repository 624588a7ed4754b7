"""Boxes drawn on scans, as in the seed's figures: ground truth red,
predictions green with class and score. Any bit depth in (windowed for
display, then an optional view filter), HxWx3 uint8 RGB out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from rarespot.filters import FilterStep, ViewFilter, to_uint8

GT_COLOUR = (255, 40, 40)  # RGB red
PRED_COLOUR = (40, 230, 40)  # RGB green


def display_chain(image: np.ndarray, view: ViewFilter | str | None = None) -> ViewFilter:
    """The filter chain a viewer applies: a display window first, then ``view``.

    A 16-bit scan is first put through the percentile window (unless ``view``
    starts with its own window), so brightness/contrast, gamma and CLAHE act on
    the grey levels on screen, as in an operator's viewer. Applied to the raw
    16-bit values instead, the final window would undo brightness and contrast.
    The serve app uses the same rule, so a spec shows the same picture in both.
    """
    if isinstance(view, str):
        view = ViewFilter.parse(view)
    steps = list(view.steps) if view else []
    windowed = bool(steps) and steps[0].name in ("window_level", "percentile_window")
    if np.asarray(image).dtype != np.uint8 and not windowed:
        steps.insert(0, FilterStep(name="percentile_window", params={"low": 0.5, "high": 99.5}))
    return ViewFilter(steps=steps)


def to_display_rgb(image: np.ndarray, view: ViewFilter | str | None = None) -> np.ndarray:
    """Any scan -> HxWx3 uint8 RGB through :func:`display_chain`."""
    img = to_uint8(display_chain(image, view)(np.asarray(image)))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, :3])
    return np.ascontiguousarray(img)


def _label(labels, i: int, class_names: Sequence[str] | None) -> str:
    if labels is None:
        return ""
    lab = labels[i]
    if isinstance(lab, (str, np.str_)):
        return str(lab)
    lab = int(lab)
    if class_names is not None and 0 <= lab < len(class_names):
        return str(class_names[lab])
    return str(lab)


def _draw_boxes(canvas, boxes, colour, texts, thickness, font_scale, text_below=False) -> None:
    h, w = canvas.shape[:2]
    for box, text in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), texts):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if text:
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thickness // 2))
            # Labels above the box for predictions, below for ground truth, so both stay readable.
            ty = y2 + th + base + 2 if text_below else y1 - base - 2
            if ty - th < 0:
                ty = y1 + th + 2
            if ty > h - 1:
                ty = y1 - base - 2
            tx = int(np.clip(x1, 0, max(0, w - tw - 2)))
            cv2.rectangle(canvas, (tx, ty - th - 2), (tx + tw + 2, ty + base), (0, 0, 0), -1)
            cv2.putText(canvas, text, (tx + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour,
                        max(1, thickness // 2), cv2.LINE_AA)
        # The box goes on after its label, so a label that had to go inside the box does not hide its edge.
        # Axis-aligned: plain lines are crisp and keep the exact colour (anti-aliasing would blend it).
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, thickness, cv2.LINE_8)


def render_overlay(
    image: np.ndarray,
    gt_boxes=None,
    pred_boxes=None,
    gt_labels=None,
    pred_labels=None,
    pred_scores=None,
    class_names: Sequence[str] | None = None,
    view: ViewFilter | str | None = None,
) -> np.ndarray:
    """The scan with ground truth (red) and predictions (green, "class 0.87").

    Boxes are pixel xyxy; labels are class indices (named via
    ``class_names``) or strings. Line width and text size follow the image
    size, so a 1500x1216 scan and a 416x416 tile both read well.
    """
    canvas = to_display_rgb(image, view).copy()
    h, w = canvas.shape[:2]
    thickness = max(1, int(round(min(h, w) / 400)))
    font_scale = max(0.35, min(h, w) / 1600)
    if gt_boxes is not None and len(gt_boxes):
        n = len(np.asarray(gt_boxes).reshape(-1, 4))
        texts = [_label(gt_labels, i, class_names) for i in range(n)]
        _draw_boxes(canvas, gt_boxes, GT_COLOUR, texts, thickness, font_scale, text_below=True)
    if pred_boxes is not None and len(pred_boxes):
        n = len(np.asarray(pred_boxes).reshape(-1, 4))
        texts = []
        for i in range(n):
            name = _label(pred_labels, i, class_names)
            score = f"{float(pred_scores[i]):.2f}" if pred_scores is not None else ""
            texts.append(" ".join(t for t in (name, score) if t))
        _draw_boxes(canvas, pred_boxes, PRED_COLOUR, texts, thickness, font_scale)
    return canvas


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """Write a matplotlib figure atomically (``fig.savefig`` into a temp file, then
    ``os.replace``) and close it, also when saving fails. The one figure writer of
    the plots in rarespot (loss curves, PR curves, confusion matrices, timelines...)."""
    import matplotlib.pyplot as plt

    from rarespot.io.atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)
    return path


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or grey) uint8 image as PNG, atomically."""
    from rarespot.io.images import write_image

    return write_image(Path(path), np.asarray(rgb))
