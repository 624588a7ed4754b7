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
    host: Optional[str] = typer.Option(
        None, help="Address to listen on (default 127.0.0.1, this machine only). Beyond loopback a token is required."
    ),
    token_file: Optional[Path] = typer.Option(
        None, "--token-file", help="File holding the access token (or set RARESPOT_SERVE_TOKEN); every request needs it."
    ),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="TLS certificate (PEM): serve HTTPS."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM)."),
    allowed_host: list[str] = typer.Option(
        None, "--allowed-host", help="A host name operators use to reach the server (repeatable); others get 400."
    ),
    port: Optional[int] = typer.Option(None, help="Port (default 8000)."),
    max_upload_mb: Optional[float] = typer.Option(None, help="Largest accepted upload in MB (default 64)."),
    timeout: Optional[float] = typer.Option(None, help="Seconds a detection may take before 504 (default 120)."),
    floor_conf: Optional[float] = typer.Option(None, help="Lowest confidence returned to the page (default 0.05)."),
    tile: Optional[int] = typer.Option(None, help="Tile size for tiled inference (default 512)."),
    device: Optional[str] = typer.Option(None, help="Inference device, e.g. cpu or 0 (default cpu)."),
    backend: Optional[str] = typer.Option(
        None, help="auto (default: on the CPU a .pt runs as its ONNX export, made once and cached, on the faster of "
                   "OpenVINO and onnxruntime), openvino, onnxruntime or torch; as in `rarespot detect predict`.",
    ),
    tta: Optional[str] = typer.Option(
        None, help="Test-time views (default none): hflip or flips, as in `rarespot detect predict --tta` (2x or 4x the time).",
    ),
) -> None:
    """Start the operator review app: drop a scan in the page, see the detections, filter and zoom."""
    import uvicorn

    from rarespot.config import validate_config
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
        "backend": backend,
        "tta": tta,
        "token_file": token_file,
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
        "allowed_hosts": list(allowed_host) if allowed_host else None,
    }
    # A bad option value (--port -1, --backend gpu) is one line naming the option, exit 2, not a traceback.
    settings = validate_config(ServeSettings, {**settings.model_dump(), **{k: v for k, v in overrides.items() if v is not None}},
                               config, "settings (options and --config)")
    if not settings.models:
        raise typer.BadParameter("give a model with --model PATH (or models: in --config)", param_hint="--model")
    # InputError (one line, exit 2) for a missing model file, or a bind beyond loopback without a token.
    app = create_app(settings=settings)
    from rarespot.serve.security import uvicorn_config

    if app.state.exposure_warning:
        typer.secho(app.state.exposure_warning, err=True, fg="yellow")
    login = " (the browser asks for the token as its password)" if settings.resolved_token() else ""
    config = uvicorn_config(app, settings, log_level="info")  # InputError for a missing TLS file
    scheme = "https" if settings.tls else "http"
    typer.echo(f"rarespot review: {scheme}://{settings.host}:{settings.port}/{login}  (API docs at /docs)")
    uvicorn.Server(config).run()
