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
    config: object  # TrainConfig
    norm: NormStats
    class_names: list[str]
    source: Path | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "SoundClassifier":
        import torch

        from rarespot.sounds.torch_model import build_model
        from rarespot.sounds.train import CHECKPOINT_FORMAT, TrainConfig, pick_device

        path, blob = load_tagged_checkpoint(path, "best.pt", CHECKPOINT_FORMAT, "rarespot lung-sound model", "rarespot sounds train")
        config = TrainConfig.model_validate(blob["config"])
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
        model.to(pick_device(device)).eval()
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
