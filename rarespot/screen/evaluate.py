"""Score a labelled set with a fitted detector: metrics at the stored thresholds, and plots.

Writes to ``out_dir``: ``metrics.json`` (AUROC, AUPRC and P/R/F1/false-alarm
rate at the stored threshold, for every score of the detector: the autoencoder's
error, density, combined score and the seed's OR rule, or the patch detector's
patch score), ``scores.csv``, ``histograms.png`` (normal vs anomalous, with
thresholds), ``roc.png`` and ``top_anomalies.png`` (the highest-scoring images
next to their pixel-level anomaly maps: reconstruction error, or patch scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rarespot.errors import InputError
from rarespot.metrics.anomaly import anomaly_metrics, flagged_metrics
from rarespot.screen.data import ImageSet
from rarespot.screen.detectors import CAEDetector
from rarespot.io.atomic import atomic_write_text

SCORE_NAMES = ("error", "density", "combined")  # the autoencoder's; a detector lists its own in .score_names
TITLES = {"error": "reconstruction error", "density": "-log latent density", "combined": "combined score",
          "patch": "patch score (pretrained features)"}


def _atomic_savefig(fig, path: Path) -> None:
    """The screen pipeline's PNG settings; written atomically, the figure closed (viz.save_figure)."""
    from rarespot.viz import save_figure

    save_figure(fig, path, format="png", dpi=110, bbox_inches="tight")


def score_table(detector, images: ImageSet, scores=None):
    """One row per image: name, label (if known), every score and the decisions at the stored thresholds."""
    import pandas as pd

    s = scores if scores is not None else detector.analyze(images.images)
    main = detector.main_score
    table = pd.DataFrame({"name": images.names})
    if images.labels is not None:
        table["label"] = images.labels
    if isinstance(detector, CAEDetector):
        table["error"] = s.error
        table["neg_log_density"] = s.neg_log_density
        table["combined"] = s.combined
    else:
        for name in detector.score_names:
            table[name] = s.get(name)
    table["anomalous"] = s.get(main) > detector.threshold_of(main)
    if s.or_rule is not None:
        table["anomalous_or_rule"] = s.or_rule
    return table


def write_scores_csv(table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))
    return path


def anomaly_truth(images: ImageSet, normal_label: str | int) -> np.ndarray:
    """1 = anomaly (any label other than the normal one), 0 = normal."""
    if images.labels is None:
        raise InputError(images.source, "evaluation needs labels (an npz 'labels' array, or class sub-folders)")
    normal_id = images.label_id(normal_label)
    if not (images.labels == normal_id).any():
        raise InputError(images.source, f"no images with the normal label {normal_label!r}")
    return (images.labels != normal_id).astype(int)


def evaluate(detector, images: ImageSet, normal_label: str | int, out_dir: str | Path, top_k: int = 24) -> dict:
    """Metrics + plots for a labelled ImageSet; returns the metrics dict (also written as metrics.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = anomaly_truth(images, normal_label)
    scores = detector.analyze(images.images)
    metrics = {
        "n_images": int(len(y)), "n_anomaly": int(y.sum()), "n_normal": int((1 - y).sum()),
        "far_target": detector.far_, "main_score": detector.main_score, "detector": detector.config_.detector,
        "source": str(images.source),
    }
    for name in detector.score_names:
        metrics[name] = anomaly_metrics(y, scores.get(name), detector.threshold_of(name))
    if scores.or_rule is not None:
        metrics["or_rule"] = flagged_metrics(y, scores.or_rule)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_scores_csv(score_table(detector, images, scores), out_dir / "scores.csv")
    plot_histograms(y, scores, detector, out_dir / "histograms.png")
    plot_roc(y, scores, detector, out_dir / "roc.png")
    plot_top_anomalies(detector, images, scores.get(detector.main_score), y, out_dir / "top_anomalies.png", top_k)
    return metrics


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histograms(y: np.ndarray, scores, detector, path: Path) -> None:
    plt = _pyplot()
    names = detector.score_names
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = scores.get(name)
        finite = values[np.isfinite(values)]
        bins = np.linspace(*np.percentile(finite, [0.5, 99.5]), 50) if len(finite) else 10
        ax.hist(values[y == 0], bins=bins, alpha=0.6, label=f"normal ({(y == 0).sum()})", density=True)
        ax.hist(values[y == 1], bins=bins, alpha=0.6, label=f"anomalous ({(y == 1).sum()})", density=True)
        ax.axvline(detector.threshold_of(name), color="k", ls="--", lw=1, label=f"threshold (FAR {detector.far_:g})")
        ax.set_title(TITLES.get(name, name) + (" (thresholded)" if name == detector.main_score else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_savefig(fig, path)


def plot_roc(y: np.ndarray, scores, detector, path: Path) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for name in detector.score_names:
        fpr, tpr, _ = roc_curve(y, scores.get(name))
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, scores.get(name)):.3f})")
    flags = scores.or_rule
    if flags is not None:
        ax.plot(flags[y == 0].mean(), flags[y == 1].mean(), "ko", label="OR rule (stored thresholds)")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    ax.set_xlabel("false-alarm rate")
    ax.set_ylabel("recall")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _atomic_savefig(fig, path)


def plot_top_anomalies(detector, images: ImageSet, main_scores: np.ndarray, y: np.ndarray | None, path: Path, top_k: int = 24) -> None:
    """Contact sheet: the ``top_k`` highest-scoring images, each beside its pixel-level anomaly map."""
    plt = _pyplot()
    top = np.argsort(-main_scores)[:top_k]
    if len(top) == 0:
        return
    detail = detector.analyze(images.subset(top).images, keep_maps=True)
    cols = 6
    rows = int(np.ceil(len(top) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.3, rows * 1.5), squeeze=False)
    vmax = float(np.percentile(detail.error_maps, 99.5)) or 1.0
    # Patch scores are distances that are never near 0 on the object: start the colour scale at the typical
    # object patch so the hot spots stand out (reconstruction errors start at 0).
    on_object = detail.error_maps[detail.error_maps > 0]
    vmin = 0.0 if isinstance(detector, CAEDetector) or not len(on_object) else float(np.percentile(on_object, 25))
    for ax in axes.ravel():
        ax.axis("off")
    for k, idx in enumerate(top):
        r, c = divmod(k, cols)
        img = detail.inputs[k].transpose(1, 2, 0)
        axes[r, 2 * c].imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
        tag = "" if y is None else (" A" if y[idx] else " N")
        axes[r, 2 * c].set_title(f"#{k + 1}{tag} {main_scores[idx]:.3g}", fontsize=6)
        axes[r, 2 * c + 1].imshow(detail.error_maps[k], cmap="inferno", vmin=vmin, vmax=max(vmax, vmin + 1e-12))
    what = "per-pixel reconstruction error" if isinstance(detector, CAEDetector) else "patch anomaly score (pretrained features)"
    fig.suptitle(f"top-scoring images | {what} (A = labelled anomaly, N = normal)", fontsize=8)
    fig.tight_layout()
    _atomic_savefig(fig, path)
