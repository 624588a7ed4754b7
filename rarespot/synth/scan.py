"""One scan: a subject's body and this scan's objects through X-ray physics, as 16 bits.

Physics in the log domain: transmission ``I = I0 * exp(-sum mu*t)``, objects
multiply in (``I = I_body * exp(-mu_obj * t_obj)``, i.e. their ``mu*t`` adds),
then low-dose photon (Poisson) and electronic (Gaussian) noise,
per-row/column detector gain, and ``-log(I/I0)`` stored as 16-bit, so dense
is bright and air is dark.

Subjects: about 30% of scans repeat an earlier person (same body, same
implants and piercings, new clothes and pose), so grouped splits matter.
"""

from __future__ import annotations

import cv2
import numpy as np

from rarespot.synth.dress import dress
from rarespot.synth.phantom import make_body, render_body
from rarespot.synth.shapes import _u

DEFAULT_SIZE = (1500, 1216)  # (height, width): a standing body is taller than wide

MU_SOFT = 0.0115  # per pixel: ~2.0 of mu*t through the middle of the torso
MU_BONE = 0.034  # ~3x soft tissue


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

