"""Load test of the review server on loopback: N parallel uploads of a 1500x1216 16-bit scan.

Measures, in one run:
- peer: the same TiledPredictor called directly in-process, one scan after another
  (what the server cannot beat: it adds decode, HTTP and queueing on top);
- the server (uvicorn on 127.0.0.1, a free port): ``--clients`` parallel clients,
  ``--requests`` uploads in all, stopping by itself at ``--time-limit``;
  failed requests, p50/p95 latency, throughput, and throughput as a ratio of the peer's.

    python bench/bench_serve_load.py --clients 8 --requests 40 --json bench/serve_load.json

Without ``--model`` it builds an untrained yolo11n from Ultralytics' yaml (nothing
downloaded): the speed of a network does not depend on its weights. The scan is
synthetic (a 16-bit body-like image), so the benchmark runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np


def synthetic_scan(h: int = 1500, w: int = 1216, seed: int = 0) -> np.ndarray:
    """A 16-bit body-like scan: soft-tissue ellipse, spine, noise, two dense objects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((xx - w / 2) / (0.42 * w)) ** 2 + ((yy - h / 2) / (0.5 * h)) ** 2
    img = 9000 + 14000 * np.clip(1.0 - body, 0, 1) ** 0.5 + 9000 * np.exp(-(((xx - w / 2) / (0.03 * w)) ** 2))
    img[int(0.3 * h) : int(0.36 * h), int(0.3 * w) : int(0.34 * w)] += 20000
    img[int(0.6 * h) : int(0.62 * h), int(0.55 * w) : int(0.65 * w)] += 20000
    img += rng.normal(0, 400, size=(h, w))
    return np.clip(img, 0, 65535).astype(np.uint16)


def untrained_yolo(path: Path) -> Path:
    import torch
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.names = {0: "knife", 1: "gun"}
    model.args = vars(get_cfg())
    model.task = "detect"
    torch.save({"model": model.half(), "train_args": {"task": "detect"}, "date": None, "version": __version__}, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model .pt (default: an untrained yolo11n)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=900.0, help="no upload starts after this many seconds")
    parser.add_argument("--peer-runs", type=int, default=3, help="direct in-process predictions for the peer")
    parser.add_argument("--single", type=int, default=5, help="sequential uploads from one client (overhead)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from rarespot.detect.predict import TiledPredictor
    from rarespot.serve.app import create_app, serve_in_background
    from rarespot.serve.loadtest import run_load
    from rarespot.serve.settings import ServeSettings

    workdir = Path(tempfile.mkdtemp(prefix="rarespot-bench-serve-"))
    model = args.model or untrained_yolo(workdir / "yolo11n_untrained.pt")
    scan = synthetic_scan()
    ok, buf = cv2.imencode(".png", scan)
    data = buf.tobytes()
    print(f"scan 1216x1500 uint16 PNG, {len(data) / 2**20:.2f} MB; model {model}", flush=True)

    # Peer: the predictor itself, in-process, one scan after another, called from a worker
    # thread as the server calls it (on this shared 2-core machine the first timed calls
    # from the main thread ran 5x slower than from a worker: OpenMP under oversubscription).
    # Two warm-up calls; measured before and after the load run, as timings drift with the
    # machine's other jobs.
    predictor = TiledPredictor(model, tile=args.tile, overlap=0.2, conf=0.05, device="cpu")
    worker = ThreadPoolExecutor(max_workers=1)
    for _ in range(2):
        worker.submit(predictor.predict, scan).result()

    def direct_runs() -> list[float]:
        times = []
        for _ in range(args.peer_runs):
            t0 = time.perf_counter()
            worker.submit(predictor.predict, scan).result()
            times.append(time.perf_counter() - t0)
        return times

    direct_before = direct_runs()
    print(f"peer before (direct TiledPredictor.predict): median {statistics.median(direct_before):.2f} s/scan",
          flush=True)

    # Every simulated client comes from 127.0.0.1: lift the per-client queue limit to the number of clients.
    settings = ServeSettings(tile=args.tile, floor_conf=0.05, detect_timeout_s=args.time_limit, max_pending=64,
                             max_pending_per_client=max(4, args.clients))
    app = create_app(model, settings)
    with serve_in_background(app) as url:
        warm = run_load(url, data, "scan16.png", clients=1, requests=1, time_limit_s=300)
        assert not warm.failures, warm.failures
        # One client, one upload at a time: what the server adds to each scan (read, decode,
        # HTTP, JSON) = client latency - the server's own predict time, measured on the same request.
        single = run_load(url, data, "scan16.png", clients=1, requests=args.single, time_limit_s=args.time_limit)
        overheads = [lat - m for lat, m in zip(single.latencies_s, single.model_s)]
        print(f"single client: {single.summary()}; overhead per scan median {statistics.median(overheads):.3f} s",
              flush=True)
        result = run_load(url, data, "scan16.png", clients=args.clients, requests=args.requests,
                          time_limit_s=args.time_limit)
    print(result.summary(), flush=True)
    for failure in result.failures[:5]:
        print("FAILED:", failure)
    direct_after = direct_runs()
    print(f"peer after: median {statistics.median(direct_after):.2f} s/scan", flush=True)
    direct_s = statistics.median(direct_before + direct_after)

    server_tput = result.throughput_per_s
    out = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, torch threads {args.threads}, CPU only",
        "scan": "1216x1500 uint16 PNG (synthetic)",
        "tile": args.tile,
        "clients": args.clients,
        "requests": args.requests,
        "ok": result.ok,
        "failed": len(result.failures),
        "not_started": result.not_started,
        "p50_s": round(result.percentile_s(50), 3),
        "p95_s": round(result.percentile_s(95), 3),
        "max_s": round(max(result.latencies_s, default=float("nan")), 3),
        "wall_s": round(result.wall_s, 1),
        "throughput_scans_per_s": round(server_tput, 3),
        "single_client_p50_s": round(single.percentile_s(50), 3),
        "single_client_overhead_s_median": round(statistics.median(overheads), 3),
        "single_client_overhead_s_max": round(max(overheads), 3),
        "server_model_s_per_scan_median": round(statistics.median(result.model_s), 3) if result.model_s else None,
        "model_busy_fraction": round(result.model_busy_fraction, 3),
        "peer_direct_s_per_scan_before": [round(t, 2) for t in direct_before],
        "peer_direct_s_per_scan_after": [round(t, 2) for t in direct_after],
        "peer_direct_s_per_scan": round(direct_s, 3),
        "peer_throughput_scans_per_s": round(1 / direct_s, 3),
        "throughput_ratio_server_over_direct": round(server_tput * direct_s, 3),
        "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
