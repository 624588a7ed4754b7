"""`rarespot screen` commands: fit, score, evaluate (thin wrappers over rarespot.screen.pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rarespot.ray_backend import RAY_HELP, WORKERS_HELP  # help texts only: Ray itself is imported with --ray

app = typer.Typer(no_args_is_help=True)

_DATA_HELP = "an .npz (images, labels[, names]) or a folder of images (class sub-folders give labels)"
_ON_ERROR_HELP = "unreadable image files: skip them (counted, first one named) or stop at the first"


def _on_error(strict: bool) -> str:
    return "raise" if strict else "skip"


@app.command()
def fit(
    data: Path = typer.Argument(..., help=_DATA_HELP),
    out: Path = typer.Option(Path("runs/screen"), "--out", "-o", help="model folder (model.pt, summary.json, training_curve.png); re-running resumes"),
    normal_label: str = typer.Option("0", help="label (id or class-folder name) of the normal images; the rest is ignored for training"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML ScreenConfig (detector, data, model, train, score, patch, far)"),
    detector: Optional[str] = typer.Option(None, help="cae (autoencoder, the default) | patch (ImageNet-pretrained patch features)"),
    patch_method: Optional[str] = typer.Option(None, help="with --detector patch: gaussian | padim | patchcore"),
    size: Optional[int] = typer.Option(None, help="resize images to SIZE x SIZE (a multiple of 8 for 3 stages)"),
    color: Optional[str] = typer.Option(None, help="gray | rgb"),
    epochs: Optional[int] = typer.Option(None),
    max_train: Optional[int] = typer.Option(None, help="use at most this many normal images for training (speed)"),
    far: Optional[float] = typer.Option(None, help="false-alarm rate on held-out normal images that sets the thresholds"),
    score: Optional[str] = typer.Option(None, help="score to threshold: error | density | combined"),
    error_sign: Optional[str] = typer.Option(None, help="pixel errors that count: both | darker | brighter"),
    seed: Optional[int] = typer.Option(None),
    strict: bool = typer.Option(False, "--strict", help=_ON_ERROR_HELP),
) -> None:
    """Fit on normal images (autoencoder + latent density, or pretrained patch features); set thresholds from held-out normals."""
    from rarespot.screen.config import ScreenConfig
    from rarespot.screen.pipeline import fit_model

    cfg = ScreenConfig.from_yaml(config) if config else ScreenConfig()
    raw = cfg.model_dump()
    for section, key, value in (
        ("data", "size", size), ("data", "color", color), ("train", "epochs", epochs), ("train", "max_train_images", max_train),
        ("train", "seed", seed), ("score", "combine", score), ("score", "error_sign", error_sign), ("patch", "method", patch_method),
    ):
        if value is not None:
            raw[section][key] = value
    if far is not None:
        raw["far"] = far
    if detector is not None:
        raw["detector"] = detector
    from pydantic import ValidationError

    from rarespot.config import config_problems

    try:
        cfg = ScreenConfig.model_validate(raw)
    except ValidationError as exc:
        raise typer.BadParameter(config_problems(exc, raw)) from None
    try:
        det = fit_model(data, out, normal_label=normal_label, config=cfg, on_error=_on_error(strict), log=typer.echo)
    except ImportError as exc:  # --detector patch without rarespot[pretrained]: say how to install, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if cfg.detector == "patch":
        typer.echo(f"model: {out / 'model.pt'}  (patch features, {cfg.patch.method}; threshold at FAR {cfg.far:g} on "
                   f"{det.n_calibration_} held-out normals: patch score {det.threshold_:.4g})")
        return
    t = det.thresholds_
    typer.echo(
        f"model: {out / 'model.pt'}  ({len(det.history_.val_loss)} epochs, {det.history_.seconds:.0f} s; "
        f"thresholds at FAR {t.far:g} on {t.n_calibration} held-out normals: error {t.error:.4g}, "
        f"-log density {t.neg_log_density:.4g}, combined {t.combined:.3g}; thresholded: {det.main_score})"
    )


@app.command()
def score(
    model: Path = typer.Argument(..., help="model.pt (or its folder) from 'rarespot screen fit'"),
    data: Path = typer.Argument(..., help=_DATA_HELP),
    out: Path = typer.Option(Path("scores.csv"), "--out", "-o", help="CSV: name, [label], error, neg_log_density, combined, anomalous, anomalous_or_rule (patch models: name, [label], patch, anomalous)"),
    strict: bool = typer.Option(False, "--strict", help=_ON_ERROR_HELP),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
) -> None:
    """Score images (higher = more anomalous) and flag them at the model's stored thresholds."""
    from rarespot.ray_backend import settings_from_cli
    from rarespot.screen.pipeline import score_data

    score_data(model, data, out, on_error=_on_error(strict), log=typer.echo, ray=settings_from_cli(ray, workers))


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="model.pt (or its folder) from 'rarespot screen fit'"),
    data: Path = typer.Argument(..., help="labelled data: " + _DATA_HELP),
    out: Path = typer.Option(Path("runs/screen/eval"), "--out", "-o", help="folder for metrics.json, scores.csv and PNG plots"),
    normal_label: str = typer.Option("0", help="label of normal images; every other label counts as an anomaly"),
    top_k: int = typer.Option(24, help="images in the top-anomalies contact sheet"),
    strict: bool = typer.Option(False, "--strict", help=_ON_ERROR_HELP),
) -> None:
    """AUROC, AUPRC and P/R/F1 at the stored thresholds; histograms, ROC and top-anomaly heatmaps."""
    from rarespot.screen.pipeline import evaluate_data

    m = evaluate_data(model, data, out, normal_label=normal_label, on_error=_on_error(strict), top_k=top_k, log=typer.echo)
    typer.echo(f"{m['n_images']} images ({m['n_anomaly']} anomalous); thresholds at FAR {m['far_target']:g}; flagged by: {m['main_score']}")
    for name in ("error", "density", "combined", "patch"):
        if name in m:
            r = m[name]
            mark = " *" if name == m["main_score"] else ""
            typer.echo(f"  {name:9s} AUROC {r['auroc']:.3f}  AUPRC {r['auprc']:.3f}  P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}  FAR {r['false_alarm_rate']:.3f}{mark}")
    if "or_rule" in m:
        r = m["or_rule"]
        typer.echo(f"  or_rule                               P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}  FAR {r['false_alarm_rate']:.3f}")
    typer.echo(f"plots and metrics.json in {out}")
