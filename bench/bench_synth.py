"""Time `rarespot.synth.generate`: N scans with 1 worker and with W workers, into temp folders.

    python bench/bench_synth.py --n 200 --workers 2

Prints wall time, CPU time and scans/s for each run, the speed-up of W workers
over 1 (the same files: generation depends only on (seed, index)), and checks
that both runs wrote byte-identical files.

    python bench/bench_synth.py --figures docs/img

writes the documentation figures instead: one scan with its boxes
(synth_scan.jpg) and one example of each of the 18 classes (synth_classes.jpg).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import tempfile
import time
from pathlib import Path

from rarespot.synth import generate


def _cpu_seconds() -> float:
    # This process only: parallel workers start from a forkserver, outside this
    # process tree, so their CPU time is not visible here; the serial run
    # (workers=1 runs in-process) gives the CPU cost per scan.
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def run(n: int, workers: int, seed: int) -> tuple[float, float, str, int]:
    out = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        ds = generate(n, out, seed=seed, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        cpu_text = f"{cpu:.1f} s CPU ({cpu / max(n, 1):.3f} s CPU/scan)" if workers == 1 else "CPU in workers (n/a)"
        print(f"workers={workers}: {n} scans, {int(ds.class_counts().sum())} objects in {wall:.1f} s wall, "
              f"{cpu_text}, {n / wall:.2f} scans/s, {size / 1e6:.0f} MB")
        return wall, cpu, _digest(out), size
    finally:
        shutil.rmtree(out, ignore_errors=True)


def figures(out_dir: Path, seed: int = 0) -> None:
    import cv2
    import numpy as np

    from rarespot.filters import percentile_window
    from rarespot.synth import CLASS_NAMES, generate_scan
    from rarespot.io.images import write_image
    from rarespot.viz import render_overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    img, boxes, labels, _ = generate_scan(seed, 6)
    rgb = render_overlay(img, gt_boxes=boxes, gt_labels=labels, class_names=CLASS_NAMES)
    write_image(out_dir / "synth_scan.jpg", cv2.resize(rgb, (608, 750), interpolation=cv2.INTER_AREA))  # JPEG: small in git

    crops: dict[str, np.ndarray] = {}
    index = 0
    while len(crops) < len(CLASS_NAMES) and index < 2000:
        img, boxes, labels, _ = generate_scan(seed, index)
        index += 1
        if not any(CLASS_NAMES[lab] not in crops for lab in labels):
            continue
        view = percentile_window(img, 0.5, 99.9)
        for (x1, y1, x2, y2), lab in zip(boxes.astype(int), labels):
            name = CLASS_NAMES[lab]
            if name in crops:
                continue
            cx, cy, r = (x1 + x2) // 2, (y1 + y2) // 2, max(40, int(0.8 * max(x2 - x1, y2 - y1)))
            ox, oy = max(0, cx - r), max(0, cy - r)
            crop = cv2.cvtColor(view[oy:cy + r, ox:cx + r], cv2.COLOR_GRAY2RGB)
            cv2.rectangle(crop, (x1 - ox, y1 - oy), (x2 - ox - 1, y2 - oy - 1), (255, 40, 40), 1)
            crop = cv2.resize(crop, (200, 200), interpolation=cv2.INTER_NEAREST if r < 100 else cv2.INTER_AREA)
            cv2.putText(crop, f"{name} {x2 - x1}x{y2 - y1}", (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 0), 1, cv2.LINE_AA)
            crops[name] = crop
    tiles = [crops.get(n, np.zeros((200, 200, 3), np.uint8)) for n in CLASS_NAMES]
    grid = np.vstack([np.hstack(tiles[i:i + 6]) for i in range(0, len(tiles), 6)])
    write_image(out_dir / "synth_classes.jpg", grid)
    print(f"wrote {out_dir / 'synth_scan.jpg'} and {out_dir / 'synth_classes.jpg'} ({index} scans searched)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-serial", action="store_true", help="Only the parallel run.")
    ap.add_argument("--figures", type=Path, help="Write the documentation figures to this folder and stop.")
    args = ap.parse_args()
    if args.figures:
        figures(args.figures, args.seed)
        return
    par_wall, _, par_digest, _ = run(args.n, args.workers, args.seed)
    if not args.skip_serial:
        ser_wall, _, ser_digest, _ = run(args.n, 1, args.seed)
        print(f"speed-up of {args.workers} workers over 1: {ser_wall / par_wall:.2f}x; "
              f"identical files: {par_digest == ser_digest}")


if __name__ == "__main__":
    main()
