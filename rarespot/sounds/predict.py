"""Per-cycle predictions with a trained lung-sound model.

``SoundClassifier.load(best.pt)`` rebuilds the model, its feature config and its
normalisation from the checkpoint. ``predict_file`` labels the cycles of one
recording: the cycles of its annotation file when there is one (next to the
audio, or given), otherwise fixed windows of the model's cycle length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rarespot.errors import InputError
from rarespot.io.audio import audio_info
from rarespot.io.checkpoint import load_tagged_checkpoint
from rarespot.sounds.data import Cycle, cycles_for_recording, fixed_windows
from rarespot.sounds.features import NormStats, extract_features, normalise


@dataclass
class CyclePrediction:
    start: float
    end: float
    label: str
    probabilities: dict[str, float]
    true_label: str | None = None

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "label": self.label,
                "probabilities": self.probabilities, "true_label": self.true_label}


@dataclass
class SoundClassifier:
    model: object
    config: object  # SoundsTrainConfig
    norm: NormStats
    class_names: list[str]
    source: Path | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "SoundClassifier":
        import torch

        from rarespot.sounds.torch_model import build_model
        from rarespot.device import torch_device
        from rarespot.sounds.train import CHECKPOINT_FORMAT, SoundsTrainConfig

        path, blob = load_tagged_checkpoint(path, "best.pt", CHECKPOINT_FORMAT, "rarespot lung-sound model", "rarespot sounds train")
        config = SoundsTrainConfig.model_validate(blob["config"])
        model = build_model(config.model)
        own, saved = model.state_dict(), blob["model"]
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        wrong = [k for k in own if k in saved and saved[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            detail = "; ".join(f"{what}: {', '.join(keys[:3])}" for what, keys in
                               (("missing", missing), ("unexpected", unexpected), ("other shape", wrong)) if keys)
            raise InputError(path, f"weights do not match the model config stored with them (written by another rarespot version?) - {detail}")
        model.load_state_dict(saved)
        if config.threads:
            torch.set_num_threads(config.threads)
        model.to(torch_device(device)).eval()
        return cls(model, config, NormStats.model_validate(blob["norm"]), list(blob["class_names"]), path,
                   {"val": blob.get("val"), "epoch": blob.get("epoch")})

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of raw feature images."""
        from scipy.special import softmax

        from rarespot.sounds.train import predict_logits

        return softmax(predict_logits(self.model, normalise(features, self.norm)), axis=1)

    def predict_cycles(self, cycles: list[Cycle], *, cache_dir=False, n_jobs: int = 1, progress: bool = False) -> np.ndarray:
        x = extract_features(cycles, self.config.features, cache_dir=cache_dir, n_jobs=n_jobs, progress=progress)
        return self.predict_features(x)


def cycles_to_predict(audio_path: str | Path, annotation: str | Path | None = None, window: float | None = None,
                      cycle_seconds: float = 8.0) -> tuple[list[Cycle], bool]:
    """The cycles of a recording: from its annotation (given or ``<name>.txt`` beside it) or fixed windows.

    Returns (cycles, annotated).
    """
    audio_path = Path(audio_path)
    info = audio_info(audio_path)  # fails early, naming the file, if it is not audio
    if annotation is not None or audio_path.with_suffix(".txt").is_file():
        return cycles_for_recording(audio_path, annotation), True
    windows = fixed_windows(info.duration, window or cycle_seconds)
    return [Cycle(audio_path, audio_path.stem, i, 0, s, e) for i, (s, e) in enumerate(windows)], False


def predict_file(
    classifier: SoundClassifier | str | Path,
    audio_path: str | Path,
    *,
    annotation: str | Path | None = None,
    window: float | None = None,
) -> list[CyclePrediction]:
    """Label every cycle (or fixed window) of one recording."""
    if not isinstance(classifier, SoundClassifier):
        classifier = SoundClassifier.load(classifier)
    cycles, annotated = cycles_to_predict(audio_path, annotation, window, classifier.config.features.cycle_seconds)
    probs = classifier.predict_cycles(cycles)
    names = classifier.class_names
    out = []
    for cycle, p in zip(cycles, probs):
        out.append(CyclePrediction(
            start=float(cycle.start), end=float(cycle.end), label=names[int(p.argmax())],
            probabilities={n: round(float(v), 4) for n, v in zip(names, p)},
            true_label=names[cycle.label] if annotated else None,
        ))
    return out


# --------------------------------------------------------------------------- timeline PNG

CLASS_COLOURS = {"normal": "#4c9a2a", "crackle": "#d95f02", "wheeze": "#7570b3", "both": "#e7298a"}


def plot_timeline(audio_path: str | Path, predictions: list[CyclePrediction], path: str | Path, *,
                  max_rate: int = 4000, title: str | None = None) -> Path:
    """One PNG for a clinician: the waveform and spectrogram of the whole recording, each cycle shaded
    in its predicted class's colour and labelled with the class and its probability; the annotated class
    (when the recording has an annotation) on a second row beneath, red where it disagrees.

    Written atomically: an existing file of that name is replaced only by a complete PNG.
    """
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from rarespot.io.audio import read_audio
    from rarespot.viz import save_figure

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's problems were said when it was scored
        audio, rate = read_audio(audio_path, check_quality=False)
    if rate > max_rate:  # the plot needs no more than the model's band; keeps long recordings light
        from rarespot.io.audio import resample

        audio, rate = resample(audio, rate, max_rate), max_rate
    t = np.arange(len(audio)) / rate
    annotated = any(p.true_label is not None for p in predictions)
    rows = 3 if annotated else 2
    fig, axes = plt.subplots(rows, 1, figsize=(max(8.0, min(24.0, len(audio) / rate / 2)), 2.2 * rows + 0.6), dpi=110,
                             sharex=True, gridspec_kw={"height_ratios": [1, 1.3] + ([0.45] if annotated else [])})
    wave_ax, spec_ax = axes[0], axes[1]
    step = max(1, len(audio) // 20000)  # decimated for drawing only
    wave_ax.plot(t[::step], audio[::step], lw=0.4, color="black")
    wave_ax.set_ylabel("amplitude")
    n_fft = 256 if rate <= 4000 else 1024
    spec = librosa.amplitude_to_db(np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=n_fft // 4)) + 1e-10, ref=np.max)
    spec_ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                   extent=(0, len(audio) / rate, 0, rate / 2))
    spec_ax.set_ylabel("Hz")
    for p in predictions:
        colour = CLASS_COLOURS.get(p.label, "grey")
        wave_ax.axvspan(p.start, p.end, color=colour, alpha=0.18, lw=0)
        wave_ax.axvline(p.start, color="grey", lw=0.5, alpha=0.7)
        spec_ax.axvline(p.start, color="white", lw=0.5, alpha=0.7)
        wave_ax.text((p.start + p.end) / 2, 0.98, f"{p.label}\n{p.probabilities[p.label]:.2f}", transform=wave_ax.get_xaxis_transform(),
                     ha="center", va="top", fontsize=7, color=colour, fontweight="bold")
    if annotated:
        ann_ax = axes[2]
        for p in predictions:
            if p.true_label is None:
                continue
            wrong = p.true_label != p.label
            ann_ax.axvspan(p.start, p.end, color=CLASS_COLOURS.get(p.true_label, "grey"), alpha=0.5, lw=0)
            ann_ax.axvline(p.start, color="white", lw=1.0)
            ann_ax.text((p.start + p.end) / 2, 0.5, p.true_label, ha="center", va="center", fontsize=7,
                        color="red" if wrong else "black", fontweight="bold" if wrong else "normal")
        ann_ax.set_yticks([])
        ann_ax.set_ylabel("annotated", rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(0, len(audio) / rate)
    wave_ax.legend(handles=[Patch(color=c, alpha=0.5, label=n) for n, c in CLASS_COLOURS.items()], loc="lower right",
                   fontsize=7, ncol=4, framealpha=0.8)
    wave_ax.set_title(title or f"{Path(audio_path).name}: predicted class and probability per cycle", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, format="png")
