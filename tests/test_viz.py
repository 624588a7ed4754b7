"""Overlays: ground truth red, predictions green, any bit depth in, RGB uint8 out."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.io.images import read_image
from rarespot.viz import GT_COLOUR, PRED_COLOUR, display_chain, render_overlay, save_png, to_display_rgb


def _scan16(h=120, w=100) -> np.ndarray:
    return np.tile(np.linspace(2000, 12000, w), (h, 1)).astype(np.uint16)


def test_boxes_in_their_colours_on_a_16_bit_scan():
    img = _scan16()
    out = render_overlay(
        img,
        gt_boxes=[[10, 20, 40, 60]], gt_labels=[0],
        pred_boxes=[[50, 70, 90, 110]], pred_labels=[1], pred_scores=[0.87],
        class_names=["key", "zipper"],
    )
    assert out.dtype == np.uint8 and out.shape == (120, 100, 3)
    assert tuple(out[40, 10]) == GT_COLOUR  # left edge of the ground-truth box
    assert tuple(out[90, 50]) == PRED_COLOUR  # left edge of the prediction
    assert tuple(out[40, 25]) == tuple(out[40, 25][[0, 0, 0]])  # inside the box: still grey


def test_no_boxes_is_just_the_windowed_scan():
    img = _scan16()
    out = render_overlay(img)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])
    assert out[:, 0, 0].max() <= 2 and out[:, -1, 0].min() >= 253  # percentile-windowed to full 8-bit


def test_view_filter_changes_the_picture_and_acts_after_the_window():
    img = _scan16()
    plain = to_display_rgb(img)
    brighter = to_display_rgb(img, "bc:b=0.2")
    # On raw 16-bit data a later window would undo a brightness shift; the display chain windows first.
    assert brighter.astype(int).mean() > plain.astype(int).mean() + 20
    assert [s.name for s in display_chain(img, "gamma:g=0.5").steps] == ["percentile_window", "gamma"]
    assert [s.name for s in display_chain(img, "window:center=7000,width=4000").steps] == ["window_level"]
    assert [s.name for s in display_chain(img.astype(np.uint8), "gamma:g=0.5").steps] == ["gamma"]


def test_rgb_input_and_string_labels(tmp_path):
    rgb = np.zeros((50, 60, 3), np.uint8)
    out = render_overlay(rgb, pred_boxes=np.array([[5, 5, 30, 30]]), pred_labels=["knife"])
    assert tuple(out[15, 5]) == PRED_COLOUR
    path = save_png(tmp_path / "o.png", out)
    assert np.array_equal(read_image(path), out)


def test_save_figure_is_atomic_and_always_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, str(tmp_path / "a.png"), dpi=50)
    assert path == tmp_path / "a.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    old = path.read_bytes()
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        save_figure(fig, path, format="no-such-format")
    assert not plt.fignum_exists(fig.number)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
