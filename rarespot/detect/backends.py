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

Both decode with Ultralytics' ``non_max_suppression``, so the two paths give
the same boxes for the same weights.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rarespot.cpu import channels_last_helps
from rarespot.detect.preprocess import LEGACY_INPUT_MAPPING, MAPPING_KEY, InputMapping, input_mapping_of
from rarespot.errors import InputError

#: Per-tile result: (boxes (n, 4) float xyxy in tile pixels, scores (n,), labels (n,) int).
TileDetections = tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class DetectionBackend(Protocol):
    """What :class:`~rarespot.detect.predict.TiledPredictor` needs from a model."""

    class_names: list[str]
    # Optional: ``input_mapping`` (rarespot.detect.preprocess.InputMapping), how the model's scans become tiles.

    def predict_tiles(
        self, tiles: np.ndarray, conf: float, iou: float, class_agnostic: bool, max_det: int
    ) -> list[TileDetections]:
        """(B, S, S, 3) uint8 BGR tiles -> one (boxes, scores, labels) per tile, in tile pixels."""
        ...


def available_threads() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _names_list(names) -> list[str]:
    """Ultralytics stores names as {index: name}; rarespot uses a list."""
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def _network_size(tile: int, stride: int = 32) -> int:
    """Smallest multiple of the network stride that holds the tile."""
    return int(np.ceil(tile / stride) * stride)


class _UltralyticsDecoding:
    """Shared pre/post-processing: resize to the network size, BGR->RGB, /255,
    Ultralytics NMS, scale boxes back to tile pixels."""

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
        import torch
        import torchvision  # noqa: F401  Ultralytics' NMS uses torchvision's C++ kernel once it is imported
        from ultralytics.utils.nms import non_max_suppression

        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[3] != 3 or tiles.dtype != np.uint8:
            raise ValueError(f"expected (B, S, S, 3) uint8 BGR tiles, got {tiles.shape} {tiles.dtype}")
        tile = tiles.shape[1]
        size = self._input_size(tile)
        raw = self._raw(self._prepare(tiles, size))
        if isinstance(raw, np.ndarray):
            raw = torch.from_numpy(raw)
        out = non_max_suppression(
            raw.float(), conf_thres=conf, iou_thres=iou, agnostic=class_agnostic, max_det=max_det,
            nc=len(self.class_names), end2end=self.end2end,
        )
        scale = tile / size
        results: list[TileDetections] = []
        for det in out:
            det = det.cpu().numpy().astype(np.float64)
            boxes = det[:, :4] * scale
            results.append((boxes, det[:, 4].copy(), det[:, 5].astype(np.int64)))
        return results


class UltralyticsBackend(_UltralyticsDecoding):
    """A YOLO detection checkpoint (``.pt``) run with torch."""

    def __init__(self, path: str | Path, device: str = "cpu", imgsz: int | None = None, threads: int | None = None):
        import torch

        self.path = Path(path)
        self.imgsz = imgsz
        self.threads = threads or available_threads()
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
        if self.device.type == "cpu" and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return out[0] if isinstance(out, (list, tuple)) else out


class OnnxBackend(_UltralyticsDecoding):
    """An Ultralytics ONNX export run by onnxruntime (class names from its metadata)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, imgsz: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.imgsz = imgsz
        _check_model_file(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_threads()
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
        if "names" in meta:
            self.class_names = _names_list(ast.literal_eval(meta["names"]))
        else:
            raise InputError(self.path, "ONNX file has no 'names' metadata; export it with `rarespot detect export`")
        self.end2end = meta.get("end2end", "False") == "True"
        try:
            stored = meta.get(MAPPING_KEY)
            self.input_mapping = InputMapping.from_dict(stored) if stored else LEGACY_INPUT_MAPPING
        except ValueError as exc:
            raise InputError(self.path, f"stored input mapping is not readable ({exc})") from None
        # A fixed (static) batch or size shows as ints in the input shape; dynamic ones as strings.
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.fixed_imgsz = inp.shape[2] if isinstance(inp.shape[2], int) else None

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


def load_backend(
    model: str | Path, backend: str = "auto", device: str = "cpu", imgsz: int | None = None, threads: int | None = None
):
    """Open a model file: ``auto`` picks onnxruntime for ``.onnx``, torch otherwise."""
    path = Path(model)
    if backend == "auto":
        backend = "onnxruntime" if path.suffix.lower() == ".onnx" else "torch"
    if backend in ("onnxruntime", "onnx"):
        return OnnxBackend(path, device=device, threads=threads, imgsz=imgsz)
    if backend in ("torch", "ultralytics"):
        if path.suffix.lower() in (".yaml", ".yml"):
            raise InputError(path, "a model config, not trained weights; train it first (`rarespot detect train`)")
        return UltralyticsBackend(path, device=device, imgsz=imgsz, threads=threads)
    raise ValueError(f"backend must be 'auto', 'torch' or 'onnxruntime', got {backend!r}")
