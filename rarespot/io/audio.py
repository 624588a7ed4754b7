"""Reading audio files: wav/flac/ogg via soundfile, resampling via soxr (through librosa).

Every problem a user can fix raises ``InputError(path, problem)`` naming the file:
not an audio file, truncated, empty. Problems that do not stop the work (silent or
clipped audio, a sample rate that needs resampling) are warnings that name the
file; the resampling notice is given once per source rate, not once per file.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rarespot.errors import InputError

log = logging.getLogger(__name__)

# Audio that peaks below this (full scale = 1.0) is treated as silent.
SILENCE_PEAK = 1e-4
# A sample at or above this magnitude counts as clipped ...
CLIP_LEVEL = 0.999
# ... and a file with more than this fraction of clipped samples gets a warning.
CLIP_FRACTION = 0.01


class AudioQualityWarning(UserWarning):
    """Audio that reads fine but is probably wrong (silent, clipped, resampled a long way)."""


class ResampleNotice(UserWarning):
    """A file's sample rate differs from the configured one; it is resampled."""


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header information of an audio file, without decoding it."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "audio file not found")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises its own error type, or RuntimeError on older versions
        raise InputError(path, f"not a readable audio file ({_short(exc)})") from None
    if info.frames <= 0:
        raise InputError(path, "audio file holds no samples")
    if info.format == "WAV":
        # libsndfile quietly shortens a cut WAV to the bytes present; its header still says how many there were.
        declared = _wav_declared_bytes(path)
        if declared is not None and declared[0] > declared[1]:
            promised = declared[0] // max(declared[2], 1)
            raise InputError(path, f"truncated: the header promises {promised} samples, only {info.frames} are in the file")
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


def _wav_declared_bytes(path: Path) -> tuple[int, int, int] | None:
    """(data bytes the RIFF header declares, data bytes present, bytes per frame), or None if unparsable."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(4) != b"RIFF":
            return None
        fh.seek(12)
        block_align = 0
        while True:
            head = fh.read(8)
            if len(head) < 8:
                return None
            chunk, length = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk == b"fmt ":
                fmt = fh.read(min(length, 16))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                fh.seek(length - len(fmt) + (length & 1), 1)
            elif chunk == b"data":
                if length in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                return length, size - fh.tell(), block_align
            else:
                fh.seek(length + (length & 1), 1)


_announced_rates: set[tuple[int, int]] = set()
_announce_lock = threading.Lock()


def announce_resample(path: str | Path, source_rate: int, target_rate: int) -> None:
    """Warn about resampling once per (source, target) pair in this process."""
    key = (int(source_rate), int(target_rate))
    with _announce_lock:
        if key in _announced_rates:
            return
        _announced_rates.add(key)
    extra = ""
    if source_rate < target_rate:
        extra = f"; upsampling adds no content above {source_rate // 2} Hz"
    warnings.warn(
        f"{path}: sample rate {source_rate} Hz resampled to {target_rate} Hz "
        f"(said once; other files at {source_rate} Hz are resampled the same way{extra})",
        ResampleNotice,
        stacklevel=3,
    )


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr high quality, via librosa)."""
    if source_rate == target_rate:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=source_rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def read_audio(
    path: str | Path,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    check_quality: bool = True,
) -> tuple[np.ndarray, int]:
    """Read a whole audio file as float32 in [-1, 1].

    Returns ``(audio, rate)``: audio is 1-D when ``mono`` (channels averaged), else
    (frames, channels). With ``sample_rate`` set, audio at another rate is
    resampled to it (and this is said once per source rate).
    """
    import soundfile as sf

    info = audio_info(path)
    path = info.path
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(path, f"audio data cannot be decoded, the file is probably truncated or corrupt ({_short(exc)})") from None
    if len(audio) < info.frames:
        # libsndfile returns what it could decode; a short read means bytes are missing.
        raise InputError(path, f"truncated: the header promises {info.frames} samples, only {len(audio)} could be read")
    if mono:
        if audio.shape[1] > 1:
            warnings.warn(f"{path}: {audio.shape[1]} channels averaged to one (lung-sound models read mono audio)",
                          AudioQualityWarning, stacklevel=2)
        audio = audio.mean(axis=1)
    if check_quality:
        check_audio_quality(audio, path)
    if sample_rate is not None and int(sample_rate) != rate:
        announce_resample(path, rate, int(sample_rate))
        if mono:
            audio = resample(audio, rate, int(sample_rate))
        else:
            audio = resample(audio.T, rate, int(sample_rate)).T
        rate = int(sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def check_audio_quality(audio: np.ndarray, path: str | Path) -> list[str]:
    """Warn (naming the file) when audio is silent or clipped; returns the problems found."""
    problems = []
    if audio.size == 0:
        return problems
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        problems.append(f"silent: peak level {peak:.2g} of full scale")
    else:
        clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL))
        if clipped > CLIP_FRACTION:
            problems.append(f"clipped: {clipped:.1%} of samples at full scale")
    for problem in problems:
        warnings.warn(f"{path}: {problem}", AudioQualityWarning, stacklevel=3)
    return problems


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libsndfile repeats the path ("Error opening '/x/a.wav': Format not recognised."); the message already names it.
    if "': " in text:
        text = text.split("': ", 1)[1]
    return text.rstrip(".")[:200]
