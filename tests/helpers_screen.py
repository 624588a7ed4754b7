"""Shared fixtures for the screening tests: a tiny CAE config and synthetic cells."""

from __future__ import annotations

import numpy as np

# A CAE small enough to train in about two seconds on a loaded CPU.
TINY = {"data": {"size": 16}, "model": {"channels": [8, 16], "latent_channels": 2},
        "train": {"epochs": 8, "batch_size": 8, "lr": 0.01, "patience": 10, "threads": 1}, "score": {"density_pca": 4}}


def make_cells(n: int, seed: int, spots: bool = False, size: int = 20) -> np.ndarray:
    """Bright discs on black; `spots` adds a dark blob inside (the anomaly)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cx, cy, r = *rng.uniform(size * 0.4, size * 0.6, 2), rng.uniform(size * 0.3, size * 0.4)
        img = np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r * r, 160.0, 0.0)
        if spots:
            img[(xx - cx - 1) ** 2 + (yy - cy) ** 2 < 4] = 40
        out[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255)
    return out
