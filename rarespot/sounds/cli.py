"""`rarespot sounds` commands: train, predict, evaluate (thin wrappers over rarespot.sounds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True)


def _plain_warnings() -> None:
    """Show warnings as one 'warning: <file>: <problem>' line, without Python's source-line echo."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


@app.command()
def train(
    data: Path = typer.Argument(..., help="manifest CSV (file, crackle, wheeze columns) or a folder of <recording>.wav|flac + .txt"),
    out: Path = typer.Option(Path("runs/sounds"), "--out", "-o", help="output folder (best.pt, last.pt, history, plots); re-running resumes"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML SoundsTrainConfig (features, model, epochs, loss, ...)"),
    variant: Optional[str] = typer.Option(None, help="pooled (default) | effnet | effnet_cbam_vit | vit | conv_vit | conv_cbam_vit | cnn"),
    encoder: Optional[str] = typer.Option(None, help="timm ViT/DeiT name, e.g. deit_tiny_patch16_224, deit_small_patch16_224"),
    depth: Optional[int] = typer.Option(None, help="transformer blocks (fewer = faster on a CPU)"),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    loss: Optional[str] = typer.Option(None, help="cb_ce | cb_focal | ce | focal"),
    beta: Optional[float] = typer.Option(None, help="class-balanced beta (effective number)"),
    sample_rate: Optional[int] = typer.Option(None, help="resample every cycle to this rate (Hz)"),
    split: str = typer.Option("train", help="official split to train on when the data says (train | test | all)"),
    val_data: Optional[Path] = typer.Option(None, help="separate validation data (default: a patient-wise share of DATA)"),
    weights: Optional[Path] = typer.Option(None, help="local ViT/DeiT state dict to start the transformer from"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (default ~/.cache/rarespot/sound_features)"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="parallel feature-extraction processes"),
    resume: bool = typer.Option(True, help="continue from OUT/last.pt when it exists"),
) -> None:
    """Train a lung-sound classifier (seed: conv branches + CBAM + DeiT, class-balanced loss)."""
    _plain_warnings()
    from rarespot.sounds.train import SoundsTrainConfig, train as run_train

    cfg = SoundsTrainConfig.from_yaml(config) if config else SoundsTrainConfig()
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "loss": loss, "beta": beta}
    data_cfg = cfg.model_dump()
    data_cfg.update({k: v for k, v in overrides.items() if v is not None})
    for key, value in {"variant": variant, "encoder": encoder, "depth": depth}.items():
        if value is not None:
            data_cfg["model"][key] = value
    if sample_rate is not None:
        data_cfg["features"]["sample_rate"] = sample_rate
    from pydantic import ValidationError

    from rarespot.config import config_problems

    try:
        cfg = SoundsTrainConfig.model_validate(data_cfg)
    except ValidationError as exc:
        raise typer.BadParameter(config_problems(exc, data_cfg)) from None
    result = run_train(data, out, cfg, split=None if split == "all" else split, val_data=val_data, weights=weights,
                       cache_dir=cache_dir, n_jobs=jobs, resume=resume)
    kept = (f"best validation ICBHI score {100 * result.best_score:.2f} at epoch {result.best_epoch}" if cfg.select_by == "score"
            else f"kept epoch {result.best_epoch} (select_by {cfg.select_by}), validation ICBHI score {100 * result.best_score:.2f}")
    pace = f"fitted in {result.seconds_per_epoch:.1f} s" if cfg.model.variant == "pooled" else f"{result.seconds_per_epoch:.1f} s/epoch"
    if cfg.model.variant == "pooled":
        kept = f"validation ICBHI score {100 * result.best_score:.2f}"
    typer.echo(f"{kept}; {pace}; model: {result.checkpoint}")


@app.command()
def predict(
    model: Path = typer.Argument(..., help="best.pt (or its folder) from 'rarespot sounds train'"),
    audio: Path = typer.Argument(..., help="a .wav or .flac recording"),
    annotation: Optional[Path] = typer.Option(None, help="cycle annotation (start end crackle wheeze); default: <audio>.txt beside it"),
    window: Optional[float] = typer.Option(None, help="window length (s) when there is no annotation (default: the model's cycle length)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the predictions as JSON"),
    timeline: Optional[Path] = typer.Option(None, help="timeline PNG (default: <recording name>_timeline.png in the current folder)"),
    no_timeline: bool = typer.Option(False, "--no-timeline", help="do not write the timeline PNG"),
) -> None:
    """Label each respiratory cycle of a recording: normal, crackle, wheeze or both; draw them on a timeline PNG."""
    _plain_warnings()
    from rich.console import Console
    from rich.table import Table

    from rarespot.sounds.predict import plot_timeline, predict_file

    rows = predict_file(model, audio, annotation=annotation, window=window)
    table = Table(title=str(audio))
    for col in ("start", "end", "predicted", "p", "annotated"):
        table.add_column(col)
    for r in rows:
        table.add_row(f"{r.start:.3f}", f"{r.end:.3f}", r.label, f"{r.probabilities[r.label]:.2f}", r.true_label or "")
    Console().print(table)
    if json_out:
        from rarespot.io.atomic import atomic_write_text

        atomic_write_text(json_out, json.dumps([r.as_dict() for r in rows], indent=1))
    if not no_timeline:
        png = timeline or Path(f"{audio.stem}_timeline.png")
        plot_timeline(audio, rows, png)
        typer.echo(f"wrote {png}")


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="best.pt (or its folder) from 'rarespot sounds train'"),
    data: Path = typer.Argument(..., help="manifest CSV or folder of recordings + annotations"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write scores.json, predictions.csv, confusion.png here"),
    split: str = typer.Option("all", help="official split to score (train | test | all)"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache folder"),
    jobs: int = typer.Option(1, "--jobs", "-j"),
) -> None:
    """ICBHI sensitivity, specificity and score of a model on labelled cycles."""
    _plain_warnings()
    from rarespot.sounds.evaluate import evaluate as run_evaluate

    scores = run_evaluate(model, data, split=None if split == "all" else split, out_dir=out, cache_dir=cache_dir, n_jobs=jobs)
    typer.echo(scores.summary())
    typer.echo("per-class recall: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in scores.per_class_recall.items()))
    if out:
        typer.echo(f"wrote {out / 'scores.json'}, {out / 'predictions.csv'}, {out / 'confusion.png'}")
