"""The page, the API's documentation page, and what the server offers and how loaded it is."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse

import rarespot
from rarespot.serve.schemas import Health, ModelInfo
from rarespot.serve.state import ServeState, serve_state

STATIC_DIR = Path(__file__).parent.parent / "static"

router = APIRouter()


def docs_assets() -> Path | None:
    """Swagger UI's files from an installed package (fastapi-offline), so /docs needs no CDN."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).with_name("static")
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/docs", include_in_schema=False)
def docs(state: ServeState = Depends(serve_state)) -> HTMLResponse:
    if state.docs_assets is None:
        return HTMLResponse(
            "<!doctype html><meta charset='utf-8'><title>rarespot review API</title>"
            "<p>The interactive API page needs the <code>fastapi-offline</code> package "
            "(<code>pip install \"rarespot[serve]\"</code>). The API's schema is at "
            "<a href='/openapi.json'>/openapi.json</a>.</p>"
        )
    return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")


@router.get("/api/health", response_model=Health, tags=["service"])
def health(state: ServeState = Depends(serve_state)) -> Health:
    """Liveness, the loaded models and the load on the server (detections counted until they really stop)."""
    return Health(
        status="ok",
        version=rarespot.__version__,
        models=list(state.models),
        cached_scans=len(state.cache),
        pending_detections=state.load.counts["pending"],
        stopping_detections=state.load.counts["stopping"],
    )


@router.get("/api/models", response_model=list[ModelInfo], tags=["service"])
def model_info(state: ServeState = Depends(serve_state)) -> list[ModelInfo]:
    """The models this server offers (the first is the default) and their classes."""
    return [e.info for e in state.models.values()]
