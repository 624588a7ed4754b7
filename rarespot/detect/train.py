"""Train a YOLO detector the way seed 000 does: random positive tiles, the seed's
augmentations and class remaps, validation every k epochs, best checkpoint by
validation loss.

    >>> from rarespot.detect.config import load_config
    >>> from rarespot.detect.train import train
    >>> result = train(load_config("run.yaml", data="scans/", epochs=30, out="runs/exp"))
    >>> result.model, result.best_epoch, result.best_val_loss   # model: best.pt or last.pt (model_checkpoint)

Ultralytics does the optimisation; rarespot plugs in through its public classes
only: :class:`rarespot.detect.trainer.TileTrainer` (a ``DetectionTrainer``) builds
:class:`~rarespot.detect.data.ScanTileDataset` instead of reading label files,
validates every ``val_every`` epochs, ranks checkpoints by validation loss
instead of mAP and writes checkpoints atomically. This module prepares the run
folder, reports progress (rich on a terminal, a line per epoch in a log) and
collects the result.

Run folder (``config.out``):
  config.yaml   the resolved DetectTrainConfig (what ``--resume`` reuses)
  split.json    class names and the exact train/val/test records
  weights/      last.pt (every epoch), best.pt (lowest validation loss); the config's
                model_checkpoint says which of the two is the run's model
  metrics.csv   one row per epoch; validation columns empty on skipped epochs
  loss.png      train and validation loss per epoch, best epoch marked
  val_per_class.csv  instances, precision, recall and AP50 per class per validation round
  results.csv   Ultralytics' own log (kept for its tools)
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rarespot.detect.config import DetectTrainConfig
from rarespot.detect.remap import remap_splits  # its home is detect/remap.py (still importable from here)
from rarespot.device import default_device  # the device rule (still importable from here)
from rarespot.io.atomic import atomic_write_text, ensure_writable_dir
from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset
# The run's split.json is read and written by io/split.py, the home of splits (still importable from here).
from rarespot.io.split import load_saved_splits, save_splits

METRICS_COLUMNS = [
    "epoch",
    "seconds",
    "train_box_loss",
    "train_cls_loss",
    "train_dfl_loss",
    "train_loss",
    "val_box_loss",
    "val_cls_loss",
    "val_dfl_loss",
    "val_loss",
    "precision",
    "recall",
    "map50",
    "map50_95",
    "lr",
]


@dataclass
class RunResult:
    """What a training run produced. ``best_metrics`` are the validation-tile metrics of best.pt."""

    run_dir: Path
    best: Path
    last: Path
    class_names: list[str]
    epochs_run: int
    best_epoch: int | None
    best_val_loss: float | None
    best_metrics: dict[str, float]
    seconds: float
    config: DetectTrainConfig
    splits: dict[str, DetectionDataset] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> Path:
        """The checkpoint the config names as the run's model (``model_checkpoint``): best.pt, or last.pt
        when asked for or when no validation round ever ran."""
        if self.config.model_checkpoint == "last" or not self.best.exists():
            return self.last
        return self.best

    @property
    def test(self) -> DetectionDataset | None:
        return self.splits.get("test")


# --- data preparation --------------------------------------------------------------------------
def load_splits(config: DetectTrainConfig) -> dict[str, DetectionDataset]:
    """Read the data named in the config and split it (seeded) into train/val/test; remap classes.

    The remap is computed on the training split only (size quartiles, say) and
    applied to every split, so validation and test use the same classes.
    """
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import split_dataset

    if config.data is None:
        raise InputError(None, "no training data: give --data DIR (or 'data:' in the config)")
    full = load_dataset(config.data, fmt=config.data_format)
    if len(full) == 0:
        raise InputError(config.data, "the dataset has no images")
    if config.val_data is not None:
        val = load_dataset(config.val_data, fmt=config.data_format)
        if list(val.class_names) != list(full.class_names):
            raise InputError(
                config.val_data, f"class names {val.class_names} differ from the training data's {full.class_names}"
            )
        splits = {"train": full, "val": val}
    else:
        splits = dict(split_dataset(full, tuple(config.split), config.seed))
        if len(splits.get("test", ())) == 0:
            splits.pop("test", None)
    return remap_splits(splits, config.remap)


def check_records(splits: dict[str, DetectionDataset]) -> None:
    """Every annotated image must exist (a missing one is named, with its split)."""
    for split_name, ds in splits.items():
        for rec in ds.records:
            path = ds.image_path(rec)
            if not path.is_file():
                raise InputError(path, f"image file not found (listed in the {split_name} annotations)")
    if sum(len(r.labels) for r in splits["train"].records) == 0:
        raise InputError(splits["train"].root, "the training split has no annotated objects; nothing to learn")
    warn_missing_classes(splits)


class MissingClassWarning(UserWarning):
    """A class has objects in one split and none in another."""


class BudgetWarning(UserWarning):
    """A wall-clock budget fits fewer epochs on this machine than the config was shown to work with."""


def budget_shortfall(config: DetectTrainConfig, planned_epochs: int, seconds_per_epoch: float) -> str | None:
    """What to tell the user when ``time_hours`` fits fewer than ``min_epochs`` epochs here, else None.

    A time budget is only the budget a recipe was chosen at on a machine as fast: on a slower CPU the
    same hours are fewer epochs, and a short run loses its rarest class first (docs/study.md).
    """
    if config.time_hours is None or config.min_epochs is None or planned_epochs >= config.min_epochs:
        return None
    needed = config.min_epochs * seconds_per_epoch / 3600
    return (f"the {config.time_hours:g} h budget fits {planned_epochs} epoch{'s' if planned_epochs != 1 else ''} at "
            f"{seconds_per_epoch:.0f} s an epoch on this machine, but this config was shown to work with at least "
            f"{config.min_epochs}: expect lower recall, the rarest class first. time_hours={needed:.2f} would fit "
            f"{config.min_epochs} (or fewer tiles / a smaller model)")


def warn_missing_classes(splits: dict[str, DetectionDataset]) -> list[str]:
    """Warn, naming the class and the split, when a class cannot be learned or cannot be measured.

    No objects in train: the model never sees it. None in val (or test): its recall there is
    undefined, so per-class tables leave it blank and pooled metrics simply do not include it.
    """
    import warnings

    names = list(splits["train"].class_names)
    counts = {split: ds.class_counts() for split, ds in splits.items()}
    messages = []
    for c, name in enumerate(names):
        have = {split: int(n[c]) if c < len(n) else 0 for split, n in counts.items()}
        if not any(have.values()):
            continue
        if have.get("train", 0) == 0:
            messages.append(f"class {name!r} has no objects in the training split ({have}): the model cannot learn it")
        for split in ("val", "test"):
            if split in have and have[split] == 0:
                messages.append(
                    f"class {name!r} has no objects in the {split} split ({have}): its recall cannot be measured "
                    f"there; per-class {split} metrics leave it blank"
                )
    for message in messages:
        warnings.warn(message, MissingClassWarning, stacklevel=2)
    return messages


def ultralytics_overrides(config: DetectTrainConfig, run_dir: Path, model: str) -> dict[str, Any]:
    """Ultralytics settings for a controlled study: its own augmentations off unless asked for,
    nothing that would reach the network (AMP check, font download for plots)."""
    device = default_device(config.device)
    overrides: dict[str, Any] = {
        "task": "detect",
        "mode": "train",
        "model": model,
        "data": str(run_dir / "split.json"),  # TileTrainer reads its splits from memory, or from here in a DDP worker
        "epochs": config.epochs,
        "time": config.time_hours,
        "batch": config.batch,
        "nbs": config.nbs,
        "imgsz": config.input_size,
        "patience": config.patience,
        "device": device,
        "workers": config.workers,
        "seed": config.seed,
        "deterministic": False,  # deterministic kernels slow CPU training; seeds are still fixed
        "optimizer": config.optimizer,
        "lr0": config.lr0,
        "lrf": config.lrf,
        "warmup_epochs": config.warmup_epochs,
        "warmup_bias_lr": config.warmup_bias_lr,
        "weight_decay": config.weight_decay,
        "freeze": config.freeze or None,
        "amp": False,  # Ultralytics' AMP check downloads a model; fp32 is the safe default
        "plots": False,  # its plots download a font; rarespot writes loss.png itself
        "val": True,
        "save": True,
        "save_dir": str(run_dir),
        "exist_ok": True,
        "pretrained": False,
        "cache": False,
        "rect": False,
        "verbose": False,
    }
    if not config.ultralytics_augment:
        overrides.update(
            hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0,
            flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0, cutmix=0.0, copy_paste=0.0, erasing=0.0, close_mosaic=0,
        )
    return overrides


# --- progress, metrics.csv and loss.png --------------------------------------------------------
class _RunReporter:
    """Ultralytics callbacks: a rich progress bar, and metrics.csv + loss.png rewritten every epoch."""

    def __init__(self, run_dir: Path, quiet: bool = False):
        self.run_dir = run_dir
        self.quiet = quiet
        self.progress = None
        self.pace = TrainingPace()
        self.batches_done = 0  # in the current epoch: one a time budget cuts short trained on fewer images

    def register(self, trainer) -> None:
        trainer.add_callback("on_train_start", self.on_train_start)
        trainer.add_callback("on_train_epoch_start", self.on_epoch_start)
        trainer.add_callback("on_train_batch_end", self.on_batch_end)
        trainer.add_callback("on_fit_epoch_end", self.on_epoch_end)
        # The validator shares the trainer's callback table, so these fire during validation.
        trainer.add_callback("on_val_start", self.on_val_start)
        trainer.add_callback("on_val_batch_end", self.on_val_batch_end)
        trainer.add_callback("teardown", self.stop)

    def on_train_start(self, trainer) -> None:
        if self.quiet:
            return
        import sys

        if not sys.stdout.isatty():  # a log file: no live bar, one plain line per epoch instead
            print(training_banner(trainer, self.run_dir), flush=True)
            return
        from rarespot.progress import ProgressBar

        # log_every=None: a log gets this trainer's own per-epoch lines (img/s, time left), not the bar's
        self.progress = ProgressBar(len(trainer.train_loader), f"epoch {trainer.start_epoch + 1}/{trainer.epochs}",
                                    elapsed=True, log_every=None).start()
        self.progress.print(training_banner(trainer, self.run_dir))

    def on_epoch_start(self, trainer) -> None:
        self.pace.epoch_started()
        self.batches_done = 0
        if self.progress is None:
            return
        self.progress.next_round(f"epoch {trainer.epoch + 1}/{trainer.epochs}", total=len(trainer.train_loader))

    def on_batch_end(self, trainer) -> None:
        self.batches_done += 1
        if self.progress is None:
            return
        loss = sum(float(v) for v in (trainer.tloss or {}).values())
        self.progress.status(f"loss {loss:.3f}")
        self.progress.advance()

    def on_val_start(self, validator) -> None:
        if self.progress is None or not getattr(validator, "training", False):
            return
        self.progress.next_round("  validating", total=len(validator.dataloader))

    def on_val_batch_end(self, validator) -> None:
        if self.progress is not None and getattr(validator, "training", False):
            self.progress.advance()

    def on_epoch_end(self, trainer) -> None:
        rows = write_metrics_csv(trainer.csv, self.run_dir / "metrics.csv")
        if rows:
            plot_loss_curves(rows, self.run_dir / "loss.png")
        per_class = []
        if trainer.fitness is not None and getattr(trainer, "validator", None) is not None:
            per_class = per_class_validation(trainer.validator, trainer.splits["val"].class_names)
            append_per_class_csv(self.run_dir / "val_per_class.csv", trainer.epoch + 1, per_class)
        budget_left = (1.0 - trainer.budget_share()) * trainer.args.time * 3600 if trainer.args.time else None
        items = items_trained(self.batches_done, len(trainer.train_loader), trainer.batch_size,
                              len(trainer.train_loader.dataset))
        self.pace.epoch_done(trainer.epoch + 1, trainer.epochs, items, budget_left)
        if trainer.epoch == trainer.start_epoch and self.pace.epoch_seconds:  # time= has re-planned the epochs by now
            shortfall = budget_shortfall(trainer.rs_config, trainer.epochs, float(np.mean(self.pace.epoch_seconds)))
            if shortfall:
                warnings.warn(shortfall, BudgetWarning, stacklevel=2)
        if self.quiet or not rows:
            return
        row = rows[-1]
        val = "" if math.isnan(row["val_loss"]) else f"  val loss {row['val_loss']:.3f}  mAP50 {row['map50']:.3f}"
        best = "  (best)" if trainer.fitness is not None and trainer.fitness == trainer.best_fitness else ""
        threads = _current_threads()
        lines = [f"epoch {int(row['epoch'])}/{trainer.epochs}: train loss {row['train_loss']:.3f}{val}{best}  "
                 f"{self.pace.summary()} ({threads} thread{'s' if threads > 1 else ''})"]
        if per_class:
            lines.append("  recall by class: " + ", ".join(
                f"{c['class']} {c['recall']:.2f}" + (" (NONE FOUND)" if c["recall"] == 0 else "")
                for c in per_class if c["instances"] > 0))
        for line in lines:
            if self.progress is not None:
                self.progress.print(line)
            else:
                print(line, flush=True)

    def stop(self, trainer=None) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def training_banner(trainer, run_dir: Path) -> str:
    cfg = trainer.rs_config
    items = "whole images" if cfg.full_image else f"{cfg.tiles} x {cfg.tile_size}px tiles per image"
    return (f"training {len(trainer.train_loader.dataset)} items/epoch ({items}), validating on "
            f"{len(trainer.test_loader.dataset)} items, {trainer.epochs} epochs, {_threads_note(trainer)}, "
            f"run folder {run_dir}")


def _current_threads() -> int:
    import torch

    return torch.get_num_threads()


def _threads_note(trainer) -> str:
    import torch

    tuner = getattr(trainer, "thread_tuner", None)
    if tuner is not None and len(tuner.candidates) > 1:
        return f"torch threads timed each epoch ({' vs '.join(map(str, tuner.candidates))})"
    return f"torch threads {torch.get_num_threads()}"


def items_trained(batches: int, batches_per_epoch: int, batch_size: int, items_per_epoch: int) -> int:
    """Items an epoch trained on: all of them, or, in an epoch a time budget cut short, its batches' worth."""
    if batches >= batches_per_epoch:
        return items_per_epoch
    return min(batches * batch_size, items_per_epoch)


class TrainingPace:
    """Images per second and the time left, from the wall time of whole epochs (validation included).

    The estimate is the mean epoch time so far times the epochs left: validation rounds every
    k epochs make single epochs uneven, and the mean over finished epochs absorbs that. A
    time-budgeted run stops inside the last epoch it planned, so its estimate is capped by the
    budget's time left.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.epoch_seconds: list[float] = []
        self.items_per_second = float("nan")
        self.seconds_left = float("nan")

    def epoch_started(self) -> None:
        self.started = time.perf_counter()

    def epoch_done(self, epoch: int, epochs: int, items: int, budget_left: float | None = None) -> None:
        if self.started is None:
            return
        seconds = time.perf_counter() - self.started
        self.epoch_seconds.append(seconds)
        self.items_per_second = items / seconds if seconds > 0 else float("nan")
        self.seconds_left = float(np.mean(self.epoch_seconds)) * max(epochs - epoch, 0)
        if budget_left is not None:
            self.seconds_left = min(self.seconds_left, max(budget_left, 0.0))

    def summary(self) -> str:
        if math.isnan(self.items_per_second):
            return ""
        left = self.seconds_left
        eta = f"{left / 60:.1f} min" if left >= 60 else f"{left:.0f} s"
        return f"{self.items_per_second:.1f} img/s, about {eta} left"


def per_class_validation(validator, class_names: list[str]) -> list[dict[str, Any]]:
    """Per-class instances, precision, recall and AP50 of the validation round just run.

    Instances are counted in the validation items (an object cut by two overlapping tiles counts
    in both). Ultralytics' validator keeps the metrics for the classes it saw (``ap_class_index``);
    a class with no validation instances gets NaN, so a missing class shows as blank, not as 0.
    """
    metrics = getattr(validator, "metrics", None)
    box = getattr(metrics, "box", None)
    index = getattr(metrics, "ap_class_index", None)
    index = [int(i) for i in index] if index is not None else []  # a numpy array in Ultralytics 8.4
    counts = getattr(metrics, "nt_per_class", None)
    if counts is None:
        counts = getattr(validator, "nt_per_class", None)
    rows = []
    for c, name in enumerate(class_names):
        n = int(counts[c]) if counts is not None and c < len(counts) else 0
        if c in index and box is not None:
            k = index.index(c)
            p, r, ap50 = float(box.p[k]), float(box.r[k]), float(box.ap50[k])
        else:
            p = r = ap50 = float("nan") if n == 0 else 0.0
        rows.append({"class": name, "instances": n, "precision": p, "recall": r, "ap50": ap50})
    return rows


def append_per_class_csv(path: Path, epoch: int, rows: list[dict[str, Any]]) -> None:
    """One row per class per validation round; rewritten atomically (a resumed epoch replaces its rows)."""
    columns = ["epoch", "class", "instances", "precision", "recall", "ap50"]
    old = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            old = [r for r in csv.DictReader(fh) if r.get("epoch") != str(epoch)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(old)
    for r in rows:
        writer.writerow({"epoch": epoch, **{k: (f"{v:.4g}" if isinstance(v, float) and not math.isnan(v)
                                               else ("" if isinstance(v, float) else v))
                                            for k, v in r.items()}})
    atomic_write_text(path, buf.getvalue())


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def write_metrics_csv(results_csv: Path, out: Path) -> list[dict[str, float]]:
    """Ultralytics' results.csv -> rarespot's metrics.csv (plain names, totals, empty val cells on skipped epochs)."""
    if not results_csv.exists():
        return []
    with results_csv.open(newline="", encoding="utf-8") as fh:
        raw = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(fh)]
    rows = []
    for r in raw:
        row = {
            "epoch": _float(r.get("epoch")),
            "seconds": _float(r.get("time")),
            "train_box_loss": _float(r.get("train/box_loss")),
            "train_cls_loss": _float(r.get("train/cls_loss")),
            "train_dfl_loss": _float(r.get("train/dfl_loss")),
            "val_box_loss": _float(r.get("val/box_loss")),
            "val_cls_loss": _float(r.get("val/cls_loss")),
            "val_dfl_loss": _float(r.get("val/dfl_loss")),
            "precision": _float(r.get("metrics/precision(B)")),
            "recall": _float(r.get("metrics/recall(B)")),
            "map50": _float(r.get("metrics/mAP50(B)")),
            "map50_95": _float(r.get("metrics/mAP50-95(B)")),
            "lr": _float(r.get("lr/pg0")),
        }
        row["train_loss"] = sum(row[k] for k in ("train_box_loss", "train_cls_loss", "train_dfl_loss"))
        row["val_loss"] = sum(row[k] for k in ("val_box_loss", "val_cls_loss", "val_dfl_loss"))
        rows.append(row)
    # A crash between Ultralytics' CSV append and its checkpoint write makes a resumed run repeat that
    # epoch: keep the latest row of each epoch.
    rows = list({int(r["epoch"]): r for r in rows}.values())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS)
    for row in rows:
        writer.writerow(
            [int(row["epoch"])] + ["" if math.isnan(row[c]) else f"{row[c]:.6g}" for c in METRICS_COLUMNS[1:]]
        )
    atomic_write_text(out, buf.getvalue())
    return rows


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_loss_curves(rows: list[dict[str, float]], out: Path) -> Path:
    """Train/validation loss per epoch (total and per component), best epoch marked; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("loss", "total loss"), ("box_loss", "box loss"), ("cls_loss", "class loss"), ("dfl_loss", "DFL loss")]
    val_rows = [r for r in rows if not math.isnan(r["val_loss"])]
    best = min(val_rows, key=lambda r: r["val_loss"]) if val_rows else None
    for ax, (key, title) in zip(axes, panels):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], "o-", ms=3, label="train")
        ax.plot([r["epoch"] for r in val_rows], [r[f"val_{key}"] for r in val_rows], "s-", ms=3, label="validation")
        if best is not None:
            ax.axvline(best["epoch"], color="grey", ls=":", lw=1, label=f"best (epoch {int(best['epoch'])})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)
    return out


# --- entry points ------------------------------------------------------------------------------
def train(config: DetectTrainConfig, resume: bool = False, quiet: bool = False) -> RunResult:
    """Train from a config (``resume=True``: continue the run in ``config.out`` from its last.pt)."""
    run_dir = Path(config.out)
    if resume:
        return resume_run(run_dir, quiet=quiet)
    ensure_writable_dir(run_dir)  # fail before training, naming the folder, if results could not be written
    splits = load_splits(config)
    return train_on_splits(config, splits, quiet=quiet)


def train_on_splits(
    config: DetectTrainConfig, splits: dict[str, DetectionDataset], quiet: bool = False, _resume_from: Path | None = None
) -> RunResult:
    """Train on ready splits (``train``, ``val``, optional ``test``), e.g. built in Python or by the demo."""
    from rarespot.detect.model import resolve_model

    run_dir = Path(config.out).resolve()
    ensure_writable_dir(run_dir)
    if "train" not in splits or "val" not in splits:
        raise ValueError("splits needs 'train' and 'val'")
    if _resume_from is None:
        last = run_dir / "weights" / "last.pt"
        if last.exists() and not config.exist_ok:
            raise InputError(
                run_dir, "already holds a training run; use --resume to continue it, or another --out (or exist_ok: true)"
            )
        check_records(splits)
        model = resolve_model(config.model)
        config.dump_yaml(run_dir / "config.yaml")
        save_splits(splits, run_dir / "split.json")
        for stale in ("results.csv", "metrics.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    else:
        model = str(_resume_from)
    overrides = ultralytics_overrides(config, run_dir, model)
    if _resume_from is not None:
        overrides["resume"] = str(_resume_from)
    started = time.perf_counter()
    from rarespot.detect.trainer import TileTrainer

    trainer = TileTrainer(overrides=overrides, config=config, splits=splits)
    reporter = _RunReporter(run_dir, quiet=quiet)
    reporter.register(trainer)
    try:
        trainer.train()
    finally:
        reporter.stop()
    return collect_result(run_dir, config, splits, time.perf_counter() - started)


def resume_run(run_dir: str | Path, quiet: bool = False) -> RunResult:
    """Continue an interrupted run from ``run_dir/weights/last.pt`` with the run's own config and splits."""
    from rarespot.detect.config import load_config

    run_dir = Path(run_dir)
    last = run_dir / "weights" / "last.pt"
    if not last.exists():
        raise InputError(last, "nothing to resume: the run folder has no last.pt")
    config = load_config(run_dir / "config.yaml")
    config.out = run_dir
    splits = load_saved_splits(run_dir)
    if checkpoint_is_final(last):
        raise InputError(last, "this run already finished (its last.pt is final); start a new run to train further")
    return train_on_splits(config, splits, quiet=quiet, _resume_from=last.resolve())


def checkpoint_is_final(last: Path) -> bool:
    """True when a run's last.pt is final: Ultralytics strips the optimiser state when a run ends."""
    import torch

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return ckpt.get("optimizer") is None or ckpt.get("epoch", -1) < 0


def collect_result(run_dir: Path, config: DetectTrainConfig, splits: dict[str, DetectionDataset], seconds: float) -> RunResult:
    metrics_path = run_dir / "metrics.csv"
    rows = read_metrics_csv(metrics_path) if metrics_path.exists() else []
    validated = [r for r in rows if not math.isnan(r.get("val_loss", float("nan")))]
    best_row = min(validated, key=lambda r: r["val_loss"]) if validated else None
    best_metrics = (
        {k: best_row[k] for k in ("val_loss", "precision", "recall", "map50", "map50_95")} if best_row else {}
    )
    weights = run_dir / "weights"
    return RunResult(
        run_dir=run_dir,
        best=weights / "best.pt",
        last=weights / "last.pt",
        class_names=list(splits["train"].class_names),
        epochs_run=int(rows[-1]["epoch"]) if rows else 0,
        best_epoch=int(best_row["epoch"]) if best_row else None,
        best_val_loss=best_row["val_loss"] if best_row else None,
        best_metrics=best_metrics,
        seconds=seconds,
        config=config,
        splits=splits,
    )
