"""Choose the malaria CAE and its error score on a validation split, never on the test split.

bench_screen.py keeps a seeded 20% of both classes as the test set. This script
uses only the other 80%: every CAE is trained on the Uninfected cells there
(10% of them held out), and each (architecture x error sign x pooling x mask
erosion) is ranked by AUROC on a *validation* set = those held-out Uninfected
cells + a seeded --val-anomalies Parasitized cells from the non-test part
(labelled anomalies are used for model selection only, as anomalib's
validation split does; the detectors themselves never see one).

    python bench/bench_screen_select.py --archs 8,16,32 16,32,64 32,64,128 --epochs 40 --patience 5

Trained CAEs are cached in --work under bench_screen.py's names, so
``bench_screen.py`` with the same settings re-scores the chosen one without
retraining.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_screen import DEFAULT_NPZ, fit_or_load_cae, split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--archs", nargs="+", default=["8,16,32", "16,32,64"], help="encoder widths, one CAE each")
    ap.add_argument("--latent", type=int, default=4)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--max-train", type=int, default=8000)
    ap.add_argument("--val-anomalies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rarespot_screen_bench"))
    args = ap.parse_args()

    import torch

    from rarespot.screen.config import ScoreConfig
    from rarespot.screen.data import prepare
    from rarespot.screen.scores import error_map, foreground_mask, pool_error
    from sklearn.metrics import average_precision_score, roc_auc_score

    torch.set_num_threads(args.threads)
    with np.load(args.npz) as npz:
        images, labels = npz["images"], npz["labels"].astype(int)
    test = split(labels, 0.2, args.seed)
    fit_imgs = images[~test & (labels == 0)]
    rng = np.random.default_rng(args.seed + 1)
    val_anomalies = images[rng.choice(np.flatnonzero(~test & (labels == 1)), args.val_anomalies, replace=False)]

    rows = []
    for arch in args.archs:
        channels = tuple(int(c) for c in arch.split(","))
        det, tag = fit_or_load_cae(fit_imgs, args.size, channels, args.latent, args.epochs, args.max_train, 0.05,
                                   args.seed, args.threads, args.work, args.patience)
        h = det.history_
        _, val_idx = det._split(len(fit_imgs), det.config_)
        val_imgs = np.concatenate([fit_imgs[val_idx], val_anomalies])
        y = np.r_[np.zeros(len(val_idx)), np.ones(len(val_anomalies))]
        x = prepare(val_imgs, args.size, "gray")
        with torch.inference_mode():
            recon = torch.cat([det.model_(torch.from_numpy(x[i : i + 512]))[0] for i in range(0, len(x), 512)]).numpy()
        train_info = f"{len(h.val_loss)} epochs (best {h.best_epoch + 1}), val MSE {min(h.val_loss):.5f}, {h.seconds:.0f} s"
        print(f"{tag}: {train_info}", flush=True)
        for sign, pooling, erode in itertools.product(("both", "darker"), ("mean_squared", "top_fraction", "smoothed_max"), (1, 2, 3)):
            sc = ScoreConfig(error_sign=sign, error_pooling=pooling, erode_px=erode)
            mask = foreground_mask(x, sc.foreground_threshold, erode_px=erode)
            score = pool_error(error_map(x, recon, sign), mask, sc)
            rows.append((arch, sign, pooling, erode, roc_auc_score(y, score), average_precision_score(y, score), train_info))

    print(f"\nvalidation: {int((y == 0).sum())} held-out Uninfected + {len(val_anomalies)} Parasitized (non-test); "
          f"loadavg {os.getloadavg()[0]:.1f}\n")
    print("| encoder widths | error sign | pooling | erosion px | val AUROC | val AUPRC |")
    print("|---|---|---|---|---|---|")
    for arch, sign, pooling, erode, auroc, auprc, _ in sorted(rows, key=lambda r: -r[4]):
        print(f"| {arch} | {sign} | {pooling} | {erode} | {auroc:.3f} | {auprc:.3f} |")
    best = max(rows, key=lambda r: r[4])
    print(f"\nbest on validation: widths {best[0]}, sign {best[1]}, pooling {best[2]}, erosion {best[3]} "
          f"(AUROC {best[4]:.3f}; {best[6]})")


if __name__ == "__main__":
    main()
