"""The one conversion from a scan as read (8/16-bit, gray or RGB) to what the
YOLO network sees. Training tiles and inference tiles both go through it, so
the model never sees a different mapping at test time than in training."""

from __future__ import annotations

import numpy as np


def window_to_uint8(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Map a 16-bit (or float) image to 8-bit by a per-image percentile window.

    Per-image percentiles rather than a fixed 0..65535 scale: body scans use a
    small, scanner-dependent part of the 16-bit range, and a fixed scale would
    leave them almost black. 8-bit input is returned unchanged.
    """
    if image.dtype == np.uint8:
        return image
    data = image.astype(np.float32)
    # Percentiles on a strided sample: same answer to within a grey level, 16x less work.
    sample = data[::4, ::4] if data.ndim >= 2 and min(data.shape[:2]) >= 64 else data
    lo, hi = np.percentile(sample, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    out = (data - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def to_model_input(image: np.ndarray) -> np.ndarray:
    """HxW or HxWxC image (RGB order, any bit depth) -> HxWx3 uint8 BGR, Ultralytics' convention."""
    img = window_to_uint8(image)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1])
    if img.ndim == 3 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, 2::-1])
    raise ValueError(f"unsupported image shape {image.shape}")
