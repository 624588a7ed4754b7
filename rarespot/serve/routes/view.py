"""A detected scan again, from the cache: through a view filter (``render``), with its boxes
drawn (``annotated``), or its boxes as JSON (``detections``)."""

from __future__ import annotations

import os
import re

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi import Path as Path_
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from rarespot.errors import InputError
from rarespot.serve.schemas import ERRORS, ErrorOut
from rarespot.serve.state import Client, ServeState, client_of, serve_state

router = APIRouter()

_png = {200: {"content": {"image/png": {}}, "description": "PNG image"}, **ERRORS}
_view_doc = (
    'view filter spec (rarespot.filters), e.g. "clahe:clip=2.0,gamma:g=0.8" or "window:center=3000,width=2000"; '
    "empty: the scan as the model sees it. Parameters are bounded and a chain has at most 12 steps (else 422)"
)
_view_query = Query(None, max_length=600, description=_view_doc)
_scan_id = Path_(..., max_length=64, description="the id /api/detect returned")


def _download_stem(filename: str) -> str:
    """ASCII-only stem for a Content-Disposition header (headers are Latin-1)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(filename)[0]) or "scan"


def _encode_png(rgb_or_gray: np.ndarray) -> bytes:
    import cv2

    img = rgb_or_gray
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]  # OpenCV writes BGR
    # Level 1: the page re-renders on every filter change; speed matters more than bytes.
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _view_error(message: str):
    """A bad view spec as FastAPI's own 422 body, so the response matches the documented schema."""
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError([{"type": "value_error", "loc": ("query", "view"), "msg": message, "input": None}])


def _parse_view(view: str | None):
    """The page's filter spec (e.g. "clahe:clip=2.0,gamma:g=0.8") -> a ViewFilter (empty for none); 422 if bad."""
    from rarespot.filters import ViewFilter

    try:
        return ViewFilter.parse(view)
    except InputError as exc:
        raise _view_error(str(exc)) from None


def _render_view(image: np.ndarray, view) -> np.ndarray:
    """The scan as the operator sees it (8-bit; grey stays one channel for a small PNG).

    The display window comes first (:func:`rarespot.viz.display_chain`), as in the CLI overlays.
    """
    from rarespot.filters import to_uint8
    from rarespot.viz import display_chain

    try:
        return to_uint8(display_chain(image, view)(image))
    except ValueError as exc:  # a parameter the filter refuses, e.g. gamma <= 0
        raise _view_error(f"view filter {str(view)!r}: {exc}") from None


async def _rendered(state: ServeState, work) -> bytes:
    """``work()``'s PNG, made in a worker thread; renders are CPU work too: a few at a time, the rest wait."""

    def in_a_slot() -> bytes:
        with state.render_slots:
            return work()

    return await run_in_threadpool(in_a_slot)


@router.get("/api/scans/{scan_id}/render", response_class=Response, responses=_png, tags=["view"])
async def render(
    scan_id: str = _scan_id,
    view: str | None = _view_query,
    client: Client = Depends(client_of),
    state: ServeState = Depends(serve_state),
) -> Response:
    """The cached scan through a view filter, as an 8-bit PNG (the page's base layer)."""
    scan = state.cache.get(client, scan_id)
    view_filter = _parse_view(view)
    png = await _rendered(state, lambda: _encode_png(_render_view(scan.image, view_filter)))
    return Response(png, media_type="image/png")


@router.get("/api/scans/{scan_id}/annotated", response_class=Response, responses=_png, tags=["view"])
async def annotated(
    scan_id: str = _scan_id,
    conf: float = Query(0.25, ge=0.0, le=1.0, description="draw boxes at or above this confidence"),
    view: str | None = _view_query,
    client: Client = Depends(client_of),
    state: ServeState = Depends(serve_state),
) -> Response:
    """The scan with the boxes at or above ``conf`` drawn (predictions green), as a PNG download."""
    from rarespot.viz import render_overlay

    scan = state.cache.get(client, scan_id)
    view_filter = _parse_view(view)
    kept = [d for d in scan.detections if d["score"] >= conf]

    def draw() -> bytes:
        display = _render_view(scan.image, view_filter)  # same pixels as /render
        rgb = render_overlay(
            display,
            pred_boxes=np.array([[d["x1"], d["y1"], d["x2"], d["y2"]] for d in kept], np.float64).reshape(-1, 4),
            pred_labels=np.array([d["label"] for d in kept], dtype=np.int64),
            pred_scores=np.array([d["score"] for d in kept], dtype=np.float64),
            class_names=scan.class_names,
        )
        return _encode_png(rgb)

    png = await _rendered(state, draw)
    return Response(
        png,
        media_type="image/png",
        headers={"Content-Disposition": f'attachment; filename="{_download_stem(scan.filename)}_annotated.png"'},
    )


@router.get("/api/scans/{scan_id}/detections", responses={404: {"model": ErrorOut}}, tags=["detection"])
def detections(
    scan_id: str = _scan_id,
    conf: float = Query(0.0, ge=0.0, le=1.0, description="keep boxes at or above this"),
    client: Client = Depends(client_of),
    state: ServeState = Depends(serve_state),
) -> JSONResponse:
    """The cached scan's detections at or above ``conf``, as a JSON download."""
    scan = state.cache.get(client, scan_id)
    body = {
        "file": scan.filename,
        "model": scan.model,
        "conf": conf,
        "class_names": scan.class_names,
        "detections": [d for d in scan.detections if d["score"] >= conf],
    }
    disposition = f'attachment; filename="{_download_stem(scan.filename)}_detections.json"'
    return JSONResponse(body, headers={"Content-Disposition": disposition})
