"""Reconstruction-error variants of a fitted malaria CAE, without retraining.

Runs the network once over the held-out normals and the test split of
bench_screen.py (same seeded split), then tries error sign x pooling x mask
erosion x smoothing. Thresholds come from the held-out normals at --far.
NOTE: every variant is scored on the same test split, so picking the best one
here is optimistic; the default config was fixed before this sweep.

    nice -n 10 python bench/bench_screen_variants.py /tmp/rarespot_screen_bench/<tag>/model.pt
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_screen import DEFAULT_NPZ, split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--far", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from rarespot.metrics.anomaly import anomaly_metrics
    from rarespot.screen.data import prepare
    from rarespot.screen.detectors import CAEDetector
    from rarespot.screen.scores import error_map, foreground_mask, pool_error, upper_threshold

    torch.set_num_threads(1)
    det = CAEDetector.load(args.model)
    cfg = det.config_
    with np.load(args.npz) as npz:
        images, labels = npz["images"], npz["labels"].astype(int)
    test = split(labels, 0.2, args.seed)
    fit_imgs = images[~test & (labels == 0)]
    _, val_idx = det._split(len(fit_imgs), cfg)
    y = labels[test]

    def recon(imgs):
        x = prepare(imgs, cfg.data.size, cfg.data.color)
        with torch.inference_mode():
            r = torch.cat([det.model_(torch.from_numpy(x[i : i + 512]))[0] for i in range(0, len(x), 512)]).numpy()
        return x, r

    xv, rv = recon(fit_imgs[val_idx])
    xt, rt = recon(images[test])
    print(f"| error sign | pooling | erosion px | sigma | AUROC | AUPRC | F1 @ FAR {args.far} thr. | FAR on test normals |")
    print("|---|---|---|---|---|---|---|---|")
    for sign, pooling, erode, sigma in itertools.product(("both", "darker"), ("mean_squared", "smoothed_max"), (0, 2, 4), (1.0, 2.0)):
        if pooling == "mean_squared" and sigma != 1.0:
            continue
        sc = cfg.score.model_copy(update={"error_sign": sign, "error_pooling": pooling, "smooth_sigma": sigma})

        def score(x, r):
            mask = foreground_mask(x, sc.foreground_threshold, erode_px=erode)
            return pool_error(error_map(x, r, sign), mask, sc)

        thr = upper_threshold(score(xv, rv), args.far)
        m = anomaly_metrics(y, score(xt, rt), thr)
        print(f"| {sign} | {pooling} | {erode} | {sigma if pooling == 'smoothed_max' else '-'} | {m['auroc']:.3f} | {m['auprc']:.3f} "
              f"| {m['f1']:.3f} | {m['false_alarm_rate']:.3f} |", flush=True)
    print(f"\nloadavg {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
