"""Training speed on the CPU: rarespot's trainer vs plain Ultralytics, images per second, one run.

Same images (a seeded sample of OPIXray's development part, never its holdout), same
network (yolo11n from its yaml), same input size and batch, same number of epochs.
Each arm's speed is timed per epoch with Ultralytics' own epoch callbacks (so the
timing covers data loading, augmentation, forward, backward and the optimiser step,
and no validation: validation is off or skipped in every arm), and the first epoch
is reported apart because it also fills the image cache. CPU seconds of the process
over the same epochs say how much of the machine each arm used.

Arms:
  ultralytics          YOLO("yolo11n.yaml").train(...) with its defaults (mosaic, HSV, ...;
                       torch threads = cores - 1 and workers forced to 0 on the CPU)
  rarespot             rarespot's trainer, whole images (the comparison at equal input); torch threads
                       timed each epoch (every core vs one fewer, rarespot.cpu.ThreadTuner)
  rarespot-1thread     the same pinned to one torch thread: Ultralytics' count on 2 cores, so the
                       ratio to Ultralytics here is the pipeline alone
  rarespot-allcores    the same pinned to every core
  rarespot-nocache     the same without the RAM cache of decoded images
  data-only:<arm>      the arm's train loader iterated without the model: the cost of data alone

    python bench/bench_train_speed.py --images 320 --epochs 3 --imgsz 416 --batch 16 --out /tmp/train_speed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "opixray"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EpochClock:
    """Wall and CPU seconds of every training epoch, from Ultralytics' epoch callbacks."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._t = self._c = 0.0
        self.items = 0

    def register(self, add_callback) -> None:
        add_callback("on_train_epoch_start", self.start)
        add_callback("on_train_epoch_end", self.end)

    def start(self, trainer) -> None:
        self.items = len(trainer.train_loader.dataset)
        self._t, self._c = time.perf_counter(), cpu_seconds()

    def end(self, trainer) -> None:
        self.epochs.append({"wall": time.perf_counter() - self._t, "cpu": cpu_seconds() - self._c})

    def summary(self) -> dict:
        steady = self.epochs[1:] or self.epochs
        wall = float(np.mean([e["wall"] for e in steady]))
        cpu = float(np.mean([e["cpu"] for e in steady]))
        return {
            "items_per_epoch": self.items,
            "first_epoch_s": round(self.epochs[0]["wall"], 1),
            "epoch_s": round(wall, 1),
            "img_per_s": round(self.items / wall, 2),
            "cpu_s_per_img": round(cpu / self.items, 4),
            "cores_busy": round(cpu / wall, 2),
            "epochs": [{k: round(v, 2) for k, v in e.items()} for e in self.epochs],
        }


def sample_splits(data: Path, images: int, seed: int):
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import carve_holdout

    development, _ = carve_holdout(load_dataset(data, fmt="yolo"), 0.2, 0)  # the same holdout as the study
    rng = np.random.default_rng(seed)
    train = development.subset(sorted(rng.choice(len(development), images, replace=False).tolist()))
    return {"train": train, "val": train.subset(range(min(8, len(train))))}


def run_ultralytics(splits, out: Path, args) -> dict:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from rarespot.detect.peer import write_yolo_split

    data_yaml = write_yolo_split(splits, out / "data")
    model = YOLO("yolo11n.yaml")
    clock = EpochClock()
    clock.register(model.add_callback)
    model.train(data=str(data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=2, val=False,
                seed=0, deterministic=True, plots=False, device="cpu", project=str(out), name="train", exist_ok=True,
                verbose=False)
    return clock.summary()


def rarespot_config(out: Path, args, **kw):
    from rarespot.detect.config import DetectTrainConfig

    return DetectTrainConfig(full_image=True, imgsz=args.imgsz, epochs=args.epochs, batch=args.batch, device="cpu",
                       val_every=10_000, out=out, exist_ok=True, **kw)


def run_rarespot(splits, out: Path, args, **kw) -> dict:
    from rarespot.detect import train as train_module

    clock = EpochClock()
    original = train_module._RunReporter.register

    def register(self, trainer):
        original(self, trainer)
        clock.register(trainer.add_callback)

    train_module._RunReporter.register = register
    try:
        train_module.train_on_splits(rarespot_config(out, args, **kw), splits, quiet=True)
    finally:
        train_module._RunReporter.register = original
    return clock.summary()


def data_only(splits, out: Path, args, arm: str) -> dict:
    """Iterate the arm's training loader once, as its trainer builds it, with no model."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader

    from rarespot.detect.data import ScanTileDataset

    if arm == "ultralytics":
        from ultralytics.data import build_yolo_dataset
        from ultralytics.data.utils import check_det_dataset

        from rarespot.detect.peer import write_yolo_split

        hyp = get_cfg(overrides={"imgsz": args.imgsz, "batch": args.batch})
        data = check_det_dataset(str(write_yolo_split(splits, out / "data")))
        dataset = build_yolo_dataset(hyp, data["train"], args.batch, data, mode="train", stride=32)
    else:
        from rarespot.detect.train import ultralytics_overrides

        cfg = rarespot_config(out, args)
        overrides = ultralytics_overrides(cfg, out, "yolo11n.yaml")
        overrides.pop("save_dir")
        hyp = get_cfg(overrides=overrides)
        dataset = ScanTileDataset(splits["train"], mode="train", imgsz=args.imgsz, hyp=hyp, batch_size=args.batch,
                                  full_image=True, cache_images=True, check_images=True)
    loader = build_dataloader(dataset, args.batch, workers=0, shuffle=True)
    t, c = time.perf_counter(), cpu_seconds()
    n = sum(len(batch["im_file"]) for batch in loader)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    return {"items": n, "img_per_s": round(n / wall, 1), "cpu_s_per_img": round(cpu / n, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "train_speed")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--arms", default="ultralytics,rarespot,rarespot-1thread,rarespot-allcores,rarespot-nocache,"
                                          "data-only:ultralytics,data-only:rarespot")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data}: OPIXray not found (see ../shared/data/README.md)")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    splits = sample_splits(args.data, args.images, 0)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["_machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "load_at_start": os.getloadavg()}
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        folder = args.out / arm.replace(":", "_")
        load = os.getloadavg()[0]
        if arm == "ultralytics":
            r = run_ultralytics(splits, folder, args)
        elif arm == "rarespot":
            r = run_rarespot(splits, folder, args)
        elif arm == "rarespot-1thread":
            r = run_rarespot(splits, folder, args, threads=1)
        elif arm == "rarespot-allcores":
            r = run_rarespot(splits, folder, args, threads=os.cpu_count())
        elif arm == "rarespot-nocache":
            r = run_rarespot(splits, folder, args, cache_images=False)
        elif arm.startswith("data-only:"):
            r = data_only(splits, folder, args, arm.split(":", 1)[1])
        else:
            raise SystemExit(f"unknown arm {arm}")
        r["load_before"] = round(load, 2)
        results[arm] = r
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(results_path)
        print(f"{arm}: {json.dumps({k: v for k, v in r.items() if k != 'epochs'})}", flush=True)

    base = results.get("ultralytics", {}).get("img_per_s")
    print(f"\n{args.images} OPIXray images, imgsz {args.imgsz}, batch {args.batch}, {args.epochs} epochs "
          "(first epoch apart: image cache fill)")
    print("| arm | img/s (epochs 2+) | ratio to Ultralytics | CPU s per image | cores busy | first epoch s |")
    print("|---|---|---|---|---|---|")
    for arm, r in results.items():
        if arm.startswith("_") or arm.startswith("data-only"):
            continue
        ratio = f"{r['img_per_s'] / base:.2f}" if base else "-"
        print(f"| {arm} | {r['img_per_s']:.1f} | {ratio} | {r['cpu_s_per_img']:.3f} | {r['cores_busy']:.2f} | "
              f"{r['first_epoch_s']:.0f} |")
    for arm, r in results.items():
        if arm.startswith("data-only"):
            print(f"{arm}: {r['img_per_s']:.0f} img/s, {1000 * r['cpu_s_per_img']:.1f} ms CPU per image (loader alone)")


if __name__ == "__main__":
    main()
