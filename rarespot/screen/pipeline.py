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
from rarespot.screen.detectors import MODEL_FILE, CAEDetector, load_detector

CHECKPOINT_FILE = "checkpoint.pt"


def _report_skipped(images: ImageSet, log) -> None:
    if images.skipped:
        first = images.skipped[0]
        log(f"skipped {len(images.skipped)} unreadable file(s), e.g. {first[0]}: {first[1]}")


@contextmanager
def _mixed_input_notes(log, images: ImageSet | None = None, config: ScreenConfig | None = None):
    """Show the (single) mixed-size/channel warning as a log line instead of a Python warning; with the
    image set and config, the line is said up front and names the first file of each odd size/channel count."""
    said = False
    if images is not None and config is not None:
        from rarespot.screen.data import mixed_input_note

        size = config.patch.size if config.detector == "patch" else config.data.size
        note = mixed_input_note(images.images, images.names, size, config.data.color)
        if note:
            log(f"note: {note}")
            said = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MixedInputWarning)
        yield
    for w in caught:
        if issubclass(w.category, MixedInputWarning):
            if not said:
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


def min_calibration_images(far: float) -> int:
    """Fewest held-out normals whose (1 - far) quantile means something: at least half a false alarm expected."""
    return int(np.ceil(0.5 / far))


def constant_images(images) -> list[int]:
    """Indices of images with one value everywhere (all black, all white, a blank frame): nothing to judge."""
    out = []
    for i, image in enumerate(images):
        a = np.asarray(image)
        if a.size == 0 or a.min() == a.max():
            out.append(i)
    return out


def _name_some(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def fit_model(
    data: str | Path, out_dir: str | Path, normal_label: str | int | None = 0, config: ScreenConfig | None = None,
    on_error: str = "skip", progress: bool = True, log=print,
):
    """Fit on the normal images of ``data``; writes model.pt and summary.json (+ training_curve.png for the CAE).

    ``config.detector`` picks the autoencoder (``cae``) or the pretrained patch features (``patch``).
    Interrupted CAE runs resume from ``out_dir/checkpoint.pt``. Every input check runs before anything
    is trained or written, so a bad input never costs an existing model in ``out_dir``.
    """
    config = config or ScreenConfig()
    out_dir = Path(out_dir)
    images = load_dataset(data, on_error=on_error)
    _report_skipped(images, log)
    normal = normal_subset(images, normal_label)
    constant = constant_images(normal.images)
    if constant:
        log(f"note: left out {len(constant)} constant image(s) (one value everywhere: nothing to learn): "
            f"{_name_some([normal.names[i] for i in constant])}")
        normal = normal.subset(np.setdiff1d(np.arange(len(normal)), constant))
    n_cal = max(1, int(round(config.train.val_fraction * len(normal))))
    need = min_calibration_images(config.far)
    if len(normal) - n_cal < 2 or n_cal < need:
        label = f"normal class {normal_label!r}" if images.labels is not None and normal_label is not None else "normal images"
        raise InputError(
            images.source,
            f"too few normal images to set a threshold: {len(normal)} usable ({label}); {n_cal} are held out "
            f"(val_fraction {config.train.val_fraction:g}) but a false-alarm rate of {config.far:g} needs at least {need} held-out "
            f"normals, i.e. about {int(np.ceil(need / config.train.val_fraction))} normal images; add normal images, raise --far, "
            f"or raise train.val_fraction",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.detector == "patch":
        from rarespot.screen.patch import PatchDetector

        log(f"fitting pretrained patch features ({config.patch.method}) on {len(normal)} normal images from {images.source}")
        detector = PatchDetector(config)
    else:
        log(f"training on {len(normal)} normal images from {images.source}")
        detector = CAEDetector(config, checkpoint=out_dir / CHECKPOINT_FILE, progress=progress)
    with _mixed_input_notes(log, normal, detector._config()):
        detector.fit(normal.images)
    detector.save(out_dir / MODEL_FILE)
    _write_summary(detector, out_dir, images, len(normal))
    return detector


def _write_summary(detector, out_dir: Path, images: ImageSet, n_normal: int) -> None:
    from rarespot.io.atomic import atomic_write_text
    from rarespot.screen.evaluate import _atomic_savefig, _pyplot

    summary = {"data": str(images.source), "n_normal": n_normal, "skipped_files": len(images.skipped), **detector.summary()}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    if not isinstance(detector, CAEDetector):
        return
    h = detector.history_
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


def score_data(model: str | Path, data: str | Path, out_csv: str | Path, on_error: str = "skip", log=print, ray=None):
    """Score every image of ``data``; writes a CSV (one row per image) and returns the table.

    ``ray``: a :class:`rarespot.ray_backend.RaySettings` to score on a Ray cluster (one detector per worker);
    the images are read and the CSV written here, as locally, and the CSV is the same.
    """
    from rarespot.screen.evaluate import score_table, write_scores_csv

    detector = load_detector(model)
    images = load_dataset(data, on_error=on_error)
    _report_skipped(images, log)
    _report_constant(images, log)
    with _mixed_input_notes(log, images, detector.config_):
        scores = None
        if ray is not None:
            from rarespot.ray_backend import analyze_on_ray

            scores = analyze_on_ray(model, images.images, ray)
        table = score_table(detector, images, scores=scores)
    write_scores_csv(table, out_csv)
    log(f"scored {len(table)} images: {int(table['anomalous'].sum())} flagged ({detector.main_score} score, FAR {detector.far_:g}) -> {out_csv}")
    return table


def _report_constant(images: ImageSet, log) -> None:
    constant = constant_images(images.images)
    if constant:
        log(f"note: {len(constant)} constant image(s) (one value everywhere; their scores mean little): "
            f"{_name_some([images.names[i] for i in constant])}")


def evaluate_data(model: str | Path, data: str | Path, out_dir: str | Path, normal_label: str | int = 0, on_error: str = "skip", top_k: int = 24, log=print) -> dict:
    """Metrics and plots on labelled ``data`` (see :mod:`rarespot.screen.evaluate`)."""
    from rarespot.screen.evaluate import evaluate

    detector = load_detector(model)
    images = load_dataset(data, on_error=on_error)
    _report_skipped(images, log)
    _report_constant(images, log)
    with _mixed_input_notes(log, images, detector.config_):
        return evaluate(detector, images, normal_label, out_dir, top_k=top_k)
