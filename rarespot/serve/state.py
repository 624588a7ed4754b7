"""What the review app's routes share: the models, the scans cached per client, the detection
queue and its worker threads (:class:`ServeState`, one per app, found through :func:`serve_state`)."""

from __future__ import annotations

import inspect
import secrets
import shutil
import tempfile
import threading
import weakref
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from fastapi import HTTPException, Request

from rarespot.detect.predict import Predictor
from rarespot.errors import InputError
from rarespot.serve.schemas import ModelInfo
from rarespot.serve.settings import ServeSettings

Client = tuple[str, str]  # (address, browser cookie or "")


def client_of(request: Request) -> Client:
    """Who sent the request: its address and browser cookie (:class:`rarespot.serve.security.ClientIdentity`)."""
    return request.scope.get("state", {}).get("client") or (request.client.host if request.client else "", "")


@dataclass
class ModelEntry:
    name: str
    predictor: Predictor
    info: ModelInfo
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancellable: bool = False  # predict() takes cancel=: a timed-out detection stops between tiles


@dataclass
class Scan:
    image: np.ndarray
    filename: str
    model: str
    class_names: list[str]
    detections: list[dict]


class ScanCache:
    """Decoded uploads kept for re-rendering, per client.

    Each client (address + browser cookie) keeps its own last ``per_client`` scans,
    and may read only those. All clients together are held to ``max_bytes``: when
    over, the least recently used scan of the *address* holding the most memory
    goes, so a client uploading many scans pushes out its own, not someone else's.
    """

    def __init__(self, per_client: int, max_bytes: int):
        self.per_client = per_client
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Client, Scan]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, client: Client, scan: Scan) -> str:
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

    def get(self, client: Client, key: str) -> Scan:
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


class DetectionLoad:
    """Detections queued or running, in all and per client address, and those that timed out but
    still run until their next batch of tiles (``/api/health`` counts them until they stop)."""

    def __init__(self, settings: ServeSettings):
        self.max_pending, self.max_per_client = settings.max_pending, settings.max_pending_per_client
        self.counts = {"pending": 0, "stopping": 0}
        self.per_client: Counter = Counter()
        self._lock = threading.Lock()

    def admit(self, client: Client, filename: str) -> None:
        """Count one more detection of ``client``, or refuse it: 503 when the server is full, 429 when the client is."""
        with self._lock:
            if self.counts["pending"] >= self.max_pending:
                raise HTTPException(503, f"{filename}: server busy ({self.counts['pending']} detections queued); retry shortly")
            if self.per_client[client[0]] >= self.max_per_client:
                raise HTTPException(
                    429, f"{filename}: this client already has {self.per_client[client[0]]} detections running or queued; "
                    "wait for them"
                )
            self.counts["pending"] += 1
            self.per_client[client[0]] += 1

    def release(self, client: Client) -> None:
        with self._lock:
            self.counts["pending"] -= 1
            self.per_client[client[0]] -= 1
            if self.per_client[client[0]] <= 0:
                del self.per_client[client[0]]

    def stopping(self, job: Future) -> None:
        """A timed-out detection that still runs: counted as stopping until its job ends."""
        with self._lock:
            self.counts["stopping"] += 1

        def stopped(_job) -> None:
            with self._lock:
                self.counts["stopping"] -= 1

        job.add_done_callback(stopped)


def load_models(model, settings: ServeSettings) -> list[ModelEntry]:
    """Model paths and/or predictor objects -> named entries, the first being the default."""
    if model is None:
        sources: list = list(settings.models)
    elif isinstance(model, (str, Path)) or not isinstance(model, Sequence):
        sources = [model]
    else:
        sources = list(model)
    if not sources:
        raise ValueError("create_app needs a model path or predictor (or settings.models)")

    entries: list[ModelEntry] = []
    for i, source in enumerate(sources):
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise InputError(path, "model file not found")
            from rarespot.detect.predict import open_predictor

            inference = settings.inference()
            # The same rule as `detect predict` / `detect batch`: under `auto` on the CPU a .pt runs as
            # its cached ONNX export (made at the first start, seconds), on the faster runtime.
            predictor = open_predictor(path, inference)
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
            runtime=getattr(predictor, "runtime", None),
            **info,
        )
        entries.append(ModelEntry(name=name, predictor=predictor, info=model_info, cancellable=_accepts_cancel(predictor)))
    return entries


def _accepts_cancel(predictor) -> bool:
    try:
        return "cancel" in inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class ServeState:
    """One review app's shared parts; :func:`rarespot.serve.app.create_app` makes it, the routes
    take it as a dependency (:func:`serve_state`)."""

    settings: ServeSettings
    models: dict[str, ModelEntry]  # by name, the default first
    cache: ScanCache
    executor: ThreadPoolExecutor  # runs the detections (CPU work, off the event loop)
    upload_dir: Path  # private (0700) folder for the decoder's temp files, removed on shutdown
    load: DetectionLoad
    render_slots: threading.BoundedSemaphore  # view-filter renders run at once
    docs_assets: Path | None  # Swagger UI's files, when fastapi-offline is installed

    @classmethod
    def build(cls, model, settings: ServeSettings, docs_assets: Path | None) -> "ServeState":
        models = {e.name: e for e in load_models(model, settings)}
        cache = ScanCache(settings.cache_items, int(settings.cache_mb * 2**20))
        executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rarespot-detect")
        upload_dir = Path(tempfile.mkdtemp(prefix="rarespot-serve-"))
        weakref.finalize(executor, shutil.rmtree, upload_dir, True)  # also when the app is never started
        return cls(settings, models, cache, executor, upload_dir, DetectionLoad(settings),
                   threading.BoundedSemaphore(settings.render_workers), docs_assets)

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    @property
    def limit_text(self) -> str:
        """The upload limit as the errors state it."""
        return f"{self.settings.max_upload_mb:g} MB"

    def warm_up(self, entry: ModelEntry) -> None:
        with entry.lock:
            entry.predictor.predict(np.zeros((self.settings.tile, self.settings.tile), np.uint8))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.upload_dir, ignore_errors=True)


def serve_state(request: Request) -> ServeState:
    """The routes' dependency: the state of the app that got the request."""
    return request.app.state.serve
