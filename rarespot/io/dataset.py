"""The one in-memory model of a detection dataset.

Every annotation format (VOC, YOLO, COCO) reads into and writes from these two
classes; every pipeline (tiling, training, evaluation, imbalance report) reads
them. Boxes are always pixel ``xyxy`` floats in the image's own pixel grid,
labels are indices into ``DetectionDataset.class_names``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    return arr.reshape(-1, 4)


def _as_labels(labels) -> np.ndarray:
    arr = np.asarray(labels, dtype=np.int64)
    return arr.reshape(-1)


@dataclass
class ImageRecord:
    """One image and its objects.

    path: the image file (absolute, or relative to the dataset root).
    width, height: the image size in pixels.
    boxes: (n, 4) float64 pixel ``x1, y1, x2, y2``.
    labels: (n,) int64 class indices.
    subject: who was scanned, when known; splits keep one subject on one side.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    subject: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.width = int(self.width)
        self.height = int(self.height)
        self.boxes = _as_boxes(self.boxes)
        self.labels = _as_labels(self.labels)
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{self.path}: {len(self.boxes)} boxes but {len(self.labels)} labels")

    @property
    def stem(self) -> str:
        return self.path.stem

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DetectionDataset:
    """Images, their boxes, and the class names the labels index into."""

    class_names: list[str]
    records: list[ImageRecord]
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.records[i]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_path(self, record: ImageRecord) -> Path:
        """The record's image as a usable path (resolved against ``root``)."""
        if record.path.is_absolute() or self.root is None:
            return record.path
        return self.root / record.path

    def class_counts(self) -> np.ndarray:
        """Objects per class, length ``num_classes``."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for rec in self.records:
            np.add.at(counts, rec.labels, 1)
        return counts

    def subset(self, indices) -> "DetectionDataset":
        return DetectionDataset(list(self.class_names), [self.records[i] for i in indices], self.root)
