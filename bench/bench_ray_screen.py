"""What `--ray` costs on one machine: `rarespot detect batch` of N synthetic scans, locally and on a
local Ray with 2 workers (issue 18).

    python bench/bench_ray_screen.py --scans 40

Three timings of the same screening (N synthetic 1500x1216 16-bit scans, yolo11n at 512-px tiles,
background tiles skipped, as `rarespot detect batch` runs by default):

* ``local``: the local path (one process; the next scans are read in a background thread; the
  back-end uses every core);
* ``ray_warm``: ``--ray`` with 2 workers (one CPU and one model replica each) on a local Ray that was
  started before the clock (what a standing cluster costs per run);
* ``ray_cold``: ``--ray`` with nothing running: the wall time includes starting the local Ray and
  stopping it (what `rarespot detect batch SOURCE --ray` costs on a laptop).

local and ray_warm alternate, --repeats times each; the median is reported with the load average
of the machine at each run (a shared machine inflates every time). Every run writes a fresh output
folder, and the CSVs of the two paths are compared.

The model is an untrained yolo11n (built from Ultralytics' yaml, nothing downloaded) unless --model
is given; its ONNX export is made once, before the clock. The speed does not depend on the weights,
except through how many boxes reach NMS.

With --cells-model (a fitted `rarespot screen fit` model), `rarespot screen score` of the malaria test
cells (the seeded 20% test split of bench_screen.py) is timed the same way, locally and on the warm Ray:

    python bench/bench_ray_screen.py --scans 40 --cells-model runs/screen/model.pt

With --scaling, a measured cost model says how throughput would grow with more nodes (this machine has
2 cores, so a cluster cannot be timed here). It measures on a local Ray, for 1 and for 2 workers of one
CPU each: the wall time to start the pool and load the model (S, from a run of one scan a worker), each
worker's seconds per scan (c), and the driver's CPU seconds per scan (d: listing, reading and shipping
scans, writing rows, thumbnails and the sheet). The model

    wall(n scans, N workers) = S + n * max(c / N, d, b / bandwidth)

(b: bytes a scan sends through the driver when workers do not share a disk) is checked against the
measured 2-worker wall time, then tabled for N up to 64 at two assumed network bandwidths:

    python bench/bench_ray_screen.py --scans 200 --repeats 1 --scaling
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve_load import untrained_yolo  # noqa: E402


def timed(fn) -> dict:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "scans_per_s": round(result.n_screened / wall, 3),
            "loadavg_1m_before": round(load, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2)}


def cost_of(run, scans: int, workers: int) -> dict:
    """S, c and d (see the module docstring) of one Ray configuration, on a fresh local Ray."""
    import ray

    from rarespot.ray_backend import RaySettings

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        settings = RaySettings(workers=workers)
        run(f"warm{workers}", settings, scans=workers)  # worker processes and imports, once per cluster
        started = time.perf_counter()
        run(f"start{workers}", settings, scans=workers)  # one scan a worker: mostly the pool's start
        one_each = time.perf_counter() - started
        cpu, started = time.process_time(), time.perf_counter()
        run(f"scale{workers}", settings)
        wall, driver_cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        ray.shutdown()
    per_scan = (wall - one_each) / (scans - workers)  # the steady state, after the pool is up
    return {"workers": workers, "wall_s": round(wall, 2), "one_scan_each_s": round(one_each, 2),
            "start_s": round(max(0.0, one_each - per_scan * workers), 2),
            "worker_s_per_scan": round(per_scan * workers, 4), "driver_cpu_s_per_scan": round(driver_cpu / scans, 4)}


def model_wall(n: int, workers: int, start: float, worker_s: float, driver_s: float, bytes_per_scan: float,
               bandwidth: float | None) -> float:
    network = bytes_per_scan / bandwidth if bandwidth else 0.0
    return start + n * max(worker_s / workers, driver_s, network)


def scaling_table(costs: list[dict], scans: int, bytes_per_scan: float, local_wall: float) -> dict:
    one, two = costs
    start, worker_s, driver_s = one["start_s"], one["worker_s_per_scan"], max(c["driver_cpu_s_per_scan"] for c in costs)
    predicted_two = model_wall(scans, 2, two["start_s"], worker_s, driver_s, 0.0, None)
    rows = []
    n = 10_000
    for workers in (1, 2, 4, 8, 16, 32, 64):
        row = {"workers": workers}
        for label, bandwidth in (("shared_disk", None), ("via_driver_1Gbps", 125e6), ("via_driver_10Gbps", 1.25e9)):
            wall = model_wall(n, workers, start, worker_s, driver_s, bytes_per_scan, bandwidth)
            row[f"{label}_scans_per_s"] = round(n / wall, 2)
        rows.append(row)
    return {
        "model": "wall = S + n * max(c / N, d, b / bandwidth); c from 1 worker, d the larger driver cost",
        "S_start_s": start, "c_worker_s_per_scan": worker_s, "d_driver_cpu_s_per_scan": driver_s,
        "b_bytes_per_scan": int(bytes_per_scan),
        "check_2_workers": {"measured_wall_s": two["wall_s"], "predicted_wall_s": round(predicted_two, 2),
                            "error": round(predicted_two / two["wall_s"] - 1, 3)},
        "local_path_scans_per_s": round(scans / local_wall, 3),
        "driver_bound_at_workers": round(worker_s / driver_s, 1) if driver_s > 0 else None,
        "table_10000_scans": rows, "measured": costs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=40)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rarespot_bench_ray"))
    ap.add_argument("--model", type=Path, default=None, help="a trained .pt or .onnx (default: untrained yolo11n)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cells-model", type=Path, default=None, help="a screen model: also time scoring the malaria test cells")
    ap.add_argument("--cells-npz", type=Path, default=None, help="default: bench_screen.py's malaria npz")
    ap.add_argument("--scaling", action="store_true", help="measure the per-scan cost model and table it (see above)")
    args = ap.parse_args()

    import ray

    from rarespot.detect.export import cached_onnx
    from rarespot.detect.screen_batch import screen_folder
    from rarespot.ray_backend import RaySettings
    from rarespot.synth import generate

    work = args.work
    src = work / f"scans{args.scans}"
    generate(args.scans, src, seed=0, progress=False)
    model = args.model or untrained_yolo(work / "yolo11n_untrained.pt")
    if model.suffix != ".onnx" and args.backend in ("auto", "openvino", "onnxruntime"):
        model = cached_onnx(model, -(-args.tile // 32) * 32)  # made once, before any clock
    options = dict(tile=args.tile, backend=args.backend, progress=False)
    settings = RaySettings(workers=args.workers)

    def run(name: str, ray_settings=None, scans: int | None = None):
        out = work / "out" / name
        shutil.rmtree(out, ignore_errors=True)
        source = src
        if scans is not None:  # the first `scans` scans, as a list file
            source = work / f"first{scans}.txt"
            source.write_text("".join(f"{p}\n" for p in sorted(src.rglob("*.png"))[:scans]))
        return screen_folder(source, model, out, ray=ray_settings, **options)

    cells, n_cells = None, 0
    if args.cells_model is not None:
        import numpy as np

        from bench_screen import DEFAULT_NPZ, split

        with np.load(args.cells_npz or DEFAULT_NPZ) as npz:
            test = split(npz["labels"], 0.2, 0)
            cells, n_cells = work / "malaria_test_cells.npz", int(test.sum())
            np.savez(cells, images=npz["images"][test], labels=npz["labels"][test])

    def score(name: str, ray_settings=None):
        from rarespot.screen.pipeline import score_data

        table = score_data(args.cells_model, cells, work / "out" / f"{name}.csv", log=lambda *_: None, ray=ray_settings)

        class Done:  # what timed() reads
            n_screened = len(table)
        return Done

    rows: dict[str, list[dict]] = {"local": [], "ray_warm": [], "ray_cold": []}
    if cells is not None:
        rows.update(cells_local=[], cells_ray_warm=[])
    rows["ray_cold"].append(timed(lambda: run("ray_cold", settings)))
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        run("warmup_ray", settings)  # worker processes and imports: once per cluster, not per run
        for _ in range(args.repeats):
            rows["local"].append(timed(lambda: run("local")))
            rows["ray_warm"].append(timed(lambda: run("ray_warm", settings)))
            if cells is not None:
                rows["cells_local"].append(timed(lambda: score("cells_local")))
                rows["cells_ray_warm"].append(timed(lambda: score("cells_ray", settings)))
    finally:
        ray.shutdown()
    same = (work / "out" / "local" / "screen.csv").read_bytes() == (work / "out" / "ray_warm" / "screen.csv").read_bytes()
    if cells is not None:
        same_cells = (work / "out" / "cells_local.csv").read_bytes() == (work / "out" / "cells_ray.csv").read_bytes()
    median = {k: statistics.median(r["wall_s"] for r in v) for k, v in rows.items() if v}
    scaling = None
    if args.scaling:
        scan_files = sorted(src.rglob("*.png"))
        bytes_per_scan = sum(p.stat().st_size for p in scan_files) / len(scan_files)
        scaling = scaling_table([cost_of(run, args.scans, w) for w in (1, 2)], args.scans, bytes_per_scan,
                                median["local"])
    print(json.dumps({
        "scans": args.scans, "tile": args.tile, "backend": args.backend, "workers": args.workers,
        "model": str(model), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "ray": ray.__version__,
        "median_wall_s": median,
        "ray_warm_over_local": round(median["ray_warm"] / median["local"], 3),
        "ray_cold_over_local": round(median["ray_cold"] / median["local"], 3),
        "same_csv": same, "runs": rows,
        **({"cells": n_cells,
            "cells_ray_warm_over_local": round(median["cells_ray_warm"] / median["cells_local"], 3),
            "same_cells_csv": same_cells} if cells is not None else {}),
        **({"scaling": scaling} if scaling is not None else {}),
    }, indent=2))


if __name__ == "__main__":
    main()
