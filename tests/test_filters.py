"""View filters: exact values, 16-bit kept through read/filter/write, spec parsing."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.errors import InputError
from rarespot.filters import (
    FilterStep,
    ViewFilter,
    brightness_contrast,
    clahe,
    gamma,
    invert,
    normalize,
    percentile_window,
    window_level,
)
from rarespot.io.images import read_image, write_image


def _scan16() -> np.ndarray:
    """A 16-bit 'scan' using only part of the range, like a real body scan."""
    rng = np.random.default_rng(0)
    base = np.linspace(1000, 21000, 64 * 80).reshape(64, 80)
    return (base + rng.normal(0, 300, base.shape)).clip(0, 65535).astype(np.uint16)


def test_gamma_exact_values_8_and_16_bit():
    img8 = np.array([[0, 64, 255]], np.uint8)
    out8 = gamma(img8, 0.5)
    assert out8.dtype == np.uint8
    assert out8.tolist() == [[0, round(255 * (64 / 255) ** 0.5), 255]]  # 0, 128, 255
    img16 = np.array([[0, 16384, 65535]], np.uint16)
    out16 = gamma(img16, 2.0)
    assert out16.dtype == np.uint16
    assert out16.tolist() == [[0, round(65535 * (16384 / 65535) ** 2), 65535]]  # 4096
    with pytest.raises(ValueError, match="positive"):
        gamma(img8, 0)


def test_brightness_contrast_about_the_mean():
    img = np.array([[100, 200, 300]], np.uint16)  # mean 200
    assert brightness_contrast(img, 0.0, 2.0).tolist() == [[0, 200, 400]]
    shifted = brightness_contrast(img, 0.01, 1.0)  # +1% of 65535 = 655.35
    assert shifted.dtype == np.uint16 and shifted.tolist() == [[755, 855, 955]]
    assert brightness_contrast(np.array([[250]], np.uint8), 0.5, 1.0).tolist() == [[255]]  # clipped, not wrapped


def test_normalize_and_invert_full_range():
    img = np.array([[1000, 2000, 3000]], np.uint16)
    assert normalize(img).tolist() == [[0, 32768, 65535]]
    assert normalize(np.array([[10, 20, 30]], np.uint8)).tolist() == [[0, 128, 255]]
    assert invert(img).tolist() == [[64535, 63535, 62535]]
    assert normalize(np.full((2, 2), 7, np.uint16)).tolist() == [[0, 0], [0, 0]]


def test_windows_produce_8_bit():
    img = np.array([[0, 1000, 2000, 3000, 4000]], np.uint16)
    wl = window_level(img, center=2000, width=2001)  # 1000 .. 3000 -> 0 .. 255
    assert wl.dtype == np.uint8 and wl.tolist() == [[0, 0, 128, 255, 255]]
    pw = percentile_window(img, 0, 100)
    assert pw.dtype == np.uint8 and pw.tolist() == [[0, 63, 127, 191, 255]]
    with pytest.raises(ValueError):
        percentile_window(img, 50, 10)


def test_clahe_keeps_16_bit_and_uses_the_range():
    img = _scan16()
    out = clahe(img, clip_limit=2.0, tile_grid=4)
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert len(np.unique(out)) > 256  # more grey levels than 8 bits could hold
    assert clahe(img.astype(np.float32) / 65535, 2.0, 4).dtype == np.float32
    rgb8 = np.stack([(img >> 8).astype(np.uint8)] * 3, axis=2)
    assert clahe(rgb8).dtype == np.uint8


def test_16_bit_preserved_through_read_filter_write(tmp_path):
    img = _scan16()
    path = write_image(tmp_path / "scan.png", img)
    chain = ViewFilter.parse("clahe:clip=2.0,tile=4,gamma:g=0.8,bc:b=0.01,c=1.1")
    out = chain(read_image(path))
    assert out.dtype == np.uint16
    again = read_image(write_image(tmp_path / "filtered.png", out))
    assert again.dtype == np.uint16 and np.array_equal(again, out)
    assert again.max() > 255


def test_spec_parsing_round_trip_and_aliases():
    vf = ViewFilter.parse("clahe:clip=2.0,gamma:g=0.8")
    assert [s.name for s in vf.steps] == ["clahe", "gamma"]
    assert vf.steps[0].params == {"clip_limit": 2.0}
    assert str(vf) == "clahe:clip_limit=2,gamma:g=0.8"
    assert ViewFilter.parse(str(vf)) == vf
    multi = ViewFilter.parse("bc:brightness=0.1,contrast=1.3;window:center=3000,width=2000|normalize")
    assert [(s.name, s.params) for s in multi.steps] == [
        ("brightness_contrast", {"brightness": 0.1, "contrast": 1.3}),
        ("window_level", {"center": 3000.0, "width": 2000.0}),
        ("normalize", {}),
    ]
    assert not ViewFilter.parse("") and not ViewFilter.parse(None)


def test_spec_from_yaml_and_list(tmp_path):
    path = tmp_path / "view.yaml"
    path.write_text("- name: clahe\n  params: {clip: 3}\n- name: gamma\n  params: {g: 0.7}\n")
    vf = ViewFilter.from_yaml(path)
    assert vf == ViewFilter(steps=[FilterStep(name="clahe", params={"clip_limit": 3}), FilterStep(name="gamma", params={"g": 0.7})])
    path.write_text("steps: clahe:clip=3,gamma:g=0.7\n")
    assert ViewFilter.from_yaml(path) == vf


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sharpen", "unknown view filter 'sharpen'"),
        ("clahe:zz=1", "unknown parameter 'zz'"),
        ("window:center=3", "missing parameter"),
        ("gamma:g=abc", "not a number"),
        ("g=3", "before any filter"),
        ("clahe:2", "key=value"),
    ],
)
def test_bad_specs_raise_input_error(spec, message):
    with pytest.raises(InputError, match=message) as exc:
        ViewFilter.parse(spec)
    assert spec in str(exc.value)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- name: nope\n")
    with pytest.raises(InputError) as exc:
        ViewFilter.from_yaml(path)
    assert "bad.yaml" in str(exc.value)
    with pytest.raises(InputError, match="not found") as exc:
        ViewFilter.from_yaml(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(exc.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("clahe:grid=6000", "grid=6000 is out of range; allowed 1 to 32"),
        ("clahe:grid=1e12", "out of range"),
        ("clahe:grid=3.5", "whole number"),
        ("gamma:g=nan", "finite number"),
        ("gamma:g=0", "out of range"),
        ("bc:contrast=-inf", "finite number"),
        ("percentile:lo=-1", "out of range"),
        (",".join(["gamma:g=0.9"] * 13), "at most 12"),
    ],
)
def test_parameters_and_chain_length_are_bounded(spec, message):
    with pytest.raises(InputError, match=message) as exc:
        ViewFilter.parse(spec)
    assert len(str(exc.value)) < 300  # a 2,600-step spec is not echoed whole
    with pytest.raises(ValueError, match="tile_grid"):
        clahe(_scan16(), 2.0, 64)  # the function itself refuses a grid whose histograms would not fit
    assert len(ViewFilter.parse(",".join(["gamma:g=0.9"] * 12)).steps) == 12


def test_one_percentile_window_for_display_and_for_the_model():
    """``filters.percentile_window`` is the model's 16->8-bit mapping too (no twin that could drift)."""
    from rarespot.detect.preprocess import window_to_uint8

    img = _scan16()
    assert np.array_equal(window_to_uint8(img), percentile_window(img))
    big = np.tile(img, (2, 2))  # >= 64 px a side: percentiles from a strided sample, exact ends for 0/100
    assert np.array_equal(window_to_uint8(big), percentile_window(big, 0.5, 99.5))
    full = percentile_window(big, 0, 100)
    assert full.min() == 0 and full.max() == 255
    # An 8-bit export of the scan windows to (almost) the same picture.
    diff = np.abs(percentile_window((big >> 8).astype(np.uint8)).astype(int) - percentile_window(big).astype(int))
    assert diff.mean() < 2


def _percentile_window_per_pixel(img, low=0.5, high=99.5):
    """The window computed pixel by pixel in float32 (what percentile_window did before its lookup table)."""
    data = img.astype(np.float32)
    sample = data[::4, ::4] if data.ndim >= 2 and min(data.shape[:2]) >= 64 else data
    lo, hi = np.percentile(sample, [low, high])
    if low == 0:
        lo = data.min()
    if high == 100:
        hi = data.max()
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((data - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int8])
def test_percentile_window_lookup_table_gives_the_per_pixel_bytes(dtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    shapes = [(300, 200), (40, 50), (120, 90, 3), (1, 7)]
    for k, shape in enumerate(shapes):
        img = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        if k == 0:
            img[:150] = info.min + 3  # a flat background and a narrow band, as scans are
            img[150:] = np.clip(img[150:], info.min, info.min + (info.max - info.min) // 7)
        for low, high in ((0.5, 99.5), (0, 100), (2, 98), (0, 50), (50, 100)):
            np.testing.assert_array_equal(percentile_window(img, low, high), _percentile_window_per_pixel(img, low, high))
    flat = np.full((80, 80), info.max, dtype)  # no range at all
    np.testing.assert_array_equal(percentile_window(flat), _percentile_window_per_pixel(flat))
    for floats in (rng.random((70, 70)).astype(np.float32), rng.random((70, 70, 3)) * 1000):
        np.testing.assert_array_equal(percentile_window(floats), _percentile_window_per_pixel(floats))
