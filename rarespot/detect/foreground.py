"""Which tiles of a scan hold anything to inspect: a cheap foreground test, once per scan.

Most of a body scan, and of a baggage scan, is air or empty belt. The test runs on the scan
as read (16-bit stays 16-bit; before the 8-bit window the network gets), with OpenCV:

1. shrink the scan by area averaging (a long side of about 400 px): averaging divides the
   photon noise, so a faint object stands out better than in single pixels;
2. model the background from the scan's border: a plane (``a + b x + c y`` per channel, which
   follows the heel-effect ramp of an X-ray tube across the field) fitted robustly to the
   outer ring, and the noise around it (median absolute deviation);
3. foreground = every pixel more than ``k`` noise deviations from that plane in any channel;
4. a tile goes to the network when any foreground pixel lies in it or within ``margin`` scan
   pixels of it (a square dilation of the mask by ``margin``, a morphological safety band around
   anything found, answered for every tile at once by an integral image of the mask).

It is safe by construction rather than by tuning: a tile is skipped only when every pixel in it
is within the noise of the border's background. When the border is not a uniform background
(a scan cropped through the body, a textured belt), the test says so and every tile runs.
A scan that is background everywhere has no tile to run: :attr:`Foreground.all_background`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Why every tile ran although skipping was on (``Foreground.reason``).
NO_CLEAR_BACKGROUND = "no uniform background at the scan's border: every tile inspected"
ALL_BACKGROUND = "all background: no tile to inspect"


@dataclass(frozen=True)
class ForegroundSettings:
    """Knobs of the foreground test (defaults: measured safe on synthetic body scans and OPIXray,
    docs/benchmarks/detect_inference.md).

    k: a pixel is foreground when it differs from the background by more than ``k`` noise
       deviations (after area averaging) in any channel.
    margin: scan pixels of background kept around every foreground pixel.
    border: width of the ring the background is learnt from, as a share of the shorter side.
    min_border_background: share of that ring that must fit the background model; below it the
       border is not a uniform background and nothing is skipped.
    max_noise: the background's noise band (``k`` deviations) may span at most this share of
       the pixel type's full range (255, 65535; a float scan's own range); wider, and a faint
       object could hide in it, so nothing is skipped.
    long_side: the scan is shrunk so its longer side has about this many pixels.
    """

    k: float = 6.0
    margin: int = 16
    border: float = 0.03
    min_border_background: float = 0.6
    max_noise: float = 0.05
    long_side: int = 400

    def __post_init__(self) -> None:
        if self.k <= 0 or self.margin < 0 or not 0 < self.border < 0.5:
            raise ValueError(f"foreground settings out of range: {self}")
        if not 0 < self.min_border_background <= 1 or not 0 < self.max_noise <= 1 or self.long_side < 16:
            raise ValueError(f"foreground settings out of range: {self}")


@dataclass
class Foreground:
    """The foreground of one scan, at a reduced resolution, and how far to trust it."""

    mask: np.ndarray | None  # bool (h, w); None when the background is not clear
    shape: tuple[int, int]  # (H, W) of the scan
    reason: str = ""  # NO_CLEAR_BACKGROUND / ALL_BACKGROUND / ""
    noise: tuple[float, ...] = ()  # background noise deviation per channel (scan units, after averaging)
    margin: int = 0  # scan pixels around a tile in which foreground also makes it run

    @property
    def reliable(self) -> bool:
        return self.mask is not None

    @property
    def all_background(self) -> bool:
        return self.mask is not None and not self.mask.any()

    @property
    def share(self) -> float:
        """Share of the scan marked foreground, before the margin (1.0 when the test could not tell)."""
        return 1.0 if self.mask is None else float(self.mask.mean())

    def tiles_to_run(self, windows: np.ndarray) -> np.ndarray:
        """(k,) bool: which of the (k, 4) xyxy scan-pixel windows hold any foreground."""
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
        if self.mask is None:
            return np.ones(len(windows), dtype=bool)
        import cv2

        h, w = self.mask.shape
        H, W = self.shape
        sx, sy = w / W, h / H
        integral = cv2.integral(self.mask.astype(np.uint8))  # (h+1, w+1), integral[y, x] = sum above-left
        # A window, widened by the margin, covers every small pixel it touches (floor of the start,
        # ceil of the end): never less.
        grown = windows + np.array([-1, -1, 1, 1]) * self.margin
        x0 = np.clip(np.floor(grown[:, 0] * sx), 0, w).astype(np.int64)
        y0 = np.clip(np.floor(grown[:, 1] * sy), 0, h).astype(np.int64)
        x1 = np.clip(np.ceil(grown[:, 2] * sx), 0, w).astype(np.int64)
        y1 = np.clip(np.ceil(grown[:, 3] * sy), 0, h).astype(np.int64)
        counts = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return counts > 0


def _full_range(image: np.ndarray, small: np.ndarray) -> float:
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype in (np.uint16, np.int16):
        return 65535.0
    return float(small.max() - small.min())


def find_foreground(image: np.ndarray, settings: ForegroundSettings | None = None) -> Foreground:
    """The foreground of a scan as read by ``read_image`` (HxW or HxWxC, 8/16-bit or float)."""
    import cv2

    s = settings or ForegroundSettings()
    H, W = image.shape[:2]
    img = image
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype in (np.int16, np.float64):
        img = img.astype(np.float32)
    factor = max(H, W) / s.long_side
    factor = factor if factor >= 1.5 else 1.0  # shrinking by less would cost more than it saves
    w, h = max(1, int(round(W / factor))), max(1, int(round(H / factor)))
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if factor > 1 else img
    small = small.astype(np.float32).reshape(h, w, -1)

    # The border ring, and a plane per channel fitted robustly to it.
    b = max(2, int(round(s.border * min(h, w))))
    ring = np.zeros((h, w), dtype=bool)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    step = max(1, len(xs) // 4000)  # a few thousand ring pixels fix a plane and a noise level
    ys, xs = ys[::step], xs[::step]
    design = np.stack([np.ones(len(xs)), xs / max(1, w - 1), ys / max(1, h - 1)], axis=1)
    gx = (np.arange(w, dtype=np.float32) / max(1, w - 1))[None, :]
    gy = (np.arange(h, dtype=np.float32) / max(1, h - 1))[:, None]
    full = _full_range(image, small)
    floor = 0.5 if image.dtype.kind in "ui" else 1e-6 * max(full, 1e-12)  # half a grey level: a clean synthetic background
    score = np.zeros((h, w), dtype=np.float32)  # max over channels of |residual| / noise
    noise = []
    for c in range(small.shape[2]):
        values = small[ys, xs, c].astype(np.float64)
        inliers = np.ones(len(values), dtype=bool)
        for _ in range(2):  # refit without what the plane does not explain (an object on the border)
            coef, *_ = np.linalg.lstsq(design[inliers], values[inliers], rcond=None)
            resid = values - design @ coef
            mad = np.median(np.abs(resid[inliers] - np.median(resid[inliers])))
            sigma = max(1.4826 * mad, floor)
            inliers = np.abs(resid) <= 3 * s.k * sigma
        plane = np.float32(coef[0]) + np.float32(coef[1]) * gx + np.float32(coef[2]) * gy
        np.maximum(score, np.abs(small[:, :, c] - plane) * np.float32(1.0 / sigma), out=score)
        noise.append(float(sigma))
    foreground = score > s.k
    border_background = float(np.mean(~foreground[ring]))
    if border_background < s.min_border_background or s.k * max(noise) > s.max_noise * full:
        return Foreground(None, (H, W), NO_CLEAR_BACKGROUND, tuple(noise), s.margin)
    if not foreground.any():
        return Foreground(foreground, (H, W), ALL_BACKGROUND, tuple(noise), s.margin)
    return Foreground(foreground, (H, W), "", tuple(noise), s.margin)
