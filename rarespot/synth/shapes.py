"""The 18 object classes as small patches of ``mu*t`` values, drawn with recognisable shapes.

Buttons are discs with holes, a zipper is a ladder of teeth, a key is a bow,
shaft and bit, glasses are two rings and a bridge...; from ~10 px piercings to
~200 px shoes, from dense metal to barely visible drug packets. Each
``shape_<class>(rng, k, ...)`` returns one patch at image scale ``k``;
``dress`` places them.
"""

from __future__ import annotations

import cv2
import numpy as np

# Shapes are drawn 4x supersampled with OpenCV and reduced with INTER_AREA, so
# a 12-pixel button still shows its holes as partial-coverage pixels.

SS = 4


class Sketch:
    """A small supersampled canvas of mu*t values in the object's own frame."""

    def __init__(self, w: float, h: float):
        self.w, self.h = max(2, int(np.ceil(w))), max(2, int(np.ceil(h)))
        self.img = np.zeros((self.h * SS, self.w * SS), np.float32)

    def _p(self, x, y):
        return int(round(x * SS)), int(round(y * SS))

    def circle(self, x, y, r, v, thick=-1):
        t = -1 if thick < 0 else max(1, int(round(thick * SS)))
        cv2.circle(self.img, self._p(x, y), max(1, int(round(r * SS))), float(v), t, cv2.LINE_AA)

    def ellipse(self, x, y, ax, ay, v, thick=-1, angle=0, a0=0, a1=360):
        t = -1 if thick < 0 else max(1, int(round(thick * SS)))
        cv2.ellipse(self.img, self._p(x, y), (max(1, int(ax * SS)), max(1, int(ay * SS))), angle, a0, a1,
                    float(v), t, cv2.LINE_AA)

    def rect(self, x0, y0, x1, y1, v, thick=-1):
        t = -1 if thick < 0 else max(1, int(round(thick * SS)))
        cv2.rectangle(self.img, self._p(x0, y0), self._p(x1, y1), float(v), t, cv2.LINE_AA)

    def line(self, x0, y0, x1, y1, v, thick=1.0):
        cv2.line(self.img, self._p(x0, y0), self._p(x1, y1), float(v), max(1, int(round(thick * SS))), cv2.LINE_AA)

    def poly(self, pts, v, thick=-1):
        arr = (np.asarray(pts, np.float64) * SS).round().astype(np.int32).reshape(-1, 1, 2)
        if thick < 0:
            cv2.fillPoly(self.img, [arr], float(v), cv2.LINE_AA)
        else:
            cv2.polylines(self.img, [arr], True, float(v), max(1, int(round(thick * SS))), cv2.LINE_AA)

    def add(self, other: "Sketch", x0: float, y0: float) -> None:
        """Paste (add) another sketch with its top-left at (x0, y0)."""
        ox, oy = self._p(x0, y0)
        src = other.img
        h = min(src.shape[0], self.img.shape[0] - oy)
        w = min(src.shape[1], self.img.shape[1] - ox)
        if h > 0 and w > 0:
            self.img[oy:oy + h, ox:ox + w] += src[:h, :w]

    def erase(self, fn, *args, **kw):
        """Draw a hole: everything the shape covers becomes 0."""
        mask = Sketch(self.w, self.h)
        getattr(mask, fn)(*args, **kw)
        self.img *= np.clip(1.0 - mask.img, 0.0, 1.0)

    def done(self, angle: float = 0.0) -> np.ndarray:
        """Reduce to real pixels and rotate by ``angle`` degrees (canvas grows to fit)."""
        out = cv2.resize(self.img, (self.w, self.h), interpolation=cv2.INTER_AREA)
        if abs(angle) > 0.5:
            out = _rotate(out, angle)
        return out


def _rotate(patch: np.ndarray, angle: float) -> np.ndarray:
    h, w = patch.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)) + 2, int(np.ceil(h * cos + w * sin)) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(patch, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0.0)


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def shape_pants_button(rng, k):
    r = _u(rng, 6.0, 8.0) * k
    s = Sketch(2 * r + 2, 2 * r + 2)
    c = r + 1
    s.circle(c, c, r, _u(rng, 1.4, 1.9))
    s.circle(c, c, 0.72 * r, 0.7, thick=0.12 * r)  # embossed rim
    s.circle(c, c, 0.25 * r, 1.0)  # rivet shank
    return s.done()


def shape_shirt_button(rng, k):
    r = _u(rng, 4.5, 6.5) * k
    s = Sketch(2 * r + 2, 2 * r + 2)
    c = r + 1
    s.circle(c, c, r, _u(rng, 0.6, 0.95))
    holes = 4 if rng.random() < 0.6 else 2
    for j in range(holes):
        a = np.pi / 4 + j * 2 * np.pi / holes
        s.erase("circle", c + 0.38 * r * np.cos(a), c + 0.38 * r * np.sin(a), 0.17 * r, 1.0)
    return s.done()


def shape_zipper(rng, k, length=None):
    length = (length or _u(rng, 70, 130)) * k
    half = _u(rng, 4.5, 6.0) * k
    pitch = _u(rng, 3.2, 4.2) * k
    v = _u(rng, 0.9, 1.5) if rng.random() < 0.7 else _u(rng, 0.35, 0.55)  # metal or plastic teeth
    s = Sketch(2 * half + 6, length + 2)
    c = half + 3
    s.rect(c - half - 2, 1, c - half, length + 1, 0.08)  # the fabric tapes, faint
    s.rect(c + half, 1, c + half + 2, length + 1, 0.08)
    y, j = 1.0, 0
    while y + 0.55 * pitch < length + 1:
        # Interlocking teeth: alternate sides, each reaching just past the middle.
        if j % 2 == 0:
            s.rect(c - half, y, c + 0.25 * half, y + 0.55 * pitch, v)
        else:
            s.rect(c - 0.25 * half, y, c + half, y + 0.55 * pitch, v)
        y += 0.5 * pitch
        j += 1
    return s.done(_u(rng, -3, 3))


def shape_zipper_head(rng, k):
    w, h = _u(rng, 10, 13) * k, _u(rng, 13, 17) * k
    tab = _u(rng, 12, 18) * k
    s = Sketch(w + 2, h + tab + 3)
    v = _u(rng, 1.8, 2.4)
    s.poly([(1, 1), (w + 1, 1), (0.75 * w + 1, h + 1), (0.25 * w + 1, h + 1)], v)  # slider body
    s.rect(0.5 * w - 0.22 * w + 1, h, 0.5 * w + 0.22 * w + 1, h + tab + 1, 0.8 * v)  # pull tab
    s.erase("rect", 0.5 * w - 0.08 * w + 1, h + 0.55 * tab, 0.5 * w + 0.08 * w + 1, h + 0.85 * tab, 1.0)
    return s.done(_u(rng, -12, 12))


def shape_belt_buckle(rng, k):
    w, h = _u(rng, 45, 70) * k, _u(rng, 32, 48) * k
    s = Sketch(w + 4, h + 4)
    v = _u(rng, 2.0, 3.0)
    if rng.random() < 0.7:  # frame buckle with prong
        bar = _u(rng, 4.5, 7.0) * k
        s.rect(2, 2, w + 2, h + 2, v, thick=bar)
        s.rect(2 + 0.3 * w, 2, 2 + 0.3 * w + 0.6 * bar, h + 2, v)  # cross bar
        s.rect(2 + 0.3 * w, 2 + 0.5 * h - 0.3 * bar, w + 2 - bar, 2 + 0.5 * h + 0.3 * bar, 0.9 * v)  # prong
    else:  # plate buckle: solid with a darker engraved centre
        s.rect(2, 2, w + 2, h + 2, 0.7 * v)
        s.ellipse(2 + w / 2, 2 + h / 2, 0.3 * w, 0.3 * h, 0.4 * v)
        s.rect(2, 2, w + 2, h + 2, 0.5 * v, thick=3 * k)
    return s.done(_u(rng, -6, 6))


def _shoe_sketch(rng, k):
    w, h = _u(rng, 85, 115) * k, _u(rng, 140, 210) * k  # boot-like: the shaft runs up the ankle
    s = Sketch(w + 4, h + 4)
    leather = _u(rng, 0.25, 0.45)
    shaft = 0.55 * w
    s.poly([(2 + 0.5 * w - shaft / 2, 2), (2 + 0.5 * w + shaft / 2, 2), (2 + 0.92 * w, 2 + 0.62 * h),
            (2 + w, 2 + h), (2, 2 + h), (2 + 0.06 * w, 2 + 0.62 * h)], leather)
    s.rect(2, 2 + 0.9 * h, 2 + w, 2 + h, 0.6)  # sole
    s.line(2 + 0.2 * w, 2 + 0.95 * h, 2 + 0.8 * w, 2 + 0.95 * h, _u(rng, 1.2, 2.0), 2.5 * k)  # steel shank
    for j in range(int(rng.integers(3, 7))):  # eyelets up the front
        y = 2 + (0.12 + 0.1 * j) * h
        s.circle(2 + 0.5 * w - 0.12 * w, y, 2.2 * k, 1.6, thick=1.2 * k)
        s.circle(2 + 0.5 * w + 0.12 * w, y, 2.2 * k, 1.6, thick=1.2 * k)
    return s


def shape_shoes(rng, k):
    return _shoe_sketch(rng, k).done(_u(rng, -6, 6))


def shape_holding_shoes(rng, k):
    a, b = _shoe_sketch(rng, 0.85 * k).done(), _shoe_sketch(rng, 0.85 * k).done()
    h = max(a.shape[0], b.shape[0])
    off = int(0.55 * a.shape[1])
    out = np.zeros((h + 4, off + b.shape[1] + 4), np.float32)
    out[2:2 + a.shape[0], 2:2 + a.shape[1]] += a
    out[2:2 + b.shape[0], 2 + off:2 + off + b.shape[1]] += b  # overlapping pair, held together
    return _rotate(out, _u(rng, 150, 210))  # hanging from the hand, soles up


def shape_glasses(rng, k, head_width=None):
    w = (head_width or 110) * _u(rng, 0.95, 1.15) * k
    lens_w = 0.36 * w
    lens_h = lens_w * _u(rng, 0.55, 0.8)
    s = Sketch(w + 4, lens_h + 6)
    frame = _u(rng, 0.8, 1.6)
    cy = 3 + lens_h / 2
    for cx in (2 + 0.27 * w, 2 + 0.73 * w):
        s.ellipse(cx, cy, lens_w / 2, lens_h / 2, _u(rng, 0.08, 0.2))  # lenses, faint
        s.ellipse(cx, cy, lens_w / 2, lens_h / 2, frame, thick=2.0 * k)
    s.ellipse(2 + 0.5 * w, cy - 0.1 * lens_h, 0.06 * w, 0.12 * lens_h, frame, thick=1.6 * k, a0=180, a1=360)
    s.line(2, cy - 0.3 * lens_h, 2 + 0.09 * w, cy - 0.35 * lens_h, frame, 1.8 * k)  # temples
    s.line(2 + 0.91 * w, cy - 0.35 * lens_h, 2 + w, cy - 0.3 * lens_h, frame, 1.8 * k)
    return s.done(_u(rng, -4, 4))


def shape_watch(rng, k, angle=0.0):
    r = _u(rng, 12, 17) * k
    strap = _u(rng, 22, 32) * k
    s = Sketch(2 * r + 6, 2 * r + 2 * strap + 4)
    cx, cy = r + 3, strap + r + 2
    metal = rng.random() < 0.5
    bw = 1.3 * r
    if metal:  # bracelet of links
        y = 2.0
        while y < 2 * strap + 2 * r:
            s.rect(cx - bw / 2, y, cx + bw / 2, y + 2.6 * k, 1.3)
            y += 3.6 * k
    else:  # leather band with a small buckle
        s.rect(cx - bw / 2, 2, cx + bw / 2, 2 * strap + 2 * r + 2, 0.12)
        s.rect(cx - bw / 2 - 1, 4, cx + bw / 2 + 1, 4 + 6 * k, 1.6, thick=1.5 * k)
    s.circle(cx, cy, r, _u(rng, 1.8, 2.6))
    s.circle(cx, cy, 0.8 * r, 0.8, thick=1.0 * k)  # bezel
    s.circle(cx, cy, 0.3 * r, 1.0)  # movement
    s.rect(cx + r - 1, cy - 1.5 * k, cx + r + 3 * k, cy + 1.5 * k, 1.6)  # crown
    return s.done(angle)


def shape_cuffs(rng, k, angle=0.0):
    r = _u(rng, 19, 25) * k
    s = Sketch(2 * r + 8, 2 * r + 30 * k)
    cx, cy = r + 4, r + 4
    v = _u(rng, 2.2, 3.0)
    s.circle(cx, cy, r, v, thick=_u(rng, 3.5, 5.0) * k)  # the ring
    s.rect(cx + 0.55 * r, cy - 0.5 * r, cx + r + 3, cy + 0.5 * r, v)  # lock housing
    for j in range(3):  # chain links to the other cuff
        s.ellipse(cx, cy + r + (4 + 7 * j) * k, 2.5 * k, 4.0 * k, v, thick=1.5 * k)
    return s.done(angle)


def shape_ankle_monitor(rng, k, leg_width=70.0):
    w, h = _u(rng, 45, 60) * k, _u(rng, 30, 40) * k
    band = leg_width * 1.05
    s = Sketch(max(w, band) + 4, h + 6)
    cx = (max(w, band) + 4) / 2
    s.rect(cx - band / 2, 3 + 0.35 * h, cx + band / 2, 3 + 0.55 * h, 0.35)  # strap round the ankle
    s.rect(cx - w / 2, 3, cx + w / 2, 3 + h, _u(rng, 1.2, 1.7))  # housing
    s.rect(cx - 0.35 * w, 3 + 0.2 * h, cx + 0.1 * w, 3 + 0.8 * h, 1.2)  # battery: the densest part
    for j in range(4):  # circuit board traces
        s.line(cx + 0.15 * w, 3 + (0.2 + 0.2 * j) * h, cx + 0.42 * w, 3 + (0.2 + 0.2 * j) * h, 0.9, 1.0 * k)
    return s.done(_u(rng, -5, 5))


def shape_bra(rng, k, chest_width=200.0):
    w = chest_width * _u(rng, 0.85, 1.0)
    cup_w, cup_h = 0.42 * w, _u(rng, 38, 55) * k
    s = Sketch(w + 6, cup_h * 2 + 10)
    v = _u(rng, 1.0, 1.6)
    base = 3 + cup_h * 1.6
    for cx in (3 + 0.27 * w, 3 + 0.73 * w):
        s.ellipse(cx, base - cup_h, cup_w / 2, cup_h, v, thick=1.8 * k, a0=10, a1=170)  # underwire
        s.ellipse(cx, 6, 3.5 * k, 2.5 * k, 1.2, thick=1.2 * k)  # strap slider
    s.rect(3 + 0.5 * w - 5 * k, base - 0.25 * cup_h, 3 + 0.5 * w + 5 * k, base - 0.1 * cup_h, 1.3)  # hooks
    return s.done(_u(rng, -3, 3))


def shape_surgical_implant(rng, k, length=None, kind=None):
    kind = kind or rng.choice(["plate", "nail", "screws", "hip"])
    v = _u(rng, 2.6, 3.4)
    if kind == "plate":
        L, wd = (length or _u(rng, 60, 180)) * k, _u(rng, 8, 13) * k
        s = Sketch(wd * 2.4, L + 4)
        cx = wd * 1.2
        s.rect(cx - wd / 2, 2, cx + wd / 2, L + 2, v)
        n = max(3, int(L / (14 * k)))
        for j in range(n):
            y = 2 + (j + 0.5) * L / n
            s.erase("circle", cx, y, 0.25 * wd, 1.0)
            if j % 2 == 0:
                s.line(cx - 1.15 * wd, y, cx + 1.15 * wd, y, v, 2.2 * k)  # screw across the bone
    elif kind == "nail":
        L = (length or _u(rng, 120, 220)) * k
        s = Sketch(14 * k, L + 4)
        s.rect(7 * k - 3.5 * k, 2, 7 * k + 3.5 * k, L + 2, v)
        for y in (0.08, 0.9):
            s.line(0, 2 + y * L, 14 * k, 2 + y * L, v, 2.0 * k)  # locking screws
    elif kind == "screws":
        L = _u(rng, 25, 45) * k
        s = Sketch(30 * k, L + 4)
        for x in (8 * k, 20 * k):
            s.rect(x - 2 * k, 2, x + 2 * k, L + 2, v)
            s.rect(x - 4 * k, 2, x + 4 * k, 6 * k, v)
    else:  # hip stem with a ball
        L = _u(rng, 90, 140) * k
        s = Sketch(40 * k, L + 30 * k)
        s.circle(20 * k, 14 * k, 12 * k, v)
        s.poly([(14 * k, 24 * k), (28 * k, 24 * k), (22 * k, L + 28 * k), (17 * k, L + 28 * k)], v)
    return s.done()


def shape_piercing(rng, k):
    if rng.random() < 0.6:  # ring
        r = _u(rng, 3.5, 6.0) * k
        s = Sketch(2 * r + 3, 2 * r + 3)
        s.circle(r + 1.5, r + 1.5, r, _u(rng, 1.6, 2.4), thick=1.3 * k)
        return s.done()
    L = _u(rng, 8, 13) * k  # barbell
    s = Sketch(L + 4, 6 * k)
    s.line(2, 3 * k, L + 2, 3 * k, 1.6, 1.2 * k)
    s.circle(2.5 * k, 3 * k, 2.2 * k, 2.2)
    s.circle(L + 2 - 0.5 * k, 3 * k, 2.2 * k, 2.2)
    return s.done(_u(rng, 0, 180))


def shape_key(rng, k):
    bow_r = _u(rng, 8, 11) * k
    L = _u(rng, 30, 45) * k
    wd = _u(rng, 5, 6.5) * k
    s = Sketch(2 * bow_r + L + 4, 2 * bow_r + 6)
    cy = bow_r + 3
    v = _u(rng, 2.0, 2.8)
    s.circle(bow_r + 2, cy, bow_r, v)
    s.erase("circle", bow_r + 2 - 0.35 * bow_r, cy, 0.3 * bow_r, 1.0)  # the hole for the ring
    x0 = 2 * bow_r + 1
    s.rect(x0, cy - wd / 2, x0 + L, cy + wd / 2, v)  # shaft (blade)
    teeth = [(x0 + L * (0.3 + 0.12 * j), cy + wd / 2 + _u(rng, 1.5, 3.5) * k) for j in range(5)]
    s.poly([(x0 + 0.25 * L, cy + wd / 2)] + teeth + [(x0 + L, cy + wd / 2)], v)  # the bit
    s.line(x0 + 2, cy - 0.1 * wd, x0 + L - 2, cy - 0.1 * wd, 0.6 * v, 1.0 * k)  # milled groove
    return s.done(_u(rng, 0, 360))


def shape_jewelry(rng, k, kind, neck_width=60.0):
    v = _u(rng, 1.3, 2.4)
    if kind == "necklace":
        w = neck_width * _u(rng, 1.3, 1.8)
        h = w * _u(rng, 0.6, 0.9)
        s = Sketch(w + 8, h + 14 * k)
        n = int(rng.integers(22, 40))
        for j in range(n):
            a = np.pi * j / (n - 1)
            s.circle(4 + w / 2 - np.cos(a) * w / 2, 4 + np.sin(a) * h, 1.6 * k, v)
        s.ellipse(4 + w / 2, 4 + h + 5 * k, 4 * k, 6 * k, v)  # pendant
        return s.done()
    if kind == "bracelet":
        r = _u(rng, 16, 22) * k
        s = Sketch(2 * r + 6, 0.8 * r + 6)
        for j in range(14):
            a = 2 * np.pi * j / 14
            s.circle(r + 3 + r * np.cos(a), 0.4 * r + 3 + 0.4 * r * np.sin(a), 2.0 * k, v)
        return s.done()
    r = _u(rng, 5.5, 8) * k  # finger ring (or a big earring)
    s = Sketch(2 * r + 4, 2 * r + 4)
    s.circle(r + 2, r + 2, r, v, thick=_u(rng, 1.5, 2.5) * k)
    if rng.random() < 0.4:
        s.circle(r + 2, 2.5 * k, 2.5 * k, v)  # a stone setting
    return s.done()


def shape_drugs(rng, k):
    v = _u(rng, 0.07, 0.22)  # barely above the noise
    if rng.random() < 0.6:  # swallowed or inserted pellets
        n = int(rng.integers(1, 7))
        s = Sketch(60 * k, 70 * k)
        for _ in range(n):
            s.ellipse(_u(rng, 15, 45) * k, _u(rng, 15, 55) * k, _u(rng, 5, 9) * k, _u(rng, 10, 15) * k,
                      v, angle=_u(rng, 0, 180))
        img = s.done()
    else:  # a bag: an irregular blob
        r = _u(rng, 20, 40) * k
        a = np.sort(rng.uniform(0, 2 * np.pi, 9))
        rad = r * rng.uniform(0.65, 1.0, 9)
        s = Sketch(2 * r + 4, 2 * r + 4)
        s.poly(np.stack([r + 2 + rad * np.cos(a), r + 2 + rad * np.sin(a)], 1), v)
        img = s.done()
    return cv2.GaussianBlur(img, (0, 0), 0.8)  # soft edges: packed powder, not metal


def shape_unknown_anomaly(rng, k):
    kind = rng.choice(["coin", "card", "phone", "blade", "spring", "blob", "nail", "clip", "lighter"])
    v = _u(rng, 0.8, 2.8)
    if kind == "coin":
        r = _u(rng, 8, 13) * k
        s = Sketch(2 * r + 2, 2 * r + 2)
        s.circle(r + 1, r + 1, r, v)
        s.circle(r + 1, r + 1, 0.85 * r, 0.25 * v, thick=1.0 * k)
    elif kind == "card":  # SIM / memory card with a chip
        w, h = _u(rng, 18, 30) * k, _u(rng, 12, 20) * k
        s = Sketch(w + 2, h + 2)
        s.rect(1, 1, w + 1, h + 1, 0.3)
        s.rect(1 + 0.2 * w, 1 + 0.25 * h, 1 + 0.55 * w, 1 + 0.75 * h, v)
    elif kind == "phone":
        w, h = _u(rng, 40, 60) * k, _u(rng, 80, 120) * k
        s = Sketch(w + 2, h + 2)
        s.rect(1, 1, w + 1, h + 1, 0.5)
        s.rect(1 + 0.1 * w, 1 + 0.35 * h, 1 + 0.9 * w, 1 + 0.9 * h, 1.1)  # battery
        s.rect(1 + 0.1 * w, 1 + 0.05 * h, 1 + 0.9 * w, 1 + 0.3 * h, 1.6)  # board
        s.circle(1 + 0.25 * w, 1 + 0.12 * h, 0.08 * w, 2.2)  # camera
    elif kind == "blade":
        w, h = _u(rng, 35, 50) * k, _u(rng, 15, 22) * k
        s = Sketch(w + 2, h + 2)
        s.rect(1, 1, w + 1, h + 1, v)
        s.erase("rect", 1 + 0.25 * w, 1 + 0.4 * h, 1 + 0.75 * w, 1 + 0.6 * h, 1.0)
    elif kind == "spring":
        L, r = _u(rng, 25, 50) * k, _u(rng, 4, 7) * k
        s = Sketch(2 * r + 4, L + 4)
        y = 2.0
        while y < L:
            s.line(2, y, 2 + 2 * r, y + 2 * k, v, 1.2 * k)
            y += 3.5 * k
    elif kind == "nail":
        L = _u(rng, 30, 70) * k
        s = Sketch(8 * k, L + 4)
        s.rect(3 * k, 2, 5 * k, L + 2, v)
        s.rect(1, 2, 7 * k, 4 * k, v)
    elif kind == "clip":
        w, h = _u(rng, 10, 14) * k, _u(rng, 28, 38) * k
        s = Sketch(w + 4, h + 4)
        s.rect(2, 2, w + 2, h + 2, v, thick=1.4 * k)
        s.rect(2 + 0.25 * w, 2 + 0.2 * h, 2 + 0.75 * w, h + 2, v, thick=1.4 * k)
    elif kind == "lighter":
        w, h = _u(rng, 20, 26) * k, _u(rng, 55, 75) * k
        s = Sketch(w + 2, h + 2)
        s.rect(1, 1 + 0.2 * h, w + 1, h + 1, 0.35)
        s.rect(1, 1, w + 1, 1 + 0.22 * h, 1.8)  # the metal top
        s.circle(1 + 0.5 * w, 1 + 0.1 * h, 0.25 * w, 2.4)  # flint wheel
    else:  # an irregular blob of some material
        r = _u(rng, 8, 35) * k
        a = np.sort(rng.uniform(0, 2 * np.pi, 7))
        rad = r * rng.uniform(0.5, 1.0, 7)
        s = Sketch(2 * r + 4, 2 * r + 4)
        s.poly(np.stack([r + 2 + rad * np.cos(a), r + 2 + rad * np.sin(a)], 1), _u(rng, 0.4, 2.5))
    return s.done(_u(rng, 0, 360))

