"""Speed of the class-imbalance tools: rarespot's focal and GHM-C losses against torchvision's focal loss
and plain BCE, and X-ray copy-paste against reading the image (docs/benchmarks/imbalance.md, section 2).

    python bench/bench_imbalance.py --micro

The long-tail study (bce vs focal vs cb-focal vs repeat-factor vs copy-paste on a long-tailed OPIXray)
runs through the experiment runner only, with the packaged plan:

    rarespot experiment opixray-longtail --out studies/opixray-longtail

The figures of docs/benchmarks/imbalance.md section 1 were measured by this script's former study mode
(``--arms``, ``--head-images``, ... : its own 60/20/20 split and an exact-count long-tail subsample); it
can be run from commit 15efb93, the last that has it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

STUDY_MOVED = (
    "the long-tail study runs through the experiment runner: rarespot experiment opixray-longtail --out DIR "
    "(this script's former study mode, which measured docs/benchmarks/imbalance.md section 1, is at commit 15efb93); "
    "this script only times the losses and copy-paste (--micro)"
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "opixray")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--micro", action="store_true", help="time the losses (vs torchvision) and copy-paste (what this script does)")
    args, former = ap.parse_known_args(argv)
    if former:  # --out, --arms, --seeds, --head-images, --summarise, ... of the former study mode
        ap.exit(2, f"bench_imbalance.py: {' '.join(former)}: {STUDY_MOVED}\n")
    return args


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
    if not args.micro:
        print(f"({STUDY_MOVED})", flush=True)
    import torch

    torch.set_num_threads(args.threads)
    print(micro(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
