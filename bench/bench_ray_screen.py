"""What `--ray` costs on one machine: `rarespot detect screen` of N synthetic scans, locally and on a
local Ray with 2 workers (issue 18).

    python bench/bench_ray_screen.py --scans 40

Three timings of the same screening (N synthetic 1500x1216 16-bit scans, yolo11n at 512-px tiles,
background tiles skipped, as `rarespot detect screen` runs by default):

* ``local``: the local path (one process; the next scans are read in a background thread; the
  back-end uses every core);
* ``ray_warm``: ``--ray`` with 2 workers (one CPU and one model replica each) on a local Ray that was
  started before the clock (what a standing cluster costs per run);
* ``ray_cold``: ``--ray`` with nothing running: the wall time includes starting the local Ray and
  stopping it (what `rarespot detect screen SOURCE --ray` costs on a laptop).

local and ray_warm alternate, --repeats times each; the median is reported with the load average
of the machine at each run (a shared machine inflates every time). Every run writes a fresh output
folder, and the CSVs of the two paths are compared.

The model is an untrained yolo11n (built from Ultralytics' yaml, nothing downloaded) unless --model
is given; its ONNX export is made once, before the clock. The speed does not depend on the weights,
except through how many boxes reach NMS.

With --cells-model (a fitted `rarespot screen fit` model), `rarespot screen score` of the malaria test
cells (the seeded 20% test split of bench_screen.py) is timed the same way, locally and on the warm Ray:

    python bench/bench_ray_screen.py --scans 40 --cells-model runs/screen/model.pt
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

    def run(name: str, ray_settings=None):
        out = work / "out" / name
        shutil.rmtree(out, ignore_errors=True)
        return screen_folder(src, model, out, ray=ray_settings, **options)

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
    }, indent=2))


if __name__ == "__main__":
    main()
