"""Image reading/writing: bit depth kept, DICOM rescale and window, bad files named."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_io import write_dicom as _write_dicom  # tests/ is on sys.path under pytest

from rarespot.errors import InputError
from rarespot.io.images import image_size, read_image, read_image_with_meta, write_image


def _ramp16(h=40, w=50) -> np.ndarray:
    # Values well above 255 and an odd low bit: any 8-bit squeeze would show.
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 31 + 1001).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray_round_trip_is_exact(tmp_path, suffix):
    img = _ramp16()
    path = write_image(tmp_path / f"scan{suffix}", img)
    back, meta = read_image_with_meta(path)
    assert back.dtype == np.uint16 and back.shape == (40, 50)
    assert np.array_equal(back, img)
    assert meta["bit_depth"] == 16
    assert image_size(path) == (50, 40)


def test_8bit_png_and_rgb_order(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red channel only
    path = write_image(tmp_path / "c.png", rgb)
    back = read_image(path)
    assert back.dtype == np.uint8 and back.shape == (10, 12, 3)
    assert np.array_equal(back, rgb)  # RGB in, RGB out (OpenCV's BGR never leaks)


def test_16bit_rgb_png_round_trip(tmp_path):
    rgb = np.stack([_ramp16(), _ramp16() // 2, _ramp16() // 3], axis=2)
    back = read_image(write_image(tmp_path / "c16.png", rgb))
    assert back.dtype == np.uint16 and np.array_equal(back, rgb)


def test_float_tiff_stays_float(tmp_path):
    img = np.linspace(-1.5, 2.5, 200, dtype=np.float32).reshape(10, 20)
    back = read_image(write_image(tmp_path / "f.tif", img))
    assert back.dtype == np.float32 and np.array_equal(back, img)


def test_jpeg_reads_as_rgb_uint8(tmp_path):
    rgb = np.full((16, 16, 3), (10, 120, 240), np.uint8)
    back = read_image(write_image(tmp_path / "c.jpg", rgb))
    assert back.dtype == np.uint8 and back.shape == (16, 16, 3)
    assert np.abs(back.astype(int) - rgb).max() <= 3  # lossy, but channel order right


def test_write_refuses_lossy_depth(tmp_path):
    with pytest.raises(ValueError, match="cannot hold"):
        write_image(tmp_path / "x.jpg", _ramp16())
    with pytest.raises(ValueError, match="cannot hold"):
        write_image(tmp_path / "x.png", np.zeros((4, 4), np.float32))


def test_write_is_atomic_no_temp_left(tmp_path):
    write_image(tmp_path / "a.png", _ramp16())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_dicom_rescale_and_window(tmp_path):
    raw = _ramp16(8, 9)
    path = _write_dicom(tmp_path / "scan.dcm", raw, slope=2.0, intercept=100.0, center=3000, width=2000)
    img, meta = read_image_with_meta(path)
    assert img.dtype == np.uint16  # integral and in range: stays 16-bit
    assert np.array_equal(img, raw.astype(np.int64) * 2 + 100)
    assert meta["window_center"] == 3000.0 and meta["window_width"] == 2000.0
    assert meta["rescale_slope"] == 2.0 and meta["rescale_intercept"] == 100.0
    assert image_size(path) == (9, 8)


def test_dicom_fractional_rescale_becomes_float(tmp_path):
    raw = _ramp16(4, 4)
    path = _write_dicom(tmp_path / "ct.dcm", raw, slope=0.5, intercept=-1024.0)
    img = read_image(path)
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img, raw.astype(np.float32) * 0.5 - 1024.0)


def test_dicom_without_suffix_is_sniffed(tmp_path):
    raw = _ramp16(4, 5)
    path = _write_dicom(tmp_path / "IM0001", raw)
    assert np.array_equal(read_image(path), raw)


def test_dicom_monochrome1_is_inverted_with_its_window(tmp_path):
    raw = np.array([[0, 100], [1000, 65535]], np.uint16)
    path = _write_dicom(tmp_path / "m1.dcm", raw, center=1000, width=500, photometric="MONOCHROME1")
    img, meta = read_image_with_meta(path)
    assert np.array_equal(img, 65535 - raw)
    assert meta["inverted"] and meta["window_center"] == 65535 - 1000


# ---------------------------------------------------------------- bad input names the file


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as exc:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(exc.value)


@pytest.mark.parametrize("name", ["bad.png", "bad.jpg", "bad.tif", "bad.dcm"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError) as exc:
        read_image(path)
    assert name in str(exc.value)


def test_truncated_jpeg(tmp_path):
    good = write_image(tmp_path / "good.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as exc:
        read_image(cut)
    assert "cut.jpg" in str(exc.value)


def test_truncated_png(tmp_path):
    data = write_image(tmp_path / "good.png", _ramp16(100, 100)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_image(cut)
    assert "cut.png" in str(exc.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as exc:
        read_image(path)
    assert "empty.png" in str(exc.value)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "scan.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="unsupported") as exc:
        read_image(path)
    assert "scan.gif" in str(exc.value)


def test_dicom_without_pixels(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "nobody"
    path = tmp_path / "nopix.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="no pixel data") as exc:
        read_image(path)
    assert "nopix.dcm" in str(exc.value)


def test_header_size_of_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError) as exc:
        image_size(path)
    assert "broken.png" in str(exc.value)
