"""rarespot.io.audio: reading, resampling and every bad-input path (files generated in tmp_path)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from rarespot.errors import InputError  # noqa: E402
from rarespot.io import audio as audio_mod  # noqa: E402
from rarespot.io.audio import AudioQualityWarning, ResampleNotice, audio_info, read_audio  # noqa: E402


def tone(seconds=1.0, rate=4000, freq=200.0, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(autouse=True)
def fresh_resample_notices(monkeypatch):
    monkeypatch.setattr(audio_mod, "_announced_rates", set())


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_read_roundtrip(tmp_path, suffix):
    x = tone()
    path = tmp_path / f"a{suffix}"
    sf.write(path, x, 4000, subtype="PCM_16")
    y, rate = read_audio(path)
    assert rate == 4000
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-3  # 16-bit quantisation
    info = audio_info(path)
    assert (info.sample_rate, info.frames, info.channels) == (4000, 4000, 1)
    assert info.duration == 1.0


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(amp=0.5), np.zeros(4000, np.float32)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 4000, subtype="FLOAT")
    with pytest.warns(AudioQualityWarning, match=r"st\.wav: 2 channels averaged to one"):
        y, _ = read_audio(path)
    np.testing.assert_allclose(y, left / 2, atol=1e-7)
    y2, _ = read_audio(path, mono=False)
    assert y2.shape == (4000, 2)


def test_resample_said_once_per_rate(tmp_path):
    for i in range(3):
        sf.write(tmp_path / f"r{i}.wav", tone(rate=44100), 44100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [read_audio(tmp_path / f"r{i}.wav", sample_rate=4000) for i in range(3)]
    notices = [w for w in caught if issubclass(w.category, ResampleNotice)]
    assert len(notices) == 1
    assert "r0.wav" in str(notices[0].message) and "44100 Hz resampled to 4000 Hz" in str(notices[0].message)
    for y, rate in outs:
        assert rate == 4000 and len(y) == 4000
    # The 200 Hz tone survives resampling: its spectrum peaks at 200 Hz.
    spectrum = np.abs(np.fft.rfft(outs[0][0]))
    assert np.argmax(spectrum) == 200


def test_not_audio_names_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(InputError, match="notes.wav: not a readable audio file"):
        read_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.flac: audio file not found"):
        read_audio(tmp_path / "nothere.flac")


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(seconds=2.0), 4000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still promises 2 s
    with pytest.raises(InputError, match=r"cut.wav: truncated: the header promises 8000 samples"):
        read_audio(path)


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * rng.standard_normal(16000)).astype(np.float32), 4000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.flac: (truncated|audio data cannot be decoded)"):
        read_audio(path)


def test_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 4000)
    with pytest.raises(InputError, match="empty.wav: audio file holds no samples"):
        read_audio(path)


def test_silent_audio_warns(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(4000, np.float32), 4000)
    with pytest.warns(AudioQualityWarning, match="quiet.wav: silent"):
        y, _ = read_audio(path)
    assert len(y) == 4000  # nothing lost: the audio is still returned


def test_clipped_audio_warns(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.clip(tone(amp=3.0), -1, 1), 4000, subtype="PCM_16")
    with pytest.warns(AudioQualityWarning, match=r"loud.wav: clipped: \d+\.\d% of samples"):
        read_audio(path)


def test_clean_audio_gives_no_quality_warning(tmp_path):
    path = tmp_path / "ok.wav"
    sf.write(path, tone(), 4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioQualityWarning)
        read_audio(path)
