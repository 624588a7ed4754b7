"""Scoring a trained lung-sound model on labelled cycles: ICBHI Se/Sp/Score, per-class recall, confusion PNG."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from rarespot.io.atomic import atomic_write_text
from rarespot.metrics.icbhi import IcbhiScores, icbhi_scores, plot_confusion
from rarespot.sounds.predict import SoundClassifier


def evaluate(
    model: SoundClassifier | str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    n_jobs: int = 1,
    progress: bool = True,
) -> IcbhiScores:
    """Predict every cycle of ``data`` (manifest CSV or official-layout folder) and score it.

    split: keep only the official "train" or "test" part when the data says which is which.
    out_dir: where to write ``scores.json``, ``predictions.csv`` and ``confusion.png``.
    """
    from rarespot.sounds.data import load_cycles

    classifier = model if isinstance(model, SoundClassifier) else SoundClassifier.load(model)
    cycles = load_cycles(data, split=split)
    probs = classifier.predict_cycles(cycles, cache_dir=cache_dir, n_jobs=n_jobs, progress=progress)
    y_true = np.array([c.label for c in cycles])
    y_pred = probs.argmax(1)
    scores = icbhi_scores(y_true, y_pred, class_names=tuple(classifier.class_names))
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_text(out / "scores.json", json.dumps({"model": str(classifier.source), "data": str(data), **scores.as_dict()}, indent=1))
        names = classifier.class_names
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")  # quotes a path or recording name that holds a comma
        writer.writerow(["file", "recording", "cycle", "start", "end", "true", "predicted"] + [f"p_{n}" for n in names])
        for c, t, p, pr in zip(cycles, y_true, y_pred, probs):
            writer.writerow([str(c.audio_path), c.recording, str(c.index), "" if c.start is None else f"{c.start:g}",
                             "" if c.end is None else f"{c.end:g}", names[t], names[p]] + [f"{v:.4f}" for v in pr])
        atomic_write_text(out / "predictions.csv", buf.getvalue())
        plot_confusion(scores, out / "confusion.png", title=f"{Path(str(data)).name}")
    return scores
