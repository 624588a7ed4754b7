import numpy as np
import pytest

from rarespot.tiling import (
    boxes_in_tile,
    crop_tile,
    grid_tiles,
    random_negative_tile,
    random_positive_tile,
)


def test_grid_tiles_exact_positions_and_full_cover():
    tiles = grid_tiles(1500, 1216, tile=512, overlap=0.2)
    # stride round(512 * 0.8) = 410; last tile flush with the edge
    xs = sorted({int(t[0]) for t in tiles})
    ys = sorted({int(t[1]) for t in tiles})
    assert xs == [0, 410, 704]
    assert ys == [0, 410, 820, 988]
    assert len(tiles) == 12
    covered = np.zeros((1500, 1216), bool)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 == 512 and y1 - y0 == 512
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_grid_tiles_small_image_is_one_padded_tile():
    tiles = grid_tiles(100, 300, tile=512, overlap=0.2)
    assert tiles.tolist() == [[0, 0, 512, 512]]


@pytest.mark.parametrize("bad", [dict(tile=0), dict(tile=64, overlap=1.0), dict(tile=64, overlap=-0.1)])
def test_grid_tiles_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        grid_tiles(100, 100, **bad)


def test_crop_tile_pads_and_keeps_uint16():
    img = (np.arange(20 * 30, dtype=np.uint16) * 100).reshape(20, 30)
    out = crop_tile(img, 20, 10, 16, pad_value=7)
    assert out.dtype == np.uint16 and out.shape == (16, 16)
    np.testing.assert_array_equal(out[:10, :10], img[10:20, 20:30])
    assert (out[10:, :] == 7).all() and (out[:, 10:] == 7).all()
    rgb = np.zeros((20, 30, 3), np.uint8)
    assert crop_tile(rgb, 0, 0, 8).shape == (8, 8, 3)


def test_boxes_in_tile_clips_shifts_and_drops_slivers():
    boxes = np.array([[10, 10, 30, 30], [90, 90, 130, 130], [95, 0, 200, 10], [300, 300, 310, 310]], float)
    labels = np.array([0, 1, 2, 3])
    out, lab, keep = boxes_in_tile(boxes, labels, x0=0, y0=0, tile=100, min_visible=0.3)
    # box 1 keeps 10x10 of 40x40 = 6.25% -> dropped; box 2 keeps 5x10 of 105x10 < 30% -> dropped
    assert lab.tolist() == [0]
    assert out.tolist() == [[10, 10, 30, 30]]
    assert keep.tolist() == [True, False, False, False]
    out, lab, _ = boxes_in_tile(boxes, labels, x0=80, y0=80, tile=100, min_visible=0.1)
    assert lab.tolist() == [1]
    assert out.tolist() == [[10, 10, 50, 50]]


def test_random_positive_tile_contains_object_at_varying_positions():
    rng = np.random.default_rng(0)
    boxes = np.array([[600, 700, 640, 760]], float)
    offsets = set()
    for _ in range(200):
        x0, y0 = random_positive_tile(1500, 1216, boxes, 512, rng)
        assert 0 <= x0 <= 1216 - 512 and 0 <= y0 <= 1500 - 512
        assert x0 <= 600 and 640 <= x0 + 512 and y0 <= 700 and 760 <= y0 + 512
        offsets.add((600 - x0, 700 - y0))
    assert len(offsets) > 150  # the object lands at many positions in the tile


def test_random_positive_tile_near_border_and_big_object():
    rng = np.random.default_rng(1)
    # object in the corner: the tile must stay inside the image
    x0, y0 = random_positive_tile(1500, 1216, np.array([[0, 0, 10, 10]]), 512, rng)
    assert x0 == 0 and y0 == 0
    # object larger than the tile: the tile lies inside the object
    for _ in range(20):
        x0, y0 = random_positive_tile(1500, 1216, np.array([[100, 100, 800, 900]]), 512, rng)
        assert 100 <= x0 <= 800 - 512 and 100 <= y0 <= 900 - 512


def test_random_negative_tile_avoids_boxes():
    rng = np.random.default_rng(2)
    boxes = np.array([[0, 0, 600, 1500]], float)
    for _ in range(20):
        pos = random_negative_tile(1500, 1216, boxes, 512, rng)
        assert pos is not None and pos[0] >= 600
    assert random_negative_tile(600, 600, np.array([[0, 0, 600, 600]]), 512, rng) is None
