"""Copy-paste of annotated rare objects from one X-ray into another.

An X-ray pixel records transmission: I = I0 * exp(-sum mu_i t_i) along the
ray, so two objects on one ray *multiply* their transmissions. Pasting an
object therefore means multiplying the target by the object's transmission:

    I = I_a * I_b / I_max                                     (grayscale)

where I_b is the donor patch and I_max the unattenuated (air) level. A donor
object usually lies on other things in its own bag, so the donor patch is
first divided by an estimate of what lies under the object: the box region
inpainted from a margin ring around it (OpenCV Telea), T = min(1, I_b / B).
On air, B = I_max and this is the formula above exactly; on clutter it
transfers the object's own attenuation rather than a rectangle of the donor's
clutter. The margin is feathered (T -> 1 towards the patch edge) so no
rectangle edge shows.

Pseudo-colour baggage X-ray (e.g. OPIXray's dual-energy colour rendering) is
not a physical transmission per channel (a per-channel multiply gives colour
speckle), so there we alpha-blend: alpha is how much darker the patch is than
the same inpainted background estimate, saturating at ``alpha_saturation`` (a
fraction of the full range), lightly smoothed and feathered; out = alpha * donor + (1 - alpha) * target. ``blend="transmission"``
can be forced on colour images (per-channel multiply) if preferred.

Objects are pasted only inside the body/bag: pixels darker than
``body_threshold`` x the air level (the image's 99.5th-percentile brightness),
closed to fill gaps inside the bag, then eroded so pastes stay off its edge.
A paste must have ``min_inside`` of its box on that mask and may not overlap
an existing or already-pasted box by more than ``max_overlap`` (intersection
over the smaller box).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from rarespot.io.dataset import DetectionDataset
from rarespot.metrics.detection import box_overlap

BLENDS = ("auto", "transmission", "alpha")
NAMED_TARGETS = ("uniform", "rarest")  # the target_distribution values given by name


def transmission_blend(base: np.ndarray, donor: np.ndarray, i_max: float) -> np.ndarray:
    """I = I_a * I_b / I_max, rounded, clipped to the base dtype's range; dtype kept.

    base and donor have the same shape (donor may be float, e.g. a
    transmission in [0, 1] with i_max = 1).
    """
    if i_max <= 0:
        raise ValueError(f"i_max must be > 0, got {i_max}")
    out = base.astype(np.float64) * (np.asarray(donor, dtype=np.float64) / float(i_max))
    return _cast_like(out, base.dtype)


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _full_scale(dtype: np.dtype, image: np.ndarray | None = None) -> float:
    """The value of 'white' for a dtype: 255, 65535, or 1.0 / the max for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    if image is not None and image.size and float(np.max(image)) > 1.0:
        return float(np.max(image))
    return 1.0


def _luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) if image.ndim == 2 else image.astype(np.float32).mean(axis=2)


def is_pseudo_colour(image: np.ndarray, tolerance: float = 0.01) -> bool:
    """True for a 3-channel image whose channels differ (not gray stored as RGB)."""
    if image.ndim != 3 or image.shape[2] < 3:
        return False
    img = image[::8, ::8, :3].astype(np.float32)
    spread = (img.max(axis=2) - img.min(axis=2)).mean()
    return spread > tolerance * _full_scale(image.dtype, image)


def body_mask(
    image: np.ndarray,
    body_threshold: float = 0.95,
    erode_frac: float = 0.02,
    close_frac: float = 0.05,
    pad_value: float | None = None,
) -> np.ndarray:
    """Bool mask of the body/bag: darker than body_threshold x the air level.

    Air level: the 99.5th percentile of brightness (air is the brightest thing
    in a transmission image). Closing (kernel close_frac of the short side)
    fills bright gaps inside the bag; erosion (erode_frac) keeps pastes off its
    rim. Pixels equal to pad_value (a tiler's padding) are never body.
    """
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype in (np.uint8, np.uint16):
        lum = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # weighted luminance; 10x faster than a float mean
    else:
        lum = _luminance(image)
    air = float(np.percentile(lum[::2, ::2], 99.5))
    mask = (lum < body_threshold * air).astype(np.uint8)
    pad = None if pad_value is None else lum == pad_value
    if pad is not None:
        mask[pad] = 0
    short = min(image.shape[:2])
    k_close = max(1, int(round(close_frac * short))) | 1
    if k_close > 1:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_close, k_close)))
    k_erode = max(1, int(round(erode_frac * short))) | 1
    if k_erode > 1:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_erode, k_erode)))
    if pad is not None:
        mask[pad] = 0  # closing must not bridge into padding either
    return mask.astype(bool)


def _background_under(crop: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """What the donor would look like without the object: the box region
    inpainted (OpenCV Telea) from the surrounding margin ring, per channel.

    Clutter that runs across the box edge is predicted and so not copied; only
    what differs from its surroundings (the object) is. Without a ring (box
    fills the donor) the brightest patch value stands in for the background.
    """
    if inside.all():
        return np.full_like(crop, crop.max())
    mask = inside.astype(np.uint8)
    radius = max(3, int(round(0.1 * min(crop.shape[:2]))))
    channels = crop[:, :, None] if crop.ndim == 2 else crop
    filled = [cv2.inpaint(np.ascontiguousarray(channels[:, :, c], dtype=np.float32), mask, radius, cv2.INPAINT_TELEA)
              for c in range(channels.shape[2])]
    out = np.stack(filled, axis=2).astype(np.float64)
    if np.array_equal(crop, np.rint(crop)):
        out = np.rint(out)  # integer scans: a float32 inpaint of a flat ring is flat only to ~1e-7
    return out[:, :, 0] if crop.ndim == 2 else out


@dataclass
class DonorPatch:
    """A donor object cut with a context margin, as a blend-ready layer.

    layer: transmission in [0, 1] (transmission blend) or the donor pixels as
    float in the target's scale (alpha blend); weight: the feathered
    transmission deficit mask or alpha, same HxW; box: the object in patch pixels.
    """

    layer: np.ndarray
    weight: np.ndarray
    box: np.ndarray


class XrayCopyPaste:
    """Paste annotated objects (rare classes) from donor X-rays into a training image.

    donors: the training set (or any DetectionDataset) to cut objects from.
    classes: class indices that may be pasted (None: every class with donors).
    target_distribution: class mix to move towards: None or "uniform"
        (each pasteable class equally often), "rarest" (only the pasteable class
        with the fewest donor objects; ties share), an array of C shares, or a dict
        {class index or name: share}. Each paste picks a class with probability
        proportional to how far the running distribution (every label seen by
        this object plus every pasted one) falls short of the target.
    p: probability that an image receives pastes; then 1..max_objects are tried.
    scale: (min, max) uniform scale factor; hflip: random horizontal flips.
    blend: "auto" (transmission for gray, alpha for pseudo-colour), "transmission" or "alpha".
    body_threshold, erode_frac, close_frac, pad_value: see :func:`body_mask`.
    min_inside: share of the pasted box that must lie on the body mask.
    max_overlap: largest allowed intersection / smaller-box area with any other box.
    margin: context ring around a donor box, as a fraction of its size (min 2 px).
    reader: path -> image (default ``rarespot.io.images.read_image``: RGB, bit depth kept).
    donor_transform: applied to each donor image after reading, to put donors in
        the same space as the images this is called on (e.g. the training
        pipeline's ``to_model_input``, which gives 8-bit BGR).
    cache_size: donor patches kept in memory (read lazily, least recently used dropped).
    """

    def __init__(
        self,
        donors: DetectionDataset,
        classes: Sequence[int] | None = None,
        target_distribution: Mapping | Sequence[float] | np.ndarray | str | None = None,
        p: float = 0.5,
        max_objects: int = 3,
        scale: tuple[float, float] = (0.8, 1.25),
        hflip: bool = True,
        blend: str = "auto",
        body_threshold: float = 0.95,
        erode_frac: float = 0.02,
        close_frac: float = 0.05,
        pad_value: float | None = None,
        min_inside: float = 0.9,
        max_overlap: float = 0.1,
        margin: float = 0.15,
        alpha_saturation: float = 0.25,
        tries: int = 30,
        reader: Callable[[Path], np.ndarray] | None = None,
        donor_transform: Callable[[np.ndarray], np.ndarray] | None = None,
        cache_size: int = 512,
    ):
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        self.donors = donors
        self.num_classes = donors.num_classes
        self.p, self.max_objects, self.scale, self.hflip, self.blend = p, max_objects, tuple(scale), hflip, blend
        self.body_threshold, self.erode_frac, self.close_frac = body_threshold, erode_frac, close_frac
        self.pad_value, self.min_inside, self.max_overlap = pad_value, min_inside, max_overlap
        self.margin, self.alpha_saturation, self.tries = margin, alpha_saturation, tries
        self.reader, self.donor_transform, self.cache_size = reader, donor_transform, cache_size

        allowed = set(range(self.num_classes)) if classes is None else {int(c) for c in classes}
        bad = [c for c in allowed if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"classes {bad} are not in [0, {self.num_classes})")
        # (record index, object index) of every usable donor object, per class.
        self.objects: dict[int, list[tuple[int, int]]] = {c: [] for c in sorted(allowed)}
        for r, rec in enumerate(donors.records):
            for j, (box, label) in enumerate(zip(rec.boxes, rec.labels)):
                if int(label) in self.objects and box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                    self.objects[int(label)].append((r, j))
        self.pasteable = np.array([c for c, objs in self.objects.items() if objs], dtype=np.int64)
        self.target = self._parse_target(target_distribution)
        self.seen_counts = np.zeros(self.num_classes)
        self.pasted_counts = np.zeros(self.num_classes, dtype=np.int64)
        self._cache: OrderedDict = OrderedDict()

    # --- configuration ----------------------------------------------------------------
    def _parse_target(self, target) -> np.ndarray:
        c = self.num_classes
        if target is None or (isinstance(target, str) and target == "uniform"):
            out = np.zeros(c)
            out[self.pasteable] = 1.0
        elif isinstance(target, str) and target == "rarest":
            # Aims every paste at the rare class without naming it (tried as recipe v4, docs/study.md).
            counts = np.array([len(self.objects[k]) for k in self.pasteable])
            out = np.zeros(c)
            if len(counts):
                out[self.pasteable[counts == counts.min()]] = 1.0
        elif isinstance(target, str):
            names = ", ".join(repr(n) for n in NAMED_TARGETS)
            raise ValueError(f"target_distribution must be one of {names}, a list or a dict, got {target!r}")
        elif isinstance(target, Mapping):
            out = np.zeros(c)
            for key, share in target.items():
                idx = self.donors.class_names.index(key) if isinstance(key, str) and key in self.donors.class_names else key
                try:
                    idx = int(idx)
                except (TypeError, ValueError):
                    raise ValueError(f"target_distribution names unknown class {key!r}") from None
                if not 0 <= idx < c:
                    raise ValueError(f"target_distribution names unknown class {key!r}")
                out[idx] = float(share)
        else:
            out = np.asarray(target, dtype=np.float64).reshape(-1)
            if len(out) != c:
                raise ValueError(f"target_distribution has {len(out)} shares for {c} classes")
        if np.any(out < 0) or out.sum() <= 0:
            raise ValueError("target_distribution shares must be >= 0 and not all zero")
        return out / out.sum()

    # --- class choice -----------------------------------------------------------------
    def choose_class(self, rng: np.random.Generator) -> int:
        """The class to paste next: the one furthest below its target share is most likely."""
        total = self.seen_counts.sum()
        current = self.seen_counts / total if total > 0 else np.zeros(self.num_classes)
        deficit = np.clip(self.target - current, 0, None)[self.pasteable]
        if deficit.sum() <= 0:  # at or beyond target everywhere: follow the target itself
            deficit = self.target[self.pasteable]
        if deficit.sum() <= 0:
            deficit = np.ones(len(self.pasteable))
        return int(rng.choice(self.pasteable, p=deficit / deficit.sum()))

    # --- donors -------------------------------------------------------------------------
    def _read_donor(self, record_index: int) -> np.ndarray:
        path = self.donors.image_path(self.donors.records[record_index])
        if self.reader is None:
            from rarespot.io.images import read_image

            image = read_image(path)
        else:
            image = self.reader(path)
        return self.donor_transform(image) if self.donor_transform is not None else image

    def donor_patch(self, record_index: int, object_index: int, like: np.ndarray, mode: str) -> DonorPatch:
        """The donor object as a blend layer matching ``like``'s channels and scale (cached)."""
        # The patch is scaled to the target's 'white': fixed by the dtype for integers, but a float target's own
        # maximum, so that value is part of the key (a 0-1 patch must not be reused on a 0-1000 image).
        full = _full_scale(like.dtype, like)
        key = (record_index, object_index, like.shape[2:], like.dtype.str, full, mode)  # channels, not just ndim
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        image = self._read_donor(record_index)
        box = self.donors.records[record_index].boxes[object_index]
        patch = self._make_patch(image, box, like, mode, full)
        self._cache[key] = patch
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return patch

    def _make_patch(self, image: np.ndarray, box: np.ndarray, like: np.ndarray, mode: str, full: float) -> DonorPatch:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = box
        mx = max(2.0, self.margin * (x2 - x1))
        my = max(2.0, self.margin * (y2 - y1))
        px1, py1 = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
        px2, py2 = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
        crop = image[py1:py2, px1:px2].astype(np.float64)
        # Same channels as the target: gray -> replicate, colour -> mean.
        if like.ndim == 2 and crop.ndim == 3:
            crop = crop[:, :, :3].mean(axis=2)
        elif like.ndim == 3 and crop.ndim == 2:
            crop = np.repeat(crop[:, :, None], like.shape[2], axis=2)
        elif like.ndim == 3 and crop.shape[2] != like.shape[2]:
            crop = np.repeat(crop[:, :, :3].mean(axis=2)[:, :, None], like.shape[2], axis=2)
        # Same scale as the target (8-bit donor into 16-bit target and vice versa).
        crop *= full / _full_scale(image.dtype, image)
        obj = np.array([x1 - px1, y1 - py1, x2 - px1, y2 - py1])

        ph, pw = crop.shape[:2]
        inside = np.zeros((ph, pw), dtype=bool)
        ox1, oy1 = int(np.floor(obj[0])), int(np.floor(obj[1]))
        ox2, oy2 = int(np.ceil(obj[2])), int(np.ceil(obj[3]))
        inside[oy1:oy2, ox1:ox2] = True
        background = _background_under(crop, inside)
        feather = self._feather(ph, pw, obj)

        if mode == "transmission":
            bg = np.maximum(background, 1e-6)
            transmission = np.clip(crop / bg, 0.0, 1.0)
            return DonorPatch(transmission, feather, obj)
        # Only what is darker (attenuates more) than its inpainted surroundings is
        # the object; lighter clutter inside the box stays the target's.
        darkening = _luminance(background) - _luminance(crop)
        alpha = np.clip(darkening / (self.alpha_saturation * full), 0.0, 1.0)
        alpha = cv2.GaussianBlur(alpha, (3, 3), 0) * feather
        return DonorPatch(crop, alpha, obj)

    @staticmethod
    def _feather(ph: int, pw: int, obj: np.ndarray) -> np.ndarray:
        """1 on the object box, falling linearly to 0 at the patch edge."""
        xs = np.arange(pw) + 0.5
        ys = np.arange(ph) + 0.5
        fx = np.minimum(np.clip(xs / max(obj[0], 1e-6), 0, 1), np.clip((pw - xs) / max(pw - obj[2], 1e-6), 0, 1))
        fy = np.minimum(np.clip(ys / max(obj[1], 1e-6), 0, 1), np.clip((ph - ys) / max(ph - obj[3], 1e-6), 0, 1))
        return np.minimum(fy[:, None], fx[None, :])

    # --- pasting ------------------------------------------------------------------------
    def _mode_for(self, image: np.ndarray) -> str:
        if self.blend != "auto":
            return self.blend
        return "alpha" if is_pseudo_colour(image) else "transmission"

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Maybe paste 1..max_objects donor objects; returns a new image and the extended boxes/labels."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        np.add.at(self.seen_counts, labels[(labels >= 0) & (labels < self.num_classes)], 1)
        if len(self.pasteable) == 0 or rng.random() >= self.p:
            return image, boxes, labels
        mode = self._mode_for(image)
        mask = body_mask(image, self.body_threshold, self.erode_frac, self.close_frac, self.pad_value)
        if not mask.any():
            return image, boxes, labels
        out = image.copy()
        new_boxes, new_labels = [boxes], [labels]
        all_boxes = boxes.copy()
        body_ys, body_xs = np.nonzero(mask)
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            cls = self.choose_class(rng)
            objs = self.objects[cls]
            r, j = objs[int(rng.integers(len(objs)))]
            patch = self.donor_patch(r, j, image, mode)
            placed = self._paste_one(out, mask, (body_ys, body_xs), all_boxes, patch, mode, rng)
            if placed is None:
                continue
            all_boxes = np.vstack([all_boxes, placed[None]])
            new_boxes.append(placed[None])
            new_labels.append(np.array([cls], dtype=np.int64))
            self.seen_counts[cls] += 1
            self.pasted_counts[cls] += 1
        return out, np.vstack(new_boxes), np.concatenate(new_labels)

    def _paste_one(self, out, mask, body_pixels, existing, patch: DonorPatch, mode: str, rng) -> np.ndarray | None:
        """Blend one patch into ``out`` in place; returns its box in image pixels, or None if no room."""
        s = float(rng.uniform(*self.scale))
        flip = self.hflip and rng.random() < 0.5
        ph, pw = patch.weight.shape
        th, tw = max(1, int(round(ph * s))), max(1, int(round(pw * s)))
        h, w = out.shape[:2]
        if th > h or tw > w:
            return None
        sx, sy = tw / pw, th / ph
        obj = patch.box * np.array([sx, sy, sx, sy])
        if flip:
            obj = np.array([tw - obj[2], obj[1], tw - obj[0], obj[3]])
        ys, xs = body_pixels
        for _ in range(self.tries):
            k = int(rng.integers(len(ys)))
            # Centre the object box on a random body pixel.
            x0 = int(round(xs[k] - (obj[0] + obj[2]) / 2))
            y0 = int(round(ys[k] - (obj[1] + obj[3]) / 2))
            if x0 < 0 or y0 < 0 or x0 + tw > w or y0 + th > h:
                continue
            box = obj + np.array([x0, y0, x0, y0])
            bx1, by1, bx2, by2 = np.floor(box[:2]).astype(int).tolist() + np.ceil(box[2:]).astype(int).tolist()
            under = mask[by1:by2, bx1:bx2]
            if under.size == 0 or under.mean() < self.min_inside:
                continue
            if box_overlap(box, existing, "ios").max(initial=0.0) > self.max_overlap:
                continue
            self._blend(out, patch, mode, x0, y0, tw, th, flip)
            return box
        return None

    @staticmethod
    def _blend(out, patch: DonorPatch, mode: str, x0: int, y0: int, tw: int, th: int, flip: bool) -> None:
        ph, pw = patch.weight.shape
        interp = cv2.INTER_LINEAR
        same = (tw, th) == (pw, ph)
        layer = patch.layer if same else cv2.resize(patch.layer, (tw, th), interpolation=interp)
        weight = patch.weight if same else cv2.resize(patch.weight, (tw, th), interpolation=interp)
        if flip:
            layer, weight = layer[:, ::-1], weight[:, ::-1]
        if layer.ndim == 3 and layer.shape[2] == 1 and out.ndim == 2:
            layer = layer[:, :, 0]
        region = out[y0 : y0 + th, x0 : x0 + tw]
        wgt = weight[:, :, None] if region.ndim == 3 else weight
        if mode == "transmission":
            # Feathering pulls the transmission towards 1 (no change) at the patch edge.
            effective = 1.0 - wgt * (1.0 - layer)
            out[y0 : y0 + th, x0 : x0 + tw] = transmission_blend(region, effective, 1.0)
        else:
            mixed = wgt * layer + (1.0 - wgt) * region.astype(np.float64)
            out[y0 : y0 + th, x0 : x0 + tw] = _cast_like(mixed, out.dtype)


def preview_grid(
    dataset: DetectionDataset,
    out_path: str | Path,
    images: int = 6,
    classes: Sequence[int] | None = None,
    max_objects: int = 3,
    blend: str = "auto",
    seed: int = 0,
    size: int = 320,
) -> Path:
    """PNG grid, one row per image: original | with pasted objects (new boxes red, old green)."""
    from rarespot.io.images import read_image, write_image
    from rarespot.viz import to_display_rgb

    rng = np.random.default_rng(seed)
    paster = XrayCopyPaste(dataset, classes=classes, p=1.0, max_objects=max_objects, blend=blend)
    rows = []
    for idx in rng.choice(len(dataset), size=min(images, len(dataset)), replace=False):
        rec = dataset.records[int(idx)]
        image = read_image(dataset.image_path(rec))
        pasted, boxes, _ = paster(image, rec.boxes, rec.labels, rng)
        # right is drawn on: a copy, since an 8-bit RGB scan comes back as itself (and an
        # image that received no paste is the very array shown on the left).
        left, right = to_display_rgb(image), to_display_rgb(pasted).copy()
        for k, box in enumerate(boxes):
            colour = (0, 200, 0) if k < len(rec.boxes) else (255, 0, 0)
            x1, y1, x2, y2 = np.round(box).astype(int).tolist()
            cv2.rectangle(right, (x1, y1), (x2, y2), colour, max(1, min(right.shape[:2]) // 200))
        scale = size / max(image.shape[:2])
        dsize = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        row = np.hstack([cv2.resize(left, dsize, interpolation=cv2.INTER_AREA),
                         cv2.resize(right, dsize, interpolation=cv2.INTER_AREA)])
        canvas = np.full((size, 2 * size, 3), 255, dtype=np.uint8)
        canvas[: row.shape[0], : row.shape[1]] = row
        rows.append(canvas)
    if not rows:
        raise ValueError("preview_grid needs at least one image")
    return write_image(Path(out_path), np.vstack(rows))
