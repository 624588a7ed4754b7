"""``POST /api/detect``: an upload checked (size, type, pixel count), decoded, detected in a
worker thread within the time limit, and cached for the view routes."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool

from rarespot.detect.predict import DetectionCancelled, detections_to_records
from rarespot.errors import InputError
from rarespot.serve.schemas import ERRORS, DetectionOut, DetectResponse
from rarespot.serve.settings import ALLOWED_SUFFIXES, ServeSettings
from rarespot.serve.state import Client, ModelEntry, Scan, ServeState, client_of, serve_state

ACCEPTED = "PNG, TIFF, DICOM or JPEG"
# Suffix the private temp file gets for each sniffed format, so the reader picks the right decoder.
_FORMAT_SUFFIX = {"PNG": ".png", "TIFF": ".tif", "DICOM": ".dcm", "JPEG": ".jpg"}

router = APIRouter()


def sanitize_filename(name: str | None, max_len: int = 120) -> str:
    """The client's file name made safe to echo: base name only, no control or markup characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^\w.\- ()+,=@]", "_", base).strip(" .")
    return base[:max_len] or "upload"


def sniff_format(head: bytes) -> str | None:
    """Format named by the file's first bytes (magic numbers), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and Big TIFF
        return "TIFF"
    if head[128:132] == b"DICM":  # DICOM Part 10: 128-byte preamble, then "DICM"
        return "DICOM"
    return None


def _decode(data: bytes, filename: str, fmt: str, settings: ServeSettings, upload_dir: Path) -> tuple[np.ndarray, dict]:
    # The reader takes a path: write the bytes to a private temp file whose name we make up.
    from rarespot.io.images import ImageTooLarge, image_header, read_image_with_meta

    upload_dir.mkdir(mode=0o700, exist_ok=True)  # again, if a previous server run removed it
    fd, tmp = tempfile.mkstemp(suffix=_FORMAT_SUFFIX[fmt], dir=upload_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            # The size from the header first: a small file may announce a huge image, and
            # decoding it would take the memory before any check on the array could run.
            width, height, frames = image_header(tmp)
        except ImageTooLarge as exc:
            raise HTTPException(413, f"{filename}: {exc.problem}") from None
        except InputError as exc:
            raise HTTPException(400, f"{filename}: {exc.problem}") from None
        if width * height * frames > settings.max_pixels:
            shown = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
            raise HTTPException(
                413, f"{filename}: {shown} pixels is over the {settings.max_pixels:,} limit (read from its header)"
            )
        try:
            image, meta = read_image_with_meta(tmp)
        except InputError as exc:
            raise HTTPException(400, f"{filename}: {exc.problem}") from None
        except Exception as exc:  # a decoder's own error on a corrupt file
            raise HTTPException(400, f"{filename}: cannot decode the {fmt} image ({type(exc).__name__})") from None
    finally:
        os.unlink(tmp)
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise HTTPException(400, f"{filename}: decoded to an unusable array of shape {image.shape}")
    if image.shape[0] * image.shape[1] > settings.max_pixels:  # a header that lied
        raise HTTPException(
            413, f"{filename}: {image.shape[1]}x{image.shape[0]} pixels is over the {settings.max_pixels:,} limit"
        )
    return image, meta


def _run_model(entry: ModelEntry, image: np.ndarray, cancel: threading.Event, floor_conf: float):
    with entry.lock:  # one request per model at a time; predictors are not thread-safe
        if cancel.is_set():  # its client already got a 504 while it queued: skip the work
            return None
        start = time.perf_counter()
        if entry.cancellable:
            det = entry.predictor.predict(image, cancel=cancel)  # stops between tiles once cancel is set
        else:
            det = entry.predictor.predict(image)  # InputError for an array it cannot take
        elapsed = time.perf_counter() - start
    return detections_to_records(det, entry.predictor.class_names, floor_conf), elapsed


@router.post("/api/detect", response_model=DetectResponse, responses=ERRORS, tags=["detection"])
async def detect(
    file: UploadFile = File(..., description=f"the scan: {ACCEPTED} (8 or 16 bit)"),
    model: str | None = Form(None, description="model name from /api/models; default: the first"),
    client: Client = Depends(client_of),
    state: ServeState = Depends(serve_state),
) -> DetectResponse:
    """Detect objects in one scan (multipart upload). Returns every box at or above the floor confidence."""
    settings = state.settings
    filename = sanitize_filename(file.filename)
    suffix = os.path.splitext(filename)[1].lower()
    if suffix and suffix not in ALLOWED_SUFFIXES:
        raise HTTPException(415, f"{filename}: file type {suffix!r} is not accepted; send a {ACCEPTED} scan")
    entry = state.models.get(model or state.default_model)
    if entry is None:
        raise HTTPException(400, f"unknown model {str(model)[:80]!r}; available: {', '.join(state.models)}")

    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"{filename}: upload is over the server's {state.limit_text} limit")
    if not data:
        raise HTTPException(400, f"{filename}: the file is empty")
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise HTTPException(415, f"{filename}: content is not a {ACCEPTED} image")

    state.load.admit(client, filename)
    handed_over = False  # once the model job is queued, it releases its slot when it really ends
    try:
        image, meta = await run_in_threadpool(_decode, data, filename, fmt, settings, state.upload_dir)
        del data
        cancel = threading.Event()
        job = state.executor.submit(_run_model, entry, image, cancel, settings.floor_conf)
        job.add_done_callback(lambda _job: state.load.release(client))
        handed_over = True
        try:
            # The limit counts the wait for the model too: a request queued too long gets 504.
            result = await asyncio.wait_for(asyncio.wrap_future(job), timeout=settings.detect_timeout_s)
            if result is None:
                raise DetectionCancelled("skipped")
            records, elapsed = result
        except InputError as exc:
            raise HTTPException(400, f"{filename}: {exc.problem}") from None
        except (asyncio.TimeoutError, DetectionCancelled):
            # A queued job is dropped; a running one stops before its next batch of tiles (a predictor
            # without cancel= runs to its end). Health counts it as stopping until it has.
            cancel.set()
            if not job.done():
                state.load.stopping(job)
            raise HTTPException(
                504, f"{filename}: detection took longer than the {settings.detect_timeout_s:g} s limit"
            ) from None
        except Exception as exc:  # a model failure: say so in the page, not a bare "Internal Server Error"
            raise HTTPException(500, f"{filename}: detection failed ({type(exc).__name__}: {exc})") from exc
    finally:
        if not handed_over:
            state.load.release(client)

    warn = getattr(entry.predictor, "input_warning", None)
    notes = [note] if callable(warn) and (note := warn(image)) else []
    class_names = list(entry.predictor.class_names)
    key = state.cache.put(client, Scan(image, filename, entry.name, class_names, records))
    return DetectResponse(
        id=key,
        filename=filename,
        format=fmt,
        width=int(image.shape[1]),
        height=int(image.shape[0]),
        channels=1 if image.ndim == 2 else int(image.shape[2]),
        dtype=str(image.dtype),
        value_range=[float(image.min()), float(image.max())],
        window=[float(meta["window_center"]), float(meta["window_width"])] if "window_width" in meta else None,
        model=entry.name,
        class_names=class_names,
        floor_conf=settings.floor_conf,
        default_conf=settings.default_conf,
        elapsed_ms=round(elapsed * 1000, 1),
        detections=[DetectionOut(**r) for r in records],
        warnings=notes,
    )
