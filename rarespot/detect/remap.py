"""Class remapping (seed 000, section 4.3): group classes before training.

A remap is a mapping ``old class name -> new class name`` (or ``None``: drop
that class's objects). Groupings:

- ``agnostic``: every class becomes ``object`` (the seed's best remap).
- ``binary``: ``clothing`` vs ``anomaly`` from a name map. Default map for the
  seed's 18 classes (``DEFAULT_CLOTHING``): clothing = worn, everyday items
  (zipper, zipper head, shirt/pants button, belt buckle, bra, shoes, holding
  shoes, glasses, watch, jewelry, piercing); anomaly = the rest (unknown
  anomaly, surgical implant, key, drugs, cuffs, ankle monitor) and any class
  name not in the map (for screening an unknown class is safer as an anomaly).
- ``size``: ``large/medium/small/tiny`` from each class's mean box area
  (pixels^2). Default thresholds are the quartiles of the per-class means
  (so the classes split into four groups of about equal size); or fixed
  thresholds ``size:A1,A2,A3`` (ascending areas: tiny < A1 <= small < A2 <=
  medium < A3 <= large). Classes with no boxes cannot be sized and are dropped
  (they have no objects, so nothing is lost).
- ``score``: ``best/high/medium/low`` from each class's F1 in an earlier
  run's evaluation: F1 > 0.75 best, 0.5 < F1 <= 0.75 high, 0.25 < F1 <= 0.5
  medium, else low. A class missing from that evaluation counts as F1 = 0.
- a YAML file: ``{old: new}`` (``new: null`` drops the class), optionally
  under a ``map:`` key with a ``names:`` list fixing the new class order.

New classes are numbered in a fixed order (the group order above, or the
file's order) and only groups that receive at least one class are kept.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import yaml

from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset, ImageRecord

SIZE_GROUPS = ("large", "medium", "small", "tiny")
SCORE_GROUPS = ("best", "high", "medium", "low")
BINARY_GROUPS = ("clothing", "anomaly")

DEFAULT_CLOTHING = frozenset(
    {
        "zipper",
        "zipper head",
        "shirt button",
        "pants button",
        "belt buckle",
        "bra",
        "shoes",
        "holding shoes",
        "glasses",
        "watch",
        "jewelry",
        "piercing",
    }
)


def normalise_name(name: str) -> str:
    """'Zipper_Head' / 'zipper-head' / 'zipper head' all compare equal."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def remap_dataset(
    dataset: DetectionDataset, mapping: dict[str, str | None], names: list[str] | None = None
) -> DetectionDataset:
    """A new dataset with labels renamed by ``mapping`` (old name -> new name or None to drop).

    ``names`` fixes the new class order; by default new names are numbered in
    order of first appearance in ``mapping``. Records are copied (the input is
    left untouched); a record keeps its image even when all its objects are
    dropped (it becomes a negative image).
    """
    missing = [n for n in dataset.class_names if n not in mapping]
    if missing:
        raise ValueError(f"remap does not say where class(es) {missing} go")
    if names is None:
        names = []
        for old in dataset.class_names:
            new = mapping[old]
            if new is not None and new not in names:
                names.append(new)
    unknown = {mapping[o] for o in dataset.class_names if mapping[o] is not None} - set(names)
    if unknown:
        raise ValueError(f"remap targets {sorted(unknown)} are not in the new class list {names}")
    new_index = np.array([names.index(mapping[o]) if mapping[o] is not None else -1 for o in dataset.class_names])
    records = []
    for rec in dataset.records:
        labels = new_index[rec.labels] if len(rec.labels) else rec.labels.copy()
        keep = labels >= 0
        records.append(
            ImageRecord(rec.path, rec.width, rec.height, rec.boxes[keep].copy(), labels[keep], rec.subject)
        )
    return DetectionDataset(list(names), records, dataset.root)


def agnostic_map(class_names: list[str], name: str = "object") -> dict[str, str]:
    return {c: name for c in class_names}


def binary_map(class_names: list[str], clothing: frozenset[str] | set[str] = DEFAULT_CLOTHING) -> dict[str, str]:
    wanted = {normalise_name(c) for c in clothing}
    return {c: "clothing" if normalise_name(c) in wanted else "anomaly" for c in class_names}


def mean_box_areas(dataset: DetectionDataset) -> np.ndarray:
    """Mean box area (pixels^2) per class; NaN for a class with no boxes."""
    sums = np.zeros(dataset.num_classes)
    counts = np.zeros(dataset.num_classes)
    for rec in dataset.records:
        if len(rec.labels) == 0:
            continue
        area = (rec.boxes[:, 2] - rec.boxes[:, 0]) * (rec.boxes[:, 3] - rec.boxes[:, 1])
        np.add.at(sums, rec.labels, area)
        np.add.at(counts, rec.labels, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def size_map(dataset: DetectionDataset, thresholds: tuple[float, float, float] | None = None) -> dict[str, str | None]:
    """large/medium/small/tiny by mean box area; quartiles of the class means unless ``thresholds`` given."""
    areas = mean_box_areas(dataset)
    present = ~np.isnan(areas)
    if thresholds is None:
        if not present.any():
            raise ValueError("size remap needs at least one annotated box")
        thresholds = tuple(float(q) for q in np.quantile(areas[present], [0.25, 0.5, 0.75]))
    t1, t2, t3 = thresholds
    if not t1 <= t2 <= t3:
        raise ValueError(f"size thresholds must be ascending, got {thresholds}")
    mapping: dict[str, str | None] = {}
    for name, area in zip(dataset.class_names, areas):
        if np.isnan(area):
            mapping[name] = None
        elif area >= t3:
            mapping[name] = "large"
        elif area >= t2:
            mapping[name] = "medium"
        elif area >= t1:
            mapping[name] = "small"
        else:
            mapping[name] = "tiny"
    return mapping


def score_group(f1: float) -> str:
    if f1 > 0.75:
        return "best"
    if f1 > 0.5:
        return "high"
    if f1 > 0.25:
        return "medium"
    return "low"


def score_map(class_names: list[str], per_class_f1: dict[str, float]) -> dict[str, str]:
    by_norm = {normalise_name(k): float(v) for k, v in per_class_f1.items()}
    return {c: score_group(by_norm.get(normalise_name(c), 0.0)) for c in class_names}


def read_per_class_f1(path: str | Path) -> dict[str, float]:
    """Per-class F1 from an earlier run's evaluation (JSON or CSV).

    Accepted shapes: JSON ``{"per_class": {name: {"f1": x}}}``, ``{"per_class":
    [{"class": name, "f1": x}]}`` or ``{name: x}``; CSV with ``class`` (or
    ``name``) and ``f1`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "evaluation file for the score remap not found")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            return _f1_from_rows(rows, path)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read per-class F1: {exc}") from None
    per_class = data.get("per_class", data) if isinstance(data, dict) else data
    if isinstance(per_class, list):
        return _f1_from_rows(per_class, path)
    if isinstance(per_class, dict):
        out = {}
        for name, value in per_class.items():
            if isinstance(value, dict) and "f1" in value:
                out[str(name)] = float(value["f1"])
            elif isinstance(value, (int, float)):
                out[str(name)] = float(value)
        if out:
            return out
    raise InputError(path, "no per-class F1 found (expected 'per_class' with an 'f1' for each class)")


def _f1_from_rows(rows: list, path: Path) -> dict[str, float]:
    out = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        name = row.get("class", row.get("name"))
        if name is None or row.get("f1") in (None, ""):
            continue
        if str(name).lower() in {"all", "overall"}:
            continue
        out[str(name)] = float(row["f1"])
    if not out:
        raise InputError(path, "no per-class F1 found (expected columns 'class' and 'f1')")
    return out


def read_map_file(path: str | Path) -> tuple[dict[str, str | None], list[str] | None]:
    """A user map: YAML ``{old: new}`` or ``{map: {old: new}, names: [...]}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "remap file not found") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"remap file is not valid YAML: {exc}") from None
    names = None
    if isinstance(data, dict) and "map" in data:
        names = data.get("names")
        data = data["map"]
    if not isinstance(data, dict) or not data:
        raise InputError(path, "a remap file must map old class names to new ones, e.g. 'zipper: clothing'")
    mapping = {str(k): (None if v is None else str(v)) for k, v in data.items()}
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise InputError(path, "'names' must be a list of new class names")
    return mapping, names


def apply_remap(dataset: DetectionDataset, spec: str | None) -> DetectionDataset:
    """Remap ``dataset`` by a spec string (see the module docstring); None returns it unchanged."""
    return remap_splits({"train": dataset}, spec)["train"]


def remap_splits(splits: dict[str, DetectionDataset], spec: str | None) -> dict[str, DetectionDataset]:
    """Apply one remap, computed on ``splits['train']`` (size quartiles, say), to every split.

    Validation and test get the training split's mapping and class order verbatim.
    """
    if spec is None:
        return splits
    mapping, names, source = _resolve_remap(splits["train"], spec)
    try:
        train = remap_dataset(splits["train"], mapping, names)
    except ValueError as exc:
        raise InputError(source, str(exc)) from None
    out = {"train": train}
    for name, ds in splits.items():
        if name != "train":
            out[name] = remap_dataset(ds, mapping, list(train.class_names))
    return out


def _resolve_remap(
    dataset: DetectionDataset, spec: str
) -> tuple[dict[str, str | None], list[str] | None, Path | None]:
    """(old -> new name for every class of ``dataset``, new class order or None, the map file if any)."""
    kind, _, arg = spec.partition(":")
    kind_l = kind.strip().lower()
    names = dataset.class_names
    if kind_l == "agnostic":
        return agnostic_map(names), ["object"], None
    if kind_l == "binary":
        mapping = binary_map(names)
        return mapping, [g for g in BINARY_GROUPS if g in mapping.values()], None
    if kind_l == "size":
        thresholds = None
        if arg:
            try:
                values = tuple(float(v) for v in arg.split(","))
            except ValueError:
                raise InputError(None, f"size remap thresholds must be three numbers, got {arg!r}") from None
            if len(values) != 3:
                raise InputError(None, f"size remap needs three area thresholds A1,A2,A3, got {arg!r}")
            thresholds = values
        try:
            mapping = size_map(dataset, thresholds)
        except ValueError as exc:
            raise InputError(None, f"size remap: {exc}") from None
        return mapping, [g for g in SIZE_GROUPS if g in mapping.values()], None
    if kind_l == "score":
        if not arg:
            raise InputError(None, "score remap needs the earlier run's evaluation: --remap score:path/to/evaluation.json")
        mapping = score_map(names, read_per_class_f1(arg))
        return mapping, [g for g in SCORE_GROUPS if g in mapping.values()], None
    path = Path(spec)
    if path.suffix.lower() in {".yaml", ".yml"} or path.exists():
        mapping, new_names = read_map_file(path)
        by_norm = {normalise_name(k): v for k, v in mapping.items()}
        full = {}
        for c in names:
            if c in mapping:
                full[c] = mapping[c]
            elif normalise_name(c) in by_norm:
                full[c] = by_norm[normalise_name(c)]
            else:
                raise InputError(path, f"remap file does not say where class {c!r} goes (use '{c}: null' to drop it)")
        return full, new_names, path
    raise InputError(
        None, f"unknown remap {spec!r}: use agnostic, binary, size, size:A1,A2,A3, score:EVAL.json or a YAML map file"
    )
