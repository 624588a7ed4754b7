"""rarespot.screen.data: loading npz/folders, preparing model input, bad input."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from rarespot.errors import InputError
from rarespot.screen.data import MixedInputWarning, load_dataset, load_folder, load_images, load_npz, prepare
from rarespot.screen.pipeline import normal_subset


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    assert cv2.imwrite(str(path), bgr)


def test_prepare_gray_uint8_exact():
    img = np.full((8, 8), 255, np.uint8)
    img[:4] = 0
    out = prepare([img], size=8, color="gray")
    assert out.shape == (1, 1, 8, 8) and out.dtype == np.float32
    assert out[0, 0, :4].max() == 0.0 and out[0, 0, 4:].min() == 1.0


def test_prepare_uint16_and_rgb_to_gray_and_back():
    img16 = np.full((4, 4), 65535, np.uint16)
    assert prepare([img16], 4)[0].max() == pytest.approx(1.0)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 255  # pure green -> gray 0.587 (ITU-R 601 weights, as OpenCV)
    assert prepare([rgb], 4, "gray")[0, 0, 0, 0] == pytest.approx(0.587, abs=1e-3)
    gray = np.full((4, 4), 51, np.uint8)
    out = prepare([gray], 4, "rgb")
    assert out.shape == (1, 3, 4, 4) and np.allclose(out, 0.2)


def test_prepare_mixed_sizes_and_channels_warns_once():
    images = [np.zeros((10, 10), np.uint8) for _ in range(5)] + [np.zeros((20, 12, 3), np.uint8) for _ in range(5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = prepare(images, size=8)
    mixed = [w for w in caught if issubclass(w.category, MixedInputWarning)]
    assert len(mixed) == 1, "one warning for the whole call, not one per image"
    assert "2 different sizes" in str(mixed[0].message) and "mixed channel counts" in str(mixed[0].message)
    assert out.shape == (10, 1, 8, 8)


def test_prepare_same_size_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare([np.zeros((8, 8), np.uint8)] * 3, size=8)


def test_load_npz(tmp_path):
    images = np.arange(3 * 5 * 5, dtype=np.uint8).reshape(3, 5, 5)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 0]))
    ds = load_npz(tmp_path / "d.npz")
    assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 0] and ds.names[1] == "d[1]"
    assert len(normal_subset(ds, 0)) == 2
    assert ds.subset(np.array([False, True, False])).labels.tolist() == [1]


def test_load_npz_bad_inputs_name_the_file(tmp_path):
    np.savez(tmp_path / "noimg.npz", pixels=np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match="noimg.npz.*no 'images'"):
        load_npz(tmp_path / "noimg.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="junk.npz.*cannot read npz"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "flat.npz", images=np.zeros(10))
    with pytest.raises(InputError, match="flat.npz.*shape"):
        load_npz(tmp_path / "flat.npz")
    np.savez(tmp_path / "nlab.npz", images=np.zeros((3, 4, 4)), labels=np.zeros(2))
    with pytest.raises(InputError, match="nlab.npz.*2 labels for 3 images"):
        load_npz(tmp_path / "nlab.npz")
    with pytest.raises(InputError, match="missing.npz"):
        load_dataset(tmp_path / "missing.npz")
    with pytest.raises(InputError, match="nothing_here.*expected a folder"):
        load_dataset(tmp_path / "nothing_here")


def test_empty_normal_set_is_an_input_error(tmp_path):
    np.savez(tmp_path / "allsick.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.ones(4))
    with pytest.raises(InputError, match="allsick.npz.*no normal images"):
        normal_subset(load_npz(tmp_path / "allsick.npz"), 0)


def test_folder_with_class_subfolders_and_corrupt_file(tmp_path):
    for i in range(3):
        _write_png(tmp_path / "normal" / f"n{i}.png", np.full((12, 12), 100 + i, np.uint8))
    _write_png(tmp_path / "sick" / "s0.png", np.full((6, 6, 3), 50, np.uint8))
    (tmp_path / "normal" / "broken.png").write_bytes(b"\x89PNG garbage")
    ds = load_folder(tmp_path)
    assert ds.class_names == ["normal", "sick"]
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 0, 1]
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("broken.png")
    assert ds.label_id("sick") == 1 and ds.label_id("0") == 0
    with pytest.raises(InputError, match="not a class"):
        ds.label_id("healthy")
    # --strict: the corrupt file is fatal and named.
    with pytest.raises(InputError, match="broken.png"):
        load_folder(tmp_path, on_error="raise")


def test_folder_unlabelled_and_empty(tmp_path):
    _write_png(tmp_path / "flat" / "a.png", np.zeros((5, 5), np.uint8))
    ds = load_dataset(tmp_path / "flat")
    assert ds.labels is None and ds.names == ["a.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*no image files"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "x.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="allbad.*none of the 1 image files"):
        load_dataset(tmp_path / "allbad")


def test_folder_with_loose_images_beside_class_subfolders_is_refused(tmp_path):
    _write_png(tmp_path / "normal" / "n0.png", np.zeros((5, 5), np.uint8))
    _write_png(tmp_path / "loose.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(InputError, match=r"1 images at the top level \(first: loose.png\).*normal"):
        load_folder(tmp_path)


def test_load_images_reports_skips(tmp_path):
    _write_png(tmp_path / "ok.png", np.zeros((5, 5), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"bad")
    images, kept, skipped = load_images([tmp_path / "ok.png", tmp_path / "bad.png"])
    assert len(images) == 1 and kept[0].name == "ok.png" and skipped[0][0].endswith("bad.png")
