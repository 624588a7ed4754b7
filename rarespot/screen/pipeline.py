"""The three jobs behind ``rarespot screen fit | score | evaluate``, callable from Python.

>>> from rarespot.screen.pipeline import fit_model, score_data, evaluate_data
>>> det = fit_model("cells.npz", "runs/screen", normal_label=0)
>>> score_data("runs/screen", "new_cells/", "scores.csv")
>>> evaluate_data("runs/screen", "test_cells.npz", "runs/screen/eval", normal_label=0)
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rarespot.errors import InputError
from rarespot.screen.config import ScreenConfig
from rarespot.screen.data import ImageSet, MixedInputWarning, load_dataset
from rarespot.screen.detectors import MODEL_FILE, CAEDetector

CHECKPOINT_FILE = "checkpoint.pt"


def _report_skipped(images: ImageSet, log) -> None:
    if images.skipped:
        first = images.skipped[0]
        log(f"skipped {len(images.skipped)} unreadable file(s), e.g. {first[0]}: {first[1]}")


@contextmanager
def _mixed_input_notes(log):
    """Show the (single) mixed-size/channel warning as a log line instead of a Python warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MixedInputWarning)
        yield
    for w in caught:
        if issubclass(w.category, MixedInputWarning):
            log(f"note: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def normal_subset(images: ImageSet, normal_label: str | int | None) -> ImageSet:
    """The normal images: those with ``normal_label``, or all of an unlabelled set."""
    if images.labels is None or normal_label is None:
        normal = images
    else:
        normal = images.subset(images.labels == images.label_id(normal_label))
    if len(normal) == 0:
        raise InputError(images.source, f"no normal images to train on (normal label {normal_label!r}; labels present: {sorted(set(images.labels.tolist())) if images.labels is not None else 'none'})")
    return normal


def fit_model(
    data: str | Path, out_dir: str | Path, normal_label: str | int | None = 0, config: ScreenConfig | None = None,
    on_error: str = "skip", progress: bool = True, log=print,
) -> CAEDetector:
    """Train on the normal images of ``data``; writes model.pt, summary.json and training_curve.png to ``out_dir``.

    Interrupted runs resume from ``out_dir/checkpoint.pt``.
    """
    config = config or ScreenConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = load_dataset(data, on_error=on_error)
    _report_skipped(images, log)
    normal = normal_subset(images, normal_label)
    if len(normal) < 3:
        raise InputError(images.source, f"only {len(normal)} normal image(s); need at least 3 (some are held out to set thresholds)")
    log(f"training on {len(normal)} normal images from {images.source}")
    detector = CAEDetector(config, checkpoint=out_dir / CHECKPOINT_FILE, progress=progress)
    with _mixed_input_notes(log):
        detector.fit(normal.images)
    detector.save(out_dir / MODEL_FILE)
    _write_summary(detector, out_dir, images, len(normal))
    return detector


def _write_summary(detector: CAEDetector, out_dir: Path, images: ImageSet, n_normal: int) -> None:
    from rarespot.io.atomic import atomic_write_text
    from rarespot.screen.evaluate import _atomic_savefig, _pyplot

    h = detector.history_
    summary = {
        "data": str(images.source), "n_normal": n_normal, "n_train": detector.n_train_,
        "n_calibration": detector.thresholds_.n_calibration, "skipped_files": len(images.skipped),
        "epochs_run": len(h.val_loss), "best_epoch": h.best_epoch + 1, "stopped_early": h.stopped_early,
        "train_seconds": round(h.seconds, 1), "best_val_mse": min(h.val_loss) if h.val_loss else None,
        "thresholds": detector.thresholds_.to_dict(), "config": detector.config_.model_dump(mode="json"),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    epochs = np.arange(1, len(h.val_loss) + 1)
    ax.plot(epochs, h.train_loss, label="train MSE")
    ax.plot(epochs, h.val_loss, label="validation MSE (normal)")
    ax.axvline(h.best_epoch + 1, color="k", ls="--", lw=0.8, label="kept")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_savefig(fig, out_dir / "training_curve.png")
    plt.close(fig)


def score_data(model: str | Path, data: str | Path, out_csv: str | Path, on_error: str = "skip", log=print):
    """Score every image of ``data``; writes a CSV (one row per image) and returns the table."""
    from rarespot.screen.evaluate import score_table, write_scores_csv

    detector = CAEDetector.load(model)
    images = load_dataset(data, on_error=on_error)
    _report_skipped(images, log)
    with _mixed_input_notes(log):
        table = score_table(detector, images)
    write_scores_csv(table, out_csv)
    log(f"scored {len(table)} images: {int(table['anomalous'].sum())} flagged ({detector.config_.score.combine} score, FAR {detector.thresholds_.far:g}) -> {out_csv}")
    return table


def evaluate_data(model: str | Path, data: str | Path, out_dir: str | Path, normal_label: str | int = 0, on_error: str = "skip", top_k: int = 24, log=print) -> dict:
    """Metrics and plots on labelled ``data`` (see :mod:`rarespot.screen.evaluate`)."""
    from rarespot.screen.evaluate import evaluate

    detector = CAEDetector.load(model)
    images = load_dataset(data, on_error=on_error)
    _report_skipped(images, log)
    with _mixed_input_notes(log):
        return evaluate(detector, images, normal_label, out_dir, top_k=top_k)
