"""The seed's augmentations: each fires with its own probability, boxes follow, gray stays gray."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.detect.augment import apply_augmentation, build_augmentation
from rarespot.detect.config import DetectTrainConfig


def tile() -> np.ndarray:
    img = np.full((64, 80, 3), 40, dtype=np.uint8)
    img[10:20, 5:15] = 200
    return img


def test_no_augmentation_is_none():
    assert build_augmentation([]) is None
    img = tile()
    out, boxes, labels = apply_augmentation(None, img, np.array([[5.0, 10, 15, 20]]), np.array([2]))
    assert out is img and boxes.tolist() == [[5, 10, 15, 20]] and labels.tolist() == [2]


def test_flip_moves_boxes_exactly():
    aug = build_augmentation(["hflip"], p=1.0, seed=0)
    out, boxes, labels = apply_augmentation(aug, tile(), np.array([[5.0, 10, 15, 20], [70, 0, 80, 64]]), np.array([2, 0]))
    np.testing.assert_allclose(boxes, [[65, 10, 75, 20], [0, 0, 10, 64]])
    assert labels.tolist() == [2, 0]
    assert (out[10:20, 65:75] == 200).all()  # the bright object moved with its box


def test_probability_zero_changes_nothing():
    aug = build_augmentation(["hflip", "blur", "rbc", "noise"], p=0.0, seed=0)
    img = tile()
    out, boxes, _ = apply_augmentation(aug, img, np.array([[5.0, 10, 15, 20]]), np.array([1]))
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(boxes, [[5, 10, 15, 20]])


def test_each_augmentation_fires_about_half_the_time():
    aug = build_augmentation(["hflip"], p=0.5, seed=1)
    flips = 0
    for _ in range(200):
        _, boxes, _ = apply_augmentation(aug, tile(), np.array([[5.0, 10, 15, 20]]), np.array([0]))
        flips += boxes[0, 0] == 65
    assert 70 < flips < 130


def test_photometric_augmentations_keep_boxes_and_gray():
    aug = build_augmentation(["blur", "rbc", "noise"], p=1.0, seed=3)
    img = tile()
    out, boxes, _ = apply_augmentation(aug, img, np.array([[5.0, 10, 15, 20]]), np.array([0]))
    np.testing.assert_allclose(boxes, [[5, 10, 15, 20]])
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert not np.array_equal(out, img)
    # three equal channels in, three equal channels out (noise is not drawn per channel)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 1], out[..., 2])


def test_empty_tile_has_no_boxes_after_augmentation():
    aug = build_augmentation(["hflip"], p=1.0, seed=0)
    _, boxes, labels = apply_augmentation(aug, tile(), np.zeros((0, 4)), np.zeros(0, dtype=int))
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_unknown_augmentation_is_rejected():
    with pytest.raises(ValueError, match="mosaic"):
        build_augmentation(["hflip", "mosaic"])
    with pytest.raises(ValueError, match="unknown augmentation"):
        DetectTrainConfig(aug="hflip,rotate")


def test_config_parses_comma_lists():
    assert DetectTrainConfig(aug="hflip, blur,rbc").aug == ["hflip", "blur", "rbc"]
    assert DetectTrainConfig(aug="none").aug == []
