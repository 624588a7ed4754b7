"""The plain Ultralytics peer: what a user gets from ``YOLO("yolo11n.yaml").train(...)`` with its defaults.

rarespot's claims are measured against this arm, so it must be Ultralytics' own
trainer, data loader, augmentations (mosaic, HSV, flips, scale, translate),
optimiser choice (``optimizer="auto"``) and schedule, not rarespot's trainer with
some options switched on. Only what the comparison has to fix is set: the model
yaml, epochs, input size, batch, workers, seed, the run folder, and the switches
that would reach the network (plots, AMP check) or waste the budget on validation
rounds the peer's user would not read (``val=False``, as in issue 13's reference run).

The split is handed over as a YOLO folder of symlinked images and label files
written from the in-memory dataset, so the peer sees exactly the images and
boxes rarespot's arms see, whatever format they came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rarespot.io.atomic import atomic_write_text
from rarespot.io.dataset import DetectionDataset


@dataclass
class PeerRun:
    run_dir: Path
    weights: Path  # last.pt: with val=False Ultralytics keeps no separate "best"
    seconds: float


def write_yolo_split(splits: dict[str, DetectionDataset], folder: Path) -> Path:
    """``folder/<split>/{images,labels}`` (images symlinked) and ``folder/data.yaml``; returns the yaml."""
    from rarespot.io.annotations import save_dataset

    folder = Path(folder).resolve()
    names = splits["train"].class_names
    lines = [f"path: {folder}"]
    for split in ("train", "val"):
        if split in splits:
            save_dataset(splits[split], folder / split, "yolo", copy_images=False)
            lines.append(f"{split}: {split}/images")
    if "val" not in splits:
        lines.append("val: train/images")
    lines.append("names:")
    lines += [f"  {i}: {name!r}" for i, name in enumerate(names)]
    data_yaml = folder / "data.yaml"
    atomic_write_text(data_yaml, "\n".join(lines) + "\n")
    return data_yaml


def train_ultralytics_defaults(
    splits: dict[str, DetectionDataset],
    run_dir: str | Path,
    *,
    model: str = "yolo11n",
    epochs: int = 10,
    imgsz: int = 416,
    batch: int = 16,
    seed: int = 0,
    device: str | None = None,
    workers: int = 2,
    time_hours: float | None = None,
    **extra: Any,
) -> PeerRun:
    """Train the plain Ultralytics peer on ``splits["train"]``; ``time_hours`` caps the wall clock
    (Ultralytics' own ``time=`` budget, which then overrides ``epochs``)."""
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from rarespot.detect.model import resolve_model
    from rarespot.device import default_device

    run_dir = Path(run_dir).resolve()
    data_yaml = write_yolo_split(splits, run_dir / "data")
    args: dict[str, Any] = dict(
        data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, workers=workers, seed=seed,
        deterministic=True, val=False, plots=False, device=default_device(device),
        project=str(run_dir), name="train", exist_ok=True, verbose=False,
    )
    if time_hours is not None:
        args["time"] = time_hours
    args.update(extra)
    started = time.perf_counter()
    YOLO(resolve_model(model)).train(**args)
    weights = run_dir / "train" / "weights" / "last.pt"
    return PeerRun(run_dir, weights, time.perf_counter() - started)
