"""Tiled inference on a trained detector: rarespot's paths against SAHI, one run, many scans (issue 14).

    # the demo's model (rarespot demo --out demo) on 24 fresh synthetic body scans it never saw:
    python bench/bench_tiled_inference.py --model demo/run/weights/best.pt --synthetic 24 --tile 320 \\
        --check demo/run --conf 0.25
    # an OPIXray model on its run's held-out test scans:
    python bench/bench_tiled_inference.py --model RUN/weights/best.pt --data RUN --split test --tile 256
    # `rarespot detect batch` over a folder against a plain SAHI loop, whole processes:
    python bench/bench_tiled_inference.py --model demo/run/weights/best.pt --synthetic 100 --tile 320 --screen

What is measured, per method, in one process: every scan (already in memory, as read from its
file) goes from the array to merged boxes in scan pixels, including the 8-bit mapping, the
foreground test where it is on, tiling, the network and the merge; model loading is outside
the timing. The methods run scan by scan in turn (scan 1 through every method, then scan 2 ...),
so other jobs' load falls on all of them alike.

- sahi: SAHI's ``get_sliced_prediction`` on the same .pt, same tiles (slice = --tile, overlap),
  ``perform_standard_pred=False``, NMS/IOU at --iou class-aware, per-slice Ultralytics NMS at
  the same IoU, batch_size 1 (its default); sahi-batched: batch_size --batch. The reference:
  "x SAHI" is SAHI's total wall time over this method's.
- torch / onnxruntime / openvino: rarespot's TiledPredictor on the .pt, on its ONNX export, and
  on the same export with OpenVINO; "+skip" with tile skipping (the default), without it every
  tile runs, as in SAHI.
- openvino-int8, onnxruntime-int8, openvino-bf16: reduced precision exported through the accuracy
  gate (calibrated on --check's training scans, F1 checked on its validation scans); a variant
  whose check failed is still timed (exported with force) and its row says so.
- default: what `rarespot detect batch --model best.pt` runs: fp32, skipping on, on the faster of
  OpenVINO and onnxruntime as timed the first time the model loads on the machine (the choice is
  printed under the table).

Columns: scans/s (wall), x SAHI, CPU seconds per scan (process_time: all threads), peak RSS in a
fresh process per method (VmHWM after 3 scans; model loaded in brackets), recall / precision / F1
at the operating confidence against the annotations (IoU 0.5), and agreement with SAHI: the share
of the method's boxes with a same-class SAHI box at IoU >= 0.9, and the other way round.
Wall time depends on what else runs on the machine; the ratio columns come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

FP32 = ("sahi", "sahi-batched", "torch", "torch+skip", "onnxruntime", "onnxruntime+skip", "openvino", "openvino+skip")
REDUCED = ("openvino-int8", "openvino-int8+skip", "onnxruntime-int8", "onnxruntime-int8+skip",
           "openvino-bf16", "openvino-bf16+skip")
METHODS = FP32 + REDUCED


# -- data ---------------------------------------------------------------------------------------


def load_scans(args, work: Path):
    """[(name, image, gt_boxes, gt_labels)], class names of the data, and the folder of scan files."""
    from rarespot.io.images import read_image

    if args.synthetic:
        from rarespot.synth import generate

        folder = work / "synthetic"
        # A seed the demo never trains on (it uses 0): scans the model has not seen.
        dataset = generate(args.synthetic, folder, seed=args.synthetic_seed)
    else:
        from rarespot.detect.evaluate import load_eval_data

        dataset = load_eval_data(args.data, args.split)
    records = list(dataset.records)[: args.scans or None]
    scans = [(dataset.image_path(r).name, read_image(dataset.image_path(r)), r.boxes, r.labels) for r in records]
    return scans, list(dataset.class_names), [dataset.image_path(r) for r in records]


# -- methods ------------------------------------------------------------------------------------


def make_runner(method: str, files: dict, args):
    """A callable scan -> (boxes, scores, labels) in scan pixels, its model already loaded."""
    from rarespot.detect.predict import TiledPredictor

    common = dict(tile=args.tile, overlap=args.overlap, conf=args.conf, iou=args.iou, batch=args.batch)
    skip = method.endswith("+skip") or method == "default"
    base = method.removesuffix("+skip")
    if base.startswith("sahi"):
        return _sahi_runner(files["pt"], args, batch=args.batch if base == "sahi-batched" else 1)
    if base == "default":
        from rarespot.detect.export import cached_onnx

        # What `detect batch --model best.pt` does: export once (cached), then the faster of
        # OpenVINO and onnxruntime, timed the first time the model loads (the verdict cached).
        model, backend = cached_onnx(files["pt"], -(-args.tile // 32) * 32), "auto"
    elif base == "torch":
        model, backend = files["pt"], "torch"
    elif base in ("onnxruntime", "openvino"):
        model, backend = files["onnx"], base
    else:
        runtime, precision = base.split("-")
        model, backend = files[precision], runtime
    predictor = TiledPredictor(model, backend=backend, skip_background=skip, **common)

    def run(scan):
        dets = predictor.predict(scan)
        return dets.boxes, dets.scores, dets.labels, dets.info

    run.predictor = predictor
    return run


def _sahi_runner(pt: Path, args, batch: int):
    import torch
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    from rarespot.detect.preprocess import read_input_mapping, to_model_input

    mapping = read_input_mapping(pt)
    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=str(pt), confidence_threshold=args.conf, device="cpu", image_size=args.tile,
    )
    # SAHI calls YOLO.predict without an IoU, so per-slice NMS would run at Ultralytics' 0.7;
    # give it the same per-tile IoU as rarespot (YOLO.predict reads its overrides).
    model.model.overrides["iou"] = args.iou

    def run(scan):
        torch.set_num_threads(args.sahi_threads)  # Ultralytics' predictor resets it; the peer gets what was asked
        rgb = np.ascontiguousarray(to_model_input(scan, mapping)[:, :, ::-1])
        result = get_sliced_prediction(
            rgb, model, slice_height=args.tile, slice_width=args.tile, overlap_height_ratio=args.overlap,
            overlap_width_ratio=args.overlap, perform_standard_pred=False, postprocess_type="NMS",
            postprocess_match_metric="IOU", postprocess_match_threshold=args.iou, postprocess_class_agnostic=False,
            verbose=0, batch_size=batch,
        )
        preds = [p for p in result.object_prediction_list if p.score.value >= args.conf]
        boxes = np.array([p.bbox.to_xyxy() for p in preds], dtype=np.float64).reshape(-1, 4)
        return (boxes, np.array([p.score.value for p in preds]), np.array([p.category.id for p in preds], dtype=np.int64),
                {})

    return run


def export_models(pt: Path, args, work: Path, methods) -> tuple[dict, dict]:
    """The ONNX export and the reduced-precision exports the methods need; their gate records."""
    import warnings

    from rarespot.detect.export import export_onnx
    from rarespot.detect.precision import onnx_metadata, read_stamp

    files, gates = {"pt": pt}, {}
    names = {m.removesuffix("+skip") for m in methods}
    if names & {"onnxruntime", "openvino", "onnxruntime-int8", "openvino-int8", "openvino-bf16"}:
        files["onnx"] = export_onnx(pt, work / "model.onnx", imgsz=args.tile)
    for precision in ("int8", "bf16"):
        if not any(n.endswith(precision) for n in names):
            continue
        if args.check is None:
            raise SystemExit("reduced-precision methods need --check RUN_FOLDER (calibration and held-out scans)")
        calibration = None
        if precision == "int8":
            from rarespot.detect.evaluate import load_eval_data

            calibration = load_eval_data(args.check, "train")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = work / f"model.{precision}.onnx"
            # The gate runs (F1 on the check set against fp32); force keeps the variant to time it either way.
            files[precision] = export_onnx(pt, out, imgsz=args.tile, precision=precision, calibration=calibration,
                                           check=args.check, conf=args.conf, force=True)
        gates[precision] = read_stamp(onnx_metadata(files[precision])[0])
    return files, gates


# -- scoring ------------------------------------------------------------------------------------


def score(outputs, scans, class_aware: bool, iou: float = 0.5) -> tuple[float, float, float]:
    from rarespot.metrics.detection import match_detections, precision_recall_f1

    tp = fp = fn = 0
    for (boxes, scores, labels, _), (_, _, gt_boxes, gt_labels) in zip(outputs, scans):
        matched = match_detections(boxes, scores, labels, gt_boxes, gt_labels, iou=iou, class_aware=class_aware)
        hits = int((matched >= 0).sum())
        tp, fp, fn = tp + hits, fp + len(matched) - hits, fn + len(gt_boxes) - hits
    return precision_recall_f1(tp, fp, fn)


def agreement(a_all, b_all, iou: float = 0.9) -> float:
    """Share of a's boxes (over all scans) with a same-class box in b at IoU >= iou (one to one)."""
    from rarespot.metrics.detection import match_detections

    found = total = 0
    for a, b in zip(a_all, b_all):
        if len(a[1]):
            found += int((match_detections(a[0], a[1], a[2], b[0], b[2], iou=iou) >= 0).sum())
            total += len(a[1])
    return found / total if total else 1.0


def exact_ties(ref_all, other_all, iou: float = 0.5) -> tuple[int, int]:
    """Of ref's boxes missing from other: how many overlap a kept same-class box of other at exactly
    the NMS threshold (SAHI suppresses at IoU >= the threshold, rarespot and Ultralytics at >)."""
    from rarespot.metrics.detection import box_iou, match_detections

    missing = ties = 0
    for ref, other in zip(ref_all, other_all):
        if not len(ref[1]):
            continue
        lost = np.flatnonzero(match_detections(ref[0], ref[1], ref[2], other[0], other[2], iou=0.9) < 0)
        missing += len(lost)
        for i in lost:
            same = other[2] == ref[2][i]
            if same.any() and np.isclose(box_iou(ref[0][i : i + 1], other[0][same]).max(), iou, atol=1e-6):
                ties += 1
    return missing, ties


# -- memory probe (a fresh process per method) --------------------------------------------------


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(args) -> None:
    files = {k: Path(v) for k, v in json.loads(args.probe_files).items()}
    scans = [np.load(p) for p in sorted(Path(args.probe_scans).glob("*.npy"))]
    run = make_runner(args.probe, files, args)
    loaded = _status_mb("VmRSS")
    for scan in scans:
        run(scan)
    print(json.dumps({"loaded_mb": loaded, "peak_mb": _status_mb("VmHWM")}))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -- `detect batch` against a SAHI loop, whole processes ----------------------------------------

SAHI_LOOP = r"""
import sys, time, numpy as np
from pathlib import Path
from sahi import AutoDetectionModel
from sahi.predict import get_sliced_prediction
import torch
from rarespot.detect.preprocess import read_input_mapping, to_model_input
from rarespot.io.images import read_image
pt, folder, tile, overlap, conf, iou, threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
mapping = read_input_mapping(pt)
model = AutoDetectionModel.from_pretrained(model_type="ultralytics", model_path=pt, confidence_threshold=conf, device="cpu", image_size=tile)
model.model.overrides["iou"] = iou
n = 0
for path in sorted(folder.rglob("*.png")):
    torch.set_num_threads(threads)
    rgb = np.ascontiguousarray(to_model_input(read_image(path), mapping)[:, :, ::-1])
    get_sliced_prediction(rgb, model, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap,
        overlap_width_ratio=overlap, perform_standard_pred=False, postprocess_type="NMS", postprocess_match_metric="IOU",
        postprocess_match_threshold=iou, postprocess_class_agnostic=False, verbose=0)
    n += 1
print(n)
"""


def screen_comparison(args, folder: Path, pt: Path, work: Path) -> None:
    env = {**os.environ, "RARESPOT_CACHE_DIR": str(work / "cache")}
    rarespot = [sys.executable, "-m", "rarespot.cli", "detect", "batch", str(folder), "--model", str(pt),
                "--tile", str(args.tile), "--overlap", str(args.overlap), "--conf", str(args.conf), "--flag-conf",
                str(max(args.conf, 0.5)), "--restart"]
    sahi = [sys.executable, "-c", SAHI_LOOP, str(pt), str(folder), str(args.tile), str(args.overlap), str(args.conf),
            str(args.iou), str(args.sahi_threads)]
    # The one-time work is done before the timed runs, as on any machine after its first screening: the
    # export of the .pt, the OpenVINO-vs-onnxruntime verdict and OpenVINO's compiled model, all cached.
    warm = folder.parent / "warm"
    warm.mkdir(exist_ok=True)
    shutil.copy(next(folder.rglob("*.png")), warm / "one.png")
    subprocess.run(rarespot[:5] + [str(warm)] + rarespot[6:] + ["--out", str(work / "screen_warm")], env=env,
                   capture_output=True, check=True)
    import resource

    times = {"rarespot detect batch": [], "SAHI loop": []}
    cpu = {name: [] for name in times}
    for k in range(args.screen_repeats):  # alternating, so load changes hit both
        for name, cmd in (("rarespot detect batch", rarespot + ["--out", str(work / f"screen{k}")]), ("SAHI loop", sahi)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the finished process's user + system CPU, all threads
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    n = len(list(folder.rglob("*.png")))
    print(f"\n### `rarespot detect batch` vs a SAHI loop, whole processes, {n} scans\n")
    print(f"- rarespot: `{' '.join(rarespot[2:])} --out OUT` (the faster of OpenVINO and onnxruntime, skipping on; "
          "its one-time export, back-end verdict and compiled model cached by a one-scan run before)")
    print(f"- SAHI: a plain loop: read_image, the model's 8-bit mapping, get_sliced_prediction (batch 1, torch threads {args.sahi_threads})")
    print("\n| process | runs (s) | median s | scans / s | x SAHI loop | CPU s (median) | x SAHI CPU |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    sahi_median = float(np.median(times["SAHI loop"]))
    sahi_cpu = float(np.median(cpu["SAHI loop"]))
    for name, values in times.items():
        median, cpu_median = float(np.median(values)), float(np.median(cpu[name]))
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {median:.1f} | {n / median:.2f} | "
              f"{sahi_median / median:.2f}x | {cpu_median:.1f} | {sahi_cpu / cpu_median:.2f}x |")


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained YOLO detection .pt")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, help="generate this many new synthetic body scans (annotated)")
    source.add_argument("--data", type=Path, help="a run folder or annotated dataset (with --split)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--synthetic-seed", type=int, default=1000)
    parser.add_argument("--scans", type=int, help="use only the first N scans")
    parser.add_argument("--check", type=Path, help="run folder for the reduced-precision gate (train: calibration, val: check)")
    parser.add_argument("--tile", type=int, default=320)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--conf", type=float, default=0.25, help="operating confidence")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sahi-threads", type=int, default=None, help="torch threads for SAHI (default: all cores)")
    parser.add_argument("--methods", default=",".join(METHODS + ("default",)))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--screen", action="store_true", help="also time `detect batch` against a SAHI loop on the scans' folder")
    parser.add_argument("--screen-only", action="store_true", help="only that comparison")
    parser.add_argument("--screen-repeats", type=int, default=2)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-files", help=argparse.SUPPRESS)
    parser.add_argument("--probe-scans", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from rarespot.cpu import available_cores

    cores = available_cores()
    args.sahi_threads = args.sahi_threads or cores
    if args.probe:
        memory_probe(args)
        return

    work = Path(tempfile.mkdtemp(prefix="rarespot-bench-"))
    os.environ["RARESPOT_CACHE_DIR"] = str(work / "cache")
    try:
        scans, data_names, paths = load_scans(args, work)
        if args.screen or args.screen_only:
            folder = work / "screen_scans"
            folder.mkdir()
            for p in paths:
                shutil.copy(p, folder / p.name)
            if args.screen_only:
                screen_comparison(args, folder, args.model, work)
                return
        run_methods(args, scans, data_names, work, cores)
        if args.screen:
            screen_comparison(args, folder, args.model, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_methods(args, scans, data_names, work: Path, cores: int) -> None:
    import warnings

    methods = [m for m in args.methods.split(",") if m]
    if "sahi" not in methods:
        methods.insert(0, "sahi")  # the reference
    files, gates = export_models(args.model, args, work, methods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # forced variants warn on load; their gate is in the table
        runners = {m: make_runner(m, files, args) for m in methods}
    for m in methods:  # warm-up: first calls allocate and compile
        runners[m](scans[0][1])
    predictors = [r.predictor for r in runners.values() if hasattr(r, "predictor")]
    if predictors:
        model_names = list(predictors[0].class_names)
    else:
        from rarespot.detect.backends import UltralyticsBackend

        model_names = UltralyticsBackend(args.model).class_names
    class_aware = not (len(model_names) == 1 and len(data_names) > 1)
    load_before = os.getloadavg()
    wall = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    outputs = {m: [] for m in methods}
    started = time.time()
    for _, scan, _, _ in scans:
        for m in methods:
            t0, c0 = time.perf_counter(), time.process_time()
            out = runners[m](scan)
            wall[m].append(time.perf_counter() - t0)
            cpu[m].append(time.process_time() - c0)
            outputs[m].append(out)
    load_after = os.getloadavg()
    elapsed = time.time() - started

    memory = {}
    if not args.no_memory:
        probe_dir = work / "probe"
        probe_dir.mkdir()
        for i, (_, scan, _, _) in enumerate(scans[:3]):
            np.save(probe_dir / f"{i}.npy", scan)
        for m in methods:
            cmd = [sys.executable, __file__, "--model", str(args.model), "--synthetic", "1", "--probe", m,
                   "--probe-files", json.dumps({k: str(v) for k, v in files.items()}), "--probe-scans", str(probe_dir),
                   "--tile", str(args.tile), "--overlap", str(args.overlap), "--conf", str(args.conf), "--iou",
                   str(args.iou), "--batch", str(args.batch), "--sahi-threads", str(args.sahi_threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            lines = proc.stdout.strip().splitlines()
            memory[m] = json.loads(lines[-1]) if proc.returncode == 0 and lines else None

    import onnxruntime
    import openvino
    import sahi
    import torch
    import ultralytics

    n = len(scans)
    shape = scans[0][1].shape
    n_tiles = sum(o[3].get("tiles", 0) for o in outputs.get("openvino+skip", outputs.get("torch", [])))
    print(f"## Tiled inference on a trained model: {n} scans\n")
    print(f"- command: `python bench/bench_tiled_inference.py {' '.join(sys.argv[1:])}`")
    print(f"- machine: {cpu_name()}, {cores} cores available; load average {load_before[0]:.1f} before / "
          f"{load_after[0]:.1f} after the timed part ({elapsed:.0f} s)"
          + (" — above the core count: other jobs competed, wall times are distorted; compare ratios only"
             if max(load_before[0], load_after[0]) > cores + 0.5 else ""))
    print(f"- versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino "
          f"{openvino.__version__}, ultralytics {ultralytics.__version__}, sahi {sahi.__version__}")
    print(f"- model `{args.model}` ({len(model_names)} classes); scans {shape[1]}x{shape[0]} {scans[0][1].dtype} "
          f"({'synthetic, seed ' + str(args.synthetic_seed) if args.synthetic else str(args.data) + ' ' + args.split}); "
          f"tile {args.tile}, overlap {args.overlap}, {n_tiles} tiles in all; conf {args.conf}, NMS IoU {args.iou}, "
          f"batch {args.batch}; SAHI torch threads {args.sahi_threads}; matching "
          f"{'class-aware' if class_aware else 'class-agnostic (one-class model)'} at IoU 0.5")
    for precision, gate in gates.items():
        verdict = "passed" if gate.get("status") == "passed" else "FAILED (timed anyway, exported with --force)"
        print(f"- {precision.upper()} gate: F1 {gate.get('f1')} vs fp32 {gate.get('f1_fp32')} on {gate.get('scans')} "
              f"held-out scans of {args.check} at conf {args.conf}: {verdict}")
    print()
    print("| method | scans / s | x SAHI | CPU s / scan | tiles run | peak RSS MB (loaded) | recall | precision | F1 | "
          "its boxes in SAHI's | SAHI's boxes in it |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sahi_total = sum(wall["sahi"])
    ref = outputs["sahi"]
    for m in methods:
        total = sum(wall[m])
        p, r, f1 = score(outputs[m], scans, class_aware)
        tiles = sum(o[3].get("tiles_run", o[3].get("tiles", 0)) for o in outputs[m]) if outputs[m][0][3] else None
        all_tiles = sum(o[3].get("tiles", 0) for o in outputs[m]) if outputs[m][0][3] else None
        mem = memory.get(m)
        mem_text = f"{mem['peak_mb']:.0f} ({mem['loaded_mb']:.0f})" if mem else "—"
        tile_text = f"{tiles}/{all_tiles}" if tiles is not None else "all"
        print(f"| {m} | {n / total:.2f} | {sahi_total / total:.2f}x | {np.mean(cpu[m]):.2f} | {tile_text} | {mem_text} | "
              f"{r:.3f} | {p:.3f} | {f1:.3f} | {agreement(outputs[m], ref):.3f} | {agreement(ref, outputs[m]):.3f} |")
    print()
    for m in methods:
        if m.startswith("sahi") or "+skip" in m or m == "default" or any(x in m for x in ("int8", "bf16")):
            continue
        missing, ties = exact_ties(outputs[m], ref)
        if missing:
            print(f"- {m}: {missing} of its boxes not in SAHI's result; {ties} of them overlap a kept same-class SAHI box "
                  f"at IoU exactly {args.iou} (kept by '> {args.iou}' NMS, suppressed by SAHI's '>= {args.iou}')")
    if "default" in runners:
        backend = runners["default"].predictor.backend
        timed = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in getattr(backend, "timed", {}).items())
        print(f"- default ran on {type(backend).__name__} (a batch of {args.batch} tiles at load: {timed or 'not timed'})")
    skipped = [o[3] for o in outputs.get("openvino+skip", [])]
    if skipped:
        share = 1 - sum(i["tiles_run"] for i in skipped) / max(1, sum(i["tiles"] for i in skipped))
        notes = sum(1 for i in skipped if i.get("note"))
        print(f"- tile skipping: {share:.1%} of the tiles skipped; {notes} scans with a note "
              f"({', '.join(sorted({i['note'] for i in skipped if i.get('note')})) or 'none'})")


if __name__ == "__main__":
    main()
