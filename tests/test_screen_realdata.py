"""A short real run on the NIH malaria cells: train on Uninfected only, Parasitized is the anomaly."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.metrics.anomaly import anomaly_metrics
from rarespot.screen.detectors import CAEDetector, FeatureDetector

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_malaria_cae_beats_pixel_baseline(malaria_npz):
    with np.load(malaria_npz) as npz:
        images, labels = npz["images"], npz["labels"].astype(int)
    rng = np.random.default_rng(0)
    normal = rng.permutation(np.flatnonzero(labels == 0))
    sick = rng.permutation(np.flatnonzero(labels == 1))
    fit_idx = normal[:1500]
    test_idx = np.r_[normal[1500:2000], sick[:500]]
    y = (labels[test_idx] == 1).astype(int)
    cfg = {"data": {"size": 48}, "train": {"epochs": 4, "seed": 0},
           "score": {"error_sign": "darker", "error_pooling": "smoothed_max", "combine": "error"}, "far": 0.05}
    det = CAEDetector(cfg, random_state=0).fit(images[fit_idx])
    scores = det.analyze(images[test_idx])
    m = anomaly_metrics(y, scores.error, det.thresholds_.error)
    pixels = FeatureDetector("pca_recon", n_components=64).fit(images[fit_idx].reshape(1500, -1) / 255.0)
    base = anomaly_metrics(y, -pixels.score_samples(images[test_idx].reshape(len(y), -1) / 255.0))
    # Measured once (2026-11-21, loaded 2-core VM): CAE error AUROC 0.913, FAR 0.054 on unseen normals, vs 0.712
    # for PCA-64 reconstruction. The smoothed max of the darker-than-expected error is the robust choice for
    # this short training (the mean squared error inside the cell gave 0.75 here). Full-size numbers:
    # docs/benchmarks/screen.md.
    print(f"CAE error {m}\nPCA-64 reconstruction {base}")
    assert m["auroc"] > 0.8 and m["auroc"] > base["auroc"] + 0.1, (m, base)
    # The threshold set on held-out normals keeps its promise on unseen normals (within sampling error).
    assert m["false_alarm_rate"] < 0.12, m
