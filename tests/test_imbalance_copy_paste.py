"""X-ray copy-paste: exact transmission maths, dtype kept, pastes inside the body mask, seeded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rarespot.errors import InputError
from rarespot.imbalance.copy_paste import XrayCopyPaste, body_mask, is_pseudo_colour, transmission_blend
from rarespot.io.dataset import DetectionDataset, ImageRecord

AIR16 = 65535


def _gray_donors(tmp_path, n=2, value=32768):
    """16-bit donors: air everywhere, one 10x10 object of the given value; classes 0 and 1."""
    records = []
    for i in range(n):
        img = np.full((40, 40), AIR16, dtype=np.uint16)
        img[10:20, 10:20] = value
        path = tmp_path / f"donor{i}.png"
        cv2.imwrite(str(path), img)
        records.append(ImageRecord(path, 40, 40, [[10, 10, 20, 20]], [i % 2]))
    return DetectionDataset(["common", "rare"], records)


def _gray_target(body_value=30000):
    img = np.full((64, 64), AIR16, dtype=np.uint16)
    img[8:56, 8:56] = body_value
    return img


def test_transmission_blend_exact_8_and_16_bit():
    base16 = np.array([[60000, 1000], [65535, 0]], dtype=np.uint16)
    donor16 = np.array([[32768, 65535], [1, 40000]], dtype=np.uint16)
    out = transmission_blend(base16, donor16, 65535)
    assert out.dtype == np.uint16
    expected = np.rint(base16.astype(np.float64) * donor16 / 65535).astype(np.uint16)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0] == 30000  # 60000 * 32768 / 65535 = 30000.46
    assert out[0, 1] == 1000  # donor at air level leaves the base unchanged
    base8 = np.array([[200, 100]], dtype=np.uint8)
    np.testing.assert_array_equal(transmission_blend(base8, np.array([[255, 51]]), 255), [[200, 20]])
    assert transmission_blend(base8, np.array([[255, 51]]), 255).dtype == np.uint8
    with pytest.raises(ValueError):
        transmission_blend(base8, base8, 0)


def test_body_mask_excludes_air_and_padding():
    img = _gray_target()
    mask = body_mask(img, body_threshold=0.9, erode_frac=0.0, close_frac=0.0)
    assert mask[8:56, 8:56].all() and mask.sum() == 48 * 48
    padded = img.copy()
    padded[:, 60:] = 0
    assert not body_mask(padded, close_frac=0.0, erode_frac=0.0, pad_value=0)[:, 60:].any()
    eroded = body_mask(img, erode_frac=0.1, close_frac=0.0)
    assert eroded.sum() < mask.sum() and not eroded[8, 8]


def test_gray_paste_exact_values_dtype_and_box(tmp_path):
    donors = _gray_donors(tmp_path)
    cp = XrayCopyPaste(donors, p=1.0, max_objects=1, scale=(1.0, 1.0), hflip=False, min_inside=1.0, erode_frac=0.0)
    target = _gray_target()
    out, boxes, labels = cp(target, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.random.default_rng(0))
    assert out.dtype == np.uint16 and out.shape == target.shape
    assert len(boxes) == 1 and labels[0] in (0, 1)
    x1, y1, x2, y2 = boxes[0]
    assert (x2 - x1, y2 - y1) == (10.0, 10.0)
    xi, yi = int(x1), int(y1)
    assert x1 == xi and y1 == yi  # scale 1: whole-pixel placement
    # Inside the object: I = I_a * I_b / I_max exactly; elsewhere unchanged (donor background is air).
    expected_obj = transmission_blend(np.array([30000], np.uint16), np.array([32768]), AIR16)[0]
    assert (out[yi : yi + 10, xi : xi + 10] == expected_obj).all()
    changed = out != target
    assert changed.sum() == 100
    # The paste lies on the body mask.
    mask = body_mask(target, erode_frac=0.0)
    assert mask[yi : yi + 10, xi : xi + 10].all()
    assert target is not out and (target[8:56, 8:56] == 30000).all()  # input untouched


def test_paste_avoids_existing_boxes(tmp_path):
    donors = _gray_donors(tmp_path)
    cp = XrayCopyPaste(donors, p=1.0, max_objects=3, scale=(1.0, 1.0), max_overlap=0.0, min_inside=1.0)
    existing = np.array([[8.0, 8.0, 40.0, 40.0]])
    rng = np.random.default_rng(1)
    for _ in range(5):
        _, boxes, labels = cp(_gray_target(), existing, np.array([0]), rng)
        np.testing.assert_array_equal(boxes[0], existing[0])
        for b in boxes[1:]:
            ix = max(0.0, min(b[2], 40) - max(b[0], 8))
            iy = max(0.0, min(b[3], 40) - max(b[1], 8))
            assert ix * iy == 0
        # pasted boxes do not overlap each other either
        for i in range(1, len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                assert max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1])) == 0


def test_no_paste_on_empty_background(tmp_path):
    donors = _gray_donors(tmp_path)
    cp = XrayCopyPaste(donors, p=1.0)
    air_only = np.full((64, 64), AIR16, dtype=np.uint16)
    out, boxes, _ = cp(air_only, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.random.default_rng(0))
    assert len(boxes) == 0 and (out == air_only).all()


def test_seeded_determinism_and_flip_scale(tmp_path):
    donors = _gray_donors(tmp_path)

    def run(seed):
        cp = XrayCopyPaste(donors, p=1.0, max_objects=2, scale=(0.8, 1.25), hflip=True)
        return cp(_gray_target(), np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.random.default_rng(seed))

    a, b = run(7), run(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for box in a[1]:
        assert 8.0 - 1e-9 <= box[2] - box[0] <= 12.5 + 1e-9


def test_8bit_donor_into_16bit_target_keeps_transmission(tmp_path):
    img = np.full((40, 40), 255, dtype=np.uint8)
    img[10:20, 10:20] = 51  # transmission 0.2
    cv2.imwrite(str(tmp_path / "d8.png"), img)
    donors = DetectionDataset(["x"], [ImageRecord(tmp_path / "d8.png", 40, 40, [[10, 10, 20, 20]], [0])])
    cp = XrayCopyPaste(donors, p=1.0, max_objects=1, scale=(1.0, 1.0), hflip=False, min_inside=1.0)
    out, boxes, _ = cp(_gray_target(30000), np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.random.default_rng(0))
    x1, y1 = int(boxes[0][0]), int(boxes[0][1])
    assert (out[y1 : y1 + 10, x1 : x1 + 10] == 6000).all()


def test_pseudo_colour_alpha_blend(tmp_path):
    donor = np.full((40, 40, 3), 255, dtype=np.uint8)
    donor[10:20, 10:20] = (255, 140, 0)  # orange object (RGB) on white
    cv2.imwrite(str(tmp_path / "c.png"), donor[:, :, ::-1])  # file is BGR
    donors = DetectionDataset(["knife"], [ImageRecord(tmp_path / "c.png", 40, 40, [[10, 10, 20, 20]], [0])])
    target = np.full((64, 64, 3), 255, dtype=np.uint8)
    target[8:56, 8:56] = (60, 90, 200)  # bluish bag
    assert is_pseudo_colour(target) and not is_pseudo_colour(np.repeat(_gray_target()[:, :, None], 3, 2))
    cp = XrayCopyPaste(donors, p=1.0, max_objects=1, scale=(1.0, 1.0), hflip=False, min_inside=1.0)
    out, boxes, labels = cp(target, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.random.default_rng(3))
    assert out.dtype == np.uint8 and labels.tolist() == [0]
    x1, y1 = int(boxes[0][0]), int(boxes[0][1])
    centre = out[y1 + 3 : y1 + 7, x1 + 3 : x1 + 7].reshape(-1, 3)
    np.testing.assert_array_equal(centre, np.tile([255, 140, 0], (16, 1)))  # object interior: donor colour
    outside = np.ones((64, 64), dtype=bool)
    outside[y1 - 2 : y1 + 12, x1 - 2 : x1 + 12] = False
    assert (out[outside] == target[outside]).all()


def test_float_targets_of_different_scales_each_get_a_patch_in_their_own_scale(tmp_path):
    donor = np.full((40, 40, 3), 255, dtype=np.uint8)
    donor[10:20, 10:20] = (255, 140, 0)
    cv2.imwrite(str(tmp_path / "c.png"), donor[:, :, ::-1])
    donors = DetectionDataset(["knife"], [ImageRecord(tmp_path / "c.png", 40, 40, [[10, 10, 20, 20]], [0])])
    bag = np.full((64, 64, 3), 255.0, dtype=np.float32)
    bag[8:56, 8:56] = (60, 90, 200)
    unit, thousand = bag / 255.0, bag * (1000.0 / 255.0)  # the same bag in a 0-1 and a 0-1000 float scale
    options = dict(p=1.0, max_objects=1, scale=(1.0, 1.0), hflip=False, min_inside=1.0)
    none = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    shared = XrayCopyPaste(donors, **options)
    shared(unit, *none, np.random.default_rng(3))  # caches the donor patch at scale 1.0
    out, boxes, _ = shared(thousand, *none, np.random.default_rng(3))
    fresh, fresh_boxes, _ = XrayCopyPaste(donors, **options)(thousand, *none, np.random.default_rng(3))
    np.testing.assert_array_equal(boxes, fresh_boxes)
    np.testing.assert_allclose(out, fresh, rtol=1e-6)
    x1, y1 = int(boxes[0][0]), int(boxes[0][1])
    np.testing.assert_allclose(out[y1 + 5, x1 + 5], [1000.0, 1000.0 * 140 / 255, 0.0], rtol=1e-4, atol=1e-3)


def test_target_distribution_moves_toward_target(tmp_path):
    donors = _gray_donors(tmp_path, n=4)  # classes 0, 1, 0, 1
    cp = XrayCopyPaste(donors, target_distribution={"common": 0.5, "rare": 0.5}, p=1.0)
    cp.seen_counts[:] = [100, 0]  # class 0 far above its share, class 1 far below
    rng = np.random.default_rng(0)
    assert {cp.choose_class(rng) for _ in range(50)} == {1}
    cp.seen_counts[:] = [50, 50]  # at target: follow the target itself
    picks = [cp.choose_class(rng) for _ in range(400)]
    assert 0.4 < np.mean(picks) < 0.6
    only_rare = XrayCopyPaste(donors, classes=[1], p=1.0)
    assert {only_rare.choose_class(rng) for _ in range(30)} == {1}
    np.testing.assert_allclose(XrayCopyPaste(donors, target_distribution=[3, 1]).target, [0.75, 0.25])


def test_rarest_target_pastes_only_the_class_with_fewest_donor_objects(tmp_path):
    donors = _gray_donors(tmp_path, n=3)  # classes 0, 1, 0: "rare" has one object, "common" two
    cp = XrayCopyPaste(donors, target_distribution="rarest", p=1.0)
    np.testing.assert_array_equal(cp.target, [0.0, 1.0])
    rng = np.random.default_rng(0)
    assert {cp.choose_class(rng) for _ in range(30)} == {1}
    # "rarest" is the dict that names that class, found from the donors (so the same draws).
    np.testing.assert_array_equal(cp.target, XrayCopyPaste(donors, target_distribution={"rare": 1.0}).target)
    tied = XrayCopyPaste(_gray_donors(tmp_path, n=4), target_distribution="rarest")  # 2 and 2: both
    np.testing.assert_array_equal(tied.target, [0.5, 0.5])
    with pytest.raises(ValueError, match="rarest"):
        XrayCopyPaste(donors, target_distribution="rare-ish")


def test_bad_configuration_rejected(tmp_path):
    donors = _gray_donors(tmp_path)
    with pytest.raises(ValueError, match="blend"):
        XrayCopyPaste(donors, blend="poisson")
    with pytest.raises(ValueError, match="unknown class"):
        XrayCopyPaste(donors, target_distribution={"gun": 1.0})
    with pytest.raises(ValueError, match="shares"):
        XrayCopyPaste(donors, target_distribution=[1.0])
    with pytest.raises(ValueError, match="classes"):
        XrayCopyPaste(donors, classes=[5])
    with pytest.raises(ValueError, match="scale"):
        XrayCopyPaste(donors, scale=(2.0, 1.0))


def test_missing_donor_file_names_the_file(tmp_path):
    missing = tmp_path / "gone.png"
    donors = DetectionDataset(["x"], [ImageRecord(missing, 40, 40, [[10, 10, 20, 20]], [0])])
    cp = XrayCopyPaste(donors, p=1.0)
    with pytest.raises(InputError) as err:
        cp(_gray_target(), np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.random.default_rng(0))
    assert "gone.png" in str(err.value)
