"""Tiled-inference latency on one 1500x1216 16-bit scan: rarespot (torch, onnxruntime) against SAHI.

    python bench/bench_tiled_inference.py            # prints a markdown table
    python bench/bench_tiled_inference.py --runs 30 --model runs/exp/weights/best.pt

What is measured, per method, in one process and interleaved round-robin (so
load from other jobs hits every method alike): wall time of one call from the
16-bit scan in memory to the merged boxes in scan pixels, 512 tiles, overlap
0.2, the same model, confidence and merge (class-aware NMS at IoU 0.5).

- rarespot torch: TiledPredictor on the .pt (batched nn.Module forward).
- rarespot onnxruntime: TiledPredictor on the ONNX export (dynamic batch).
- rarespot onnxruntime int8: the same, exported with --int8, calibrated on 32
  tiles of two other synthetic scans (not the timed one). Not the same boxes by
  construction: its agreement columns show how close it stays.
- ultralytics predict(list): YOLO.predict on the list of 12 tiles + our merge
  (the design alternative the predictor was measured against).
- SAHI: get_sliced_prediction with sahi's Ultralytics model on the same .pt,
  slice 512, overlap 0.2, no extra full-image pass, NMS/IOU 0.5 class-aware;
  its input conversion (16-bit -> 8-bit, the same to_model_input) is timed too.
  "sahi" uses its default batch_size (1), "sahi-batched" rarespot's batch.

Agreement: the fraction of each method's boxes with a same-class partner at
IoU >= 0.9 in the rarespot-torch result, and the other way round.
Peak memory: each method again in a fresh subprocess; peak RSS (ru_maxrss)
after 3 calls, and the part above the RSS once its model is loaded.

The model, unless --model is given, is yolo11n built from its yaml with
random weights (seed 0) whose class-score layer is re-drawn so scores spread
(tests/helpers_detect.py): a plain random init scores every box at ~1e-3 with
massive ties. --conf 0.25 then leaves ~150 boxes, ~30 merged across tiles.

Torch threads are reset to all cores before every call of every method:
Ultralytics' predictor (inside SAHI too) sets torch to cores - 1, i.e. 1 of 2.
Wall time is what a user waits; CPU time (process_time, all threads) is also
reported because it is far less sensitive to other jobs on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers_detect: the random-weight model builder

METHODS = (
    "rarespot-torch",
    "rarespot-onnxruntime",
    "rarespot-onnxruntime-int8",
    "ultralytics-predict-list",
    "sahi",
    "sahi-batched",
)


def make_scan(seed: int = 0) -> np.ndarray:
    """A synthetic 1500x1216 uint16 body scan (rarespot.synth), the seed's size."""
    from rarespot.synth import generate_scan

    return generate_scan(seed, 0)[0]


def build_model(folder: Path, names: list[str]) -> Path:
    from helpers_detect import make_untrained_yolo

    # Logit mean -6: ~150 raw boxes per scan at conf 0.25, ~30 of them duplicates across tiles.
    return make_untrained_yolo(folder / "yolo11n_random.pt", names, lively=True, score_bias=-6.0)


def make_runner(method: str, pt: Path, onnx, args) -> "callable":
    """A zero-argument callable: scan -> (boxes, scores, labels) in scan pixels."""
    from rarespot.detect.merge import merge_detections
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.preprocess import to_model_input
    from rarespot.tiling import crop_tile, grid_tiles

    common = dict(tile=args.tile, overlap=args.overlap, conf=args.conf, iou=args.iou, batch=args.batch)
    if method == "rarespot-torch":
        predictor = TiledPredictor(pt, **common)
        return lambda scan: _triple(predictor.predict(scan))
    if method == "rarespot-onnxruntime":
        predictor = TiledPredictor(onnx[0], **common)
        return lambda scan: _triple(predictor.predict(scan))
    if method == "rarespot-onnxruntime-int8":
        predictor = TiledPredictor(onnx[1], **common)
        return lambda scan: _triple(predictor.predict(scan))
    if method == "ultralytics-predict-list":
        from ultralytics import YOLO

        yolo = YOLO(str(pt), task="detect")

        def run(scan):
            bgr = to_model_input(scan)
            windows = grid_tiles(*bgr.shape[:2], args.tile, args.overlap)
            tiles = [crop_tile(bgr, int(x0), int(y0), args.tile) for x0, y0, _, _ in windows]
            results = yolo.predict(tiles, imgsz=args.tile, conf=args.conf, iou=args.iou, verbose=False, device="cpu")
            boxes, scores, labels = [], [], []
            for (x0, y0, _, _), r in zip(windows, results):
                boxes.append(r.boxes.xyxy.numpy().astype(np.float64) + [x0, y0, x0, y0])
                scores.append(r.boxes.conf.numpy())
                labels.append(r.boxes.cls.numpy().astype(np.int64))
            return merge_detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels), "nms", args.iou)

        return run
    if method in ("sahi", "sahi-batched"):
        from sahi import AutoDetectionModel
        from sahi.predict import get_sliced_prediction

        model = AutoDetectionModel.from_pretrained(
            model_type="ultralytics", model_path=str(pt), confidence_threshold=args.conf, device="cpu",
            image_size=args.tile,
        )
        # SAHI calls YOLO.predict without an IoU, so per-slice NMS would run at Ultralytics' 0.7;
        # give it the same per-tile IoU as rarespot (YOLO.predict reads its overrides).
        model.model.overrides["iou"] = args.iou

        def run(scan):
            rgb = np.ascontiguousarray(to_model_input(scan)[:, :, ::-1])
            result = get_sliced_prediction(
                rgb, model, slice_height=args.tile, slice_width=args.tile, overlap_height_ratio=args.overlap,
                overlap_width_ratio=args.overlap, perform_standard_pred=False, postprocess_type="NMS",
                postprocess_match_metric="IOU", postprocess_match_threshold=args.iou,
                postprocess_class_agnostic=False, verbose=0,
                batch_size=args.sahi_batch if method == "sahi" else args.batch,
            )
            preds = result.object_prediction_list
            boxes = np.array([p.bbox.to_xyxy() for p in preds], dtype=np.float64).reshape(-1, 4)
            scores = np.array([p.score.value for p in preds], dtype=np.float64)
            labels = np.array([p.category.id for p in preds], dtype=np.int64)
            return boxes, scores, labels

        return run
    raise ValueError(method)


def _triple(dets):
    return dets.boxes, dets.scores, dets.labels


def agreement(a, b, iou: float = 0.9) -> float:
    """Fraction of a's boxes with a same-class box in b at IoU >= iou (one to one)."""
    from rarespot.metrics.detection import match_detections

    if len(a[1]) == 0:
        return 1.0 if len(b[1]) == 0 else 0.0
    matched = match_detections(a[0], a[1], a[2], b[0], b[2], iou=iou)
    return float(np.mean(matched >= 0))


def boundary_ties(ref, other, iou: float = 0.5) -> str:
    """Why boxes of ``ref`` are missing from ``other``: how many of them overlap a kept
    same-class box of ``other`` at exactly the NMS threshold. SAHI suppresses at IoU >=
    the threshold; Ultralytics, torchvision and rarespot at IoU > the threshold."""
    from rarespot.metrics.detection import box_iou

    missing = np.flatnonzero(~agreement_mask(ref, other))
    ties = 0
    for i in missing:
        same = other[2] == ref[2][i]
        if same.any() and np.isclose(box_iou(ref[0][i : i + 1], other[0][same]).max(), iou, atol=1e-9):
            ties += 1
    return (f"{len(missing)} rarespot-torch boxes not found in it; {ties} of them overlap one of its "
            f"same-class boxes at IoU exactly {iou} (kept by '> {iou}' NMS, suppressed by SAHI's '>= {iou}')")


def agreement_mask(a, b, iou: float = 0.9) -> np.ndarray:
    from rarespot.metrics.detection import match_detections

    return match_detections(a[0], a[1], a[2], b[0], b[2], iou=iou) >= 0


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM (peak RSS) of this process from /proc, in MiB. Not ru_maxrss: Linux
    carries that over from the parent across exec, so a child reports its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(method: str, pt: Path, onnx, args) -> dict:
    """Run in a fresh process: RSS once the model is loaded, and peak RSS after 3 calls."""
    import torch

    from rarespot.detect.backends import available_threads

    scan = np.load(args.probe_scan)  # not generated here: the generator's own peak would swamp the number
    run = make_runner(method, pt, onnx, args)
    loaded = _status_mb("VmRSS")
    for _ in range(3):
        torch.set_num_threads(available_threads())
        run(scan)
    return {"loaded_mb": loaded, "peak_mb": _status_mb("VmHWM")}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per method (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8, help="rarespot tiles per forward pass")
    parser.add_argument("--sahi-batch", type=int, default=1, help="SAHI batch_size (its default is 1)")
    parser.add_argument("--model", type=Path, help="a trained .pt (default: random-weight yolo11n, see above)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: memory probe of one method
    parser.add_argument("--probe-files", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-scan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    from rarespot.detect.backends import available_threads

    threads = available_threads()
    torch.set_num_threads(threads)
    if args.probe:
        pt, onnx, onnx8 = args.probe_files
        print(json.dumps(memory_probe(args.probe, pt, (onnx, onnx8), args)))
        return

    from rarespot.detect.export import export_onnx
    from rarespot.synth import CLASS_NAMES

    methods = [m for m in args.methods.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="rarespot-bench-"))
    pt = args.model or build_model(work, list(CLASS_NAMES))
    onnx = (None, None)
    if any(m.startswith("rarespot-onnxruntime") for m in methods):
        from rarespot.io.images import write_image

        calibration = [write_image(work / f"calib{i}.png", make_scan(seed=1 + i)) for i in range(2)]
        onnx = (
            export_onnx(pt, work / "model.onnx", imgsz=args.tile),
            export_onnx(pt, work / "model_int8.onnx", imgsz=args.tile, int8=True, calibration=calibration),
        )
    scan = make_scan()
    np.save(work / "scan.npy", scan)
    load_before = os.getloadavg()

    runners = {m: make_runner(m, pt, onnx, args) for m in methods}
    outputs = {}
    for m in methods:  # warm-up (first calls allocate, fuse, JIT-compile)
        for _ in range(args.warmup):
            torch.set_num_threads(threads)
            outputs[m] = runners[m](scan)
    times = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    for _ in range(args.runs):
        for m in methods:
            # Every method gets both cores: Ultralytics' predictor (used by SAHI) sets torch to cores - 1.
            torch.set_num_threads(threads)
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[m] = runners[m](scan)
            times[m].append(time.perf_counter() - start)
            cpu[m].append(time.process_time() - start_cpu)
    load_after = os.getloadavg()

    memory = {}
    if not args.no_memory:
        for m in methods:
            cmd = [sys.executable, __file__, "--probe", m, "--probe-files", str(pt), str(onnx[0] or "-"),
                   str(onnx[1] or "-"),
                   "--probe-scan", str(work / "scan.npy"),
                   "--tile", str(args.tile), "--overlap", str(args.overlap), "--conf", str(args.conf),
                   "--iou", str(args.iou), "--batch", str(args.batch), "--sahi-batch", str(args.sahi_batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            memory[m] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None

    from rarespot.tiling import grid_tiles

    n_tiles = len(grid_tiles(scan.shape[0], scan.shape[1], args.tile, args.overlap))
    ref = outputs.get("rarespot-torch")
    sahi_median = statistics.median(times["sahi"]) if "sahi" in times else None
    import onnxruntime
    import sahi
    import ultralytics

    print(f"## Tiled inference latency: one {scan.shape[0]}x{scan.shape[1]} 16-bit scan\n")
    print(f"- command: `python bench/bench_tiled_inference.py {' '.join(sys.argv[1:])}`".replace(" `", "`"))
    print(f"- machine: {cpu_name()}, {threads} cores available to this process, no GPU used; "
          f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after the timed runs"
          + (" (above the core count: other jobs competed)" if max(load_before[0], load_after[0]) > threads + 0.5 else " (no more than the core count: little else was running)"))
    print(f"- versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"ultralytics {ultralytics.__version__}, sahi {sahi.__version__}; torch threads {threads}, "
          f"onnxruntime intra-op threads {threads}")
    print(f"- model: {'`' + str(args.model) + '`' if args.model else 'yolo11n from yolo11n.yaml, random weights (seed 0, spread class scores), 18 classes'}; "
          f"tile {args.tile}, overlap {args.overlap}, {n_tiles} tiles, "
          f"conf {args.conf}, class-aware NMS IoU {args.iou}; rarespot batch {args.batch}, SAHI batch_size {args.sahi_batch}")
    print(f"- {args.runs} timed calls per method after {args.warmup} warm-up calls, interleaved round-robin\n")
    print("| method | median ms / scan | p10-p90 ms | CPU ms / scan | scans / s | throughput vs SAHI | boxes | "
          "its boxes found in the torch result (IoU 0.9) | torch boxes found in it | peak RSS MB (model loaded) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in methods:
        t = np.array(times[m]) * 1000
        med = float(np.median(t))
        ratio = f"{sahi_median * 1000 / med:.2f}x" if sahi_median else "—"
        boxes = len(outputs[m][1])
        agree_here = f"{agreement(outputs[m], ref):.3f}" if ref is not None else "—"
        agree_ref = f"{agreement(ref, outputs[m]):.3f}" if ref is not None else "—"
        mem = memory.get(m)
        mem_text = f"{mem['peak_mb']:.0f} ({mem['loaded_mb']:.0f})" if mem else "—"
        cpu_med = float(np.median(cpu[m])) * 1000
        print(f"| {m} | {med:.0f} | {np.percentile(t, 10):.0f}-{np.percentile(t, 90):.0f} | {cpu_med:.0f} | {1000 / med:.2f} | "
              f"{ratio} | {boxes} | {agree_here} | {agree_ref} | {mem_text} |")

    if ref is not None:
        print()
        for m in methods:
            if m.startswith("sahi"):
                print(f"- {m}: {boundary_ties(ref, outputs[m])}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
