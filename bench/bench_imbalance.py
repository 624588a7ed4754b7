"""Class-imbalance remedies on a long-tailed OPIXray: bce vs focal vs cb-focal vs
repeat-factor sampling vs copy-paste, at equal epochs, per-class recall and F1.

Protocol (documented in docs/benchmarks/imbalance.md):

1. OPIXray (../shared/data/opixray, 5 classes, one object per image) is split
   once, 60/20/20 with split seed 0 (``rarespot.io.split.split_dataset``).
2. The training part is made long-tailed by subsampling images per class with
   ratios 1 : 1/3 : 1/10 : 1/30 : 1/100 in class-index order (head = class 0,
   Scissor; tail = class 4, Multi-tool_Knife), head size ``--head-images``,
   with a fixed subsampling seed (``--subsample-seed``, same for every arm and
   training seed). The test part is NOT subsampled; ``--test-per-class`` can cap
   it to the same number of images per class for speed (balanced, seeded).
   The validation part (best-checkpoint choice) is capped likewise.
3. Every arm trains yolo11n from its yaml (no pretrained weights) on whole
   images resized to ``--imgsz`` for ``--epochs`` epochs with the same
   optimiser settings; only the imbalance remedy differs. Repeat-factor sampling
   shows rare images more often, so it does more steps per epoch (equal epochs,
   not equal steps, as the issue asks).
4. last.pt (equal epochs) is evaluated with ``rarespot.detect.evaluate.evaluate`` on the test
   part: per-class recall, precision, F1 at ``--conf`` (IoU 0.5) and AP50.

Resumable: each (arm, seed) writes ``<out>/results/<arm>_seed<k>.json`` when
done and is skipped on the next call; an interrupted training run resumes from
its last.pt. ``--summarise`` only prints the mean table of what is there.

    python bench/bench_imbalance.py --out /tmp/bench_imbalance \\
        --arms bce,focal,cb-focal,repeat-factor,copy-paste --seeds 0,1,2 \\
        --head-images 300 --epochs 30 --imgsz 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ARMS = ("bce", "focal", "cb-focal", "repeat-factor", "copy-paste")
DEFAULT_RATIOS = "1,1/3,1/10,1/30,1/100"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "opixray")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rarespot_bench_imbalance"))
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ratios", default=DEFAULT_RATIOS, help="per-class keep ratios in class-index order")
    ap.add_argument("--head-images", type=int, default=300, help="training images of the head class")
    ap.add_argument("--subsample-seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--test-per-class", type=int, default=0, help="cap test images per class (0: whole test split)")
    ap.add_argument("--val-per-class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr0", type=float, default=0.002)
    ap.add_argument("--val-every", type=int, default=0, help="validate every k epochs (0: last epoch only)")
    ap.add_argument("--conf", type=float, default=0.1, help="operating confidence for recall/precision/F1")
    ap.add_argument("--repeat-threshold", type=float, default=0.3)
    ap.add_argument("--copy-paste-p", type=float, default=0.5)
    ap.add_argument("--focal-alpha", type=float, default=0.25)
    ap.add_argument("--focal-gamma", type=float, default=2.0)
    ap.add_argument("--cb-beta", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="cpu, 0, ... (default: GPU if present)")
    ap.add_argument("--summarise", action="store_true", help="only print the table of finished results")
    ap.add_argument("--micro", action="store_true", help="only time the losses (vs torchvision) and copy-paste")
    return ap.parse_args(argv)


# --- data ----------------------------------------------------------------------------------
def long_tailed(train, ratios: list[float], head_images: int, seed: int):
    """Subsample images per class: class c keeps round(head_images * ratios[c]) images (at least 1).

    An image counts for the rarest (smallest-ratio) class among its objects;
    images with no object are dropped (OPIXray has none). The exact-count way of
    ``rarespot.io.split.longtail_subsample``.
    """
    from rarespot.io.split import longtail_subsample

    try:
        return longtail_subsample(train, ratios, seed, head_images=head_images)
    except ValueError as exc:
        raise SystemExit(f"{exc}; lower --head-images") from None


def per_class_cap(ds, per_class: int, seed: int):
    if per_class <= 0:
        return ds
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(ds.num_classes):
        idx = [i for i, r in enumerate(ds.records) if len(r.labels) and int(r.labels[0]) == c]
        keep.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return ds.subset(sorted(keep))


def build_splits(args):
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import split_dataset

    full = load_dataset(args.data)
    parts = split_dataset(full, (0.6, 0.2, 0.2), seed=args.split_seed)
    ratios = [float(Fraction(r)) for r in args.ratios.split(",")]
    if len(ratios) != full.num_classes:
        raise SystemExit(f"--ratios has {len(ratios)} values for {full.num_classes} classes")
    return {
        "train": long_tailed(parts["train"], ratios, args.head_images, args.subsample_seed),
        "val": per_class_cap(parts["val"], args.val_per_class, args.subsample_seed),
        "test": per_class_cap(parts["test"], args.test_per_class, args.subsample_seed),
    }, ratios


# --- one run -------------------------------------------------------------------------------
def arm_config(arm: str, seed: int, args, run_dir: Path):
    from rarespot.detect.config import CopyPasteConfig, DetectTrainConfig

    cfg = dict(
        model="yolo11n", full_image=True, imgsz=args.imgsz, epochs=args.epochs, batch=args.batch, nbs=args.batch,
        lr0=args.lr0, warmup_epochs=1.0, val_every=args.val_every or args.epochs, patience=10_000, seed=seed, workers=0,
        device=args.device, out=run_dir, exist_ok=True, focal_alpha=args.focal_alpha, focal_gamma=args.focal_gamma,
        cb_beta=args.cb_beta,
    )
    if arm in ("focal", "cb-focal"):
        cfg["cls_loss"] = arm
    elif arm == "repeat-factor":
        cfg.update(sampler="repeat_factor", repeat_threshold=args.repeat_threshold)
    elif arm == "copy-paste":
        cfg["copy_paste"] = CopyPasteConfig(p=args.copy_paste_p, target_distribution="uniform")
    elif arm != "bce":
        raise SystemExit(f"unknown arm {arm!r}; choose from {ARMS}")
    return DetectTrainConfig(**cfg)


def run_one(arm: str, seed: int, splits, args) -> dict:
    from rarespot.detect.evaluate import evaluate
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.train import resume_run, train_on_splits

    run_dir = args.out / "runs" / f"{arm}_seed{seed}"
    started = time.perf_counter()
    last = run_dir / "weights" / "last.pt"
    result = None
    if last.exists():
        try:
            result = resume_run(run_dir, quiet=True)
        except Exception as exc:  # a finished run cannot resume: its best.pt is what we need
            print(f"  ({arm} seed {seed}: not resumed: {exc})", flush=True)
    if result is None and not _finished(last):
        result = train_on_splits(arm_config(arm, seed, args, run_dir), splits, quiet=True)
    # The last checkpoint, not best.pt: the comparison is at equal epochs, and best.pt
    # (lowest validation loss) can be an early epoch where the model predicts nothing.
    weights = run_dir / "weights" / "last.pt"
    train_seconds = time.perf_counter() - started
    side = max(max(r.width, r.height) for r in splits["test"].records)
    predictor = TiledPredictor(weights, tile=side, overlap=0.0, conf=args.conf, imgsz=args.imgsz, device=args.device or "cpu")
    ev = evaluate(predictor, splits["test"], iou=0.5, progress=False, keep_predictions=False)
    return {
        "arm": arm,
        "seed": seed,
        "train_seconds": round(train_seconds, 1),
        "epochs": args.epochs,
        "conf": ev.conf,
        "map50": ev.map50,
        "recall": ev.recall,
        "f1": ev.f1,
        "per_class": {
            m.name: {"support": m.support, "recall": m.recall, "precision": m.precision, "f1": m.f1, "ap50": m.ap50}
            for m in ev.per_class
        },
    }


def _finished(last: Path) -> bool:
    """A run whose last.pt is final (Ultralytics strips the optimizer when training ends)."""
    if not last.exists():
        return False
    import torch

    return torch.load(last, map_location="cpu", weights_only=False).get("optimizer") is None


def _atomic_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


# --- summary -------------------------------------------------------------------------------
def summarise(out: Path, arms: list[str], class_names: list[str] | None = None) -> str:
    rows = {}
    for path in sorted((out / "results").glob("*.json")):
        r = json.loads(path.read_text())
        if r["arm"] in arms:
            rows.setdefault(r["arm"], []).append(r)
    if not rows:
        return "no finished runs yet"
    names = class_names or list(next(iter(rows.values()))[0]["per_class"])
    lines = []
    for metric in ("recall", "f1", "ap50"):
        lines.append(f"\nper-class {metric} (mean ± sd over seeds; n = seeds)\n")
        lines.append("| arm | n | " + " | ".join(names) + " | all |")
        lines.append("|---|---|" + "---|" * (len(names) + 1))
        for arm in arms:
            if arm not in rows:
                continue
            rs = rows[arm]
            cells = []
            for name in names:
                v = np.array([r["per_class"][name][metric] for r in rs], dtype=float)
                cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
            overall = {"recall": "recall", "f1": "f1", "ap50": "map50"}[metric]
            v = np.array([r[overall] for r in rs], dtype=float)
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            lines.append(f"| {arm} | {len(rs)} | " + " | ".join(cells) + " |")
        base = rows.get("bce")
        if base and metric != "ap50":
            lines.append(f"\n{metric} minus bce's (mean over seeds)\n")
            lines.append("| arm | " + " | ".join(names) + " |")
            lines.append("|---|" + "---|" * len(names))
            ref = {n: np.nanmean([r["per_class"][n][metric] for r in base]) for n in names}
            for arm in arms:
                if arm in rows and arm != "bce":
                    diffs = [np.nanmean([r["per_class"][n][metric] for r in rows[arm]]) - ref[n] for n in names]
                    lines.append(f"| {arm} | " + " | ".join(f"{d:+.3f}" for d in diffs) + " |")
    return "\n".join(lines)


def micro(args) -> str:
    """Loss forward+backward vs torchvision's sigmoid_focal_loss on a YOLO-sized
    score tensor, and copy-paste time per image vs reading that image."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import sigmoid_focal_loss as tv_focal

    from rarespot.imbalance.copy_paste import XrayCopyPaste
    from rarespot.imbalance.losses import GHMCLoss, sigmoid_focal_loss
    from rarespot.io.annotations import load_dataset
    from rarespot.io.images import read_image

    torch.manual_seed(0)
    logits = torch.randn(16, 8400, 5, requires_grad=True)  # batch 16, 640 px input, 5 classes
    targets = (torch.rand(16, 8400, 5) > 0.995).float()
    ours = sigmoid_focal_loss(logits, targets, 0.25, 2.0, reduction="sum")
    ref = tv_focal(logits, targets, 0.25, 2.0, reduction="sum")
    assert torch.allclose(ours, ref, rtol=1e-5), (ours, ref)

    def fb(fn):
        def step():
            logits.grad = None
            fn().backward()
        return step

    ghm = GHMCLoss(bins=10, momentum=0.75)
    candidates = {
        "ours": fb(lambda: sigmoid_focal_loss(logits, targets, 0.25, 2.0, reduction="sum")),
        "tv": fb(lambda: tv_focal(logits, targets, 0.25, 2.0, reduction="sum")),
        "bce": fb(lambda: F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")),
        "ghm": fb(lambda: ghm(logits, targets)),
    }
    # Round-robin (A B C D A B C D ...) so load from other jobs hits every candidate alike.
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(40):
        for name, fn in candidates.items():
            times[name].append(_timed(fn))
    t_ours, t_tv, t_bce, t_ghm = (1000 * float(np.median(times[k])) for k in ("ours", "tv", "bce", "ghm"))

    ds = load_dataset(args.data)
    rng = np.random.default_rng(0)
    paster = XrayCopyPaste(ds, p=1.0, max_objects=3)
    picks = rng.choice(len(ds), size=60, replace=False)
    images = [read_image(ds.image_path(ds.records[int(i)])) for i in picks]
    for img, i in zip(images[:10], picks[:10]):  # warm the donor cache as a long run would
        paster(img, ds.records[int(i)].boxes, ds.records[int(i)].labels, rng)
    read_t, paste_t = [], []
    for img, i in zip(images[10:], picks[10:]):  # interleaved, as above
        i = int(i)
        read_t.append(_timed(lambda: read_image(ds.image_path(ds.records[i]))))
        paste_t.append(_timed(lambda: paster(img, ds.records[i].boxes, ds.records[i].labels, rng)))
    t_read, t_paste = 1000 * float(np.median(read_t)), 1000 * float(np.median(paste_t))
    pasted = int(paster.pasted_counts.sum())
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, logits (16, 8400, 5), forward+backward, median of 40 round-robin repeats:",
        f"  rarespot sigmoid_focal_loss   {t_ours:7.2f} ms  ({t_ours / t_tv:.2f}x torchvision; same value to 1e-5)",
        f"  torchvision sigmoid_focal_loss {t_tv:7.2f} ms",
        f"  plain BCEWithLogits            {t_bce:7.2f} ms",
        f"  rarespot GHMCLoss (10 bins)    {t_ghm:7.2f} ms  ({t_ghm / t_bce:.2f}x BCE)",
        "OPIXray 416x416 RGB, XrayCopyPaste(p=1, max_objects=3), median over 50 images after 10 warm-up calls:",
        f"  copy-paste per image {t_paste:6.2f} ms = {t_paste / t_read:.2f}x reading the JPEG ({t_read:.2f} ms); "
        f"{pasted} objects pasted in 60 calls",
    ]
    return "\n".join(lines)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.summarise:
        print(summarise(args.out, arms))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.micro:
        print(micro(args))
        return 0
    splits, ratios = build_splits(args)
    train = splits["train"]
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "train_class_counts": dict(zip(train.class_names, train.class_counts().tolist())),
        "test_class_counts": dict(zip(train.class_names, splits["test"].class_counts().tolist())),
        "val_images": len(splits["val"]),
        "ratios": ratios,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    _atomic_json(args.out / "setup.json", info)
    print(json.dumps({k: info[k] for k in ("machine", "gpu", "train_class_counts", "test_class_counts")}), flush=True)
    for seed in seeds:
        for arm in arms:
            path = args.out / "results" / f"{arm}_seed{seed}.json"
            if path.exists():
                print(f"{arm} seed {seed}: done already", flush=True)
                continue
            t0 = time.perf_counter()
            result = run_one(arm, seed, splits, args)
            _atomic_json(path, result)
            recalls = " ".join(f"{v['recall']:.2f}" for v in result["per_class"].values())
            print(f"{arm} seed {seed}: {time.perf_counter() - t0:.0f} s, mAP50 {result['map50']:.3f}, "
                  f"per-class recall {recalls}", flush=True)
    print(summarise(args.out, arms, train.class_names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
