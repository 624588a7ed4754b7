"""The experiment runner's splits, pinned image by image.

The OPIXray studies' results depend on which images the runner picks: the holdout, the
seeded split, the long-tail subsample and the image budgets. These tests run
``prepare_splits`` on a synthetic stand-in with OPIXray's classes and the two OPIXray
plans' data sections, and compare every side with the images the runner picked before
the split code moved to ``rarespot.io.split`` (values recorded from that code). A change
here changes the studies' data: it needs a new study folder, not a new expected list.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from rarespot.io.annotations import save_dataset
from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.images import write_image

OPIXRAY_CLASSES = ["Scissor", "Folding_Knife", "Straight_Knife", "Utility_Knife", "Multi-tool_Knife"]
LONGTAIL = (
    "longtail: {ratios: [1.0, 0.3333, 0.1, 0.0333, 0.01], "
    "order: [Straight_Knife, Folding_Knife, Scissor, Utility_Knife, Multi-tool_Knife], seed: 0}"
)


def _opixray_like(folder, n: int = 150) -> None:
    """n tiny scans, mostly one object each (OPIXray's way), some with two, a few with none."""
    rng = np.random.default_rng(7)
    pixels = np.zeros((8, 8, 3), np.uint8)
    images = folder / "src"
    records = []
    for i in range(n):
        path = write_image(images / f"img{i:03d}.png", pixels)
        k = 0 if i % 29 == 0 else (2 if i % 7 == 0 else 1)
        labels = rng.integers(0, len(OPIXRAY_CLASSES), k)
        boxes = np.tile([1.0, 1.0, 6.0, 6.0], (k, 1))
        records.append(ImageRecord(path, 8, 8, boxes, labels))
    save_dataset(DetectionDataset(OPIXRAY_CLASSES, records), folder / "ds", "coco")


def _plan(tmp_path, data: str, budget: str):
    from rarespot.experiment.plan import load_plan

    path = tmp_path / "plan.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: pinned
            data: {{{data}}}
            base: {{tiles: 2, tile_size: 256}}
            budget: {{{budget}}}
            seeds: [0]
            studies:
              - name: tiling
                form: tiling
                cells:
                  - {{label: 2 x 256, set: {{tiles: 2, tile_size: 256}}}}
            """
        )
    )
    return load_plan(path)


# The images (by number) on each side, as the runner picked them before the split code moved.
EXPECTED = {
    "opixray": {
        "train": [
            0, 1, 2, 3, 6, 9, 15, 16, 18, 23, 42, 45, 48, 51, 58, 63, 68, 70, 82, 83, 98, 101, 104, 106, 108,
            109, 112, 115, 116, 123, 126, 130, 132, 133, 137, 142, 145, 146, 147, 148
        ],
        "val": [
            13, 25, 38, 50, 75, 88, 89, 111, 117, 139
        ],
        "test": [
            31, 34, 37, 39, 54, 57, 61, 72, 74, 78, 86, 87, 97, 99, 110, 118, 125, 144
        ],
    },
    "opixray-longtail": {
        "train": [
            0, 5, 15, 17, 18, 27, 30, 44, 53, 58, 67, 68, 73, 104, 108, 109, 116, 119, 120, 124, 131, 134, 142,
            145, 146
        ],
        "val": [
            13, 25, 38, 50, 75, 88, 89, 111, 117, 139
        ],
        "test": [
            31, 34, 37, 39, 54, 57, 61, 72, 74, 78, 86, 87, 97, 99, 110, 118, 125, 144
        ],
    },
    "opixray split seed 1": {
        "train": [
            0, 18, 23, 25, 37, 38, 58, 67, 94, 99, 108, 109, 111, 116, 117, 118, 119, 131, 145, 146
        ],
        "val": [
            2, 3, 10, 52, 64, 68, 89, 92, 104, 129
        ],
        "test": [
            9, 32, 34, 41, 44, 45, 48, 54, 74, 83, 86, 90, 115, 122, 123, 130, 134, 144
        ],
    },
}

DATA = {
    "opixray": ("holdout: {share: 0.2, seed: 0}, fractions: [0.7, 0.15, 0.15], split_seed: 0",
                "images: 40, val_images: 10"),
    "opixray-longtail": ("holdout: {share: 0.2, seed: 0}, fractions: [0.7, 0.15, 0.15], split_seed: 0, " + LONGTAIL,
                         "val_images: 10"),
    "opixray split seed 1": ("holdout: {share: 0.2, seed: 0}, fractions: [0.7, 0.15, 0.15], split_seed: 1, " + LONGTAIL,
                             "images: 20, val_images: 10"),
}


@pytest.mark.parametrize("name", list(DATA))
def test_runner_picks_the_same_images_as_before(name, tmp_path):
    from rarespot.experiment.detection import prepare_splits

    _opixray_like(tmp_path)
    data, budget = DATA[name]
    plan = _plan(tmp_path, f"path: {tmp_path / 'ds'}, {data}", budget)
    splits = prepare_splits(plan, tmp_path / "study")
    picked = {side: [int(r.path.stem[3:]) for r in ds.records] for side, ds in splits.items()}
    assert picked == EXPECTED[name]
