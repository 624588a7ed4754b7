"""OPIXray (YOLO, 2,400 JPEGs) -> VOC -> YOLO: are the boxes identical, and how fast?

    python bench/bench_data_roundtrip.py --data ../shared/data/opixray

1. load the YOLO set (header-only validation) and, as the peer on the same
   files, Ultralytics' own per-image check (`verify_image_label`, one process);
2. save as VOC into a temp folder, reload, compare pixel boxes bit for bit;
3. save that as YOLO, reload, compare with the original label files;
4. `data check`-style full decode of every image.
Writes only into a temp folder (the source is read-only).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from rarespot.io.annotations import load_dataset, load_dataset_with_report, save_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "opixray")
    args = ap.parse_args()
    src = args.data

    from ultralytics.data.utils import verify_image_label

    def ours():
        return load_dataset(src)

    def peer():
        bad = 0
        for rec in ds:
            image, label = src / rec.path, src / "labels" / f"{rec.stem}.txt"
            out = verify_image_label((str(image), str(label), "", False, ds.num_classes, 0, 0, False))
            bad += out[0] is None
        return bad

    ds = ours()  # warm the file cache for both sides
    t_load, t_ultra = [], []
    for _ in range(3):  # alternate, so load from other jobs hits both alike
        t0 = time.perf_counter()
        ds = ours()
        t_load.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bad = peer()
        t_ultra.append(time.perf_counter() - t0)
    t_load, t_ultra = float(np.median(t_load)), float(np.median(t_ultra))
    print(f"load_dataset (YOLO, header-only validation): {len(ds)} images, {int(ds.class_counts().sum())} boxes "
          f"in {t_load:.2f} s (median of 3)")
    print(f"peer: ultralytics verify_image_label over the same files: {t_ultra:.2f} s (median of 3, {bad} corrupt); "
          f"rarespot load / peer = {t_load / t_ultra:.2f}")

    tmp = Path(tempfile.mkdtemp(prefix="bench_roundtrip_"))
    try:
        t0 = time.perf_counter()
        save_dataset(ds, tmp / "voc", "voc")
        voc = load_dataset(tmp / "voc")
        t_voc = time.perf_counter() - t0
        same_voc = all(np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels) for a, b in zip(ds, voc))
        print(f"YOLO -> VOC (copying images) and reload: {t_voc:.2f} s; boxes bit-identical: {same_voc} "
              f"({len(voc)} images)")

        save_dataset(voc, tmp / "yolo", "yolo", copy_images=False)
        yolo = load_dataset(tmp / "yolo")
        px = max(float(np.abs(a.boxes - b.boxes).max(initial=0)) for a, b in zip(ds, yolo))
        text = 0.0
        ids_same = True
        for rec in ds:
            orig = np.loadtxt(src / "labels" / f"{rec.stem}.txt", ndmin=2)
            again = np.loadtxt(tmp / "yolo" / "labels" / f"{rec.stem}.txt", ndmin=2)
            ids_same &= np.array_equal(orig[:, 0], again[:, 0])
            text = max(text, float(np.abs(orig[:, 1:] - again[:, 1:]).max(initial=0)))
        print(f"VOC -> YOLO: class ids identical: {ids_same}; max |pixel box diff| {px:.2e} px; "
              f"max |normalised label diff| {text:.2e}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            _, report = load_dataset_with_report(src, strict=False, decode=True)
            t_check = time.perf_counter() - t0
        print(f"full decode check (rarespot data check): {t_check:.2f} s, errors: {len(report.errors)}, "
              f"bit depths {dict(report.bit_depths)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
