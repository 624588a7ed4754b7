"""Shared pieces of the serve and batch-screening tests: scans written in each
format, a deterministic stand-in predictor, and a tiny untrained YOLO model."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ["knife", "gun"]


@dataclass
class FakeDetections:
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))


class FakePredictor:
    """Boxes fixed in image fractions, so results are exact for any image size.

    Scores are ``base_scores`` scaled by the image's brightest value over its
    dtype's maximum: brighter scans score higher, which lets batch tests flag
    some scans and not others.
    """

    class_names = CLASS_NAMES
    name = "fake"

    def __init__(self, base_scores=(0.9, 0.6, 0.2, 0.01), delay_s: float = 0.0, scale_by_brightness=False):
        self.base_scores = np.asarray(base_scores, dtype=np.float64)
        self.delay_s = delay_s
        self.scale_by_brightness = scale_by_brightness
        self.calls = 0
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0  # the app must never run one predictor in two threads at once

    def predict(self, image: np.ndarray) -> FakeDetections:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            h, w = image.shape[:2]
            n = len(self.base_scores)
            fractions = np.array(
                [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.8], [0.2, 0.6, 0.4, 0.9], [0.6, 0.1, 0.9, 0.3]]
            )
            boxes = fractions[:n] * np.array([w, h, w, h], dtype=np.float64)
            scores = self.base_scores.copy()
            if self.scale_by_brightness:
                top = np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1.0
                scores = scores * float(image.max()) / top
            labels = np.arange(n) % 2
            return FakeDetections(boxes, scores, labels)
        finally:
            with self._lock:
                self.active -= 1


def scan_16bit(h: int = 300, w: int = 240, peak: int = 60000, seed: int = 0) -> np.ndarray:
    """A grey 16-bit 'body' with a bright rectangular 'object'."""
    rng = np.random.default_rng(seed)
    img = rng.integers(8000, 12000, size=(h, w)).astype(np.uint16)
    img[h // 3 : h // 2, w // 3 : w // 2] = peak
    return img



def corrupt_png() -> bytes:
    """A complete PNG (end chunk and all) whose image data fails its checksum: libpng complains."""
    import cv2

    data = bytearray(cv2.imencode(".png", scan_16bit(40, 40))[1].tobytes())
    data[data.index(b"IDAT") + 10] ^= 0xFF
    return bytes(data)

def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def tiny_yolo(path: Path, class_names=CLASS_NAMES) -> Path:
    """An untrained yolo11n built from Ultralytics' yaml (nothing downloaded), saved loadable.

    Uses the detect pipeline's helper, so both test suites build models the same way.
    """
    from helpers_detect import make_untrained_yolo  # tests/ is on sys.path under pytest

    return make_untrained_yolo(path, names=list(class_names))


def body_scan(h: int = 608, w: int = 496, seed: int = 0) -> np.ndarray:
    """A 16-bit, body-like scan (soft tissue ellipse, spine, ribs, noise) with dense
    objects where FakePredictor puts its boxes, so a screenshot reads like the real thing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((xx - w / 2) / (0.42 * w)) ** 2 + ((yy - h / 2) / (0.52 * h)) ** 2
    img = 9000 + 14000 * np.clip(1.0 - body, 0, 1) ** 0.5
    img += 9000 * np.exp(-(((xx - w / 2) / (0.03 * w)) ** 2))  # spine
    for k in range(8):  # ribs
        y0 = h * (0.25 + 0.06 * k)
        img += 3500 * np.exp(-(((yy - y0 - 0.08 * np.abs(xx - w / 2)) / (0.008 * h)) ** 2)) * (body < 0.8)
    for fx1, fy1, fx2, fy2 in [(0.13, 0.13, 0.27, 0.27), (0.54, 0.55, 0.66, 0.75), (0.24, 0.64, 0.36, 0.86)]:
        img[int(fy1 * h) : int(fy2 * h), int(fx1 * w) : int(fx2 * w)] += 20000  # contraband-like dense objects
    img += rng.normal(0, 120, size=(h, w))  # mild noise keeps the docs screenshot small
    return np.clip(img, 0, 65535).astype(np.uint16)
