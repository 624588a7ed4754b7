"""Choose the malaria screening defaults on a validation split, never on the test split.

bench_screen.py keeps a seeded 20% of both classes as the test set. This script
uses only the other 80%: every detector is fitted on the Uninfected cells there
(10% of them held out), and each setting is ranked by AUROC on a *validation*
set = those held-out Uninfected cells + a seeded --val-anomalies Parasitized
cells from the non-test part (labelled anomalies are used for model selection
only, as anomalib's validation split does; the detectors themselves never see one).

CAE: (architecture x error sign x error smoothing x pooling x mask erosion) on one
trained network per architecture, then, for the best error setting, which score to
threshold (error, latent density, combined) with F1 / false-alarm rate on validation
at the threshold stored from the held-out normals.
Pretrained features (--patch): method x input size x stages of PatchDetector.

    python bench/bench_screen_select.py --archs 16,32,64 --epochs 40 --patience 5 --threads 1 --patch

Trained CAEs are cached in --work under bench_screen.py's names, so
``bench_screen.py`` with the same settings re-scores the chosen one without
retraining.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_screen import DEFAULT_NPZ, fit_or_load_cae, split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--archs", nargs="+", default=["16,32,64"], help="encoder widths, one CAE each")
    ap.add_argument("--latent", type=int, default=4)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--max-train", type=int, default=8000)
    ap.add_argument("--val-anomalies", type=int, default=1000)
    ap.add_argument("--far", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patch", action="store_true", help="also rank the pretrained-feature detector's settings")
    ap.add_argument("--patch-methods", nargs="+", default=["gaussian", "padim", "patchcore"])
    ap.add_argument("--patch-sizes", nargs="+", type=int, default=[64, 96])
    ap.add_argument("--patch-stages", nargs="+", default=["1,2"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/rarespot_screen_bench"))
    ap.add_argument("--out-json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from rarespot.metrics.anomaly import anomaly_metrics
    from rarespot.screen.config import ScoreConfig, ScreenConfig
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
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "cae_rows": [], "combine_rows": [], "patch_rows": []}

    rows = []
    val_idx = None
    for arch in args.archs:
        channels = tuple(int(c) for c in arch.split(","))
        det, tag = fit_or_load_cae(fit_imgs, args.size, channels, args.latent, args.epochs, args.max_train, args.far,
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
        for sign, sigma, pooling, erode in itertools.product(("both", "darker"), (None, 0.7, 1.0, 1.5),
                                                             ("mean_squared", "top_fraction", "smoothed_max"), (1, 2, 3)):
            sc = ScoreConfig(error_sign=sign, error_smooth_sigma=sigma, error_pooling=pooling, erode_px=erode)
            mask = foreground_mask(x, sc.foreground_threshold, erode_px=erode)
            score = pool_error(error_map(x, recon, sign, sigma), mask, sc)
            rows.append((arch, sign, sigma, pooling, erode, roc_auc_score(y, score), average_precision_score(y, score), train_info))

        # Which score to threshold, for this network's best error setting: error alone, density, or combined.
        best = max((r for r in rows if r[0] == arch), key=lambda r: r[5])
        score_cfg = ScreenConfig().score.model_copy(update={"error_sign": best[1], "error_smooth_sigma": best[2],
                                                            "error_pooling": best[3], "erode_px": best[4]})
        det.refit_scores(fit_imgs, score=score_cfg)
        s = det.analyze(val_imgs)
        for name in ("error", "density", "combined"):
            m = anomaly_metrics(y, s.get(name), det._threshold_of(name))
            out["combine_rows"].append({"arch": arch, "score": name, **m})
        out["cae_rows"] += [dict(zip(("arch", "sign", "smooth_sigma", "pooling", "erode_px", "auroc", "auprc"), r[:7])) for r in rows if r[0] == arch]

    print(f"\nvalidation: {len(val_idx)} held-out Uninfected + {len(val_anomalies)} Parasitized (non-test); "
          f"loadavg {os.getloadavg()[0]:.1f}\n")
    print("| encoder widths | error sign | smoothing sigma | pooling | erosion px | val AUROC | val AUPRC |")
    print("|---|---|---|---|---|---|---|")
    for arch, sign, sigma, pooling, erode, auroc, auprc, _ in sorted(rows, key=lambda r: -r[5])[:25]:
        print(f"| {arch} | {sign} | {sigma if sigma else '-'} | {pooling} | {erode} | {auroc:.3f} | {auprc:.3f} |")
    best = max(rows, key=lambda r: r[5])
    print(f"\nbest on validation: widths {best[0]}, sign {best[1]}, smoothing {best[2]}, pooling {best[3]}, erosion {best[4]} "
          f"(AUROC {best[5]:.3f}; {best[7]})")
    print("\n| encoder widths | thresholded score | val AUROC | F1 @ stored thr. | FAR on val normals |")
    print("|---|---|---|---|---|")
    for r in out["combine_rows"]:
        print(f"| {r['arch']} | {r['score']} | {r['auroc']:.3f} | {r['f1']:.3f} | {r['false_alarm_rate']:.3f} |")

    if args.patch:
        from rarespot.screen.detectors import CAEDetector
        from rarespot.screen.patch import PatchDetector

        print("\n| patch method | size | stages | val AUROC | val AUPRC | F1 @ stored thr. | FAR on val normals | fit CPU s |")
        print("|---|---|---|---|---|---|---|---|", flush=True)
        for size, stages in itertools.product(args.patch_sizes, args.patch_stages):
            stage_t = tuple(int(s) for s in stages.split(","))
            base = {"detector": "patch", "patch": {"size": size, "stages": stage_t},
                    "train": {"val_fraction": 0.1, "max_train_images": args.max_train, "threads": args.threads, "seed": args.seed}, "far": args.far}
            det = PatchDetector(base)
            cfg = det._config()
            det.config_ = cfg
            x = prepare(fit_imgs, size, "gray")
            train_idx, v_idx = CAEDetector._split(len(x), cfg)
            c0 = time.process_time()
            f_train, m_train = det._features(x[train_idx], cfg)
            f_cal, m_cal = det._features(x[v_idx], cfg)
            f_val, m_val = det._features(prepare(val_imgs, size, "gray"), cfg)
            feat_cpu = time.process_time() - c0
            for method in args.patch_methods:
                cfg_m = cfg.model_copy(deep=True)
                cfg_m.patch.method = method
                det.config_ = cfg_m
                c0 = time.process_time()
                det._fit_model(f_train, m_train, cfg_m)
                thr = float(np.quantile(det._image_scores(det._patch_scores(f_cal), m_cal), 1 - args.far))
                fit_cpu = feat_cpu + time.process_time() - c0
                sv = det._image_scores(det._patch_scores(f_val), m_val)
                m = anomaly_metrics(y, sv, thr)
                out["patch_rows"].append({"method": method, "size": size, "stages": stages, **m, "fit_cpu_s": fit_cpu})
                print(f"| {method} | {size} | {stages} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['f1']:.3f} | {m['false_alarm_rate']:.3f} | {fit_cpu:.0f} |", flush=True)
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
