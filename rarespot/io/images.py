"""Read and write scans without losing bits.

``read_image`` returns what the file holds: ``uint8`` or ``uint16`` (``float32``
only when the file itself is float, or a DICOM rescale makes values fractional
or negative), ``HxW`` for grey and ``HxWx3`` **RGB** for colour (an alpha
channel is dropped). Nothing is squeezed to 8 bits here: display mappings live
in :mod:`rarespot.filters`.

Formats: PNG (8/16-bit), TIFF (tifffile: 8/16-bit, float), DICOM (pydicom:
rescale slope/intercept applied, window centre/width kept in the metadata),
JPEG, BMP. A missing, corrupt or unsupported file raises
:class:`rarespot.errors.InputError` naming the file.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rarespot.errors import InputError
from rarespot.io.atomic import atomic_write_bytes

PNG_SUFFIXES = {".png"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}
TIFF_SUFFIXES = {".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
OTHER_CV2_SUFFIXES = {".bmp"}
IMAGE_SUFFIXES = PNG_SUFFIXES | JPEG_SUFFIXES | TIFF_SUFFIXES | DICOM_SUFFIXES | OTHER_CV2_SUFFIXES


class ImageTooLarge(InputError):
    """The file's header announces more pixels than a reader should decode."""


def is_image_file(path: str | Path) -> bool:
    """True when the suffix is one rarespot can read."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in PNG_SUFFIXES:
        return "png"
    if suffix in JPEG_SUFFIXES:
        return "jpeg"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in OTHER_CV2_SUFFIXES:
        return "bmp"
    # DICOM files often come without a suffix: sniff the 'DICM' preamble.
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    raise InputError(path, f"unsupported image type {suffix or '(no suffix)'}; use one of {sorted(IMAGE_SUFFIXES)}")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "image file not found")
    if not path.is_file():
        raise InputError(path, "not a file")


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) -> RGB; grey stays HxW."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr[:, :, ::-1])
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return arr


def _check_complete(path: Path, fmt: str, tail: bytes) -> None:
    """Refuse a PNG or JPEG whose end marker is missing (``tail``: the file's last 4 KB)."""
    if fmt == "png" and b"IEND" not in tail[-64:]:
        # A PNG cut short (e.g. still being copied): say so, rather than let libpng print to stderr.
        raise InputError(path, "truncated PNG (no end chunk): the file is incomplete, or still being written")
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        # libjpeg decodes a truncated JPEG into a grey-padded image with only a
        # console warning; the missing end-of-image marker is the reliable sign.
        raise InputError(path, "corrupt JPEG: truncated (no end-of-image marker)")


def _read_cv2(path: Path, fmt: str) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: non-ASCII paths work too
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if data.size == 0:
        raise InputError(path, "empty file")
    _check_complete(path, fmt, data[-4096:].tobytes())
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(path, f"corrupt or unreadable {fmt.upper()} file")
    return _to_rgb(arr)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.pages[0].asarray()  # first page: a scan is one frame
    except Exception as exc:  # tifffile raises many types for broken files
        raise InputError(path, f"corrupt or unreadable TIFF file ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # TIFF stores RGB(A) in RGB order already
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(path, f"unsupported TIFF sample type {arr.dtype}; expected uint8, uint16 or float")
    return arr


def _read_dicom(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(path, f"corrupt or unreadable DICOM file ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise InputError(path, "DICOM file has no pixel data")
    try:
        raw = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise InputError(
            path,
            f"cannot decode DICOM pixel data (transfer syntax {syntax}; compressed DICOM needs e.g. "
            f"`pip install pylibjpeg pylibjpeg-libjpeg`): {exc}",
        ) from None
    if raw.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        raw = raw[0]  # multi-frame: first frame
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    meta: dict[str, Any] = {"photometric": photometric, "stored_dtype": str(raw.dtype)}
    if getattr(ds, "SamplesPerPixel", 1) != 1:
        meta["bit_depth"] = int(ds.BitsStored)
        return np.asarray(raw), meta  # colour DICOM: pydicom already gives RGB

    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    bits = int(getattr(ds, "BitsStored", 16))
    lo_range, hi_range = intercept, slope * (2**bits - 1) + intercept

    center = _first_float(getattr(ds, "WindowCenter", None))
    width = _first_float(getattr(ds, "WindowWidth", None))
    if photometric == "MONOCHROME1":
        # MONOCHROME1 shows high values dark; flip so bright means dense, like
        # every other image rarespot reads, and flip the stored window with it.
        values = lo_range + hi_range - values
        if center is not None:
            center = lo_range + hi_range - center
        meta["inverted"] = True

    # Keep integers as integers: uint16 when every value fits, float32 otherwise
    # (negative or fractional values after rescaling, e.g. CT Hounsfield units).
    if np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 65535:
        arr = values.astype(np.uint8 if raw.dtype == np.uint8 and values.max() <= 255 else np.uint16)
    else:
        arr = values.astype(np.float32)
    meta.update(rescale_slope=slope, rescale_intercept=intercept, bit_depth=bits)
    if center is not None and width is not None:
        meta["window_center"] = center
        meta["window_width"] = width
    return arr, meta


def _first_float(value) -> float | None:
    """DICOM WindowCenter/Width may be multi-valued: the first is the default window."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


@contextmanager
def decoder_messages():
    """Collect what C decoders (libpng, libjpeg, libtiff) print to the process's stderr meanwhile.

    Yields a dict whose ``"text"`` holds the collected lines after the block, so a batch
    job can put them in the row of the file that caused them instead of on the terminal.
    The redirection is process-wide: use it in single-threaded batch loops, not in a server.
    """
    import os
    import sys
    import tempfile

    box = {"text": ""}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            box["text"] = " ".join(sink.read().decode("utf-8", "replace").split())[:300]


def read_image_with_meta(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a scan and what is known about it.

    ``meta`` always has ``format``, ``dtype`` and ``bit_depth`` (bits stored,
    8 or 16 for PNG/TIFF/JPEG); DICOM adds ``window_center``/``window_width``
    (when present), ``rescale_slope``/``rescale_intercept`` and ``photometric``.
    """
    path = Path(path)
    _check_exists(path)
    fmt = _format_of(path)
    meta: dict[str, Any] = {"format": fmt}
    if fmt == "dicom":
        arr, extra = _read_dicom(path)
        meta.update(extra)
    elif fmt == "tiff":
        arr = _read_tiff(path)
    else:
        arr = _read_cv2(path, fmt)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(path, f"unexpected image shape {arr.shape}")
    meta["dtype"] = str(arr.dtype)
    meta.setdefault("bit_depth", {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(arr.dtype, 32))
    return arr, meta


def read_image(path: str | Path) -> np.ndarray:
    """A scan as ``uint8``/``uint16`` (float only if the file is), HxW grey or HxWx3 RGB."""
    return read_image_with_meta(path)[0]


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels.

    Loading a dataset of thousands of scans only needs sizes (to check boxes);
    full decoding, which also finds corrupt files, is ``rarespot data check``.
    """
    width, height, _ = image_header(path)
    return width, height


def image_header(path: str | Path) -> tuple[int, int, int]:
    """(width, height, frames) from the file header (Pillow, tifffile or pydicom), without
    decoding the pixels: what a server checks before it lets a decoder allocate memory.

    An image so large that Pillow refuses to open it raises :class:`ImageTooLarge`.
    """
    path = Path(path)
    _check_exists(path)
    fmt = _format_of(path)
    try:
        if fmt == "dicom":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows), int(getattr(ds, "NumberOfFrames", 1) or 1)
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
            return int(shape[1]), int(shape[0]), 1
        from PIL import Image

        if fmt in ("png", "jpeg"):
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - 4096))
                _check_complete(path, fmt, fh.read())
        try:
            with Image.open(path) as im:  # PIL reads only the header until .load()
                return int(im.size[0]), int(im.size[1]), 1
        except Image.DecompressionBombError as exc:
            import re

            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow will open"
            raise ImageTooLarge(path, f"the header announces {size}, far more than a scan") from None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            path, f"corrupt or unreadable {fmt.upper()} file (header: {type(exc).__name__}: {exc})"
        ) from None


def encode_image(image: np.ndarray, suffix: str = ".png", png_compression: int = 3, fast: bool = False) -> bytes:
    """The bytes :func:`write_image` writes for a file of this ``suffix`` (PNG, JPEG, BMP or TIFF).

    For a worker that makes an image and a process elsewhere that writes it (``--ray``): both
    paths give the same bytes.
    """
    image = np.asarray(image)
    suffix = suffix.lower()
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"cannot write an image of shape {image.shape}")
    if suffix in TIFF_SUFFIXES:
        import io

        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, image, photometric="rgb" if image.ndim == 3 and image.shape[2] >= 3 else "minisblack")
        return buf.getvalue()
    if suffix in PNG_SUFFIXES | JPEG_SUFFIXES | OTHER_CV2_SUFFIXES:
        allowed = (np.uint8, np.uint16) if suffix in PNG_SUFFIXES else (np.uint8,)
        if image.dtype not in allowed:
            raise ValueError(
                f"{suffix} cannot hold {image.dtype} pixels without loss; convert explicitly or write .tif"
            )
        bgr = image
        if image.ndim == 3 and image.shape[2] == 3:
            bgr = image[:, :, ::-1]
        elif image.ndim == 3 and image.shape[2] == 4:
            bgr = image[:, :, [2, 1, 0, 3]]
        params = []
        if suffix in PNG_SUFFIXES:
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1 if fast else int(png_compression)]
            if fast:
                params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
        ok, buf = cv2.imencode(suffix, np.ascontiguousarray(bgr), params)
        if not ok:
            raise ValueError("OpenCV could not encode the image")
        return buf.tobytes()
    raise ValueError(f"cannot write {suffix or '(no suffix)'}; use .png, .tif or .jpg")


def write_image(path: str | Path, image: np.ndarray, png_compression: int = 3, fast: bool = False) -> Path:
    """Write a scan atomically (temp file in the same folder, then rename).

    PNG keeps 8- and 16-bit integers; TIFF also keeps float; JPEG is 8-bit and
    lossy (only for display copies). ``image`` is HxW or HxWx3 RGB.
    fast: PNG with Huffman-only coding: about 2x faster to write, and for noisy
    16-bit scans (where matching strings are rare) no bigger.
    """
    path = Path(path)
    try:
        data = encode_image(image, path.suffix, png_compression=png_compression, fast=fast)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    atomic_write_bytes(path, data)
    return path
