"""Torch threads for CPU training: one vs every core, on an idle machine and beside another job.

What the choice in ``rarespot.cpu.ThreadTuner`` rests on. Times forward + backward of yolo11n
(random init, batch 8, random input) at each thread count, and repeats the measurement while
``--busy N`` other processes spin on the CPU (a stand-in for a second training job or any
other load on a shared machine). OMP_WAIT_POLICY is read by the OpenMP runtime at start-up,
so ``--wait-policy`` runs each measurement in a fresh interpreter.

    python bench/bench_train_threads.py --sizes 256,416 --busy 0,1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time


def spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def measure(size: int, threads: int, steps: int) -> float:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=5, verbose=False)
    model.train()
    x = torch.rand(8, 3, size, size)

    def step():
        out = model(x)
        flat = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
        sum(t.float().sum() for t in flat if torch.is_tensor(t)).backward()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 8 * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,416")
    parser.add_argument("--threads", default=None, help="counts to try (default: 1 and every core)")
    parser.add_argument("--busy", default="0,1", help="numbers of spinning background processes")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--wait-policy", default="", help="e.g. PASSIVE: OMP_WAIT_POLICY for the measuring process")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: size,threads
    args = parser.parse_args()
    if args.one:
        size, threads = (int(v) for v in args.one.split(","))
        print(json.dumps({"img_per_s": measure(size, threads, args.steps)}))
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")
    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, os.cpu_count() or 1})
    env = dict(os.environ)
    if args.wait_policy:
        env["OMP_WAIT_POLICY"] = args.wait_policy
    print(f"{os.cpu_count()} cores, load before {os.getloadavg()[0]:.2f}, OMP_WAIT_POLICY={args.wait_policy or 'default'}")
    print("| input | background jobs | " + " | ".join(f"{t} thread{'s' if t > 1 else ''} img/s" for t in counts) + " |")
    print("|---|---|" + "---|" * len(counts))
    for busy in [int(b) for b in args.busy.split(",")]:
        for size in [int(s) for s in args.sizes.split(",")]:
            rates = []
            for threads in counts:
                procs = [mp.Process(target=spin, args=(time.time() + 600,)) for _ in range(busy)]
                for p in procs:
                    p.start()
                try:
                    out = subprocess.run([sys.executable, __file__, "--one", f"{size},{threads}", "--steps", str(args.steps)],
                                         capture_output=True, text=True, env=env, check=True).stdout
                finally:
                    for p in procs:
                        p.terminate()
                        p.join()
                rates.append(json.loads(out.strip().splitlines()[-1])["img_per_s"])
            print(f"| {size} | {busy} | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
