"""The seed's training augmentations (seed 000, section 3.4), with albumentations.

Each augmentation fires independently with its own probability (seed: 0.5):
horizontal flip, Gaussian blur, random brightness/contrast, Gaussian noise.
Boxes follow (only the flip moves them).

They run on the 8-bit model-input tile, i.e. after ``to_model_input``. Why not
on the 16-bit tile: ``to_model_input`` windows each scan by percentiles of the
*whole* scan, and test-time tiles are windowed the same way; augmenting the
16-bit tile first would shift those percentiles per tile and the model would
train on a mapping it never sees at test time. Brightness/contrast, blur and
noise on the windowed 8-bit tile are exactly what the seed describes, and
8-bit keeps albumentations on its fast paths. Gray scans arrive as three equal
channels; noise is drawn once per pixel (not per channel) so they stay gray.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AUGMENTATION_NAMES = ("hflip", "blur", "rbc", "noise")


def build_augmentation(names: Sequence[str], p: float = 0.5, seed: int | None = None):
    """An albumentations ``Compose`` for the named augmentations, or None if there are none.

    Call it as ``aug(image=uint8_hwc, bboxes=xyxy_pixels, labels=int_labels)``.
    """
    names = list(dict.fromkeys(names))  # keep order, drop repeats
    unknown = [n for n in names if n not in AUGMENTATION_NAMES]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {list(AUGMENTATION_NAMES)}")
    if not names:
        return None
    import albumentations as A

    factories = {
        "hflip": lambda: A.HorizontalFlip(p=p),
        "blur": lambda: A.GaussianBlur(blur_limit=(3, 7), p=p),
        "rbc": lambda: A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=p),
        # std as a fraction of the 0..255 range: 2-8 grey levels, visible but not drowning small objects.
        "noise": lambda: A.GaussNoise(std_range=(0.01, 0.03), per_channel=False, p=p),
    }
    # Only the flip moves boxes; without it albumentations would warn that box processing is unused.
    moves_boxes = "hflip" in names
    bbox_params = (
        A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=0.0) if moves_boxes else None
    )
    return A.Compose([factories[n]() for n in names], bbox_params=bbox_params, seed=seed)


def apply_augmentation(aug, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
    """Run ``aug`` on one tile; returns (image, boxes (n,4) float64, labels (n,) int64)."""
    if aug is None:
        return image, boxes, labels
    if "bboxes" not in aug.processors:  # photometric only: boxes stay where they are
        return aug(image=image)["image"], boxes, labels
    out = aug(image=image, bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=np.asarray(labels))
    new_boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
    new_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    return out["image"], new_boxes, new_labels
