"""Checks a detection dataset before anything trains on it.

At load time (cheap, header-only): every image exists, every label indexes a
class, boxes partly outside the image are clipped and degenerate boxes dropped
(each with a warning, and listed in the report). ``decode=True`` (what
``rarespot data check`` does) also decodes every image, which is the only way
to find a corrupt file, and records bit depths and sizes.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset


class DatasetWarning(UserWarning):
    """Something in a dataset was fixed on load (clipped or dropped boxes, size mismatch)."""


@dataclass
class BoxFix:
    """One box that validation changed: where, which, and from what to what."""

    image: Path
    index: int  # position of the box in the record as loaded
    class_name: str
    before: tuple[float, float, float, float]
    after: tuple[float, float, float, float] | None  # None: dropped


@dataclass
class ValidationReport:
    """What validation found and fixed. ``ok`` is False when there are errors."""

    images: int = 0
    objects: int = 0
    negatives: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    clipped: list[BoxFix] = field(default_factory=list)
    dropped: list[BoxFix] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Filled only when images were decoded:
    bit_depths: Counter = field(default_factory=Counter)  # e.g. {"uint16 gray": 200}
    sizes: Counter = field(default_factory=Counter)  # {(width, height): count}
    decoded: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def _fix_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to the image; return (clipped boxes, changed mask, keep mask)."""
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    finite = np.all(np.isfinite(boxes), axis=1)
    clipped[~finite] = 0.0
    changed = finite & np.any(clipped != boxes, axis=1)
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, changed, keep


def _describe(fixes: list[BoxFix], what: str) -> str:
    files = sorted({str(f.image) for f in fixes})
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"{len(fixes)} box(es) {what} in {len(files)} image(s): {shown}"


def validate_dataset(
    ds: DetectionDataset,
    decode: bool = False,
    strict: bool = True,
    progress: bool = False,
    warn: bool = True,
) -> ValidationReport:
    """Check ``ds``; clip and drop boxes in place; return what was found.

    strict: raise the first error as :class:`InputError` (naming the file);
        otherwise collect every error in ``report.errors`` (``data check``).
    decode: decode every image (slow; finds corrupt files, records bit depths).
    warn: emit one :class:`DatasetWarning` per kind of fix.
    """
    from rarespot.io.images import image_size, read_image

    report = ValidationReport(images=len(ds))

    def fail(path: Path, problem: str) -> None:
        err = InputError(path, problem)
        if strict:
            raise err
        report.errors.append(str(err))

    records = ds.records
    if progress:
        from rarespot.progress import progress_iter

        records = progress_iter(records, True, "checking images", unit="images", transient=True)

    for rec in records:
        path = ds.image_path(rec)
        bad_labels = (rec.labels < 0) | (rec.labels >= ds.num_classes)
        if np.any(bad_labels):
            bad = sorted(set(rec.labels[bad_labels].tolist()))
            fail(path, f"class id(s) {bad} out of range 0..{ds.num_classes - 1} ({ds.num_classes} classes)")
            continue
        if not path.is_file():
            fail(path, "image file not found")
            continue
        if decode:
            try:
                img = read_image(path)
            except InputError as exc:
                fail(path, exc.problem)
                continue
            h, w = img.shape[:2]
            kind = "gray" if img.ndim == 2 else f"{img.shape[2]}-channel"
            report.bit_depths[f"{img.dtype} {kind}"] += 1
            report.sizes[(w, h)] += 1
            if (w, h) != (rec.width, rec.height):
                msg = f"{path}: annotated size {rec.width}x{rec.height} but the image is {w}x{h}; using the image's"
                report.warnings.append(msg)
                rec.width, rec.height = w, h
        elif rec.width <= 0 or rec.height <= 0:
            try:
                rec.width, rec.height = image_size(path)
            except InputError as exc:
                fail(path, exc.problem)
                continue

        if len(rec.boxes):
            clipped, changed, keep = _fix_boxes(rec.boxes, rec.width, rec.height)
            for i in np.flatnonzero(changed & keep):
                report.clipped.append(
                    BoxFix(path, int(i), ds.class_names[rec.labels[i]], tuple(rec.boxes[i]), tuple(clipped[i]))
                )
            for i in np.flatnonzero(~keep):
                report.dropped.append(BoxFix(path, int(i), ds.class_names[rec.labels[i]], tuple(rec.boxes[i]), None))
            rec.boxes = clipped[keep]
            rec.labels = rec.labels[keep]

    counts = ds.class_counts() if ds.num_classes else np.zeros(0, dtype=np.int64)
    report.class_counts = {name: int(c) for name, c in zip(ds.class_names, counts)}
    report.objects = int(counts.sum())
    report.negatives = sum(1 for rec in ds.records if len(rec) == 0)
    report.decoded = decode
    if report.clipped:
        report.warnings.append(_describe(report.clipped, "partly outside the image were clipped"))
    if report.dropped:
        report.warnings.append(_describe(report.dropped, "with zero area (after clipping) were dropped"))
    if warn:
        for msg in report.warnings:
            warnings.warn(msg, DatasetWarning, stacklevel=2)
    return report
