"""Scoring throughput of the default screening detector and its peers (issue 17's speed target).

Times, best of --repeats, on the 4,410 test cells of bench_screen.py's split (uint8 50x50):

* the default CAE detector's ``score_samples`` (what flags images: resize, network, smoothed
  error map, pooling; the latent KDE is skipped when only the error is thresholded) and its
  ``analyze`` (every score: error, latent KDE, combined, OR rule, as ``rarespot screen score`` writes),
  on onnxruntime and on torch, with 1 and 2 threads;
* the pretrained patch detector (EfficientNet-Lite0 features + its default method).

Each row gives wall images/s and images per CPU-second of this process (resource.getrusage, all
threads), with the 1-minute load average: on a shared machine the wall figure drops with the load,
the CPU figure much less.

    python bench/bench_screen_speed.py --model /tmp/rarespot_screen_bench/s48_c16-32-64_l4_e40_n8000_seed0_p5/model.pt

Without --model it trains a default-architecture CAE for one epoch on 2,000 cells (the speed does
not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_screen import DEFAULT_NPZ, split  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn, images, repeats: int) -> dict:
    fn(images[:512])  # warm-up: export/session creation, first-call allocations
    runs = []
    for _ in range(repeats):
        c0, t0 = cpu_seconds(), time.perf_counter()
        fn(images)
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    wall, cpu = min(runs)
    n = len(images)
    return {"images": n, "wall_s": wall, "cpu_s": cpu, "img_per_s": n / wall, "img_per_cpu_s": n / cpu,
            "loadavg_1m": os.getloadavg()[0], "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--model", type=Path, default=None, help="a fitted CAE model.pt (default: train a 1-epoch one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--patch-method", default=None, help="patch detector method (default: the library's); 'none' to skip")
    ap.add_argument("--out-json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from rarespot.screen.config import ScreenConfig
    from rarespot.screen.detectors import CAEDetector

    with np.load(args.npz) as npz:
        images, labels = npz["images"], npz["labels"].astype(int)
    test = split(labels, 0.2, 0)
    fit_imgs, test_imgs = images[~test & (labels == 0)], images[test]
    torch.set_num_threads(1)
    if args.model:
        det = CAEDetector.load(args.model)
        det.refit_scores(fit_imgs, score=ScreenConfig().score)  # the library's default scoring
    else:
        det = CAEDetector({"train": {"epochs": 1, "max_train_images": 2000, "threads": 1}}, random_state=0).fit(fit_imgs[:2500])
    results = {"cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(), "rows": []}
    print(f"{len(test_imgs)} cells; loadavg {os.getloadavg()}", flush=True)
    print("| detector | call | back-end | threads | img/s (wall) | img per CPU-second | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for backend in ("onnxruntime", "torch"):
        for threads in args.threads:
            det.config_ = det.config_.model_copy(update={"backend": backend})
            det.config_.train.threads = threads
            for call, fn in (("score_samples", det.score_samples), ("analyze (all scores)", det.analyze)):
                m = measure(fn, test_imgs, args.repeats)
                row = {"detector": "CAE (default)", "call": call, "backend": det.backend_, "threads": threads, **m}
                results["rows"].append(row)
                print(f"| CAE (default) | {call} | {det.backend_} | {threads} | {m['img_per_s']:,.0f} | {m['img_per_cpu_s']:,.0f} | "
                      f"{m['loadavg_1m']:.1f} |", flush=True)
    if (args.patch_method or "").lower() != "none":
        from rarespot.screen.patch import PatchDetector

        cfg = {"detector": "patch", "train": {"max_train_images": 2000, "threads": 1}}
        if args.patch_method:
            cfg["patch"] = {"method": args.patch_method}
        pdet = PatchDetector(cfg, random_state=0).fit(fit_imgs[:2500])
        for threads in args.threads:
            pdet.config_.train.threads = threads
            m = measure(pdet.score_samples, test_imgs, args.repeats)
            method = pdet.config_.patch.method
            results["rows"].append({"detector": f"patch ({method})", "call": "score_samples", "backend": "torch", "threads": threads, **m})
            print(f"| patch ({method}, {pdet.config_.patch.size} px) | score_samples | torch | {threads} | {m['img_per_s']:,.0f} | "
                  f"{m['img_per_cpu_s']:,.0f} | {m['loadavg_1m']:.1f} |", flush=True)
    results["loadavg_end"] = os.getloadavg()
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
