"""Rare-class sampling (numpy only).

- Repeat-factor sampling of images (Gupta et al., LVIS 2019): an image that
  contains a rare class is shown more often per epoch.
- Class-aware choice of the object a positive training tile is centred on
  (works with ``rarespot.tiling.random_positive_tile(index=...)``), so an
  image with one rare object among many common ones yields rare-object tiles
  more often.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from rarespot.imbalance.weights import _normalise


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return labels


def image_class_fractions(labels_per_image: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """f_c: the fraction of images that contain at least one object of class c."""
    if len(labels_per_image) == 0:
        return np.zeros(num_classes)
    present = np.zeros(num_classes, dtype=np.int64)
    for i, labels in enumerate(labels_per_image):
        present[np.unique(_check_labels(labels, num_classes, f"image {i}"))] += 1
    return present / len(labels_per_image)


def repeat_factors(
    labels_per_image: Sequence[np.ndarray], num_classes: int, threshold: float = 0.1
) -> np.ndarray:
    """Per-image repeat factor r_i = max over its classes of r_c = max(1, sqrt(t / f_c)).

    Images with no objects (negatives) get 1. threshold t: classes present in
    fewer than a fraction t of the images are over-sampled (LVIS uses 0.001
    for 1,200 classes; with a handful of classes 0.1-0.3 is the useful range).
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    frac = image_class_fractions(labels_per_image, num_classes)
    with np.errstate(divide="ignore"):
        class_r = np.maximum(1.0, np.sqrt(threshold / frac))  # absent classes: inf, never looked up
    out = np.ones(len(labels_per_image))
    for i, labels in enumerate(labels_per_image):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.size:
            out[i] = class_r[labels].max()
    return out


def dataset_repeat_factors(dataset, threshold: float = 0.1) -> np.ndarray:
    """repeat_factors for a ``rarespot.io.dataset.DetectionDataset``."""
    return repeat_factors([rec.labels for rec in dataset.records], dataset.num_classes, threshold)


class RepeatFactorSampler:
    """Turns repeat factors into a per-epoch list of image indices.

    Each epoch, image i appears floor(r_i) times plus once more with
    probability frac(r_i) (stochastic rounding, so the expected count is r_i
    exactly); the list is shuffled. Deterministic for a given (seed, epoch).
    Iterable, so it can be passed as ``sampler=`` to a torch DataLoader;
    call ``set_epoch`` each epoch as with DistributedSampler.
    """

    def __init__(self, factors: Sequence[float] | np.ndarray, seed: int = 0, shuffle: bool = True):
        self.factors = np.asarray(factors, dtype=np.float64).reshape(-1)
        if np.any(self.factors < 0) or not np.all(np.isfinite(self.factors)):
            raise ValueError("repeat factors must be finite and >= 0")
        self.seed, self.shuffle, self.epoch = int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        whole = np.floor(self.factors)
        repeats = whole + (rng.random(len(self.factors)) < self.factors - whole)
        indices = np.repeat(np.arange(len(self.factors)), repeats.astype(np.int64))
        if self.shuffle:
            rng.shuffle(indices)
        return indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        """Expected epoch length (the actual one varies by stochastic rounding)."""
        return int(round(self.factors.sum()))


def class_aware_object_weights(counts, power: float = 0.5) -> np.ndarray:
    """Per-class weights proportional to n_c^-power (power 1: inverse frequency,
    0.5: square root, 0: uniform), normalised to sum to the number of classes.
    Absent classes get the rarest present class's weight."""
    n = np.asarray(counts, dtype=np.float64).reshape(-1)
    if n.size == 0 or np.any(n < 0):
        raise ValueError(f"counts must be non-empty and >= 0, got {n.tolist()}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    present = n > 0
    raw = np.zeros_like(n)
    raw[present] = n[present] ** -power
    return _normalise(raw, present)


def choose_object(labels: np.ndarray, class_weights: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the object a positive tile is centred on, chosen with
    probability proportional to the weight of its class (uniform when all are 0)."""
    class_weights = np.asarray(class_weights, dtype=np.float64).reshape(-1)
    labels = _check_labels(labels, len(class_weights), "choose_object")
    if labels.size == 0:
        raise ValueError("choose_object needs at least one object")
    w = class_weights[labels]
    if np.any(w < 0):
        raise ValueError("class weights must be >= 0")
    total = w.sum()
    if total <= 0:
        return int(rng.integers(labels.size))
    return int(rng.choice(labels.size, p=w / total))
