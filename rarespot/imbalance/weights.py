"""Per-class weights from class counts (numpy only, no torch).

All weight functions return a float64 array of length ``len(counts)``,
normalised so the weights sum to the number of classes: a perfectly
balanced dataset gets all ones, and the overall loss scale stays comparable
to the unweighted loss whatever the counts.

Classes with a count of zero (absent from the training set) get the weight of
the rarest *present* class before normalisation: they are at least as rare as
anything seen, and a weight of zero would silence that class's negatives too
when the weights are used per class column (multi-label / detection BCE).
If no class is present at all, every weight is 1.
"""

from __future__ import annotations

import numpy as np


def _counts(counts) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("counts must name at least one class")
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"counts must be finite and >= 0, got {arr.tolist()}")
    return arr


def _normalise(raw: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Fill absent classes with the largest present weight, scale to sum to C."""
    if not np.any(present):
        return np.ones_like(raw)
    out = raw.copy()
    out[~present] = raw[present].max()
    return out * (len(out) / out.sum())


def effective_number(counts, beta: float = 0.999) -> np.ndarray:
    """Effective number of samples E_n = (1 - beta^n) / (1 - beta) (Cui et al. 2019).

    beta = 0 gives 1 for every present class; beta -> 1 gives n itself. For
    beta = 1 exactly, the limit n is returned.
    """
    n = _counts(counts)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 1.0:
        return n.copy()
    if beta == 0.0:
        return (n > 0).astype(np.float64)
    # expm1/log1p keep 1 - beta^n accurate for beta close to 1 (0.9999 and beyond).
    return -np.expm1(n * np.log(beta)) / (1.0 - beta)


def class_balanced_weights(counts, beta: float = 0.999) -> np.ndarray:
    """Class-balanced weights w_c = (1 - beta) / (1 - beta^n_c), i.e. 1 / E_n.

    Seed 003, eq. 13. Normalised to sum to the number of classes. beta = 0
    gives all ones (no re-weighting); beta -> 1 tends to inverse frequency.
    Typical beta: 0.9, 0.99, 0.999, 0.9999 (larger = stronger re-weighting).
    """
    n = _counts(counts)
    present = n > 0
    eff = effective_number(n, beta)
    raw = np.divide(1.0, eff, out=np.zeros_like(eff), where=present)
    return _normalise(raw, present)


def inverse_frequency_weights(counts) -> np.ndarray:
    """w_c proportional to 1 / n_c, normalised to sum to the number of classes."""
    n = _counts(counts)
    present = n > 0
    raw = np.divide(1.0, n, out=np.zeros_like(n), where=present)
    return _normalise(raw, present)


def sqrt_inverse_frequency_weights(counts) -> np.ndarray:
    """w_c proportional to 1 / sqrt(n_c): milder than inverse frequency."""
    n = _counts(counts)
    present = n > 0
    raw = np.divide(1.0, np.sqrt(n), out=np.zeros_like(n), where=present)
    return _normalise(raw, present)
