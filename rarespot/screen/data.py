"""Images for screening: load a folder or an npz, and prepare model input.

Two sources:

* an ``.npz`` with ``images`` (N,H,W or N,H,W,C) and optionally ``labels`` (N,)
  and ``names`` (N,), e.g. the NIH malaria cells;
* a folder of image files (anything :func:`rarespot.io.images.read_image` reads).
  Images directly in the folder are unlabelled; images in sub-folders get the
  sub-folder name as their class (``normal/``, ``anomaly/``; class ids follow
  sorted folder names).

:func:`prepare` turns any list/array of images into float32 ``(N, C, S, S)`` in
[0, 1]: it converts grey/RGB and resizes, and says once (one warning with counts)
when the inputs were of mixed sizes or channel counts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from rarespot.errors import InputError

NPZ_SUFFIX = ".npz"


class MixedInputWarning(UserWarning):
    """Inputs had different sizes or channel counts and were converted (said once per call)."""


@dataclass
class ImageSet:
    """Images with optional integer labels and a name per image."""

    images: list[np.ndarray] | np.ndarray
    names: list[str]
    labels: np.ndarray | None = None  # int, one per image; None when unlabelled
    class_names: list[str] = field(default_factory=list)
    source: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, problem) of unreadable files

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "ImageSet":
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        images = self.images[index] if isinstance(self.images, np.ndarray) else [self.images[i] for i in index]
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(images, [self.names[i] for i in index], labels, list(self.class_names), self.source)

    def label_id(self, label: str | int) -> int:
        """The integer id of a label given as an id ("0") or a class name ("Uninfected")."""
        text = str(label)
        if text in self.class_names:
            return self.class_names.index(text)
        try:
            return int(text)
        except ValueError:
            raise InputError(self.source, f"label {text!r} is not a class here (classes: {self.class_names or 'integer ids'})") from None


def load_images(paths: Sequence[str | Path], on_error: str = "skip") -> tuple[list[np.ndarray], list[Path], list[tuple[str, str]]]:
    """Read image files; returns (images, paths read, [(file, problem) skipped]).

    ``on_error="skip"`` leaves unreadable files out and reports them; ``"raise"``
    stops at the first with an :class:`InputError` naming it.
    """
    from rarespot.io.images import read_image

    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', not {on_error!r}")
    images, kept, skipped = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            kept.append(Path(path))
        except InputError as exc:
            if on_error == "raise":
                raise
            skipped.append((str(path), exc.problem))
    return images, kept, skipped


def load_npz(path: str | Path) -> ImageSet:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files:
                raise InputError(path, f"npz has no 'images' array (arrays: {npz.files})")
            images = np.asarray(npz["images"])
            labels = np.asarray(npz["labels"]).astype(np.int64) if "labels" in npz.files else None
            names = [str(n) for n in npz["names"]] if "names" in npz.files else [f"{path.stem}[{i}]" for i in range(len(images))]
    except InputError:
        raise
    except Exception as exc:  # zipfile/pickle/ValueError: a corrupt or non-npz file
        raise InputError(path, f"cannot read npz: {exc}") from exc
    if images.ndim not in (3, 4):
        raise InputError(path, f"'images' must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise InputError(path, f"{len(labels)} labels for {len(images)} images")
    return ImageSet(images, names, labels, [], path)


def load_folder(path: str | Path, on_error: str = "skip") -> ImageSet:
    from rarespot.io.images import is_image_file

    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "folder not found")
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and any(is_image_file(f) for f in p.iterdir()))
    top_level = sorted(f for f in path.iterdir() if is_image_file(f))
    if subdirs and top_level:
        # Ambiguous: are the loose images a class of their own, or unlabelled? Silently dropping them was worse.
        raise InputError(path, f"has {len(top_level)} images at the top level (first: {top_level[0].name}) and class sub-folders "
                               f"({', '.join(p.name for p in subdirs)}); move the loose images into a sub-folder, or pass one sub-folder")
    if subdirs:
        files, labels = [], []
        for class_id, sub in enumerate(subdirs):
            sub_files = sorted(f for f in sub.iterdir() if is_image_file(f))
            files += sub_files
            labels += [class_id] * len(sub_files)
        class_names = [p.name for p in subdirs]
    else:
        files = top_level
        labels, class_names = [], []
    if not files:
        raise InputError(path, "no image files in this folder (or its class sub-folders)")
    images, kept, skipped = load_images(files, on_error=on_error)
    if not images:
        raise InputError(path, f"none of the {len(files)} image files could be read (first: {skipped[0][0]}: {skipped[0][1]})")
    kept_set = {str(p) for p in kept}
    label_arr = np.asarray([lab for f, lab in zip(files, labels) if str(f) in kept_set], dtype=np.int64) if labels else None
    names = [str(p.relative_to(path)) for p in kept]
    return ImageSet(images, names, label_arr, class_names, path, skipped)


def load_dataset(path: str | Path, on_error: str = "skip") -> ImageSet:
    """An npz file or a folder of images (see the module doc)."""
    path = Path(path)
    if path.suffix.lower() == NPZ_SUFFIX:
        return load_npz(path)
    if path.is_dir():
        return load_folder(path, on_error=on_error)
    raise InputError(path, "expected a folder of images or an .npz file" + ("" if path.exists() else " (not found)"))


def _to_unit_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    image = image.astype(np.float32)
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    if 0.0 <= lo and hi <= 1.0:
        return image
    # Float scans in arbitrary units: stretch each image to [0, 1].
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def prepare(images: Sequence[np.ndarray] | np.ndarray, size: int, color: str = "gray") -> np.ndarray:
    """Images (HxW, HxWx1, HxWx3 RGB, any dtype) -> float32 (N, C, size, size) in [0, 1].

    C is 1 for ``color="gray"`` and 3 for ``"rgb"``. Mixed sizes or channel counts
    are converted and reported in ONE :class:`MixedInputWarning`.
    """
    if color not in ("gray", "rgb"):
        raise ValueError(f"color must be 'gray' or 'rgb', not {color!r}")
    n = len(images)
    channels_out = 1 if color == "gray" else 3
    out = np.empty((n, channels_out, size, size), dtype=np.float32)
    shapes: dict[tuple[int, int], int] = {}
    channel_counts: dict[int, int] = {}
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"image {i}: expected HxW or HxWx3, got shape {image.shape}")
        shapes[image.shape[:2]] = shapes.get(image.shape[:2], 0) + 1
        ch = 1 if image.ndim == 2 else 3
        channel_counts[ch] = channel_counts.get(ch, 0) + 1
        img = _to_unit_float(image)
        if ch == 3 and channels_out == 1:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        elif ch == 1 and channels_out == 3:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        if img.shape[:2] != (size, size):
            # INTER_AREA averages when shrinking (no aliasing of small stains).
            interp = cv2.INTER_AREA if img.shape[0] >= size and img.shape[1] >= size else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
        out[i] = img[None] if channels_out == 1 else img.transpose(2, 0, 1)
    note = _mixed_note(n, shapes, channel_counts, size, color)
    if note:
        warnings.warn(note, MixedInputWarning, stacklevel=2)
    return out


def _shape_and_channels(image) -> tuple[tuple[int, int], int]:
    shape = np.shape(image)
    ch = 1 if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1) else min(shape[2], 3) if len(shape) == 3 else 0
    return tuple(shape[:2]), ch


def _mixed_note(n: int, shapes: dict, channel_counts: dict, size: int, color: str, examples: dict | None = None) -> str | None:
    """One line on mixed sizes / channel counts (``examples``: a file name per size or channel count)."""
    ex = examples or {}
    notes = []
    if len(shapes) > 1:
        notes.append(f"{len(shapes)} different sizes ({', '.join(f'{h}x{w}: {c}' for (h, w), c in sorted(shapes.items())[:5])}) resized to {size}x{size}")
        common = max(shapes, key=shapes.get)
        odd = [f"{h}x{w}: {ex[('s', (h, w))]}" for (h, w) in sorted(shapes) if (h, w) != common and ('s', (h, w)) in ex][:3]
        if odd:
            notes[-1] += f" (first of each other size: {', '.join(odd)})"
    if len(channel_counts) > 1:
        notes.append(
            f"mixed channel counts ({', '.join(f'{c} ch: {k}' for c, k in sorted(channel_counts.items()))}) converted to {color}"
        )
        common = max(channel_counts, key=channel_counts.get)
        odd = [f"{c} ch: {ex[('c', c)]}" for c in sorted(channel_counts) if c != common and ('c', c) in ex]
        if odd:
            notes[-1] += f" (first of each other count: {', '.join(odd)})"
    return f"{n} images: " + "; ".join(notes) if notes else None


def mixed_input_note(images, names: Sequence[str], size: int, color: str) -> str | None:
    """The mixed-size/channel note :func:`prepare` would give, naming the first file of each minority size/count."""
    shapes: dict = {}
    channels: dict = {}
    examples: dict = {}
    for image, name in zip(images, names):
        shape, ch = _shape_and_channels(image)
        shapes[shape] = shapes.get(shape, 0) + 1
        channels[ch] = channels.get(ch, 0) + 1
        examples.setdefault(("s", shape), name)
        examples.setdefault(("c", ch), name)
    return _mixed_note(len(names), shapes, channels, size, color, examples)
