"""Test helpers for the lung-sound pipeline: tiny ICBHI-style recordings whose classes are easy to hear."""

from __future__ import annotations

import numpy as np

RATE = 4000


def synth_cycle(label: int, rng, seconds: float = 1.0) -> np.ndarray:
    """Noise; crackle = clicks, wheeze = a 400 Hz tone, both = both (easy to tell apart)."""
    n = int(seconds * RATE)
    x = 0.05 * rng.standard_normal(n)
    if label in (1, 3):
        x[rng.integers(0, n, 12)] += 0.8
    if label in (2, 3):
        x += 0.3 * np.sin(2 * np.pi * 400 * np.arange(n) / RATE)
    return x.astype(np.float32)


def make_recordings(folder, n_patients=6, cycles_per=8, seed=0):
    """Official layout: <patient>_1b1_Al_sc_Test.wav + .txt, 1 s cycles, labels cycling through the classes."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for p in range(n_patients):
        name = f"{101 + p}_1b1_Al_sc_Test"
        labels = [(p + i) % 4 if i % 2 else 0 for i in range(cycles_per)]
        audio = np.concatenate([synth_cycle(lab, rng, 1.0) for lab in labels])
        sf.write(folder / f"{name}.wav", audio, RATE)
        (folder / f"{name}.txt").write_text("".join(f"{i}.0\t{i + 1}.0\t{int(lab in (1, 3))}\t{int(lab in (2, 3))}\n" for i, lab in enumerate(labels)))
    return folder
