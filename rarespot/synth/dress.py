"""The 18 classes, and where people carry them: objects placed on a body, with their boxes.

Buttons on the midline, shoes on the feet, a watch at a wrist, glasses on the
face, an implant along a bone. Implants, piercings and an ankle monitor belong
to the subject (drawn from the subject's generator, so a returning person
keeps them); clothes and everything else change from scan to scan.
"""

from __future__ import annotations

import numpy as np

from rarespot.synth.phantom import Body
from rarespot.synth.shapes import (
    _rotate,
    _u,
    shape_ankle_monitor,
    shape_belt_buckle,
    shape_bra,
    shape_cuffs,
    shape_drugs,
    shape_glasses,
    shape_holding_shoes,
    shape_jewelry,
    shape_key,
    shape_pants_button,
    shape_piercing,
    shape_shirt_button,
    shape_shoes,
    shape_surgical_implant,
    shape_unknown_anomaly,
    shape_watch,
    shape_zipper,
    shape_zipper_head,
)

# The seed's 18 classes, in the order it lists them (snake_case for command lines).
CLASS_NAMES = [
    "zipper", "watch", "unknown_anomaly", "surgical_implant", "shoes", "piercing", "key", "jewelry",
    "holding_shoes", "glasses", "drugs", "cuffs", "bra", "belt_buckle", "zipper_head", "ankle_monitor",
    "shirt_button", "pants_button",
]
CLS = {name: i for i, name in enumerate(CLASS_NAMES)}


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

