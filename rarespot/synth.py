"""Synthetic full-body X-ray scans: rarespot's embedded default data.

The seed's THEIA dataset (seed 000, section 3.2) is private: 247 16-bit
scans of 1500 x 1216 pixels of standing people, annotated in PASCAL VOC with
18 classes of foreign objects and a long tail (pants button, unknown anomaly,
shirt button and zipper together ~65% of objects). This module makes a
stand-in with the same shape, so every pipeline runs out of the box:

* a body-shaped attenuation phantom: head, neck, torso, arms, hands, legs and
  feet as ellipsoids and tapered capsules whose *path length* varies across
  them (soft-tissue gradients), lungs as air inside the chest, and a brighter
  skeleton (skull, teeth, spine, ribs, clavicles, pelvis, long bones with a
  cortical shell);
* X-ray physics in the log domain: transmission ``I = I0 * exp(-sum mu*t)``,
  objects multiply in (``I = I_body * exp(-mu_obj * t_obj)``, i.e. their
  ``mu*t`` adds), then low-dose photon (Poisson) and electronic (Gaussian)
  noise, per-row/column detector gain, and ``-log(I/I0)`` stored as 16-bit,
  so dense is bright and air is dark;
* 18 object classes with recognisable shapes (buttons are discs with holes,
  a zipper is a ladder of teeth, a key is a bow, shaft and bit, glasses are two
  rings and a bridge...), placed where people carry them (buttons on the
  midline, shoes on the feet, a watch at a wrist, glasses on the face, an
  implant along a bone), from ~10 px piercings to ~200 px shoes, from dense
  metal to barely visible drug packets;
* subjects: about 30% of scans repeat an earlier person (same body, same
  implants and piercings, new clothes and pose), so grouped splits matter.

Every scan depends only on ``(seed, index)``: generating in parallel, in a
different order, or resuming an interrupted run gives identical files.
Output layout (VOC, as ``rarespot.io.annotations`` reads it)::

    out/images/scan_00000.png      16-bit grey, height 1500 x width 1216
    out/annotations/scan_00000.xml PASCAL VOC, with <subject>
    out/classes.txt                the 18 classes, in the seed's order
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rarespot.io.dataset import DetectionDataset, ImageRecord

# The seed's 18 classes, in the order it lists them (snake_case for command lines).
CLASS_NAMES = [
    "zipper", "watch", "unknown_anomaly", "surgical_implant", "shoes", "piercing", "key", "jewelry",
    "holding_shoes", "glasses", "drugs", "cuffs", "bra", "belt_buckle", "zipper_head", "ankle_monitor",
    "shirt_button", "pants_button",
]
CLS = {name: i for i, name in enumerate(CLASS_NAMES)}
DEFAULT_SIZE = (1500, 1216)  # (height, width): a standing body is taller than wide
# Bump when a change alters the scans, so a resumed run never mixes old and new files.
GENERATOR_VERSION = 1

MU_SOFT = 0.0115  # per pixel: ~2.0 of mu*t through the middle of the torso
MU_BONE = 0.034  # ~3x soft tissue


# ----------------------------------------------------------------------------- path-length primitives
# Each writes the beam path length through a solid into a map, on the solid's
# bounding box only (a whole-image evaluation per body part would cost ~30x more).


def _window(shape, x0, y0, x1, y1):
    h, w = shape
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def _combine(target, sl, values, mode):
    if mode == "max":
        np.maximum(target[sl], values, out=target[sl])
    elif mode == "add":
        target[sl] += values
    else:  # "sub": air replacing tissue (lungs)
        target[sl] = np.maximum(target[sl] - values, 0)


def ellipsoid(target, cx, cy, ax, ay, depth, mode="max", scale=1.0):
    """Path length through an ellipsoid with half-axes ax, ay (in the image) and depth (along the beam)."""
    win = _window(target.shape, cx - ax, cy - ay, cx + ax, cy + ay)
    if win is None:
        return
    sl, xs, ys = win
    q = 1.0 - ((xs - cx) / ax) ** 2 - ((ys - cy) / ay) ** 2
    _combine(target, sl, (2.0 * depth * scale) * np.sqrt(np.clip(q, 0, None)), mode)


def capsule(target, p0, p1, r0, r1=None, mode="max", scale=1.0):
    """Path length through a tapered cylinder from p0 (radius r0) to p1 (radius r1), round ends."""
    r1 = r0 if r1 is None else r1
    (x0, y0), (x1, y1) = p0, p1
    rm = max(r0, r1)
    win = _window(target.shape, min(x0, x1) - rm, min(y0, y1) - rm, max(x0, x1) + rm, max(y0, y1) + rm)
    if win is None:
        return
    sl, xs, ys = win
    dx, dy = x1 - x0, y1 - y0
    length2 = max(dx * dx + dy * dy, 1e-6)
    s = np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    d2 = (xs - (x0 + s * dx)) ** 2 + (ys - (y0 + s * dy)) ** 2
    r = r0 + (r1 - r0) * s
    _combine(target, sl, (2.0 * scale) * np.sqrt(np.clip(r * r - d2, 0, None)), mode)


def long_bone(bone, p0, p1, r, r1=None):
    """A bone with a dense cortical shell: solid cylinder minus most of its marrow."""
    r1 = r if r1 is None else r1
    capsule(bone, p0, p1, r, r1, mode="add")
    capsule(bone, p0, p1, 0.7 * r, 0.7 * r1, mode="add", scale=-0.6)


# ----------------------------------------------------------------------------- the body


@dataclass
class Body:
    """Landmarks of one standing person, in image pixels (x right, y down)."""

    pts: dict
    height: float  # head-to-sole in pixels
    torso_knots: tuple  # (y, half-width, half-depth) rows
    head: tuple  # cx, cy, ax, ay
    side: int = 1  # dominant side for one-sided items (+1 = image right)

    def half_width_at(self, y: float) -> float:
        ys, ws, _ = self.torso_knots
        return float(np.interp(y, ys, ws))


def make_body(subject_rng: np.random.Generator, scan_rng: np.random.Generator, size) -> Body:
    """Body proportions from the subject, pose (arm and leg spread, position) from the scan."""
    H, W = size
    hb = H * subject_rng.uniform(0.84, 0.93)  # body height in pixels
    build = subject_rng.uniform(0.88, 1.18)  # wider or slimmer
    hips = subject_rng.uniform(0.92, 1.12)  # hip-to-shoulder ratio
    top = scan_rng.uniform(0.015 * H, max(0.016 * H, H - hb - 0.015 * H))
    cx = W / 2 + scan_rng.uniform(-0.03, 0.03) * W
    arm = scan_rng.uniform(0.0, 1.0)  # arm abduction
    leg = scan_rng.uniform(0.0, 1.0)  # stance width

    def P(dx, y):
        return (cx + dx * hb * build, top + y * hb)

    pts = {}
    for s, side in ((-1, "l"), (1, "r")):
        pts[f"shoulder_{side}"] = P(s * 0.112, 0.19)
        pts[f"elbow_{side}"] = P(s * (0.145 + 0.035 * arm), 0.36)
        pts[f"wrist_{side}"] = P(s * (0.16 + 0.075 * arm), 0.49)
        pts[f"hand_{side}"] = P(s * (0.163 + 0.085 * arm), 0.545)
        pts[f"hip_{side}"] = P(s * 0.052 * hips, 0.505)
        pts[f"knee_{side}"] = P(s * (0.055 + 0.02 * leg), 0.725)
        pts[f"ankle_{side}"] = P(s * (0.058 + 0.045 * leg), 0.945)
        pts[f"foot_{side}"] = P(s * (0.062 + 0.048 * leg), 0.975)
        pts[f"lung_{side}"] = P(s * 0.05, 0.275)
        pts[f"ear_{side}"] = P(s * 0.044, 0.07)
        pts[f"eye_{side}"] = P(s * 0.018, 0.062)
        pts[f"chest_{side}"] = P(s * 0.052, 0.30)
    pts["head"] = P(0, 0.065)
    pts["mouth"] = P(0, 0.1)
    pts["neck"] = P(0, 0.145)
    pts["sternum"] = P(0, 0.26)
    pts["navel"] = P(0, 0.42)
    pts["waist"] = P(0, 0.462)
    pts["crotch"] = P(0, 0.525)
    pts["top"] = (cx, top)
    w = hb * build
    torso = (
        np.array([0.155, 0.175, 0.2, 0.26, 0.33, 0.4, 0.46, 0.5, 0.535]) * hb + top,
        np.array([0.045, 0.09, 0.118, 0.112, 0.1, 0.088, 0.098 * hips, 0.104 * hips, 0.09 * hips]) * w,
        np.array([0.03, 0.05, 0.062, 0.068, 0.066, 0.06, 0.062, 0.064, 0.05]) * hb * min(build, 1.1),
    )
    head = (cx, top + 0.065 * hb, 0.043 * hb * build**0.3, 0.062 * hb)
    return Body(pts, hb, torso, head, side=1 if scan_rng.random() < 0.5 else -1)


def render_body(body: Body, size) -> tuple[np.ndarray, np.ndarray]:
    """Soft-tissue and bone path-length maps (pixels) of one body."""
    soft = np.zeros(size, np.float32)
    bone = np.zeros(size, np.float32)
    p, hb = body.pts, body.height

    # Torso: elliptical cross-section whose half-width and depth vary down the body.
    ys, half_w, half_d = body.torso_knots
    win = _window(size, body.head[0] - half_w.max(), ys[0], body.head[0] + half_w.max(), ys[-1])
    if win is not None:
        sl, xs, yy = win
        a = np.interp(yy, ys, half_w).astype(np.float32)
        d = np.interp(yy, ys, half_d).astype(np.float32)
        q = 1.0 - ((xs - body.head[0]) / a) ** 2
        np.maximum(soft[sl], 2.0 * d * np.sqrt(np.clip(q, 0, None)), out=soft[sl])

    cx, cy, ax, ay = body.head
    ellipsoid(soft, cx, cy, ax, ay, 0.055 * hb)
    capsule(soft, (cx, cy + 0.5 * ay), p["neck"], 0.028 * hb, 0.032 * hb)
    for s in ("l", "r"):
        ellipsoid(soft, *p[f"shoulder_{s}"], 0.04 * hb, 0.035 * hb, 0.04 * hb)
        capsule(soft, p[f"shoulder_{s}"], p[f"elbow_{s}"], 0.032 * hb, 0.026 * hb)
        capsule(soft, p[f"elbow_{s}"], p[f"wrist_{s}"], 0.026 * hb, 0.018 * hb)
        hx, hy = p[f"hand_{s}"]
        ellipsoid(soft, hx, hy, 0.024 * hb, 0.048 * hb, 0.014 * hb)
        capsule(soft, p[f"hip_{s}"], p[f"knee_{s}"], 0.058 * hb, 0.036 * hb)
        capsule(soft, p[f"knee_{s}"], p[f"ankle_{s}"], 0.036 * hb, 0.022 * hb)
        fx, fy = p[f"foot_{s}"]
        ellipsoid(soft, fx, fy, 0.03 * hb, 0.026 * hb, 0.035 * hb)
        # Lungs: air in place of tissue, so the chest reads darker than the belly.
        lx, ly = p[f"lung_{s}"]
        ellipsoid(soft, lx, ly, 0.042 * hb, 0.085 * hb, 0.045 * hb, mode="sub")

    # Skeleton.
    skull = 0.006 * hb
    ellipsoid(bone, cx, cy, ax, ay, 0.055 * hb, mode="add")
    ellipsoid(bone, cx, cy, ax - skull, ay - skull, 0.055 * hb - skull, mode="add", scale=-1.0)
    mx, my = p["mouth"]
    ellipsoid(bone, mx, my - 0.004 * hb, 0.022 * hb, 0.007 * hb, 0.008 * hb, mode="add")  # teeth
    top_y, bottom_y = p["neck"][1] - 0.02 * hb, p["waist"][1] + 0.02 * hb
    n_vert = 22
    for k in range(n_vert):
        f = k / (n_vert - 1)
        vy = top_y + f * (bottom_y - top_y)
        ellipsoid(bone, cx, vy, (0.011 + 0.011 * f) * hb, 0.0072 * hb, (0.0065 - 0.002 * f) * hb, mode="add")
    rib_t = max(2, int(round(0.0055 * hb)))
    for k in range(10):
        ry = p["neck"][1] + (0.045 + 0.021 * k) * hb
        half = 0.8 * body.half_width_at(ry + 0.03 * hb)
        for a0, a1 in ((180, 260), (280, 360)):
            cv2.ellipse(bone, (int(cx), int(ry + 0.035 * hb)), (int(half), int(0.035 * hb + 0.004 * k * hb)),
                        0, a0, a1, 0.012 * hb, rib_t, cv2.LINE_AA)
    for s, sgn in (("l", -1), ("r", 1)):
        shx, shy = p[f"shoulder_{s}"]
        capsule(bone, (cx + sgn * 0.015 * hb, p["neck"][1] + 0.03 * hb), (shx, shy - 0.01 * hb), 0.006 * hb,
                mode="add")  # clavicle
        ellipsoid(bone, shx, shy, 0.02 * hb, 0.02 * hb, 0.01 * hb, mode="add")  # humeral head
        long_bone(bone, p[f"shoulder_{s}"], p[f"elbow_{s}"], 0.012 * hb, 0.010 * hb)
        ex, ey = p[f"elbow_{s}"]
        wx, wy = p[f"wrist_{s}"]
        for off in (-0.007, 0.007):
            long_bone(bone, (ex + off * hb, ey), (wx + off * hb, wy), 0.0065 * hb)
        hx, hy = p[f"hand_{s}"]
        for off in (-0.012, -0.004, 0.004, 0.012):  # metacarpals / fingers
            long_bone(bone, (wx + off * 0.6 * hb, wy + 0.012 * hb), (hx + off * hb, hy + 0.035 * hb), 0.0035 * hb)
        # Pelvis: an iliac wing and the femoral head in its socket.
        hipx, hipy = p[f"hip_{s}"]
        ellipsoid(bone, cx + sgn * 0.062 * hb, hipy - 0.045 * hb, 0.04 * hb, 0.03 * hb, 0.006 * hb, mode="add")
        ellipsoid(bone, hipx + sgn * 0.006 * hb, hipy, 0.018 * hb, 0.018 * hb, 0.006 * hb, mode="add")
        long_bone(bone, p[f"hip_{s}"], p[f"knee_{s}"], 0.015 * hb, 0.013 * hb)
        kx, ky = p[f"knee_{s}"]
        ellipsoid(bone, kx, ky, 0.014 * hb, 0.012 * hb, 0.01 * hb, mode="add")  # patella
        ax_, ay_ = p[f"ankle_{s}"]
        long_bone(bone, (kx, ky + 0.01 * hb), (ax_, ay_), 0.013 * hb, 0.010 * hb)  # tibia
        long_bone(bone, (kx + sgn * 0.017 * hb, ky + 0.02 * hb), (ax_ + sgn * 0.016 * hb, ay_), 0.005 * hb)  # fibula
        fx, fy = p[f"foot_{s}"]
        ellipsoid(bone, fx, fy, 0.022 * hb, 0.016 * hb, 0.012 * hb, mode="add")
    sx, sy = cx, p["crotch"][1] - 0.06 * hb
    ellipsoid(bone, sx, sy, 0.022 * hb, 0.03 * hb, 0.003 * hb, mode="add")  # sacrum
    ellipsoid(bone, cx, p["crotch"][1] - 0.012 * hb, 0.03 * hb, 0.008 * hb, 0.005 * hb, mode="add")  # pubis
    return soft, bone


# ----------------------------------------------------------------------------- object shapes
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


# ----------------------------------------------------------------------------- placement


def _stamp(obj: np.ndarray, patch: np.ndarray, cx: float, cy: float, thresh: float = 0.05):
    """Add ``patch`` centred at (cx, cy); return the tight box of what landed in the image.

    The box is the extent of pixels carrying at least ``thresh`` of the patch's
    peak: low enough to keep an object's light parts (a shoe's leather next to
    its steel shank), high enough to leave out faint anti-aliased fringes.
    None when nothing landed.
    """
    ph, pw = patch.shape
    x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
    H, W = obj.shape
    ix0, iy0 = max(0, x0), max(0, y0)
    ix1, iy1 = min(W, x0 + pw), min(H, y0 + ph)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    sub = patch[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    peak = float(patch.max())
    if peak <= 0:
        return None
    obj[iy0:iy1, ix0:ix1] += sub
    mask = sub >= thresh * peak
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return (ix0 + cols[0], iy0 + rows[0], ix0 + cols[-1] + 1, iy0 + rows[-1] + 1)


def _on_body(rng, body: Body, y_lo: float, y_hi: float, spread: float = 0.85):
    """A random point inside the torso between fractions y_lo..y_hi of body height."""
    top = body.pts["top"][1]
    y = top + _u(rng, y_lo, y_hi) * body.height
    half = body.half_width_at(y) * spread
    return body.head[0] + _u(rng, -half, half), y


def _anywhere_on_body(rng, body: Body):
    """Torso (most often), an arm or a leg."""
    p, r = body.pts, rng.random()
    if r < 0.6:
        return _on_body(rng, body, 0.22, 0.55)
    side = "l" if rng.random() < 0.5 else "r"
    a, b = ((p[f"shoulder_{side}"], p[f"wrist_{side}"]) if r < 0.75
            else (p[f"hip_{side}"], p[f"ankle_{side}"]))
    t = _u(rng, 0.1, 0.9)
    return a[0] + t * (b[0] - a[0]) + _u(rng, -8, 8), a[1] + t * (b[1] - a[1])


def _segment_angle(a, b) -> float:
    """Rotation (degrees, OpenCV convention) that turns a vertical patch along a -> b."""
    return float(np.degrees(np.arctan2(b[0] - a[0], b[1] - a[1])))


def dress(rng: np.random.Generator, subject_rng: np.random.Generator, body: Body, obj: np.ndarray, k: float):
    """Place this scan's objects into ``obj`` (mu*t map). Returns (boxes, labels).

    Frequencies are set so that over many scans pants button, unknown anomaly,
    shirt button and zipper make up about 65% of objects (seed 000, 3.2),
    with ~4.4 objects a scan (the seed's test split: ~217 objects in 49 scans).
    """
    p, hb = body.pts, body.height
    cx = body.head[0]
    boxes, labels = [], []

    def put(name, patch, x, y, thresh=0.05):
        box = _stamp(obj, patch, x, y, thresh)
        if box is not None and box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            boxes.append(box)
            labels.append(CLS[name])

    # Subject-level items (the same person keeps them between scans).
    n_implants = int(subject_rng.random() < 0.08) * int(subject_rng.integers(1, 3))
    has_piercings = subject_rng.random() < 0.06
    n_piercings = int(subject_rng.integers(1, 3))
    piercing_spots = [subject_rng.integers(0, 6) for _ in range(2)]
    ankle_monitor = subject_rng.random() < 0.022
    monitor_side = "l" if subject_rng.random() < 0.5 else "r"
    implant_sites = [subject_rng.integers(0, 5) for _ in range(2)]
    implant_seeds = [int(subject_rng.integers(2**31)) for _ in range(2)]

    # Trousers.
    waist_y = p["waist"][1] + _u(rng, -0.01, 0.01) * hb
    fly_x = cx + _u(rng, -4, 4)
    pants = rng.choice(["jeans_zip", "button_fly", "zip_only", "button_only", "plain"],
                       p=[0.40, 0.08, 0.09, 0.2, 0.23])
    zips = []
    if pants in ("jeans_zip", "button_only"):
        put("pants_button", shape_pants_button(rng, k), fly_x, waist_y)
    if pants == "button_fly":
        for j in range(int(rng.integers(3, 5))):
            put("pants_button", shape_pants_button(rng, k), fly_x + _u(rng, -2, 2), waist_y + j * _u(rng, 22, 26) * k)
    if pants in ("jeans_zip", "zip_only"):
        length = _u(rng, 0.055, 0.075) * hb / k
        zips.append((fly_x, waist_y + 0.012 * hb, length))
    if rng.random() < 0.06:  # a jacket zipped up the front
        length = _u(rng, 0.15, 0.25) * hb / k
        zips.append((cx + _u(rng, -3, 3), p["sternum"][1] - 0.06 * hb, length))
    for zx, zy, length in zips:
        patch = shape_zipper(rng, k, length)
        put("zipper", patch, zx, zy + patch.shape[0] / 2)
        if rng.random() < 0.55:
            head = shape_zipper_head(rng, k)
            put("zipper_head", head, zx + _u(rng, -2, 2), zy + _u(rng, 0.0, 0.3) * patch.shape[0] + head.shape[0] / 2)
    if pants != "plain" and rng.random() < 0.3:
        put("belt_buckle", shape_belt_buckle(rng, k), cx + _u(rng, -5, 5), waist_y - 0.012 * hb)

    # Shirt buttons down the midline.
    if rng.random() < 0.13:
        n = int(rng.integers(4, 7))
        gap = _u(rng, 52, 72) * k
        y0 = p["neck"][1] + _u(rng, 0.03, 0.06) * hb
        bx = cx + _u(rng, -5, 5)
        for j in range(n):
            y = y0 + j * gap
            if y < waist_y - 0.02 * hb:
                put("shirt_button", shape_shirt_button(rng, k), bx + _u(rng, -1.5, 1.5), y)

    # Footwear.
    if rng.random() < 0.09:
        for s in ("l", "r"):
            fx, fy = p[f"foot_{s}"]
            patch = shape_shoes(rng, k)
            put("shoes", patch, fx, fy + 0.026 * hb - patch.shape[0] / 2)
    elif rng.random() < 0.026:
        s = "l" if rng.random() < 0.5 else "r"
        hx, hy = p[f"hand_{s}"]
        put("holding_shoes", shape_holding_shoes(rng, k), hx, hy + 0.06 * hb)

    # Accessories.
    if rng.random() < 0.15:
        s = "l" if rng.random() < 0.6 else "r"
        ang = _segment_angle(p[f"elbow_{s}"], p[f"wrist_{s}"])
        wx, wy = p[f"wrist_{s}"]
        put("watch", shape_watch(rng, k, ang), wx, wy - 0.012 * hb)
    if rng.random() < 0.018:
        for s in ("l", "r"):
            ang = _segment_angle(p[f"elbow_{s}"], p[f"wrist_{s}"])
            wx, wy = p[f"wrist_{s}"]
            put("cuffs", shape_cuffs(rng, k, ang), wx, wy)
    if rng.random() < 0.13:
        chest_w = 2 * body.half_width_at(p["chest_l"][1]) * 0.9
        put("bra", shape_bra(rng, k, chest_w), cx, p["chest_l"][1] + 0.01 * hb)
    if rng.random() < 0.055:
        ex = (p["eye_l"][0] + p["eye_r"][0]) / 2
        put("glasses", shape_glasses(rng, 1.0, 2 * body.head[2] * 0.95), ex, p["eye_l"][1])
    if rng.random() < 0.065:
        kind = rng.choice(["necklace", "ring", "bracelet", "earring"], p=[0.4, 0.3, 0.2, 0.1])
        s = "l" if rng.random() < 0.5 else "r"
        if kind == "necklace":
            patch = shape_jewelry(rng, k, kind, neck_width=0.06 * hb)
            put("jewelry", patch, cx, p["neck"][1] + patch.shape[0] / 2 - 0.005 * hb)
        elif kind == "ring":
            hx, hy = p[f"hand_{s}"]
            put("jewelry", shape_jewelry(rng, k, kind), hx + _u(rng, -8, 8), hy + _u(rng, 0.0, 0.03) * hb)
        elif kind == "bracelet":
            wx, wy = p[f"wrist_{s}"]
            put("jewelry", shape_jewelry(rng, k, kind), wx, wy + 0.01 * hb)
        else:
            ex, ey = p[f"ear_{s}"]
            put("jewelry", shape_jewelry(rng, k, "ring"), ex, ey + 0.03 * hb)
    if rng.random() < 0.065:  # a key: pockets mostly, anywhere sometimes
        if rng.random() < 0.7:
            s = 1 if rng.random() < 0.5 else -1
            x, y = cx + s * _u(rng, 0.05, 0.09) * hb, waist_y + _u(rng, 0.0, 0.06) * hb
        else:
            x, y = _anywhere_on_body(rng, body)
        put("key", shape_key(rng, k), x, y)
    if rng.random() < 0.035:
        where = rng.random()
        if where < 0.5:
            x, y = _on_body(rng, body, 0.33, 0.48, spread=0.5)  # swallowed: stomach and bowel
        elif where < 0.8:
            x, y = cx + _u(rng, -0.02, 0.02) * hb, p["crotch"][1] - _u(rng, 0.0, 0.03) * hb
        else:
            x, y = _anywhere_on_body(rng, body)
        put("drugs", shape_drugs(rng, k), x, y, thresh=0.3)
    for _ in range(int(rng.poisson(0.72))):
        x, y = _anywhere_on_body(rng, body)
        put("unknown_anomaly", shape_unknown_anomaly(rng, k), x, y)

    # Subject-level items, drawn with the subject's own generator state.
    if has_piercings:
        spots = [p["ear_l"], p["ear_r"], (cx + 0.01 * hb, p["eye_l"][1] + 0.02 * hb), (cx, p["mouth"][1] + 0.006 * hb),
                 p["navel"], p["chest_r"]]
        for j in range(n_piercings):
            x, y = spots[piercing_spots[j]]
            put("piercing", shape_piercing(np.random.default_rng(implant_seeds[j] + 7), k), x, y)
    for j in range(n_implants):
        irng = np.random.default_rng(implant_seeds[j])
        site = implant_sites[j]
        side = "l" if irng.random() < 0.5 else "r"
        if site == 0:  # plate or nail along the femur
            a, b = p[f"hip_{side}"], p[f"knee_{side}"]
            patch = shape_surgical_implant(irng, k, length=0.6 * np.hypot(b[0] - a[0], b[1] - a[1]) / k,
                                           kind=irng.choice(["plate", "nail"]))
        elif site == 1:  # tibia
            a, b = p[f"knee_{side}"], p[f"ankle_{side}"]
            patch = shape_surgical_implant(irng, k, length=0.45 * np.hypot(b[0] - a[0], b[1] - a[1]) / k, kind="plate")
        elif site == 2:  # forearm
            a, b = p[f"elbow_{side}"], p[f"wrist_{side}"]
            patch = shape_surgical_implant(irng, k, length=0.5 * np.hypot(b[0] - a[0], b[1] - a[1]) / k, kind="plate")
        elif site == 3:  # spine screws
            a = (cx, p["navel"][1] - 0.04 * hb)
            b = (cx, p["navel"][1] + 0.02 * hb)
            patch = shape_surgical_implant(irng, k, kind="screws")
        else:  # hip replacement
            a, b = p[f"hip_{side}"], p[f"knee_{side}"]
            patch = shape_surgical_implant(irng, k, kind="hip")
        ang = _segment_angle(a, b)
        if abs(ang) > 0.5:
            patch = _rotate(patch, ang)
        if site == 4:  # the ball sits in the hip socket, the stem runs down the femur
            x, y = a[0] + 0.005 * hb * (1 if side == "r" else -1), a[1] + patch.shape[0] / 2 - 0.02 * hb
        else:  # centred on its bone segment
            x, y = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        put("surgical_implant", patch, x, y)
    if ankle_monitor:
        ax_, ay_ = p[f"ankle_{monitor_side}"]
        put("ankle_monitor", shape_ankle_monitor(rng, k, leg_width=2 * 0.024 * hb), ax_, ay_ - 0.03 * hb)
    return boxes, labels


# ----------------------------------------------------------------------------- one scan


def _subject_index(seed: int, index: int) -> int:
    """The first scan of this scan's person: ~30% of scans repeat the previous person."""
    base = index
    while base > 0 and np.random.default_rng((seed, base, 1)).random() < 0.3:
        base -= 1
    return base


def subject_id(seed: int, index: int) -> str:
    return f"subject_{_subject_index(seed, index):05d}"


def generate_scan(seed: int, index: int, size=DEFAULT_SIZE):
    """One scan: (uint16 HxW image, (n, 4) xyxy boxes on whole pixels, (n,) labels, subject id)."""
    H, W = size
    k = H / DEFAULT_SIZE[0]  # object sizes follow the image scale
    base = _subject_index(seed, index)
    subject_rng = np.random.default_rng((seed, base, 0))
    rng = np.random.default_rng((seed, index, 2))
    body = make_body(subject_rng, rng, size)
    soft, bone = render_body(body, size)
    obj = np.zeros(size, np.float32)
    boxes, labels = dress(rng, subject_rng, body, obj, k)

    mu_t = MU_SOFT * soft
    mu_t += MU_BONE * bone
    mu_t += obj
    mu_t = cv2.GaussianBlur(mu_t, (0, 0), 0.7 * k)  # detector blur

    # Detector: photons I0*exp(-mu*t) with per-row/column gain, then noise.
    photons = _u(rng, 800, 2500)
    gain_rows = (1.0 + 0.012 * rng.standard_normal(H, dtype=np.float32))[:, None]
    gain_cols = (1.0 + 0.006 * rng.standard_normal(W, dtype=np.float32))[None, :]
    heel = np.linspace(0.92, 1.08, W, dtype=np.float32)[None, :]  # anode heel effect: a ramp across
    if rng.random() < 0.5:
        heel = heel[:, ::-1]
    lam = (photons * np.exp(-mu_t)) * (gain_rows * gain_cols * heel)
    # Poisson photon noise. Where the expected count is >= 30 its normal
    # approximation is accurate and ~10x cheaper; exact Poisson where it is low
    # (behind metal and bone), where the difference shows.
    counts = lam + np.sqrt(lam) * rng.standard_normal(size, dtype=np.float32)
    low = lam < 30
    counts[low] = rng.poisson(lam[low])
    counts += _u(rng, 2.0, 4.0) * rng.standard_normal(size, dtype=np.float32)  # electronic noise
    value = np.log(photons / np.maximum(counts, 0.5)) * _u(rng, 6500, 7500) + _u(rng, 800, 1600)
    image = np.clip(value, 0, 65535).astype(np.uint16)
    box_arr = np.asarray(boxes, np.float64).reshape(-1, 4)
    return image, box_arr, np.asarray(labels, np.int64), subject_id(seed, index)


# ----------------------------------------------------------------------------- the data set


def scan_name(index: int) -> str:
    return f"scan_{index:05d}"


def _write_one(args) -> tuple[int, list, list, str, int, int]:
    """Generate and write one scan (atomically); reuse it if both files exist."""
    from rarespot.io.annotations import parse_voc_xml, voc_xml
    from rarespot.io.atomic import atomic_write_text
    from rarespot.io.images import write_image

    seed, index, size, out_dir = args
    out = Path(out_dir)
    png = out / "images" / f"{scan_name(index)}.png"
    xml = out / "annotations" / f"{scan_name(index)}.xml"
    if png.is_file() and xml.is_file():  # resume: files depend only on (seed, index)
        try:
            info = parse_voc_xml(xml)
            labels = [CLS[n] for n in info["names"]]
            return index, info["boxes"], labels, info["subject"], info["width"], info["height"]
        except Exception:
            pass  # unreadable leftover: regenerate
    image, boxes, labels, subject = generate_scan(seed, index, size)
    rec = ImageRecord(Path("images") / png.name, size[1], size[0], boxes, labels, subject)
    write_image(png, image, fast=True)
    atomic_write_text(xml, voc_xml(rec, png.name, CLASS_NAMES))
    return index, boxes.tolist(), labels.tolist(), subject, size[1], size[0]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _claim_folder(out: Path, seed: int, size: tuple[int, int]) -> None:
    """Resume only what this generator made with these settings; refuse anything else.

    ``synth.json`` records the settings; without it, a folder that already
    holds images is someone's data, not ours to add to.
    """
    import json

    from rarespot.errors import InputError
    from rarespot.io.atomic import atomic_write_text

    wanted = {"generator": "rarespot.synth", "version": GENERATOR_VERSION, "seed": seed, "size": list(size)}
    manifest = out / "synth.json"
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            found = None
        if found != wanted:
            was = (f"seed {found.get('seed')}, size {found.get('size')}, generator v{found.get('version')}"
                   if isinstance(found, dict) else "unreadable settings")
            raise InputError(out, f"holds synthetic scans made with other settings ({was}); "
                                  f"use another folder, or the same seed and size to resume")
    elif (out / "images").is_dir() and any((out / "images").iterdir()):
        raise InputError(out, "already holds images that rarespot synth did not make; choose an empty folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, json.dumps(wanted) + "\n")


def generate(
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    workers: int | None = None,
    progress: bool = True,
) -> DetectionDataset:
    """Write ``n`` synthetic scans (16-bit PNG + VOC XML + classes.txt) to ``out_dir``.

    size: (height, width), default the seed's 1500 x 1216.
    workers: processes (default: all CPU cores); the files do not depend on it.
    Interrupted runs resume: existing scan files are kept (``synth.json``
    records seed and size; a folder made with other settings is refused).
    """
    from rarespot.io.atomic import atomic_write_text

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    height, width = int(size[0]), int(size[1])
    if height < 200 or width < 150:
        raise ValueError(f"size {size} too small for a body scan; use at least 200 x 150")
    out = Path(out_dir)
    _claim_folder(out, seed, (height, width))
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.txt", "\n".join(CLASS_NAMES) + "\n")
    workers = max(1, min(workers or os.cpu_count() or 1, max(n, 1)))
    jobs = [(seed, i, (height, width), str(out)) for i in range(n)]

    results = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("synthesising scans", total=n)
    try:
        if workers == 1:
            threads = cv2.getNumThreads()
            _init_worker()  # as in a worker, but only for this loop: the caller's OpenCV keeps its threads
            try:
                for job in jobs:
                    results.append(_write_one(job))
                    if bar:
                        bar.advance(task)
            finally:
                cv2.setNumThreads(threads)
        else:
            # Workers start from a clean process (forkserver/spawn), not a fork of
            # this one: forking a parent whose OpenCV or torch thread pools are
            # already running can deadlock the children.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=ctx) as pool:
                for res in pool.map(_write_one, jobs, chunksize=2):
                    results.append(res)
                    if bar:
                        bar.advance(task)
    finally:
        if bar:
            bar.stop()
    records = [
        ImageRecord(Path("images") / f"{scan_name(i)}.png", w, h, boxes, labels, subject)
        for i, boxes, labels, subject, w, h in sorted(results)
    ]
    return DetectionDataset(list(CLASS_NAMES), records, out)
