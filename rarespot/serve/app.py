"""The operator review app: a FastAPI server and the page it serves.

rarespot is the second reader next to the operator (seed 000, section 1): the
operator drops a scan into the page, the server runs tiled detection, and the
page draws the boxes over the scan with a live confidence slider and the view
filters operators annotate with (seed 000, section 3.2).

Safety rules the code keeps:
- no path from the client touches the file system: an upload is written to a
  private temp file whose name the server makes up (only the suffix of the
  sniffed format is used); the client's file name is only echoed, sanitised;
- uploads are limited in size (413), type (415, by suffix and by content),
  pixel count (413, read from the file header before anything is decoded) and
  detection time (504); more than ``max_pending`` detections at once get 503,
  more than ``max_pending_per_client`` from one client get 429;
- inference is CPU-bound: it runs in a worker thread, one request per model at
  a time (a lock per model), so the event loop stays free for the page. A
  detection that times out is cancelled between two batches of tiles, so it
  stops using the CPU; ``/api/health`` counts it until it has really stopped;
- view filters are bounded (parameters and chain length, 422 beyond);
- cached scans belong to the client that uploaded them (its address and a
  browser cookie): one client's uploads never expire another's scans, and an
  id is no use to anyone else;
- host names, origins, an optional access token (required beyond loopback),
  security headers and connection timeouts: :mod:`rarespot.serve.security`.

Build it with :func:`create_app`; ``rarespot serve`` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as Path_
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

import rarespot
from rarespot.detect.predict import DetectionCancelled, Predictor, detections_to_records
from rarespot.errors import InputError
from rarespot.serve import security
from rarespot.serve.settings import ALLOWED_SUFFIXES, ServeSettings

STATIC_DIR = Path(__file__).with_name("static")
ACCEPTED = "PNG, TIFF, DICOM or JPEG"
# Suffix the private temp file gets for each sniffed format, so the reader picks the right decoder.
_FORMAT_SUFFIX = {"PNG": ".png", "TIFF": ".tif", "DICOM": ".dcm", "JPEG": ".jpg"}


# ----------------------------------------------------------------- API schemas


class DetectionOut(BaseModel):
    # Pixel corners in the scan's own grid; the same records as Detections.to_records().
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int
    class_name: str


class DetectResponse(BaseModel):
    id: str  # opaque key of the cached scan, for /render, /annotated and /detections (this client only)
    filename: str  # the client's file name, sanitised; only ever echoed
    format: str
    width: int
    height: int
    channels: int
    dtype: str
    value_range: list[float]  # darkest and brightest grey value, for window/level controls
    window: list[float] | None = None  # the file's own display window (DICOM centre, width), if it has one
    model: str
    class_names: list[str]
    floor_conf: float  # every box at or above this is returned
    default_conf: float  # the page's initial slider position
    elapsed_ms: float
    detections: list[DetectionOut]
    warnings: list[str] = []  # what the operator should know about this result (e.g. an old model and an 8-bit scan)


class ModelInfo(BaseModel):
    name: str
    default: bool
    class_names: list[str]
    floor_conf: float
    tile: int | None = None
    overlap: float | None = None
    iou: float | None = None
    merge: str | None = None
    input_mapping: str | None = None  # how the model maps a scan to its 8-bit input (stored with the model)


class Health(BaseModel):
    status: str
    version: str
    models: list[str]
    cached_scans: int
    pending_detections: int  # queued or running, including timed-out ones still stopping
    stopping_detections: int  # timed out (the client got 504) but not yet stopped


class ErrorOut(BaseModel):
    detail: str


_ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 429, 500, 503, 504)}


# ----------------------------------------------------------------- helpers


def sanitize_filename(name: str | None, max_len: int = 120) -> str:
    """The client's file name made safe to echo: base name only, no control or markup characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^\w.\- ()+,=@]", "_", base).strip(" .")
    return base[:max_len] or "upload"


def _download_stem(filename: str) -> str:
    """ASCII-only stem for a Content-Disposition header (headers are Latin-1)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(filename)[0]) or "scan"


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


@dataclass
class _ModelEntry:
    name: str
    predictor: Predictor
    info: ModelInfo
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancellable: bool = False  # predict() takes cancel=: a timed-out detection stops between tiles


@dataclass
class _Scan:
    image: np.ndarray
    filename: str
    model: str
    class_names: list[str]
    detections: list[dict]


Client = tuple[str, str]  # (address, browser cookie or "")


class _ScanCache:
    """Decoded uploads kept for re-rendering, per client.

    Each client (address + browser cookie) keeps its own last ``per_client`` scans,
    and may read only those. All clients together are held to ``max_bytes``: when
    over, the least recently used scan of the *address* holding the most memory
    goes, so a client uploading many scans pushes out its own, not someone else's.
    """

    def __init__(self, per_client: int, max_bytes: int):
        self.per_client = per_client
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Client, _Scan]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, client: Client, scan: _Scan) -> str:
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._items[key] = (client, scan)
            mine = [k for k, (c, _) in self._items.items() if c == client]
            for old in mine[: -self.per_client]:
                del self._items[old]
            while len(self._items) > 1 and self._bytes() > self.max_bytes:
                per_address = Counter()
                for c, sc in self._items.values():
                    per_address[c[0]] += sc.image.nbytes
                heaviest = per_address.most_common(1)[0][0]
                victim = next(k for k, (c, _) in self._items.items() if c[0] == heaviest)
                del self._items[victim]
        return key

    def _bytes(self) -> int:
        return sum(sc.image.nbytes for _, sc in self._items.values())

    def get(self, client: Client, key: str) -> _Scan:
        with self._lock:
            entry = self._items.get(key)
            if entry is None or entry[0] != client:  # another client's id is as unknown as an expired one
                raise HTTPException(
                    404, f"scan id {key[:40]!r} not found: it expired from this client's cache of its last "
                    f"{self.per_client} scans; upload the scan again"
                )
            self._items.move_to_end(key)
            return entry[1]

    def __len__(self) -> int:
        return len(self._items)


# ----------------------------------------------------------------- the app


def _load_models(model, settings: ServeSettings) -> list[_ModelEntry]:
    """Model paths and/or predictor objects -> named entries, the first being the default."""
    if model is None:
        sources: list = list(settings.models)
    elif isinstance(model, (str, Path)) or not isinstance(model, Sequence):
        sources = [model]
    else:
        sources = list(model)
    if not sources:
        raise ValueError("create_app needs a model path or predictor (or settings.models)")

    entries: list[_ModelEntry] = []
    for i, source in enumerate(sources):
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise InputError(path, "model file not found")
            from rarespot.detect.predict import TiledPredictor

            inference = settings.inference()
            predictor = TiledPredictor(path, inference)
            name = path.stem
            info = dict(tile=inference.tile, overlap=inference.overlap, iou=inference.iou, merge=inference.merge)
        else:
            predictor = source
            name = str(getattr(source, "name", None) or f"model{i + 1}")
            info = {k: getattr(source, k, None) for k in ("tile", "overlap", "iou", "merge")}
            info["merge"] = None if info["merge"] is None else str(info["merge"])
        taken = {e.name for e in entries}
        base, n = name, 2
        while name in taken:  # two files called best.pt: best, best-2
            name, n = f"{base}-{n}", n + 1
        model_info = ModelInfo(
            name=name,
            default=not entries,
            class_names=list(predictor.class_names),
            floor_conf=settings.floor_conf,
            input_mapping=str(mapping) if (mapping := getattr(predictor, "input_mapping", None)) else None,
            **info,
        )
        entries.append(_ModelEntry(name=name, predictor=predictor, info=model_info, cancellable=_accepts_cancel(predictor)))
    return entries


def _no_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is a 422, not silently ignored (a typo such as
    ``?cnf=0.5`` would otherwise return every box)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in dependant.query_params}
    unknown = [k for k in request.query_params.keys() if k not in known]
    if unknown:
        from fastapi.exceptions import RequestValidationError

        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": ("query", k[:40]), "msg": f"unknown query parameter {k[:40]!r}",
              "input": None} for k in unknown[:5]]
        )


def _accepts_cancel(predictor) -> bool:
    try:
        return "cancel" in inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return False


def _docs_assets() -> Path | None:
    """Swagger UI's files from an installed package (fastapi-offline), so /docs needs no CDN."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).with_name("static")
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def create_app(model=None, settings: ServeSettings | None = None) -> FastAPI:
    """Build the review app.

    model: a model file (``.pt``), a predictor object (``.predict(image)`` and
        ``.class_names``, e.g. a TiledPredictor), or a list of either; None
        takes ``settings.models``. The first is the page's default.
    settings: limits, access control and inference parameters (:class:`ServeSettings`).
        A ``host`` beyond loopback without a token is refused (InputError).
    """
    settings = settings or ServeSettings()
    token = settings.resolved_token()
    exposure_warning = security.check_exposure(settings, token)
    models = {e.name: e for e in _load_models(model, settings)}
    default_model = next(iter(models))
    cache = _ScanCache(settings.cache_items, int(settings.cache_mb * 2**20))
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rarespot-detect")
    upload_dir = Path(tempfile.mkdtemp(prefix="rarespot-serve-"))  # private (0700), removed on shutdown
    weakref.finalize(executor, shutil.rmtree, upload_dir, True)  # also when the app is never started
    load = {"pending": 0, "stopping": 0}
    per_client: Counter = Counter()
    load_lock = threading.Lock()
    limit_text = f"{settings.max_upload_mb:g} MB"
    render_slots = threading.BoundedSemaphore(settings.render_workers)
    docs_assets = _docs_assets()

    def _warm_up(entry: _ModelEntry) -> None:
        with entry.lock:
            entry.predictor.predict(np.zeros((settings.tile, settings.tile), np.uint8))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.warmup:
            # The first prediction initialises the backend (seconds on a CPU): do it before the first operator waits.
            loop = asyncio.get_running_loop()
            for entry in models.values():
                await loop.run_in_executor(executor, _warm_up, entry)
        yield
        executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(upload_dir, ignore_errors=True)

    app = FastAPI(
        title="rarespot review",
        version=rarespot.__version__,
        description=(
            "Second reader for screening scans: upload a scan, get tiled YOLO detections, "
            "re-render it with view filters. Uploads are limited in size, type, pixel count and detection time; "
            "scans are kept per client. With a token, send it as the HTTP Basic password or a Bearer token."
        ),
        lifespan=lifespan,
        dependencies=[Depends(_no_unknown_query)],
        docs_url=None,  # served below from local files: Swagger UI from a CDN would be blank offline
        redoc_url=None,
    )
    # Added innermost first: a request meets SecurityHeaders, HostCheck, TokenAuth, OriginCheck,
    # ClientIdentity, then BodyGuard.
    app.add_middleware(
        security.BodyGuard,
        max_bytes=settings.max_upload_bytes + 64 * 1024,
        limit_text=limit_text,
        idle_s=settings.body_idle_timeout_s,
        total_s=settings.body_timeout_s,
    )
    app.add_middleware(security.ClientIdentity)
    app.add_middleware(security.OriginCheck, allowed_origins=settings.allowed_origins)
    if token:
        app.add_middleware(security.TokenAuth, token=token)
    app.add_middleware(security.HostCheck, allowed_hosts=security.allowed_host_names(settings))
    app.add_middleware(security.SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if docs_assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=docs_assets), name="docs-assets")
    app.state.settings = settings
    app.state.cache = cache
    app.state.exposure_warning = exposure_warning
    app.state.load = load

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log; the client gets JSON, not a bare "Internal Server Error".
        import logging

        logging.getLogger("rarespot.serve").error("unexpected error", exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    def client_of(request: Request) -> Client:
        return request.scope.get("state", {}).get("client") or (request.client.host if request.client else "", "")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if docs_assets is None:
            return HTMLResponse(
                "<!doctype html><meta charset='utf-8'><title>rarespot review API</title>"
                "<p>The interactive API page needs the <code>fastapi-offline</code> package "
                "(<code>pip install \"rarespot[serve]\"</code>). The API's schema is at "
                "<a href='/openapi.json'>/openapi.json</a>.</p>"
            )
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

    @app.get("/api/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness, the loaded models and the load on the server (detections counted until they really stop)."""
        return Health(
            status="ok",
            version=rarespot.__version__,
            models=list(models),
            cached_scans=len(cache),
            pending_detections=load["pending"],
            stopping_detections=load["stopping"],
        )

    @app.get("/api/models", response_model=list[ModelInfo], tags=["service"])
    def model_info() -> list[ModelInfo]:
        """The models this server offers (the first is the default) and their classes."""
        return [e.info for e in models.values()]

    def _decode(data: bytes, filename: str, fmt: str) -> tuple[np.ndarray, dict]:
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

    def _run_model(entry: _ModelEntry, image: np.ndarray, cancel: threading.Event):
        with entry.lock:  # one request per model at a time; predictors are not thread-safe
            if cancel.is_set():  # its client already got a 504 while it queued: skip the work
                return None
            start = time.perf_counter()
            if entry.cancellable:
                det = entry.predictor.predict(image, cancel=cancel)  # stops between tiles once cancel is set
            else:
                det = entry.predictor.predict(image)  # InputError for an array it cannot take
            elapsed = time.perf_counter() - start
        return detections_to_records(det, entry.predictor.class_names, settings.floor_conf), elapsed

    def _release(client: Client) -> None:
        with load_lock:
            load["pending"] -= 1
            per_client[client[0]] -= 1
            if per_client[client[0]] <= 0:
                del per_client[client[0]]

    @app.post("/api/detect", response_model=DetectResponse, responses=_ERRORS, tags=["detection"])
    async def detect(
        request: Request,
        file: UploadFile = File(..., description=f"the scan: {ACCEPTED} (8 or 16 bit)"),
        model: str | None = Form(None, description="model name from /api/models; default: the first"),
    ) -> DetectResponse:
        """Detect objects in one scan (multipart upload). Returns every box at or above the floor confidence."""
        client = client_of(request)
        filename = sanitize_filename(file.filename)
        suffix = os.path.splitext(filename)[1].lower()
        if suffix and suffix not in ALLOWED_SUFFIXES:
            raise HTTPException(415, f"{filename}: file type {suffix!r} is not accepted; send a {ACCEPTED} scan")
        entry = models.get(model or default_model)
        if entry is None:
            raise HTTPException(400, f"unknown model {str(model)[:80]!r}; available: {', '.join(models)}")

        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"{filename}: upload is over the server's {limit_text} limit")
        if not data:
            raise HTTPException(400, f"{filename}: the file is empty")
        fmt = sniff_format(data[:132])
        if fmt is None:
            raise HTTPException(415, f"{filename}: content is not a {ACCEPTED} image")

        with load_lock:
            if load["pending"] >= settings.max_pending:
                raise HTTPException(503, f"{filename}: server busy ({load['pending']} detections queued); retry shortly")
            if per_client[client[0]] >= settings.max_pending_per_client:
                raise HTTPException(
                    429, f"{filename}: this client already has {per_client[client[0]]} detections running or queued; "
                    "wait for them"
                )
            load["pending"] += 1
            per_client[client[0]] += 1
        handed_over = False  # once the model job is queued, it releases its slot when it really ends
        try:
            image, meta = await run_in_threadpool(_decode, data, filename, fmt)
            del data
            cancel = threading.Event()
            job = executor.submit(_run_model, entry, image, cancel)
            job.add_done_callback(lambda _job: _release(client))
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
                    with load_lock:
                        load["stopping"] += 1

                    def stopped(_job) -> None:
                        with load_lock:
                            load["stopping"] -= 1

                    job.add_done_callback(stopped)
                raise HTTPException(
                    504, f"{filename}: detection took longer than the {settings.detect_timeout_s:g} s limit"
                ) from None
            except Exception as exc:  # a model failure: say so in the page, not a bare "Internal Server Error"
                raise HTTPException(500, f"{filename}: detection failed ({type(exc).__name__}: {exc})") from exc
        finally:
            if not handed_over:
                _release(client)

        warn = getattr(entry.predictor, "input_warning", None)
        notes = [note] if callable(warn) and (note := warn(image)) else []
        class_names = list(entry.predictor.class_names)
        key = cache.put(client, _Scan(image, filename, entry.name, class_names, records))
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

    _png = {200: {"content": {"image/png": {}}, "description": "PNG image"}, **_ERRORS}
    _view_doc = (
        'view filter spec (rarespot.filters), e.g. "clahe:clip=2.0,gamma:g=0.8" or "window:center=3000,width=2000"; '
        "empty: the scan as the model sees it. Parameters are bounded and a chain has at most 12 steps (else 422)"
    )
    _view_query = Query(None, max_length=600, description=_view_doc)
    _scan_id = Path_(..., max_length=64, description="the id /api/detect returned")

    def _rendered(work) -> bytes:
        with render_slots:  # renders are CPU work too: a few at a time, the rest wait
            return work()

    @app.get("/api/scans/{scan_id}/render", response_class=Response, responses=_png, tags=["view"])
    async def render(request: Request, scan_id: str = _scan_id, view: str | None = _view_query) -> Response:
        """The cached scan through a view filter, as an 8-bit PNG (the page's base layer)."""
        scan = cache.get(client_of(request), scan_id)
        view_filter = _parse_view(view)
        png = await run_in_threadpool(_rendered, lambda: _encode_png(_render_view(scan.image, view_filter)))
        return Response(png, media_type="image/png")

    @app.get("/api/scans/{scan_id}/annotated", response_class=Response, responses=_png, tags=["view"])
    async def annotated(
        request: Request,
        scan_id: str = _scan_id,
        conf: float = Query(0.25, ge=0.0, le=1.0, description="draw boxes at or above this confidence"),
        view: str | None = _view_query,
    ) -> Response:
        """The scan with the boxes at or above ``conf`` drawn (predictions green), as a PNG download."""
        from rarespot.viz import render_overlay

        scan = cache.get(client_of(request), scan_id)
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

        png = await run_in_threadpool(_rendered, draw)
        return Response(
            png,
            media_type="image/png",
            headers={"Content-Disposition": f'attachment; filename="{_download_stem(scan.filename)}_annotated.png"'},
        )

    @app.get("/api/scans/{scan_id}/detections", responses={404: {"model": ErrorOut}}, tags=["detection"])
    def detections(
        request: Request,
        scan_id: str = _scan_id,
        conf: float = Query(0.0, ge=0.0, le=1.0, description="keep boxes at or above this"),
    ) -> JSONResponse:
        """The cached scan's detections at or above ``conf``, as a JSON download."""
        scan = cache.get(client_of(request), scan_id)
        body = {
            "file": scan.filename,
            "model": scan.model,
            "conf": conf,
            "class_names": scan.class_names,
            "detections": [d for d in scan.detections if d["score"] >= conf],
        }
        disposition = f'attachment; filename="{_download_stem(scan.filename)}_detections.json"'
        return JSONResponse(body, headers={"Content-Disposition": disposition})

    return app


@contextmanager
def serve_in_background(app: FastAPI, host: str | None = None, port: int = 0, log_level: str = "warning"):
    """Run ``app`` under uvicorn (as ``rarespot serve`` configures it) in a daemon thread;
    yields its base URL, stops on exit.

    ``host``: default the app's ``settings.host``. ``port=0`` takes a free port (read back
    from the bound socket, so there is no race between picking and binding). For
    notebooks, tests and benchmarks.
    """
    import uvicorn

    settings: ServeSettings = getattr(app.state, "settings", None) or ServeSettings()
    host = host or settings.host
    config = security.uvicorn_config(app, settings, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="rarespot-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if settings.tls else 'http'}://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
