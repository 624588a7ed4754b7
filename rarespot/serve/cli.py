"""`rarespot serve`: run the operator review app under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def serve(
    model: list[Path] = typer.Option(
        None, "--model", "-m", help="Model file (.pt); repeat for a model list in the page. The first is the default."
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Settings YAML (see rarespot.serve.settings)."),
    host: Optional[str] = typer.Option(None, help="Address to listen on (default 127.0.0.1, this machine only)."),
    port: Optional[int] = typer.Option(None, help="Port (default 8000)."),
    max_upload_mb: Optional[float] = typer.Option(None, help="Largest accepted upload in MB (default 64)."),
    timeout: Optional[float] = typer.Option(None, help="Seconds a detection may take before 504 (default 120)."),
    floor_conf: Optional[float] = typer.Option(None, help="Lowest confidence returned to the page (default 0.05)."),
    tile: Optional[int] = typer.Option(None, help="Tile size for tiled inference (default 512)."),
    device: Optional[str] = typer.Option(None, help="Inference device, e.g. cpu or 0 (default cpu)."),
) -> None:
    """Start the operator review app: drop a scan in the page, see the detections, filter and zoom."""
    import uvicorn

    from rarespot.serve.app import create_app
    from rarespot.serve.settings import ServeSettings

    settings = ServeSettings.from_yaml(config) if config else ServeSettings()
    overrides = {
        "models": list(model) if model else None,
        "host": host,
        "port": port,
        "max_upload_mb": max_upload_mb,
        "detect_timeout_s": timeout,
        "floor_conf": floor_conf,
        "tile": tile,
        "device": device,
    }
    settings = ServeSettings(**{**settings.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    if not settings.models:
        raise typer.BadParameter("give a model with --model PATH (or models: in --config)", param_hint="--model")
    app = create_app(settings=settings)  # InputError for a missing model file -> one line, exit 2
    typer.echo(f"rarespot review: http://{settings.host}:{settings.port}/  (API docs at /docs)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
