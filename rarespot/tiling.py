"""Tiles of large scans: the fixed grid used at test time and the random
positive tiles used in training (seed 000, section 3.5).

Pure numpy, no model code. Coordinates are pixel ``xyxy`` with the tile origin
``(x0, y0)`` in image pixels; a tile may run past the image's right/bottom edge
only when the image is smaller than the tile (the crop is then padded).
"""

from __future__ import annotations

import numpy as np


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis: regular stride, the last tile flush with the edge."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]  # the range stops short of the last start


def grid_tiles(height: int, width: int, tile: int, overlap: float = 0.2) -> np.ndarray:
    """A fixed grid of ``tile`` x ``tile`` windows covering the whole image.

    Neighbouring windows overlap by at least ``overlap`` of a tile, so an object
    up to that size is whole in at least one tile. Returns (k, 4) int xyxy.
    """
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(round(tile * (1.0 - overlap))))
    ys = _starts(height, tile, stride)
    xs = _starts(width, tile, stride)
    out = [(x, y, x + tile, y + tile) for y in ys for x in xs]
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def crop_tile(image: np.ndarray, x0: int, y0: int, tile: int, pad_value: float = 0) -> np.ndarray:
    """Cut ``tile`` x ``tile`` pixels at ``(x0, y0)``; pads past the image edge.

    Keeps the dtype (16-bit stays 16-bit) and any channel axis.
    """
    h, w = image.shape[:2]
    crop = image[max(0, y0) : min(h, y0 + tile), max(0, x0) : min(w, x0 + tile)]
    if crop.shape[0] == tile and crop.shape[1] == tile:
        return crop.copy()
    out = np.full((tile, tile) + image.shape[2:], pad_value, dtype=image.dtype)
    oy, ox = max(0, -y0), max(0, -x0)
    out[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return out


def boxes_in_tile(
    boxes: np.ndarray,
    labels: np.ndarray,
    x0: int,
    y0: int,
    tile: int,
    min_visible: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes clipped to a tile, in tile coordinates.

    A box is kept when at least ``min_visible`` of its area lies inside the
    tile (a sliver of a shoe teaches the model nothing, and a label on it
    would teach it the wrong thing). Returns (boxes, labels, kept_mask).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if len(boxes) == 0:
        return np.zeros((0, 4)), labels[:0], np.zeros(0, dtype=bool)
    shifted = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = np.clip(shifted, 0, tile)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    frac = np.divide(inside, area, out=np.zeros_like(area), where=area > 0)
    keep = (inside > 0) & (frac >= min_visible)
    return clipped[keep], labels[keep], keep


def _random_start(lo: float, hi: float, length: int, tile: int, rng: np.random.Generator) -> int:
    """A tile start along one axis so that [lo, hi] lies inside the tile (when it
    fits) at a uniformly random position, and the tile stays inside the image."""
    if length <= tile:
        return 0
    size = hi - lo
    if size <= tile:
        s_min, s_max = hi - tile, lo  # any start in [hi - tile, lo] contains [lo, hi]
    else:
        s_min, s_max = lo, hi - tile  # object bigger than the tile: the tile lies inside it
    s_min = max(0.0, s_min)
    s_max = min(float(length - tile), s_max)
    if s_max < s_min:  # only at image borders after clamping
        s_min = s_max = min(max(0.0, s_min), float(length - tile))
    return int(np.floor(rng.uniform(s_min, s_max + 1e-9)))


def random_positive_tile(
    height: int,
    width: int,
    boxes: np.ndarray,
    tile: int,
    rng: np.random.Generator,
    index: int | None = None,
) -> tuple[int, int]:
    """Origin of a random tile that contains object ``index`` (random if None).

    The object sits at a uniformly random position inside the tile, so the
    model sees it everywhere (the translation invariance seed 000 credits to
    positive tiling). Callers choose ``index`` to favour rare classes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("a positive tile needs at least one box")
    if index is None:
        index = int(rng.integers(len(boxes)))
    x1, y1, x2, y2 = boxes[index]
    x0 = _random_start(x1, x2, width, tile, rng)
    y0 = _random_start(y1, y2, height, tile, rng)
    return x0, y0


def random_negative_tile(
    height: int,
    width: int,
    boxes: np.ndarray,
    tile: int,
    rng: np.random.Generator,
    tries: int = 50,
) -> tuple[int, int] | None:
    """Origin of a random tile that touches no box, or None if none was found."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for _ in range(tries):
        x0 = int(rng.integers(0, max(1, width - tile + 1)))
        y0 = int(rng.integers(0, max(1, height - tile + 1)))
        if len(boxes) == 0:
            return x0, y0
        ix = np.minimum(boxes[:, 2], x0 + tile) - np.maximum(boxes[:, 0], x0)
        iy = np.minimum(boxes[:, 3], y0 + tile) - np.maximum(boxes[:, 1], y0)
        if not np.any((ix > 0) & (iy > 0)):
            return x0, y0
    return None
