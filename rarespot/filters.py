"""View filters: the seed's annotation aids (brightness/contrast, gamma, CLAHE,
global normalisation) plus the two 16->8-bit display mappings.

Every filter takes ``uint8``, ``uint16`` or float images (HxW or HxWx3) and
keeps the dtype, except ``percentile_window`` and ``window_level``, which are
documented to produce ``uint8`` for display. Nothing silently squeezes 16-bit
data into 8 bits. Float images are taken to span [0, 1].

``ViewFilter`` chains them and parses from the compact string the CLI and the
review app use::

    ViewFilter.parse("clahe:clip=2.0,gamma:g=0.8")
    ViewFilter.parse("bc:brightness=0.1,contrast=1.3;window:center=3000,width=2000")

Steps are separated by ``,`` (``;`` or ``|`` also work); a ``name:`` starts a
new step, and a ``key=value`` without a name continues the previous step.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from pydantic import Field, model_validator

from rarespot.config import StrictModel, validate_config
from rarespot.errors import InputError


#: Most tiles a side CLAHE may use (32x32 tiles of a 16-bit image: 128 MB of histograms).
MAX_CLAHE_GRID = 32
#: Most steps in one filter chain (the review page builds at most five).
MAX_STEPS = 12


def _full_scale(img: np.ndarray) -> float:
    if img.dtype == np.uint8:
        return 255.0
    if img.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported image dtype {img.dtype}; expected uint8, uint16 or float")


def _back_to(img: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Round and clip ``values`` into ``img``'s dtype (floats are clipped to [0, 1])."""
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(values, 0.0, 1.0).astype(img.dtype)
    top = _full_scale(img)
    return np.clip(np.rint(values), 0, top).astype(img.dtype)


def _apply_lut(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A pointwise map through a lookup table for integer images (65,536 entries
    for 16-bit: far cheaper than evaluating ``fn`` on millions of pixels)."""
    if np.issubdtype(img.dtype, np.floating):
        return _back_to(img, fn(img.astype(np.float64)))
    levels = np.arange(int(_full_scale(img)) + 1, dtype=np.float64)
    lut = _back_to(img, fn(levels))
    return lut[img]


def brightness_contrast(img: np.ndarray, brightness: float = 0.0, contrast: float = 1.0) -> np.ndarray:
    """``(img - mean) * contrast + mean + brightness * full_scale``, in the input dtype.

    brightness: fraction of the full range to add (-1..1; 0 = unchanged).
    contrast: gain about the image mean (1 = unchanged), so stretching
    contrast does not also shift a dark 16-bit scan into black or white.
    """
    full = _full_scale(img)
    mean = float(img.mean())
    return _apply_lut(img, lambda x: (x - mean) * contrast + mean + brightness * full)


def gamma(img: np.ndarray, g: float = 1.0) -> np.ndarray:
    """``full * (img / full) ** g`` (g < 1 brightens the dark, dense parts)."""
    if g <= 0:
        raise ValueError(f"gamma must be positive, got {g}")
    full = _full_scale(img)
    return _apply_lut(img, lambda x: full * np.power(np.clip(x, 0, None) / full, g))


def invert(img: np.ndarray) -> np.ndarray:
    """Dark <-> bright (``full - img``): some operators read dense as dark."""
    full = _full_scale(img)
    return _back_to(img, full - img.astype(np.float64))


def normalize(img: np.ndarray) -> np.ndarray:
    """Global min-max normalisation to the dtype's full range (float: [0, 1])."""
    full = _full_scale(img)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img)
    return _apply_lut(img, lambda x: (x - lo) * (full / (hi - lo)))


def clahe(img: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV), 8- or 16-bit.

    OpenCV's CLAHE takes uint16 directly, so 16-bit scans keep their depth.
    Colour images are equalised on luminance (8-bit: YCrCb) or per channel
    (16-bit). Float images go through uint16 and back.
    """
    if not 1 <= tile_grid <= MAX_CLAHE_GRID or tile_grid != int(tile_grid):
        # OpenCV keeps a histogram per tile (65,536 bins for 16-bit): the grid is bounded, or memory is not.
        raise ValueError(f"tile_grid must be a whole number from 1 to {MAX_CLAHE_GRID}, got {tile_grid:g}")
    tile_grid = int(tile_grid)
    if np.issubdtype(img.dtype, np.floating):
        as16 = np.clip(np.rint(img.astype(np.float64) * 65535.0), 0, 65535).astype(np.uint16)
        return (clahe(as16, clip_limit, tile_grid).astype(np.float64) / 65535.0).astype(img.dtype)
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tile_grid, tile_grid))
    if img.ndim == 2:
        return op.apply(np.ascontiguousarray(img))
    if img.dtype == np.uint8 and img.shape[2] == 3:
        ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
        ycc[:, :, 0] = op.apply(np.ascontiguousarray(ycc[:, :, 0]))
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    return np.stack([op.apply(np.ascontiguousarray(img[:, :, c])) for c in range(img.shape[2])], axis=2)


def percentile_window(img: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the ``low``..``high`` percentile range linearly to 0..255 -> ``uint8``, any input dtype.

    The one 16->8-bit mapping of rarespot: the display window of 16-bit scans
    (body scans use a small, scanner-dependent part of the 16-bit range, which
    a fixed 0..65535 scale would show almost black) and, through
    :func:`rarespot.detect.preprocess.to_model_input`, the network's input for
    every scan whatever its bit depth. Because it depends only on the order of
    the grey values, a scan and its 8-bit export (shifted, stretched or JPEG)
    map to the same picture, up to rounding.

    Percentiles are taken on every 4th row and column of images at least 64
    pixels on a side (the same window to within a grey level, 16x less work);
    ``low=0`` / ``high=100`` use the exact minimum / maximum.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    # 8- and 16-bit integers go through a lookup table (the same arithmetic on each possible grey
    # level, so the same bytes; 2.5 instead of 9 ms on a 1,500 x 1,216 scan); floats pixel by pixel.
    lut = img.dtype.kind in "ui" and img.dtype.itemsize <= 2
    data = img if lut else img.astype(np.float32)
    sample = data[::4, ::4] if data.ndim >= 2 and min(data.shape[:2]) >= 64 else data
    lo, hi = np.percentile(sample.astype(np.float32, copy=False), [low, high])
    if low == 0:
        lo = np.float32(data.min())
    if high == 100:
        hi = np.float32(data.max())
    if hi <= lo:
        hi = lo + 1.0
    if lut:
        info = np.iinfo(img.dtype)
        levels = np.arange(info.min, info.max + 1, dtype=np.float32)
        table = np.clip((levels - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
        return table[img.astype(np.int32) - info.min] if info.min else np.take(table, img)
    out = (data - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def window_level(img: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear window (PS3.3 C.11.2.1.2) -> ``uint8``.

    ``center``/``width`` are in the image's own units, e.g. the
    ``window_center``/``window_width`` that ``read_image_with_meta`` returns.
    """
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    data = img.astype(np.float64)
    out = ((data - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """For display: 8-bit stays, anything else through ``percentile_window``."""
    return img if img.dtype == np.uint8 else percentile_window(img)


# ----------------------------------------------------------------------------- composable spec

FILTERS: dict[str, Callable[..., np.ndarray]] = {
    "brightness_contrast": brightness_contrast,
    "gamma": gamma,
    "clahe": clahe,
    "normalize": normalize,
    "percentile_window": percentile_window,
    "window_level": window_level,
    "invert": invert,
}
FILTER_ALIASES = {"bc": "brightness_contrast", "normalise": "normalize", "norm": "normalize",
                  "percentile": "percentile_window", "window": "window_level", "wl": "window_level"}
PARAM_ALIASES = {
    "brightness_contrast": {"b": "brightness", "c": "contrast"},
    "gamma": {"gamma": "g", "value": "g"},
    "clahe": {"clip": "clip_limit", "grid": "tile_grid", "tile": "tile_grid", "tiles": "tile_grid"},
    "percentile_window": {"lo": "low", "hi": "high"},
    "window_level": {"c": "center", "centre": "center", "level": "center", "w": "width"},
}


#: Allowed range of each parameter, inclusive: a spec from a URL or a file cannot ask for
#: unbounded work or memory, and every value must be a finite number.
PARAM_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "brightness_contrast": {"brightness": (-1.0, 1.0), "contrast": (0.0, 20.0)},
    "gamma": {"g": (0.01, 100.0)},
    "clahe": {"clip_limit": (0.0, 1000.0), "tile_grid": (1, MAX_CLAHE_GRID)},
    "percentile_window": {"low": (0.0, 100.0), "high": (0.0, 100.0)},
    "window_level": {"center": (-1e9, 1e9), "width": (1.0, 1e9)},
}
#: Parameters that must be whole numbers.
INTEGER_PARAMS = {("clahe", "tile_grid")}


class FilterStep(StrictModel):
    """One filter and its parameters, e.g. ``clahe`` with ``{"clip_limit": 2.0}``."""

    name: str
    params: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "FilterStep":
        name = FILTER_ALIASES.get(self.name, self.name)
        if name not in FILTERS:
            raise ValueError(f"unknown view filter {self.name!r}; known: {sorted(FILTERS)}")
        signature = list(inspect.signature(FILTERS[name]).parameters.values())[1:]  # after the image
        allowed = [p.name for p in signature]
        aliases = PARAM_ALIASES.get(name, {})
        params = {}
        for key, value in self.params.items():
            real = aliases.get(key, key)
            if real not in allowed:
                raise ValueError(f"{name}: unknown parameter {key!r}; known: {allowed}")
            if not math.isfinite(value):
                raise ValueError(f"{name}: {key} must be a finite number, got {value}")
            lo, hi = PARAM_BOUNDS.get(name, {}).get(real, (-math.inf, math.inf))
            if not lo <= value <= hi:
                raise ValueError(f"{name}: {key}={value:g} is out of range; allowed {lo:g} to {hi:g}")
            if (name, real) in INTEGER_PARAMS and value != int(value):
                raise ValueError(f"{name}: {key} must be a whole number, got {value:g}")
            params[real] = value
        required = [p.name for p in signature if p.default is inspect.Parameter.empty and p.name not in params]
        if required:
            raise ValueError(f"{name}: missing parameter(s) {required}")
        self.name, self.params = name, params
        return self

    def apply(self, img: np.ndarray) -> np.ndarray:
        return FILTERS[self.name](img, **self.params)

    def __str__(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}:{args}" if args else self.name


class ViewFilter(StrictModel):
    """An ordered chain of filters. Loads from a string, a list of steps, or YAML."""

    steps: list[FilterStep] = Field(default_factory=list, max_length=MAX_STEPS)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"steps": _parse_steps(data)}
        if isinstance(data, list):
            return {"steps": data}
        if isinstance(data, dict) and isinstance(data.get("steps"), str):
            return {**data, "steps": _parse_steps(data["steps"])}
        return data

    @classmethod
    def parse(cls, spec: str | None) -> "ViewFilter":
        """``"clahe:clip=2.0,gamma:g=0.8"`` -> ViewFilter; bad spec -> InputError."""
        if spec is None or not spec.strip():
            return cls()
        try:
            return cls.model_validate(spec)
        except Exception as exc:  # pydantic's ValidationError: flatten to one line
            msg = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            shown = spec if len(spec) <= 80 else spec[:77] + "..."
            raise InputError(None, f"view filter {shown!r}: {msg.removeprefix('Value error, ')}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ViewFilter":
        """A YAML file holding a spec string, a list of steps, or ``{steps: [...]}``."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, "view filter file not found") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(path, f"not a view filter spec: {exc}") from None
        # Not a mapping (a spec string or a list of steps are fine), so not read_yaml_mapping; errors as every config's.
        return validate_config(cls, data if data is not None else [], path, "view filter spec")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        for step in self.steps:
            img = step.apply(img)
        return img

    apply = __call__

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)


_STEP = re.compile(r"^\s*([A-Za-z_]+)\s*(?::(.*))?$")


def _parse_steps(spec: str) -> list[dict]:
    steps: list[dict] = []
    for token in re.split(r"[,;|]", spec):
        token = token.strip()
        if not token:
            continue
        if "=" in token and ":" not in token:
            if not steps:
                raise ValueError(f"parameter {token!r} before any filter name")
            key, value = token.split("=", 1)
            steps[-1]["params"][key.strip()] = _number(value)
            continue
        m = _STEP.match(token)
        if m is None:
            raise ValueError(f"cannot read {token!r}; expected name or name:key=value")
        params = {}
        if m.group(2):
            if "=" not in m.group(2):
                raise ValueError(f"cannot read {token!r}; parameters are key=value")
            key, value = m.group(2).split("=", 1)
            params[key.strip()] = _number(value)
        steps.append({"name": m.group(1).lower(), "params": params})
        if len(steps) > MAX_STEPS:
            raise ValueError(f"more than {MAX_STEPS} steps; a chain may have at most {MAX_STEPS}")
    return steps


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
