"""rarespot.sounds.features: 3-channel maps, CQT bin choice, cache, normalisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

from rarespot.errors import InputError  # noqa: E402
from rarespot.sounds import features as feat_mod  # noqa: E402
from rarespot.sounds.data import Cycle  # noqa: E402
from rarespot.sounds.features import (  # noqa: E402
    FeatureConfig,
    NormStats,
    extract_features,
    fit_norm_stats,
    normalise,
    signal_features,
)

SMALL = dict(sample_rate=4000, cycle_seconds=1.0, n_bins=24, n_fft=256, hop_length=64, image_size=(24, 32))


def tone(freq, seconds=1.0, rate=4000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_cqt_bins_per_octave_fit_below_nyquist():
    assert FeatureConfig(sample_rate=16000, n_bins=96).cqt_bins_per_octave() == 14  # log2(7200/50) = 7.17 octaves for 96 bins
    assert FeatureConfig(sample_rate=4000, n_bins=96).cqt_bins_per_octave() == 19  # log2(1800/50) = 5.17 octaves
    assert FeatureConfig().cqt_bins_per_octave() == 13  # the default: 64 bins at 4 kHz
    assert FeatureConfig(sample_rate=44100, n_bins=84).cqt_bins_per_octave() == 10  # 84 bins over 8.6 octaves
    with pytest.raises(ValueError, match="too close to Nyquist"):
        FeatureConfig(sample_rate=200, cqt_fmin=50).cqt_bins_per_octave()


@pytest.mark.parametrize("rate", [4000, 16000])
def test_seed_settings_run_at_both_rates(rate):
    cfg = FeatureConfig(sample_rate=rate, cycle_seconds=2.0, n_bins=96, n_fft=2048, hop_length=512, image_size=(96, 64))
    x = signal_features(tone(300, 2.0, rate), cfg)
    assert x.shape == (3, 96, 64) and x.dtype == np.float32 and np.isfinite(x).all()


def test_higher_tone_sits_higher_in_mel_and_cqt():
    cfg = FeatureConfig(**SMALL)
    low, high = signal_features(tone(150), cfg), signal_features(tone(1200), cfg)
    for channel in (1, 2):  # mel, cqt: row 0 is the top (highest frequency) after the flip
        row_low = low[channel].mean(1).argmax()
        row_high = high[channel].mean(1).argmax()
        assert row_high < row_low


def test_silence_is_finite():
    x = signal_features(np.zeros(4000, np.float32), FeatureConfig(**SMALL))
    assert np.isfinite(x).all() and x[1].min() >= -100.001


def make_clips(folder, n=4):
    cycles = []
    for i in range(n):
        path = folder / f"{100 + i}_c{i}.wav"
        sf.write(path, tone(200 + 100 * i, 0.6), 4000)
        cycles.append(Cycle(path, f"{100 + i}_1b1", 0, i % 4))
    return cycles


def test_extract_caches_and_second_run_skips_work(tmp_path, monkeypatch):
    cycles = make_clips(tmp_path)
    cfg = FeatureConfig(**SMALL)
    first = extract_features(cycles, cfg, cache_dir=tmp_path / "cache", progress=False)
    assert first.shape == (4, 3, 24, 32)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4

    def fail(*a, **k):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(feat_mod, "signal_features", fail)
    second = extract_features(cycles, cfg, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(second, first)  # a cached run trains on exactly the fresh inputs
    # Another config is another cache entry: it must be computed (and here fails).
    with pytest.raises(AssertionError, match="recomputed"):
        extract_features(cycles, FeatureConfig(**{**SMALL, "pad_mode": "zero"}), cache_dir=tmp_path / "cache", progress=False)


def test_cycles_cut_from_one_recording(tmp_path):
    path = tmp_path / "rec.wav"
    sf.write(path, np.concatenate([tone(150), tone(1200)]), 4000, subtype="FLOAT")
    cycles = [Cycle(path, "101_rec", 0, 0, 0.0, 1.0), Cycle(path, "101_rec", 1, 1, 1.0, 2.0)]
    cfg = FeatureConfig(**SMALL)
    x = extract_features(cycles, cfg, cache_dir=False, progress=False)
    np.testing.assert_allclose(x[0], signal_features(tone(150), cfg), atol=1e-3)
    np.testing.assert_allclose(x[1], signal_features(tone(1200), cfg), atol=1e-3)


def test_resampled_features_announce_once(tmp_path, monkeypatch):
    from rarespot.io import audio as audio_mod
    from rarespot.io.audio import ResampleNotice

    monkeypatch.setattr(audio_mod, "_announced_rates", set())
    cycles = []
    for i in range(2):
        p = tmp_path / f"hi{i}.wav"
        sf.write(p, tone(300, 1.0, 8000), 8000)
        cycles.append(Cycle(p, f"10{i}_x", 0, 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extract_features(cycles, FeatureConfig(**SMALL), cache_dir=False, progress=False)
    notes = [w for w in caught if issubclass(w.category, ResampleNotice)]
    assert len(notes) == 1 and "8000 Hz resampled to 4000 Hz" in str(notes[0].message)


def test_bad_clip_raises_naming_it(tmp_path):
    cycles = make_clips(tmp_path, 2)
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 50)
    cycles.append(Cycle(bad, "102_x", 0, 0))
    with pytest.raises(InputError, match="broken.flac: not a readable audio file"):
        extract_features(cycles, FeatureConfig(**SMALL), cache_dir=False, progress=False)


def test_normalisation_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[[[5.0]], [[-3.0]], [[10.0]]], scale=[[[2.0]], [[0.5]], [[4.0]]], size=(20, 3, 8, 8)).astype(np.float32)
    stats = fit_norm_stats(x)
    np.testing.assert_allclose(stats.mean, x.mean(axis=(0, 2, 3)), rtol=1e-5)
    z = normalise(x, stats)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    per = normalise(x, fit_norm_stats(x, "per_sample"))
    np.testing.assert_allclose(per.mean(axis=(2, 3)), 0, atol=1e-4)
    assert NormStats.model_validate(stats.model_dump()) == stats


@pytest.mark.realdata
def test_real_clips_at_both_native_rates(icbhi_dir, tmp_path):
    from rarespot.sounds.data import load_manifest

    cycles = load_manifest(icbhi_dir / "cycles.csv")
    rates = {}
    for c in cycles:
        rates.setdefault(sf.info(str(c.audio_path)).samplerate, c)
    picked = list(rates.values())
    assert len(picked) >= 2  # clips exist at 4 kHz and 16 kHz
    cfg = FeatureConfig(sample_rate=4000, n_bins=64, n_fft=512, hop_length=128, image_size=(64, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = extract_features(picked, cfg, cache_dir=tmp_path, progress=False)
    assert x.shape == (len(picked), 3, 64, 128) and np.isfinite(x).all()
