"""Synthetic training cycles for the pooled model: RespireNet-style concatenation and patch-mix across patients.

Both work on the (N, 3, H, W) feature images, not on audio: every map (MFCC, Mel, CQT) is computed frame by frame
with a 128-ms window, so the first half of one cycle's image joined in time to the first half of another's is, up
to the few frames at the joint, the image of the two sounds played one after the other. Cycles are repeat-padded to
``cycle_seconds`` (8 s; the ICBHI cycles here are 2.8 s on average), so each half still holds a whole cycle for most.

* ``concat_cycles`` (Gairola et al., RespireNet, 2021): extra cycles of a rare class made of two training cycles of
  that class. RespireNet joined cycles of the same patient; ``pairing="other_patient"`` joins cycles of two
  different patients instead, so that what the synthetic cycle shares with its class is the sound, not the voice of
  one patient (on this data the label mostly tells who the patient is: docs/benchmarks/sounds.md).
  ``both_from_parts`` also makes "both" cycles (crackle and wheeze) from one crackle and one wheeze cycle.
* ``mix_cycles`` (patch-mix style, Bae et al. 2023, in time only): a cycle whose first part comes from one patient and
  whose rest from another, of any classes, labelled with both classes in proportion to their share of the time.

Pairs are drawn with a seeded generator, so a fit is repeatable.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NORMAL, CRACKLE, WHEEZE, BOTH = 0, 1, 2, 3
Pairing = Literal["other_patient", "same_patient"]


def splice(a: np.ndarray, b: np.ndarray, cut: int) -> np.ndarray:
    """The first ``cut`` time columns of ``a`` followed by the first ``W - cut`` time columns of ``b`` (same shape)."""
    w = a.shape[-1]
    if not 0 <= cut <= w:
        raise ValueError(f"cut {cut} is outside the image's {w} time columns")
    return np.concatenate([a[..., :cut], b[..., : w - cut]], axis=-1)


def _pool(i: int, candidates: np.ndarray, groups: np.ndarray, pairing: Pairing) -> np.ndarray:
    """The cycles among ``candidates`` that may be paired with cycle i: another patient's, or the same patient's."""
    same = groups[candidates] == groups[i]
    return candidates[~same] if pairing == "other_patient" else candidates[same & (candidates != i)]


def _pairs(first: np.ndarray, second: np.ndarray, n: int, groups: np.ndarray, pairing: Pairing, rng) -> list[tuple[int, int]]:
    """n (i, j) pairs drawn with replacement: i from ``first`` (only cycles that have a partner), j from ``second``,
    j's patient other than / the same as i's."""
    pools = {int(i): _pool(int(i), second, groups, pairing) for i in first}
    usable = np.asarray([i for i, pool in pools.items() if len(pool)], dtype=np.int64)
    if not len(usable) or n <= 0:
        return []
    return [(int(i), int(rng.choice(pools[int(i)]))) for i in rng.choice(usable, size=n, replace=True)]


def concat_cycles(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, strength: float, *,
                  pairing: Pairing = "other_patient", both_from_parts: bool = False, classes=(CRACKLE, WHEEZE, BOTH),
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic cycles by concatenation: ``round(strength * n_c)`` new cycles of each class c in ``classes``
    (n_c = its training cycles), each the first half of one class-c cycle joined to the first half of another.

    both_from_parts: also ``round(strength * n_both)`` "both" cycles, each from a crackle and a wheeze cycle.
    groups: the patient of each cycle (None: every cycle its own patient). Returns (x_new, y_new); empty when
    nothing can be paired.
    """
    x, y = np.asarray(x), np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    cut = x.shape[-1] // 2
    rows, labels = [], []
    plans = [(np.flatnonzero(y == c), np.flatnonzero(y == c), int(round(strength * np.sum(y == c))), c) for c in classes]
    if both_from_parts:
        plans.append((np.flatnonzero(y == CRACKLE), np.flatnonzero(y == WHEEZE), int(round(strength * np.sum(y == BOTH))), BOTH))
    for first, second, n, label in plans:
        for i, j in _pairs(first, second, n, groups, pairing, rng):
            a, b = (i, j) if rng.random() < 0.5 else (j, i)  # which sound comes first
            rows.append(splice(x[a], x[b], cut))
            labels.append(label)
    if not rows:
        return np.zeros((0, *x.shape[1:]), dtype=x.dtype), np.zeros(0, dtype=np.int64)
    return np.stack(rows).astype(x.dtype), np.asarray(labels, dtype=np.int64)


def mix_cycles(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, strength: float, *, low: float = 0.25,
               high: float = 0.75, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patch-mix across patients, in time: ``round(strength * N)`` new cycles, each the first ``lam`` of one cycle's
    time columns (lam uniform in [low, high], rounded to whole columns) joined to the start of another patient's cycle.

    Returns (x_new, y_first, y_second, lam): the new cycle counts as ``y_first`` with weight ``lam`` and as
    ``y_second`` with weight ``1 - lam`` (its share of the time).
    """
    x, y = np.asarray(x), np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    w = x.shape[-1]
    everyone = np.arange(len(y))
    rows, y1, y2, lams = [], [], [], []
    for i, j in _pairs(everyone, everyone, int(round(strength * len(y))), groups, "other_patient", rng):
        cut = int(round(rng.uniform(low, high) * w))
        rows.append(splice(x[i], x[j], cut))
        y1.append(y[i])
        y2.append(y[j])
        lams.append(cut / w)
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros((0, *x.shape[1:]), dtype=x.dtype), empty, empty, np.zeros(0)
    return np.stack(rows).astype(x.dtype), np.asarray(y1, np.int64), np.asarray(y2, np.int64), np.asarray(lams)
