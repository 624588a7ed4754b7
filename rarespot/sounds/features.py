"""3-channel time-frequency images of respiratory cycles: MFCC, Mel spectrogram, CQT.

The seed (Neto et al.) used 96 bins per feature, window 2048, hop 512 at 16 kHz, with a
Hamming window for the STFT-based features. The defaults here are the benchmark's: 4 kHz,
64 bins, window 512, hop 128 (the same 128 ms / 32 ms in time; see "Sample rate" below). Each cycle is resampled to one rate,
cut/padded to a fixed length, turned into the three maps, and each map is resized
to ``image_size`` (H x W) so they stack into a (3, H, W) float image.

Constant-Q bins: with 12 bins per octave, 96 bins span 8 octaves, which only fit
below Nyquist at high sample rates. So the CQT spans ``cqt_fmin`` .. 0.9 x Nyquist
and the bins per octave are chosen so that ``n_bins`` fit in that range:
at 16 kHz 50 Hz .. 7.2 kHz gives 14 bins/octave, at 4 kHz 50 Hz .. 1.8 kHz gives 19.

Values are stored as dB (Mel, CQT) and raw cepstral coefficients (MFCC); the
per-channel normalisation is applied later (``normalise``), with statistics
from the training data or per sample.

Sample rate: ICBHI recordings come at 4 kHz (Meditron, Litt3200) and 44.1 kHz
(AKGC417L, LittC2SE, some Meditron). At 16 kHz the band above 2 kHz is empty for
the 4 kHz recordings only, which tells a model the device, and devices are not
balanced across classes (in the cycles.csv subset 111 of 147 crackle cycles are
4 kHz recordings). ``sample_rate=4000`` (with ``n_fft=512, hop_length=128``, the
same 128 ms / 32 ms in time) removes that cue; the benchmark uses it.

Extraction is cached: one ``.npy`` per cycle under ``cache_dir``, keyed by a hash
of the audio file (path, size, mtime), the cycle's bounds and this config, so a
second run (or another fold) skips the work.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rarespot.config import StrictModel
from rarespot.errors import InputError
from rarespot.io.audio import AudioQualityWarning, ResampleNotice, announce_resample, read_audio, resample
from rarespot.sounds.data import Cycle, cut_cycle, fit_length
from rarespot.io.atomic import atomic_path
from rarespot.progress import ProgressBar

CHANNELS = ("mfcc", "mel", "cqt")


class FeatureConfig(StrictModel):
    """How a cycle becomes a (3, H, W) image. Changing any field invalidates the cache.

    The defaults are the benchmark's (docs/benchmarks/sounds.md): 4 kHz, so recordings from 4 kHz and
    44.1 kHz stethoscopes look alike; 64 bins; 128 ms windows every 32 ms (see the module doc).
    """

    sample_rate: int = Field(4000, gt=0, description="every cycle is resampled to this rate (Hz)")
    cycle_seconds: float = Field(8.0, gt=0, description="fixed cycle length: longer cycles are cropped, shorter padded")
    pad_mode: Literal["repeat", "zero"] = "repeat"
    n_bins: int = Field(64, ge=8, description="MFCC coefficients = Mel bands = CQT bins")
    n_fft: int = Field(512, ge=16, description="STFT window (samples); 512 at 4 kHz = 128 ms")
    hop_length: int = Field(128, ge=1, description="STFT hop (samples); 128 at 4 kHz = 32 ms")
    cqt_fmin: float = Field(50.0, gt=0, description="lowest CQT frequency (Hz)")
    cqt_fmax_fraction: float = Field(0.9, gt=0, le=0.95, description="top CQT frequency as a fraction of Nyquist")
    image_size: tuple[int, int] = Field((64, 128), description="(height, width) of each channel after resizing")

    def cqt_bins_per_octave(self) -> int:
        fmax = self.cqt_fmax_fraction * self.sample_rate / 2
        if fmax <= self.cqt_fmin * 2:
            raise ValueError(f"cqt_fmin {self.cqt_fmin} Hz is too close to Nyquist at {self.sample_rate} Hz")
        return math.ceil(self.n_bins / math.log2(fmax / self.cqt_fmin))

    def key(self) -> str:
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("RARESPOT_CACHE", Path.home() / ".cache" / "rarespot")) / "sound_features"


# --------------------------------------------------------------------------- one signal


def signal_features(signal: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(3, H, W) float32: MFCC, log-Mel and log-CQT of one fixed-length signal."""
    import cv2
    import librosa

    sr, hop, n = config.sample_rate, config.hop_length, config.n_bins
    signal = np.asarray(signal, dtype=np.float32)
    n_fft = min(config.n_fft, _pow2_at_most(len(signal)))
    mel_power = librosa.feature.melspectrogram(
        y=signal, sr=sr, n_fft=n_fft, hop_length=hop, window="hamming", n_mels=n, power=2.0
    )
    mel_db = librosa.power_to_db(mel_power, ref=1.0, top_db=None)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=n)
    cqt = np.abs(
        librosa.cqt(
            y=signal,
            sr=sr,
            hop_length=hop,
            fmin=config.cqt_fmin,
            n_bins=n,
            bins_per_octave=config.cqt_bins_per_octave(),
        )
    )
    cqt_db = librosa.amplitude_to_db(cqt, ref=1.0, top_db=None)
    # Floor the dB maps: digital silence would otherwise give -inf / huge negatives.
    mel_db = np.maximum(mel_db, -100.0)
    cqt_db = np.maximum(cqt_db, -100.0)
    h, w = config.image_size
    maps = []
    for m in (mfcc, mel_db, cqt_db):
        m = m[:, : min(m.shape[1], mfcc.shape[1])]
        # Low frequencies at the bottom row, as a spectrogram is drawn; INTER_AREA averages when shrinking.
        maps.append(cv2.resize(np.ascontiguousarray(m[::-1], dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA if m.shape[1] >= w else cv2.INTER_LINEAR))
    return np.stack(maps).astype(np.float32)


def _pow2_at_most(n: int) -> int:
    return 1 << max(int(n).bit_length() - 1, 4)


def cycle_signal(audio: np.ndarray, sample_rate: int, cycle: Cycle, config: FeatureConfig) -> np.ndarray:
    """The cycle's samples, padded or cropped to ``config.cycle_seconds``."""
    x = cut_cycle(audio, sample_rate, cycle.start, cycle.end)
    return fit_length(x, int(round(config.cycle_seconds * config.sample_rate)), config.pad_mode)


# --------------------------------------------------------------------------- cache


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cache_path(cycle: Cycle, config: FeatureConfig, cache_dir: Path) -> Path:
    ident = f"{_file_key(Path(cycle.audio_path))}|{cycle.start}|{cycle.end}"
    digest = hashlib.sha1(ident.encode()).hexdigest()[:20]
    # "-f32": entries are float32; folders of float16 entries written by older versions are not read.
    return Path(cache_dir) / f"{config.key()}-f32" / digest[:2] / f"{digest}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _check_cycle(samples: np.ndarray, cycle: Cycle, config: FeatureConfig, file_silent: bool = False) -> None:
    """Raise for a cycle with no samples; warn (naming the file and cycle) for one shorter than one analysis
    window or silent: it is still scored, but the score means less."""
    from rarespot.io.audio import SILENCE_PEAK

    where = f"cycle {cycle.index}" + (f" ({cycle.start:.3f}-{cycle.end:.3f} s)" if cycle.start is not None and cycle.end is not None else "")
    if len(samples) == 0:
        raise InputError(cycle.audio_path, f"{where} holds no audio samples")
    if len(samples) < config.n_fft:
        warnings.warn(f"{cycle.audio_path}: {where} is {len(samples)} samples at {config.sample_rate} Hz, shorter than one "
                      f"{config.n_fft}-sample analysis window; repeated to fill {config.cycle_seconds:g} s and scored",
                      AudioQualityWarning, stacklevel=2)
    elif not file_silent and float(np.max(np.abs(samples))) < SILENCE_PEAK:  # a silent file is warned about once
        warnings.warn(f"{cycle.audio_path}: {where} is silent (peak below {SILENCE_PEAK:g} of full scale); scored anyway",
                      AudioQualityWarning, stacklevel=2)


def _extract_file(audio_path: Path, cycles: list[Cycle], config: FeatureConfig, cache_dir: Path | None):
    """Worker: features of all cycles of one audio file (read once).

    Runs in a joblib process, where warnings and exceptions would be lost or
    unpicklable, so both are returned as plain data and re-raised by the caller.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            audio, rate = read_audio(audio_path)
            # Resampled here rather than by read_audio(path, rate): its once-per-rate notice would be
            # used up inside the worker (in-process when n_jobs=1) and then never reach the user.
            resampled = resample(audio, rate, config.sample_rate)
            out = []
            from rarespot.io.audio import SILENCE_PEAK

            file_silent = resampled.size == 0 or float(np.max(np.abs(resampled))) < SILENCE_PEAK
            for cycle in cycles:
                _check_cycle(cut_cycle(resampled, config.sample_rate, cycle.start, cycle.end), cycle, config, file_silent)
                feats = signal_features(cycle_signal(resampled, config.sample_rate, cycle, config), config)
                if cache_dir is not None:
                    _save_atomic(cache_path(cycle, config, cache_dir), feats)  # float32: a cached run sees the same inputs
                out.append(feats)
            error = None
        except InputError as exc:
            out, error = None, (str(exc.path), exc.problem)
    notes = [(w.category.__name__, str(w.message)) for w in caught]
    return out, error, notes, (rate if error is None else None)


def extract_features(
    cycles: list[Cycle],
    config: FeatureConfig,
    *,
    cache_dir: str | Path | None = None,
    n_jobs: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """(N, 3, H, W) float32 features of the cycles, in order; cached cycles are loaded, not recomputed.

    cache_dir: None uses ``default_cache_dir()``; pass ``False`` to disable caching.
    n_jobs: parallel worker processes (joblib); one task per audio file.
    """
    from joblib import Parallel, delayed

    if cache_dir is None:
        cache_dir = default_cache_dir()
    cache = Path(cache_dir) if cache_dir is not False else None
    h, w = config.image_size
    result = np.zeros((len(cycles), 3, h, w), dtype=np.float32)
    todo: dict[Path, list[int]] = defaultdict(list)
    for i, cycle in enumerate(cycles):
        if cache is not None:
            path = cache_path(cycle, config, cache)
            if path.is_file():
                try:
                    result[i] = np.load(path)
                    continue
                except (ValueError, OSError, EOFError):
                    pass  # a damaged cache entry is recomputed
        todo[Path(cycle.audio_path)].append(i)
    if not todo:
        return result

    files = list(todo)
    tasks = (delayed(_extract_file)(f, [cycles[i] for i in todo[f]], config, cache) for f in files)
    runner = Parallel(n_jobs=n_jobs, return_as="generator")
    total = sum(len(v) for v in todo.values())
    with ProgressBar(total, "extracting features", progress, unit="cycles", transient=True) as bar:
        for f, (feats, error, notes, rate) in zip(files, runner(tasks)):
            for category, message in notes:
                if category == ResampleNotice.__name__:
                    continue  # re-said once below, in this process
                warnings.warn(message, AudioQualityWarning if category == AudioQualityWarning.__name__ else UserWarning, stacklevel=2)
            if error is not None:
                raise InputError(*error)
            if rate != config.sample_rate:
                announce_resample(f, rate, config.sample_rate)
            for i, feat in zip(todo[f], feats):
                result[i] = feat
            bar.advance(len(feats))
    return result


# --------------------------------------------------------------------------- normalisation


class NormStats(BaseModel):
    """Per-channel mean and std used to standardise features (stored with the model)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["dataset", "per_sample"] = "dataset"
    mean: list[float] = [0.0, 0.0, 0.0]
    std: list[float] = [1.0, 1.0, 1.0]


def fit_norm_stats(features: np.ndarray, mode: str = "dataset") -> NormStats:
    """Per-channel statistics over the training features (mode "dataset"), or none needed ("per_sample")."""
    if mode == "per_sample":
        return NormStats(mode="per_sample")
    mean = features.mean(axis=(0, 2, 3)).astype(float)
    std = features.std(axis=(0, 2, 3)).astype(float)
    return NormStats(mode="dataset", mean=mean.tolist(), std=np.maximum(std, 1e-6).tolist())


def normalise(features: np.ndarray, stats: NormStats) -> np.ndarray:
    """Standardise each channel: with the stored statistics, or each sample by its own."""
    if stats.mode == "per_sample":
        mean = features.mean(axis=(-2, -1), keepdims=True)
        std = features.std(axis=(-2, -1), keepdims=True)
        return ((features - mean) / np.maximum(std, 1e-6)).astype(np.float32)
    mean = np.asarray(stats.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(stats.std, dtype=np.float32)[:, None, None]
    return ((features - mean) / std).astype(np.float32)
