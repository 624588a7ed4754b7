"""A body-shaped attenuation phantom: one standing person as path-length maps.

Head, neck, torso, arms, hands, legs and feet as ellipsoids and tapered
capsules whose *path length* varies across them (soft-tissue gradients), lungs
as air inside the chest, and a brighter skeleton (skull, teeth, spine, ribs,
clavicles, pelvis, long bones with a cortical shell). ``scan`` turns the maps
into attenuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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

