"""OPIXray: full-image training vs random positive tiling vs plain Ultralytics defaults.

Same data, same network (yolo11n from its yaml, random init), same network
input size, same epochs and the same image budget: every arm feeds the network
``train_images`` inputs of ``imgsz`` x ``imgsz`` per epoch (budget = inputs per
epoch x epochs), so every arm spends the same compute.

  full-image     whole 416 px scans resized to imgsz, no augmentation (the seed's baseline)
  positive-tile  one random positive tile of imgsz px per scan per epoch, at native resolution
  ultralytics    whole scans, Ultralytics' default augmentations (mosaic, HSV, flips, scale, translate)

All arms: Adam lr 0.002, batch 8 with an optimiser step every batch (nbs 8:
a short run has few batches), 1 warmup epoch, validation every epoch, best
checkpoint by validation loss, class-agnostic remap by default (one "object"
class: the seed's best remap, and learnable from scratch on a small budget).

Held-out test: a fixed 20% of the scans (seeded split 60/20/20; the train and
validation parts are subsampled to the budget). Every arm is evaluated the same
way: the best-validation-loss checkpoint, tiled inference at the scale it was
trained on (whole image for the full-image arms, a fixed grid of imgsz tiles
for the tiling arm), one-to-one matching at IoU 0.5, class-aware, at the
confidence that maximised F1 on the validation scans.

    python bench/bench_opixray_training.py --epochs 6 --train-images 300 --out bench/out/opixray
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "opixray"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "opixray")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, 0, cuda:0 ...")
    parser.add_argument("--arms", default="full-image,positive-tile,ultralytics")
    parser.add_argument("--remap", default="agnostic", help="class remap for all arms ('none' keeps the 5 classes)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from rarespot.detect.config import TrainConfig
    from rarespot.detect.evaluate import calibrate_conf, evaluate
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.train import remap_splits, train_on_splits
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import split_dataset

    full = load_dataset(args.data, fmt="yolo")
    parts = split_dataset(full, (0.6, 0.2, 0.2), seed=args.seed)
    rng = np.random.default_rng(args.seed)
    train = parts["train"].subset(sorted(rng.choice(len(parts["train"]), args.train_images, replace=False)))
    val = parts["val"].subset(sorted(rng.choice(len(parts["val"]), args.val_images, replace=False)))
    test = parts["test"]
    splits = remap_splits({"train": train, "val": val, "test": test}, None if args.remap == "none" else args.remap)
    train, val, test = splits["train"], splits["val"], splits["test"]
    side = max(max(r.width, r.height) for r in full.records)
    print(f"OPIXray: {len(full)} scans ({side}px), classes {full.class_names}; "
          f"train {len(train)}, val {len(val)}, test {len(test)} (fixed 20%); classes used {train.class_names}", flush=True)

    common = dict(remap=None if args.remap == "none" else args.remap, epochs=args.epochs, batch=8, nbs=8, optimizer="Adam", lr0=0.002, warmup_epochs=1,
                  val_every=1, patience=100, device=args.device, seed=args.seed, exist_ok=True)
    arms = {
        "full-image": TrainConfig(full_image=True, imgsz=args.imgsz, **common),
        "positive-tile": TrainConfig(tiles=1, tile_size=args.imgsz, imgsz=args.imgsz, **common),
        "ultralytics": TrainConfig(full_image=True, imgsz=args.imgsz, ultralytics_augment=True, **common),
    }
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in [a.strip() for a in args.arms.split(",") if a.strip()]:
        if name in results:
            print(f"{name}: done earlier, kept", flush=True)
            continue
        cfg = arms[name].model_copy(update={"out": args.out / name})
        t0, c0 = time.perf_counter(), cpu_seconds()
        run = train_on_splits(cfg, splits)
        train_wall, train_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        tile = side if cfg.full_image else cfg.tile_size
        predictor = TiledPredictor(
            run.best, tile=tile, overlap=0.2, conf=0.25, iou=0.5, imgsz=cfg.input_size, device=args.device
        )
        conf = calibrate_conf(predictor, val, progress=False)
        ev = evaluate(predictor, test, iou=0.5, conf_for_prf=conf, progress=False)
        results[name] = {
            "f1": ev.f1, "precision": ev.precision, "recall": ev.recall, "map50": ev.map50, "map50_95": ev.map50_95,
            "conf": conf, "best_epoch": run.best_epoch, "epochs": run.epochs_run,
            "inputs_per_epoch": len(train) * (1 if cfg.full_image else cfg.tiles),
            "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
            "per_class_f1": {c.name: c.f1 for c in ev.per_class},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(results_path)
        print(f"{name}: F1 {ev.f1:.3f} P {ev.precision:.3f} R {ev.recall:.3f} mAP50 {ev.map50:.3f} "
              f"(conf {conf:.3f}, best epoch {run.best_epoch}, train {train_wall:.0f} s wall / {train_cpu:.0f} s CPU)",
              flush=True)

    print("\n| arm | F1 | precision | recall | mAP50 | mAP50-95 | train wall s | train CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['map50']:.3f} | "
              f"{r['map50_95']:.3f} | {r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} |")


if __name__ == "__main__":
    main()
