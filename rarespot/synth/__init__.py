"""Synthetic full-body X-ray scans: rarespot's embedded default data.

The seed's THEIA dataset (seed 000, section 3.2) is private: 247 16-bit
scans of 1500 x 1216 pixels of standing people, annotated in PASCAL VOC with
18 classes of foreign objects and a long tail (pants button, unknown anomaly,
shirt button and zipper together ~65% of objects). This package makes a
stand-in with the same shape, so every pipeline runs out of the box.

Modules, in reading order:

``phantom`` (a body-shaped attenuation phantom: path-length maps of soft
tissue and bone) -> ``shapes`` (the 18 object classes drawn as small
``mu*t`` patches) -> ``dress`` (the classes, and where a person carries
each object: boxes and labels) -> ``scan`` (one scan: who the subject is,
body + objects through X-ray physics and detector noise, 16 bits) ->
``writer`` (``generate``: many scans written in parallel as a resumable VOC
folder).

Every scan depends only on ``(seed, index)``: generating in parallel, in a
different order, or resuming an interrupted run gives identical files.
Output layout (VOC, as ``rarespot.io.annotations`` reads it)::

    out/images/scan_00000.png      16-bit grey, height 1500 x width 1216
    out/annotations/scan_00000.xml PASCAL VOC, with <subject>
    out/classes.txt                the 18 classes, in the seed's order
"""

from rarespot.synth.dress import CLASS_NAMES, CLS, dress
from rarespot.synth.phantom import Body, capsule, ellipsoid, long_bone, make_body, render_body
from rarespot.synth.scan import DEFAULT_SIZE, MU_BONE, MU_SOFT, generate_scan, subject_id
from rarespot.synth.shapes import (
    SS,
    Sketch,
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
from rarespot.synth.writer import GENERATOR_VERSION, generate, scan_name

__all__ = [
    "CLASS_NAMES", "CLS", "DEFAULT_SIZE", "GENERATOR_VERSION", "MU_BONE", "MU_SOFT", "SS",
    "Body", "Sketch", "capsule", "dress", "ellipsoid", "generate", "generate_scan", "long_bone", "make_body",
    "render_body", "scan_name", "subject_id",
    "shape_ankle_monitor", "shape_belt_buckle", "shape_bra", "shape_cuffs", "shape_drugs", "shape_glasses",
    "shape_holding_shoes", "shape_jewelry", "shape_key", "shape_pants_button", "shape_piercing",
    "shape_shirt_button", "shape_shoes", "shape_surgical_implant", "shape_unknown_anomaly", "shape_watch",
    "shape_zipper", "shape_zipper_head",
]
