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

Build it with :func:`create_app`; ``rarespot serve`` runs it under uvicorn. The routes live in
:mod:`rarespot.serve.routes` (one module per group), what they share in :mod:`rarespot.serve.state`
and the response bodies in :mod:`rarespot.serve.schemas`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager, contextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

import rarespot
from rarespot.serve import security
from rarespot.serve.routes import detect, service, view
from rarespot.serve.settings import ServeSettings
from rarespot.serve.state import ServeState


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


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state: ServeState = app.state.serve
    if state.settings.warmup:
        # The first prediction initialises the backend (seconds on a CPU): do it before the first operator waits.
        loop = asyncio.get_running_loop()
        for entry in state.models.values():
            await loop.run_in_executor(state.executor, state.warm_up, entry)
    yield
    state.close()


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the server log; the client gets JSON, not a bare "Internal Server Error".
    import logging

    logging.getLogger("rarespot.serve").error("unexpected error", exc_info=exc)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)


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
    state = ServeState.build(model, settings, docs_assets=service.docs_assets())

    app = FastAPI(
        title="rarespot review",
        version=rarespot.__version__,
        description=(
            "Second reader for screening scans: upload a scan, get tiled YOLO detections, "
            "re-render it with view filters. Uploads are limited in size, type, pixel count and detection time; "
            "scans are kept per client. With a token, send it as the HTTP Basic password or a Bearer token."
        ),
        lifespan=_lifespan,
        dependencies=[Depends(_no_unknown_query)],
        docs_url=None,  # served by the service routes from local files: Swagger UI from a CDN would be blank offline
        redoc_url=None,
    )
    # Added innermost first: a request meets SecurityHeaders, HostCheck, TokenAuth, OriginCheck,
    # ClientIdentity, then BodyGuard.
    app.add_middleware(
        security.BodyGuard,
        max_bytes=settings.max_upload_bytes + 64 * 1024,
        limit_text=state.limit_text,
        idle_s=settings.body_idle_timeout_s,
        total_s=settings.body_timeout_s,
    )
    app.add_middleware(security.ClientIdentity)
    app.add_middleware(security.OriginCheck, allowed_origins=settings.allowed_origins)
    if token:
        app.add_middleware(security.TokenAuth, token=token)
    app.add_middleware(security.HostCheck, allowed_hosts=security.allowed_host_names(settings))
    app.add_middleware(security.SecurityHeaders)
    app.mount("/static", StaticFiles(directory=service.STATIC_DIR), name="static")
    if state.docs_assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=state.docs_assets), name="docs-assets")
    app.state.serve = state
    app.state.settings = settings
    app.state.cache = state.cache
    app.state.exposure_warning = exposure_warning
    app.state.load = state.load.counts
    app.add_exception_handler(Exception, _unexpected)
    for routes in (service, detect, view):
        app.include_router(routes.router)
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
