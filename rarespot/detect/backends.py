"""Model back-ends for tiled inference, one adapter per framework (SAHI's design).

Every back-end takes a batch of square uint8 BGR tiles (Ultralytics'
convention, what :func:`rarespot.detect.preprocess.to_model_input` makes) and
returns, per tile, boxes in tile pixels with scores and labels. The tiler in
:mod:`rarespot.detect.predict` never sees a framework.

- :class:`UltralyticsBackend`: a YOLO ``.pt`` checkpoint; the underlying
  ``nn.Module`` is run on the whole batch at once. ``YOLO.predict`` would
  letterbox and post-process tile by tile; tiles are already square at the
  network size, so none of that is needed.
- :class:`OnnxBackend`: an ONNX file exported by ``rarespot detect export``
  (Ultralytics' exporter), run by onnxruntime.
- :class:`OpenVinoBackend`: the same ONNX file run by OpenVINO, the fastest of the three
  on a CPU (docs/benchmarks/detect_inference.md): one single-threaded inference stream per
  core, the tiles of a batch shared out between them. Streams do not wait for each other,
  so a core taken by another job slows the run by that core's share, not by a barrier.

All decode as Ultralytics' ``non_max_suppression`` does, ported to numpy
(:mod:`rarespot.detect.decode`, the same rows bit for bit), so the paths give the same boxes for
the same weights (up to the runtimes' float rounding) and the ONNX paths never import torch.

Threads under contention: OpenMP (torch) and onnxruntime's pool busy-wait for each other at
every layer; on a 2-core machine shared with another job two such threads ran up to 6x slower
than one. The torch back-end therefore times all cores against one fewer as it goes
(:class:`rarespot.cpu.ThreadTuner`, unless ``threads`` is given) and onnxruntime's threads do not spin.

A model exported for another input size than the tiles it is given is refused (naming the
file and what to do), and so is a reduced-precision model (INT8, BF16, FP16) whose accuracy
check at export failed or is missing (:mod:`rarespot.detect.precision`).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from rarespot.cpu import ThreadTuner, available_cores, channels_last_helps
from rarespot.detect.decode import decode_yolo
from rarespot.detect.precision import check_precision, onnx_metadata
from rarespot.detect.preprocess import LEGACY_INPUT_MAPPING, MAPPING_KEY, InputMapping, input_mapping_of
from rarespot.errors import InputError

if TYPE_CHECKING:
    from rarespot.detect.settings import InferenceSettings

#: The torch back-end re-times its thread counts every this many batches.
TUNE_EVERY = 64
#: OpenVINO streams at most (a batch of 8 tiles splits into chunks of 2; more cores go to each stream).
MAX_STREAMS = 4

#: Per-tile result: (boxes (n, 4) float xyxy in tile pixels, scores (n,), labels (n,) int).
TileDetections = tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class DetectionBackend(Protocol):
    """What :class:`~rarespot.detect.predict.TiledPredictor` needs from a model."""

    class_names: list[str]
    # Optional: ``runtime`` (the name in BACKENDS that runs it: torch, onnxruntime or openvino).
    # Optional: ``input_mapping`` (rarespot.detect.preprocess.InputMapping), how the model's scans become tiles.

    def predict_tiles(
        self, tiles: np.ndarray, conf: float, iou: float, class_agnostic: bool, max_det: int
    ) -> list[TileDetections]:
        """(B, S, S, 3) uint8 BGR tiles -> one (boxes, scores, labels) per tile, in tile pixels."""
        ...


def available_threads() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity): :func:`rarespot.cpu.available_cores`."""
    return max(1, available_cores())


#: Back-ends by name; ``auto`` takes the first that can run the file (fastest first, measured
#: in docs/benchmarks/detect_inference.md).
BACKENDS = ("auto", "openvino", "onnxruntime", "torch")
#: Other names accepted for a runtime.
BACKEND_ALIASES = {"onnx": "onnxruntime", "ultralytics": "torch"}


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` names no back-end (None when it does), for each caller to word with the value:
    the one check behind :func:`resolve_backend`, ``InferenceSettings`` and the review app's settings."""
    if backend in BACKENDS or backend in BACKEND_ALIASES:
        return None
    return f"backend must be one of {', '.join(BACKENDS)}"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _names_list(names) -> list[str]:
    """Ultralytics stores names as {index: name}; rarespot uses a list."""
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def _network_size(tile: int, stride: int = 32) -> int:
    """Smallest multiple of the network stride that holds the tile."""
    return int(np.ceil(tile / stride) * stride)


def _checked_tiles(tiles) -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[3] != 3 or tiles.dtype != np.uint8:
        raise ValueError(f"expected (B, S, S, 3) uint8 BGR tiles, got {tiles.shape} {tiles.dtype}")
    return tiles


class _UltralyticsDecoding:
    """Shared pre/post-processing: resize to the network size, BGR->RGB, /255,
    Ultralytics' NMS (in numpy), scale boxes back to tile pixels."""

    class_names: list[str]
    fixed_imgsz: int | None = None  # set when the model only accepts one input size
    imgsz: int | None = None  # requested network size; None: the tile size
    end2end: bool = False  # NMS-free heads (YOLO26, YOLOv10) output final (B, n, 6) boxes

    def _input_size(self, tile: int) -> int:
        if self.fixed_imgsz is not None:
            return self.fixed_imgsz
        return _network_size(self.imgsz or tile)

    def _prepare(self, tiles: np.ndarray, size: int) -> np.ndarray:
        import cv2

        if tiles.shape[1] != size or tiles.shape[2] != size:
            tiles = np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_LINEAR) for t in tiles])
        # BHWC BGR uint8 -> BCHW RGB float32 in [0, 1], what Ultralytics' predictor feeds the network.
        batch = tiles[..., ::-1].transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32) * np.float32(1.0 / 255.0)

    def _raw(self, batch: np.ndarray):
        """Network output for a BCHW float batch: (B, 4 + nc, anchors) tensor or end-to-end (B, n, 6)."""
        raise NotImplementedError

    def predict_tiles(
        self,
        tiles: np.ndarray,
        conf: float,
        iou: float,
        class_agnostic: bool = False,
        max_det: int = 300,
    ) -> list[TileDetections]:
        tiles = _checked_tiles(tiles)
        tile = tiles.shape[1]
        size = self._input_size(tile)
        return self._decode(self._raw(self._prepare(tiles, size)), conf, iou, class_agnostic, max_det, tile / size)

    def _decode(self, raw, conf: float, iou: float, class_agnostic: bool, max_det: int, scale: float) -> list[TileDetections]:
        """Network output -> per tile (boxes in tile pixels, scores, labels): Ultralytics' NMS, in numpy
        (:func:`rarespot.detect.decode.decode_yolo`, the same rows; torch is not needed for ONNX models)."""
        if not isinstance(raw, np.ndarray):  # a torch tensor (torch back-end)
            raw = raw.detach().float().cpu().numpy()
        out = decode_yolo(raw, conf, iou, agnostic=class_agnostic, max_det=max_det, nc=len(self.class_names),
                          end2end=self.end2end)
        results: list[TileDetections] = []
        for det in out:
            det = det.astype(np.float64)
            results.append((det[:, :4] * scale, det[:, 4].copy(), det[:, 5].astype(np.int64)))
        return results


class UltralyticsBackend(_UltralyticsDecoding):
    """A YOLO detection checkpoint (``.pt``) run with torch."""

    runtime = "torch"

    def __init__(self, path: str | Path, device: str = "cpu", imgsz: int | None = None, threads: int | None = None):
        import torch

        self.path = Path(path)
        self.imgsz = imgsz
        self.threads = threads or available_threads()
        # Given threads are kept; otherwise all cores and one fewer are timed as tiles run (ThreadTuner).
        self.tuner = ThreadTuner(self.threads) if threads is None and self.threads > 1 else None
        self._clock, self._batches, self._full = 0.0, 0, 0
        _check_model_file(self.path)
        try:
            from ultralytics.nn.tasks import load_checkpoint

            model, _ = load_checkpoint(str(self.path), device="cpu")
        except Exception as exc:  # torch/pickle raise many types for a file that is not a checkpoint
            raise InputError(self.path, f"not a YOLO checkpoint ({_reason(exc, self.path)})") from None
        task = getattr(model, "task", None)
        if task not in (None, "detect") or not hasattr(model, "names"):
            raise InputError(self.path, f"a {task or 'non-detection'} model; rarespot detect needs a YOLO detection model")
        self.class_names = _names_list(model.names)
        self.end2end = bool(getattr(model, "end2end", False))
        try:
            self.input_mapping = input_mapping_of(model)  # how the model's training scans were mapped to 8 bits
        except ValueError as exc:
            raise InputError(self.path, f"stored input mapping is not readable ({exc})") from None
        self.device = torch.device(device)
        # fuse() folds batch-norm into the convolutions: the same outputs, ~20% less CPU time.
        self.model = model.float().fuse(verbose=False).eval().to(self.device)
        if self.device.type == "cpu" and channels_last_helps():
            # oneDNN's convolutions are ~25% faster with NHWC weights on x86 (measured in
            # docs/benchmarks/detect_inference.md); Ultralytics' AutoBackend does the same.
            self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _raw(self, batch: np.ndarray):
        import torch

        # Ultralytics lowers torch's CPU threads behind our back: importing it first sets
        # OMP_NUM_THREADS=1, and each YOLO predictor sets cores - 1 (1 of 2). Inference wants them all.
        if self.device.type != "cpu":
            with torch.inference_mode():
                out = self.model(torch.from_numpy(batch).to(self.device))
            return out[0] if isinstance(out, (list, tuple)) else out
        tuner = self.tuner
        if tuner is not None and self._batches % TUNE_EVERY == 0:
            tuner.epoch_started(self._clock)  # probe both counts again: another job may have come or gone
        self._batches += 1
        wanted = tuner.current if tuner is not None else self.threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
        import time

        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch))
        elapsed = time.perf_counter() - started
        if tuner is not None:
            # The tuner's clock is the forward time of comparable batches only (a scan's last,
            # smaller batch would favour whichever count it fell to).
            self._full = max(self._full, len(batch))
            if len(batch) == self._full:
                self._clock += elapsed
                tuner.step_done(self._clock)
        return out[0] if isinstance(out, (list, tuple)) else out


class OnnxBackend(_UltralyticsDecoding):
    """An Ultralytics ONNX export run by onnxruntime (class names from its metadata).

    Asynchronous like :class:`OpenVinoBackend`: :meth:`submit_tiles` hands the batch to a worker
    thread (``session.run`` releases the GIL) and returns, so the tiler crops, decodes and merges
    while the network runs; one batch runs at a time, the next waits its turn.
    """

    runtime = "onnxruntime"
    _runner = None  # the worker thread, made at the first submit

    def __init__(
        self, path: str | Path, device: str = "cpu", threads: int | None = None, imgsz: int | None = None,
        tile: int | None = None,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        self.imgsz = imgsz
        _check_model_file(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_threads()
        # Idle threads sleep instead of spinning: on a shared machine a spinning pool fights the other
        # jobs for the cores it waits on (measured: 2 spinning threads slower than 1 under load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise InputError(self.path, f"not a valid ONNX model ({_reason(exc, self.path)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if len(inp.shape) != 4:
            raise InputError(self.path, f"expected an image model with a 4-d input, got input shape {inp.shape}")
        _read_export_metadata(self, meta)
        # A fixed (static) batch or size shows as ints in the input shape; dynamic ones as strings.
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.fixed_imgsz = inp.shape[2] if isinstance(inp.shape[2], int) else None
        self.precision = check_precision(self.path, meta, self.session_ops(), runtime="onnxruntime")
        check_input_size(self, tile)

    def session_ops(self) -> set[str]:
        from rarespot.detect.onnx_header import OnnxFormatError, read_onnx_header

        try:
            return read_onnx_header(self.path).op_types
        except (OnnxFormatError, OSError):  # onnxruntime read it; a model we cannot parse has no QDQ nodes we know of
            return set()

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return self.session.run(None, {self.input_name: batch})[0]
        # Fixed-batch export: run full chunks, pad the last one with blank tiles.
        outs = []
        for start in range(0, len(batch), self.fixed_batch):
            chunk = batch[start : start + self.fixed_batch]
            n = len(chunk)
            if n < self.fixed_batch:
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - n,) + chunk.shape[1:], chunk.dtype)])
            outs.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(outs)

    def submit_tiles(self, tiles: np.ndarray):
        """Start the network on a batch of tiles in the worker thread and return at once."""
        from concurrent.futures import ThreadPoolExecutor

        tiles = _checked_tiles(tiles)
        size = self._input_size(tiles.shape[1])
        if self._runner is None:
            self._runner = ThreadPoolExecutor(1, thread_name_prefix="rarespot-onnxruntime")
        return self._runner.submit(self._raw, self._prepare(tiles, size)), tiles.shape[1] / size

    def collect_tiles(self, handle, conf: float, iou: float, class_agnostic: bool = False,
                      max_det: int = 300) -> list[TileDetections]:
        future, scale = handle
        return self._decode(future.result(), conf, iou, class_agnostic, max_det, scale)


def _read_export_metadata(backend, meta: dict) -> None:
    """Class names, head type and input mapping from an Ultralytics/rarespot ONNX export's metadata."""
    path = backend.path
    if "names" in meta:
        backend.class_names = _names_list(ast.literal_eval(meta["names"]))
    else:
        raise InputError(path, "ONNX file has no 'names' metadata; export it with `rarespot detect export`")
    backend.end2end = meta.get("end2end", "False") == "True"
    try:
        stored = meta.get(MAPPING_KEY)
        backend.input_mapping = InputMapping.from_dict(stored) if stored else LEGACY_INPUT_MAPPING
    except ValueError as exc:
        raise InputError(path, f"stored input mapping is not readable ({exc})") from None
    try:
        size = ast.literal_eval(meta["imgsz"]) if "imgsz" in meta else None
        backend.export_imgsz = int(size[0] if isinstance(size, (list, tuple)) else size) if size else None
    except (ValueError, SyntaxError, TypeError):
        backend.export_imgsz = None


def check_input_size(backend, tile: int | None) -> None:
    """Refuse an export made for another network input than these tiles need (it would see
    objects at another scale than in training, or not run at all)."""
    exported = backend.fixed_imgsz or getattr(backend, "export_imgsz", None)
    if tile is None or exported is None:
        return
    wanted = _network_size(backend.imgsz or tile)
    if wanted != exported:
        how = f"tiles of {tile} px" + (f" at --imgsz {backend.imgsz}" if backend.imgsz else "")
        raise InputError(
            backend.path,
            f"exported for a {exported}-px network input, but {how} need {wanted} px: export it again "
            f"for these tiles (`rarespot detect export MODEL.pt --imgsz {wanted}`), or predict with --tile {exported}",
        )


class OpenVinoBackend(_UltralyticsDecoding):
    """An Ultralytics ONNX export (fp32, or INT8 from ``rarespot detect export``) run by OpenVINO.

    One inference stream per core, each single-threaded (OpenVINO's THROUGHPUT mode; beyond
    :data:`MAX_STREAMS` cores the streams share them out); a batch of tiles is split across the
    streams and run at once. BF16/FP16 only when the file's
    precision record says its accuracy check passed (:mod:`rarespot.detect.precision`).

    Asynchronous: :meth:`submit_tiles` starts a batch and returns, :meth:`collect_tiles` waits
    for it and decodes, so the tiler keeps the next batch running while it decodes and merges
    the last (:meth:`rarespot.detect.predict.TiledPredictor.predict_many`). Each batch runs on
    infer requests of its own from a pool, so threads sharing the model do not wait for each other.
    """

    runtime = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, imgsz: int | None = None, tile: int | None = None):
        import threading

        import openvino as ov

        self.path = Path(path)
        self.imgsz = imgsz
        _check_model_file(self.path)
        meta, ops, shape = onnx_metadata(self.path)
        _read_export_metadata(self, meta)
        if len(shape) != 4:
            raise InputError(self.path, f"expected an image model with a 4-d input, got input shape {shape}")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.fixed_imgsz = shape[2] if isinstance(shape[2], int) and shape[2] > 0 else None
        check_input_size(self, tile)
        self.precision = check_precision(self.path, meta, ops, runtime="openvino")
        size = self.fixed_imgsz or _network_size(self.imgsz or tile or self.export_imgsz or 640)
        self.fixed_imgsz = size  # compiled for one input size: tiles of another size are resized to it
        core = ov.Core()
        self.compile_cache = _openvino_cache(core)
        try:
            model = core.read_model(str(self.path))
            model.reshape([self.fixed_batch or -1, 3, size, size])
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise InputError(self.path, f"OpenVINO cannot read it ({_reason(exc, self.path)})") from None
        self.threads = threads or available_threads()
        hint = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}[self.precision]
        config = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(min(self.threads, MAX_STREAMS)),
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": hint,  # f32 by default: never a silent BF16 on CPUs that have it
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError:
            if self.compile_cache is None:
                raise
            core.set_property({"CACHE_DIR": ""})  # e.g. a cache folder that filled up: compile without it
            self.compile_cache = None
            self.compiled = core.compile_model(model, "CPU", config)
        self.streams = max(1, int(self.compiled.get_property("NUM_STREAMS")))
        self._idle: list = []  # infer requests not running; more are made when threads or the pipeline need them
        self._pool_lock = threading.Lock()  # the review app calls from threads

    def submit_tiles(self, tiles: np.ndarray):
        """Start the network on a batch of tiles and return at once (:meth:`collect_tiles` waits for
        it and decodes): the tiler submits the next batch before it decodes this one, so the
        streams are not idle while Python crops, decodes and merges."""
        tiles = _checked_tiles(tiles)
        size = self._input_size(tiles.shape[1])
        return self._start(self._prepare(tiles, size)), tiles.shape[1] / size

    def collect_tiles(self, handle, conf: float, iou: float, class_agnostic: bool = False,
                      max_det: int = 300) -> list[TileDetections]:
        started, scale = handle
        return self._decode(self._wait(started), conf, iou, class_agnostic, max_det, scale)

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        return self._wait(self._start(batch))

    def _start(self, batch: np.ndarray):
        """Share a BCHW batch out to the streams and start them; returns what :meth:`_wait` needs."""
        if self.fixed_batch is not None:
            chunks = [batch[i : i + self.fixed_batch] for i in range(0, len(batch), self.fixed_batch)]
        else:
            chunks = [c for c in np.array_split(batch, min(self.streams, len(batch))) if len(c)]
        sizes = [len(c) for c in chunks]
        if self.fixed_batch is not None and sizes[-1] < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - sizes[-1],) + batch.shape[1:], batch.dtype)
            chunks[-1] = np.concatenate([chunks[-1], pad])
        chunks = [np.ascontiguousarray(c) for c in chunks]
        with self._pool_lock:
            requests = [self._idle.pop() for _ in range(min(len(chunks), len(self._idle)))]
        requests += [self.compiled.create_infer_request() for _ in range(len(chunks) - len(requests))]
        started = []
        try:
            for request, chunk in zip(requests, chunks):
                # The request reads the chunk in place (no copy): the chunk stays referenced until _wait.
                request.start_async({0: chunk}, share_inputs=True)
                started.append(request)
        except BaseException:
            self._release(requests, started)
            raise
        return requests, sizes, chunks

    def _wait(self, started) -> np.ndarray:
        requests, sizes, _chunks = started
        try:
            outputs = []
            for request, n in zip(requests, sizes):
                request.wait()
                outputs.append(request.get_output_tensor(0).data[:n].copy())
        finally:
            self._release(requests, requests)
        return np.concatenate(outputs)

    def _release(self, requests, running) -> None:
        """Back to the pool, once none of them runs any more (a busy request refuses new work)."""
        for request in running:
            try:
                request.wait()
            except Exception:  # its error was (or will be) reported by _wait
                pass
        with self._pool_lock:
            self._idle.extend(requests)


def _openvino_cache(core) -> Path | None:
    """Let OpenVINO keep compiled models in the cache folder (``openvino/`` under
    :func:`rarespot.detect.export.cache_dir`): a later process loads the compiled blob instead of
    compiling again (0.08 instead of 0.22 CPU s for the demo's model; the same kernels, the same
    outputs). OpenVINO keys the blobs on the model, the settings and its own version."""
    from rarespot.detect.export import cache_dir

    folder = cache_dir() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            return None
        core.set_property({"CACHE_DIR": str(folder)})
    except (OSError, RuntimeError):
        return None
    return folder


def _reason(exc: Exception, path: Path) -> str:
    """A library's error as a short clause: first line, without its own prefix or our path."""
    import re

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"^ERROR\W*", "", text)  # Ultralytics' "ERROR ❌️" prefix
    text = text.replace(str(path), "the file").strip()
    return text[:240]


def _check_model_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "model file not found")
    if not path.is_file():
        raise InputError(path, "model path is not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "model file is empty")


def resolve_backend(model: str | Path, backend: str = "auto") -> str:
    """The back-end that will run ``model`` as given: ``auto`` is OpenVINO or onnxruntime for an ``.onnx``
    file (:func:`load_backend` times both when both are installed and keeps the faster, once per
    model and machine: :func:`fastest_backend`), torch for a ``.pt`` checkpoint.

    ``detect predict`` and ``detect batch`` first pass the file through :func:`runnable_model_file`,
    so for them ``auto`` runs a ``.pt`` as its cached ONNX export on the faster of OpenVINO/onnxruntime
    when OpenVINO is installed and the device is the CPU; torch otherwise."""
    if problem := backend_problem(backend):
        raise ValueError(f"{problem}, got {backend!r}")
    backend = BACKEND_ALIASES.get(backend, backend)
    if backend != "auto":
        return backend
    if Path(model).suffix.lower() == ".onnx":
        return "openvino" if openvino_available() else "onnxruntime"
    return "torch"


def runnable_model_file(model: str | Path, settings: InferenceSettings) -> Path:
    """The file the predictor will open: on the CPU under ``auto`` with OpenVINO installed, a ``.pt``
    becomes its ONNX export (made once, cached), run on the faster of OpenVINO and onnxruntime (timed
    when the model loads); with ``backend`` openvino or onnxruntime, too; otherwise the file given.
    Used by ``detect predict``, ``detect batch`` (made once there, so Ray workers are sent the
    export) and the review app; ``detect evaluate`` and :class:`~rarespot.detect.predict.TiledPredictor`
    open the file given."""
    path = Path(model)
    if not path.is_file():
        raise InputError(path, "model file not found")
    on_cpu = str(settings.device).startswith("cpu")
    backend = settings.backend
    wants_onnx = backend in ("openvino", "onnxruntime", "onnx") or (backend == "auto" and on_cpu and openvino_available())
    if wants_onnx and path.suffix.lower() not in (".onnx", ".yaml", ".yml"):
        # A .pt is exported to ONNX once (cached) and run on the faster of OpenVINO and
        # onnxruntime (timed the first time this model runs on this machine, the verdict cached).
        from rarespot.detect.export import cached_onnx

        size = settings.imgsz or settings.tile
        path = cached_onnx(path, -(-int(size) // 32) * 32)
    return path


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None  # without importing it (0.15 CPU s)


#: Set to 1 to time OpenVINO against onnxruntime again for a model, replacing the kept verdict
#: (e.g. when the first timing ran while another job loaded the machine).
RETIME_ENV = "RARESPOT_RETIME_BACKEND"
#: Part of the verdict's key: raise it when the back-ends change in a way that may change the winner.
_CHOICE_SCHEMA = 1
#: (file, size, mtime, threads, imgsz, tile) -> the verdict, so a process reads or times a model once.
_FASTEST: dict[tuple, dict] = {}


def _dist_version(*names: str) -> str:
    from importlib import metadata

    for name in names:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def backend_choice_file(path: Path, threads: int | None, imgsz: int | None, tile: int | None, rounds: int,
                        batch: int) -> tuple[Path, dict]:
    """Where :func:`fastest_backend` keeps its verdict for ``path`` (in
    :func:`rarespot.detect.export.cache_dir`), and what the verdict depends on: the file's
    content, the CPU (model name, instruction sets, cores this process may use), the
    runtimes' versions and the timing's settings. Any change gives another file, timed anew."""
    import hashlib
    import json
    import platform

    from rarespot.cpu import cpu_model
    from rarespot.detect.export import cache_dir

    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    name, flags = cpu_model()
    key = {
        "schema": _CHOICE_SCHEMA, "model_sha1": digest.hexdigest(), "cpu": name,
        "cpu_flags_sha1": hashlib.sha1(flags.encode()).hexdigest()[:16], "machine": platform.machine(),
        "cores": available_threads(), "threads": threads, "imgsz": imgsz, "tile": tile, "rounds": rounds, "batch": batch,
        "openvino": _dist_version("openvino"),
        "onnxruntime": _dist_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    }
    tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "backend_choice" / f"{path.stem}-{tag}.json", key


def _read_choice(file: Path, key: dict) -> dict | None:
    import json

    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("backend") not in ("openvino", "onnxruntime"):
        return None
    return record


def _open_chosen(record: dict, path: Path, threads, imgsz, tile):
    cls = OpenVinoBackend if record["backend"] == "openvino" else OnnxBackend
    chosen = cls(path, threads=threads, imgsz=imgsz, tile=tile)
    chosen.timed = dict(record.get("timed") or {})  # seconds per batch when it was timed, for logs
    chosen.timed_at = record.get("timed_at")
    return chosen


def fastest_backend(path: Path, threads: int | None = None, imgsz: int | None = None, tile: int | None = None,
                    rounds: int = 3, batch: int = 8, retime: bool | None = None):
    """Open an ONNX export on OpenVINO and on onnxruntime, time both on the same batch of tiles
    (alternating, ``rounds`` each, after a warm-up), and keep the faster. Which one wins depends
    on the CPU and on the model (docs/benchmarks/detect_inference.md).

    The verdict is timed once per model file and machine: it is kept in the cache folder
    (:func:`backend_choice_file`) and reused by later processes, which then open only the chosen
    runtime. ``retime`` (default: the environment variable ``RARESPOT_RETIME_BACKEND=1``) times
    again and replaces it; so does deleting ``~/.cache/rarespot/backend_choice``."""
    import datetime
    import json
    import os
    import time

    if retime is None:
        retime = os.environ.get(RETIME_ENV, "").strip().lower() not in ("", "0", "false", "no")
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, threads, imgsz, tile)
    if not retime and memo in _FASTEST:
        return _open_chosen(_FASTEST[memo], path, threads, imgsz, tile)
    file, key = backend_choice_file(path, threads, imgsz, tile, rounds, batch)
    record = None if retime else _read_choice(file, key)
    if record is not None:
        _FASTEST[memo] = record
        return _open_chosen(record, path, threads, imgsz, tile)
    candidates = {
        "openvino": OpenVinoBackend(path, threads=threads, imgsz=imgsz, tile=tile),
        "onnxruntime": OnnxBackend(path, threads=threads, imgsz=imgsz, tile=tile),
    }
    size = candidates["openvino"].fixed_imgsz
    tiles = np.full((batch, size, size, 3), 114, np.uint8)
    tiles[:, size // 4 : size // 2] = 30  # some structure, not a flat picture
    prepared = candidates["openvino"]._prepare(tiles, size)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for name, backend in candidates.items():
        backend._raw(prepared)  # warm-up: first runs allocate and compile kernels
    for _ in range(rounds):
        for name, backend in candidates.items():
            started = time.perf_counter()
            backend._raw(prepared)
            times[name].append(time.perf_counter() - started)
    best = min(times, key=lambda name: float(np.median(times[name])))
    record = {
        "backend": best, "timed": {name: float(np.median(t)) for name, t in times.items()},
        "timed_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "model": str(path), "key": key,
    }
    _FASTEST[memo] = record
    try:
        from rarespot.io.atomic import atomic_write_bytes

        atomic_write_bytes(file, (json.dumps(record, indent=1) + "\n").encode())
    except OSError:
        pass  # a read-only cache: the next process times again
    chosen = candidates.pop(best)
    chosen.timed, chosen.timed_at = record["timed"], record["timed_at"]  # seconds per batch, for logs
    return chosen


def load_backend(
    model: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    imgsz: int | None = None,
    threads: int | None = None,
    tile: int | None = None,
):
    """Open a model file on ``backend`` (see :func:`resolve_backend`).

    ``openvino`` (or ``onnxruntime``) with a ``.pt`` checkpoint exports it to ONNX first, once:
    the export is cached by content (:func:`rarespot.detect.export.cached_onnx`).
    ``tile``: the tile size it will be given (an export for another input size is refused).
    """
    path = Path(model)
    name = resolve_backend(path, backend)
    is_onnx = path.suffix.lower() == ".onnx"
    if name in ("onnxruntime", "openvino") and not is_onnx:
        if path.suffix.lower() in (".yaml", ".yml"):
            raise InputError(path, "a model config, not trained weights; train it first (`rarespot detect train`)")
        from rarespot.detect.export import cached_onnx

        path = cached_onnx(path, _network_size(imgsz or tile or 640))
    if name == "openvino" and backend == "auto" and device.startswith("cpu") and _onnxruntime_available():
        from rarespot.detect.precision import read_stamp

        _check_model_file(path)
        stamp = read_stamp(onnx_metadata(path)[0]) or {}
        if stamp.get("precision") not in ("bf16", "fp16"):  # 16-bit arithmetic: OpenVINO's alone
            return fastest_backend(path, threads=threads, imgsz=imgsz, tile=tile)
    if name == "openvino":
        if device != "cpu" and not device.startswith("cpu"):
            raise InputError(path, f"the OpenVINO back-end runs on the CPU; for --device {device} use --backend torch")
        if not openvino_available():
            raise InputError(path, "the OpenVINO back-end needs the openvino package (pip install 'rarespot[detect]')")
        return OpenVinoBackend(path, threads=threads, imgsz=imgsz, tile=tile)
    if name == "onnxruntime":
        return OnnxBackend(path, device=device, threads=threads, imgsz=imgsz, tile=tile)
    if is_onnx:
        raise InputError(path, "an ONNX export: run it with --backend openvino or onnxruntime, or give the .pt to torch")
    if path.suffix.lower() in (".yaml", ".yml"):
        raise InputError(path, "a model config, not trained weights; train it first (`rarespot detect train`)")
    return UltralyticsBackend(path, device=device, imgsz=imgsz, threads=threads)
