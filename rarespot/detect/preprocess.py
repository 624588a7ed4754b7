"""The one conversion from a scan as read (8/16-bit, gray or RGB) to what the
YOLO network sees. Training tiles and inference tiles both go through it, so
the model never sees a different mapping at test time than in training.

The mapping is a property of the model, not of the code that happens to load
it: training stores it in the checkpoint (:func:`stamp_input_mapping`), and
every predictor reads it back (:func:`input_mapping_of`,
:func:`read_input_mapping`). Two mappings exist:

- ``percentile`` (every model trained since it was introduced): every scan,
  whatever its bit depth and container, goes through the same per-image
  0.5-99.5 percentile window (:func:`rarespot.filters.percentile_window`). The
  window depends only on the order of grey values, so a 16-bit scan, its 8-bit
  PNG (shifted or stretched), its JPEG and its DICOM give the network the same
  picture, up to rounding.
- ``percentile16`` (checkpoints that store no mapping, trained before it was
  stored): 16-bit and float scans windowed, 8-bit scans passed through
  unchanged. That is what those models were trained with; a model trained on
  16-bit scans then gets no useful input from an 8-bit export of a scan
  (``rarespot detect input-mapping MODEL --set percentile`` fixes such a model).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rarespot.errors import InputError
from rarespot.filters import percentile_window

#: Attribute of the saved network (and key of an ONNX export's metadata) that holds the mapping.
MAPPING_KEY = "rarespot_input"
METHODS = ("percentile", "percentile16")


@dataclass(frozen=True)
class InputMapping:
    """How a scan becomes the network's 8-bit input. ``method`` is one of :data:`METHODS`;
    ``low``/``high`` are the window's percentiles."""

    method: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown input mapping {self.method!r}; known: {', '.join(METHODS)}")
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(f"input mapping needs 0 <= low < high <= 100, got {self.low}, {self.high}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "InputMapping":
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise ValueError(f"an input mapping is a mapping, got {type(data).__name__}")
        return cls(str(data.get("method")), float(data.get("low", 0.5)), float(data.get("high", 99.5)))

    def windows(self, image: np.ndarray) -> bool:
        """Whether this mapping windows ``image`` (the legacy one passes 8-bit scans through)."""
        return self.method == "percentile" or image.dtype != np.uint8

    def __str__(self) -> str:
        scope = "every scan" if self.method == "percentile" else "16-bit and float scans (8-bit passed through)"
        return f"{self.method}: {self.low:g}-{self.high:g} percentile window of {scope}"


#: What training uses now, and stores with the model.
CURRENT_INPUT_MAPPING = InputMapping("percentile")
#: What a checkpoint that stores no mapping was trained with.
LEGACY_INPUT_MAPPING = InputMapping("percentile16")


def window_to_uint8(image: np.ndarray, mapping: InputMapping = CURRENT_INPUT_MAPPING) -> np.ndarray:
    """The 8-bit grey levels the network sees (same shape and channels as ``image``)."""
    if not mapping.windows(image):
        return image
    return percentile_window(image, mapping.low, mapping.high)


def to_model_input(image: np.ndarray, mapping: InputMapping = CURRENT_INPUT_MAPPING) -> np.ndarray:
    """HxW or HxWxC image (RGB order, any bit depth) -> HxWx3 uint8 BGR, Ultralytics' convention.

    ``mapping``: the model's own (:attr:`TiledPredictor.input_mapping`); the default is what training uses now.
    """
    img = window_to_uint8(image, mapping)
    if img.ndim == 2 and img.dtype == np.uint8:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_GRAY2BGR)  # the same bytes as np.repeat, 20x faster
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1])
    if img.ndim == 3 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, 2::-1])
    raise ValueError(f"unsupported image shape {image.shape}")


# -- the mapping travels with the weights ------------------------------------------------------


def stamp_input_mapping(model, mapping: InputMapping = CURRENT_INPUT_MAPPING):
    """Record ``mapping`` on a network (an ``nn.Module``) before it is trained and saved.

    Ultralytics pickles the module (and its EMA copy) whole, so the attribute is in
    ``best.pt`` and ``last.pt``; :func:`input_mapping_of` reads it back.
    """
    setattr(model, MAPPING_KEY, mapping.to_dict())
    return model


def input_mapping_of(model) -> InputMapping:
    """The mapping stored on a loaded network; :data:`LEGACY_INPUT_MAPPING` when it has none."""
    stored = getattr(model, MAPPING_KEY, None)
    if stored is None:
        return LEGACY_INPUT_MAPPING
    return InputMapping.from_dict(stored)


def read_input_mapping(path: str | Path) -> InputMapping:
    """The mapping stored in a model file: a ``.pt`` checkpoint or an ``.onnx`` export."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from rarespot.detect.precision import onnx_metadata

        if not path.is_file():
            raise InputError(path, "model file not found")
        meta = onnx_metadata(path)[0]
        return InputMapping.from_dict(meta[MAPPING_KEY]) if MAPPING_KEY in meta else LEGACY_INPUT_MAPPING
    ckpt = _load_checkpoint(path)
    net = ckpt.get("ema") or ckpt.get("model")
    return input_mapping_of(net)


def set_input_mapping(path: str | Path, mapping: InputMapping) -> Path:
    """Write ``mapping`` into a ``.pt`` checkpoint (atomically), e.g. for a model trained on
    16-bit scans before the mapping was stored, so its 8-bit inputs are windowed too."""
    import torch

    path = Path(path)
    ckpt = _load_checkpoint(path)
    stamped = 0
    for key in ("model", "ema"):
        if ckpt.get(key) is not None:
            stamp_input_mapping(ckpt[key], mapping)
            stamped += 1
    if not stamped:
        raise InputError(path, "checkpoint holds no network ('model' or 'ema')")
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def _load_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(path, f"not a YOLO checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict):
        raise InputError(path, "not a YOLO checkpoint (no checkpoint dictionary)")
    return ckpt


def add_onnx_mapping(path: str | Path, mapping: InputMapping) -> Path:
    """Add the mapping to an ONNX file's metadata (``rarespot detect export`` calls it)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key == MAPPING_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = MAPPING_KEY, json.dumps(mapping.to_dict())
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path
