"""Seeded train/val/test split, grouped by subject, stratified by class.

One person's scans never land on two sides: a detector that has seen a
subject's surgical implant in training would otherwise "find" it again in the
test set. Records without a subject id are their own group.

With heavy imbalance a purely random split can leave a rare class out of the
test set altogether, so by default the split is also stratified: a seeded
greedy pass in the spirit of iterative stratification (Sechidis et al., 2011)
places the groups holding the rarest classes first, each on the side that most
lacks their classes, while keeping every side's image count within one group of
its target.

Why hand-written rather than sklearn's GroupShuffleSplit: that splits in two
stages by group *count*, so with a few subjects scanned many times the image
fractions drift far from 60/20/20, and it cannot stratify.

The one home of splits in rarespot:

- drawing them: :func:`split_dataset`, :func:`carve_holdout`;
- cutting a side down: :func:`subsample` (an image budget), :func:`longtail_subsample`
  (class counts that fall off like given ratios);
- keeping them: :func:`save_splits` / :func:`load_saved_splits` (a run's ``split.json``,
  the exact records of every side) and :func:`load_split_folders` (the ``train/ val/ test/``
  folders ``rarespot data split`` writes).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from rarespot.errors import InputError
from rarespot.io.atomic import atomic_write_text
from rarespot.io.dataset import DetectionDataset, ImageRecord

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE = "split.json"


def _groups(ds: DetectionDataset) -> list[list[int]]:
    """Record indices grouped by subject (in first-seen order); no subject -> alone."""
    groups: "OrderedDict[str, list[int]]" = OrderedDict()
    for i, rec in enumerate(ds.records):
        key = f"subject:{rec.subject}" if rec.subject is not None else f"image:{i}"
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def split_indices(
    ds: DetectionDataset, fractions=(0.6, 0.2, 0.2), seed: int = 0, stratify: bool = True
) -> dict[str, list[int]]:
    """Record indices per side; see :func:`split_dataset`."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions.tolist()}")
    groups = _groups(ds)
    n_classes = max(ds.num_classes, 1)
    # Objects per class in each group.
    group_counts = np.zeros((len(groups), n_classes))
    for g, members in enumerate(groups):
        for i in members:
            labels = ds.records[i].labels
            labels = labels[(labels >= 0) & (labels < n_classes)]
            np.add.at(group_counts[g], labels, 1)
    class_totals = group_counts.sum(axis=0)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    if stratify:
        # Rarest class present first (stable, so the seeded shuffle breaks ties).
        rarity = np.array([class_totals[group_counts[g] > 0].min() if group_counts[g].any() else np.inf
                           for g in range(len(groups))])
        order = order[np.argsort(rarity[order], kind="stable")]

    image_targets = fractions * len(ds)
    class_targets = fractions[:, None] * class_totals[None, :]
    images = np.zeros(3)
    objects = np.zeros((3, n_classes))
    sides: list[list[int]] = [[], [], []]
    for g in order:
        members = groups[g]
        image_need = (image_targets - images) / max(len(ds), 1)
        score = image_need
        if stratify and group_counts[g].any():
            # Each side's shortfall of this group's classes, as a fraction of the
            # class total, weighted towards the group's rarer classes; the image
            # shortfall only breaks ties.
            weights = group_counts[g] / np.maximum(class_totals, 1)
            shortfall = (class_targets - objects) / np.maximum(class_totals, 1)
            score = (shortfall * weights).sum(axis=1) / weights.sum() + 1e-3 * image_need
        # A side already at its image target takes nothing more while another still has room.
        open_sides = images < image_targets - 1e-9
        if open_sides.any():
            score = np.where(open_sides, score, -np.inf)
        side = int(np.argmax(score))  # ties: the earlier side, train first
        sides[side].extend(members)
        images[side] += len(members)
        objects[side] += group_counts[g]
    return {name: sorted(idx) for name, idx in zip(SPLIT_NAMES, sides)}


def split_dataset(
    ds: DetectionDataset, fractions=(0.6, 0.2, 0.2), seed: int = 0, stratify: bool = True
) -> dict[str, DetectionDataset]:
    """Split into ``{"train", "val", "test"}`` sub-datasets, the seed's 60/20/20 by default.

    Deterministic for a seed; grouped by ``ImageRecord.subject`` when known, so
    no subject appears on two sides; ``stratify`` spreads each class over the
    sides in proportion (rare classes first). Records keep their order within a side.
    """
    return {name: ds.subset(idx) for name, idx in split_indices(ds, fractions, seed, stratify).items()}


def carve_holdout(
    ds: DetectionDataset, share: float = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[DetectionDataset, DetectionDataset]:
    """``(development, holdout)``: a fixed final test set cut off before any study or tuning.

    The same grouping and stratification as :func:`split_dataset`. A study splits only the
    development part, so a recipe chosen on it was never scored on the holdout.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"holdout share must be between 0 and 1, got {share}")
    sides = split_indices(ds, (1.0 - share, 0.0, share), seed, stratify)
    return ds.subset(sides["train"]), ds.subset(sides["test"])


# --- cutting a side down ------------------------------------------------------------------------
def subsample(ds: DetectionDataset, n: int | None, seed: int = 0) -> DetectionDataset:
    """``n`` images drawn without replacement (seeded), kept in their order; ``ds`` itself when
    ``n`` is None or not below its size. The experiment runner's image budget."""
    if n is None or n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), n, replace=False))
    return ds.subset(idx.tolist())


def longtail_subsample(
    ds: DetectionDataset,
    ratios: list[float],
    seed: int = 0,
    order: list[str] | None = None,
) -> DetectionDataset:
    """Make ``ds`` long-tailed: class counts fall off like ``ratios`` (e.g. 1, 1/3, 1/10, 1/30, 1/100).

    ``ratios[i]`` belongs to the i-th class in ``order`` (default: the dataset's class
    order); classes not named keep ratio 1. An image counts for its rarest class (the
    smallest ratio among its objects) and is kept with that class's ratio as probability
    (seeded), so the counts scatter around ratio x images; pure negatives are all kept.
    The experiment runner's way (a plan's ``data.longtail``): the OPIXray long-tail study's
    training images depend on it, so it stays exactly as it is.
    """
    names = order or list(ds.class_names)
    if len(ratios) != len(names):
        raise ValueError(f"{len(ratios)} ratios for {len(names)} classes")
    share = np.ones(ds.num_classes)
    for name, r in zip(names, ratios):
        share[ds.class_names.index(name)] = float(r)
    rng = np.random.default_rng(seed)
    keep = []
    for i, rec in enumerate(ds.records):
        if len(rec.labels) == 0 or rng.random() < share[rec.labels].min():
            keep.append(i)
    return ds.subset(keep)


# --- keeping splits -----------------------------------------------------------------------------
def save_splits(splits: dict[str, DetectionDataset], path: str | Path) -> None:
    """The exact records of every split (class names, resolved image paths, boxes, labels,
    subjects) as JSON, written atomically, so evaluation later uses the same held-out images."""
    payload: dict[str, Any] = {"class_names": list(splits["train"].class_names)}
    for name, ds in splits.items():
        payload[name] = [
            {
                "path": str(ds.image_path(r).resolve()),
                "width": r.width,
                "height": r.height,
                "boxes": np.round(r.boxes, 3).tolist(),
                "labels": r.labels.tolist(),
                "subject": r.subject,
            }
            for r in ds.records
        ]
    atomic_write_text(path, json.dumps(payload))


def load_saved_splits(run_dir: str | Path) -> dict[str, DetectionDataset]:
    """The splits kept in ``run_dir/split.json`` by :func:`save_splits` (a training run, a study's data)."""
    path = Path(run_dir) / SPLIT_FILE
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        names = payload["class_names"]
    except FileNotFoundError:
        raise InputError(path, "no split.json: is this a rarespot training run folder?") from None
    except (ValueError, KeyError, TypeError) as exc:  # torn or hand-edited file
        raise InputError(path, f"not a readable split file ({type(exc).__name__}: {exc})") from None
    out = {}
    for split in SPLIT_NAMES:
        if split in payload:
            records = [
                ImageRecord(Path(r["path"]), r["width"], r["height"], r["boxes"], r["labels"], r.get("subject"))
                for r in payload[split]
            ]
            out[split] = DetectionDataset(list(names), records, None)
    return out


def load_split_folders(folder: str | Path, fmt: str = "auto") -> dict[str, DetectionDataset] | None:
    """The sides of a folder made by ``rarespot data split`` (``train/ val/ test/``, at least two
    of them present), each read as a dataset; None when ``folder`` is not laid out that way."""
    from rarespot.io.annotations import load_dataset

    folder = Path(folder)
    subdirs = [folder / name for name in SPLIT_NAMES if (folder / name).is_dir()]
    if not (folder.is_dir() and len(subdirs) >= 2):
        return None
    return {d.name: load_dataset(d, fmt) for d in subdirs}
