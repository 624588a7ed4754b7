"""Torch threads for CPU training: one vs every core, on an idle machine and beside another job.

What the choice in ``rarespot.cpu.ThreadTuner`` rests on. Times forward + backward of yolo11n
(random init, batch 8, random input) at each thread count, and repeats the measurement while
``--busy N`` other processes spin on the CPU (a stand-in for a second training job or any
other load on a shared machine). OMP_WAIT_POLICY is read by the OpenMP runtime at start-up,
so ``--wait-policy`` runs each measurement in a fresh interpreter.

    python bench/bench_train_threads.py --sizes 256,416 --busy 0,1

``--backbone efficientnet-lite0 --freeze 0,1`` times the recipe's network instead, with its first N
layers given no gradient (``freeze`` in the detection config), one row per count:

    python bench/bench_train_threads.py --sizes 192 --threads 2 --busy 0 --backbone efficientnet-lite0 \
        --channels-last --freeze 0,1 --steps 12
"""

from __future__ import annotations

import argparse
import itertools
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


def measure(size: int, threads: int, steps: int, backbone: str = "yolo", freeze: int = 0,
            channels_last: bool = False, compile_model: bool = False) -> float:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=5, verbose=False)
    if backbone == "efficientnet-lite0":
        from rarespot.detect.backbone import attach_efficientnet_lite0

        model = attach_efficientnet_lite0(model)
    # as Ultralytics' trainer applies freeze=N: parameters of layers 0..N-1 get no gradient
    for name, param in model.named_parameters():
        if any(name.startswith(f"model.{i}.") for i in range(freeze)):
            param.requires_grad_(False)
    model.train()
    x = torch.rand(8, 3, size, size)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if compile_model:  # as Ultralytics' trainer with compile=True: inductor, default mode; its first steps compile
        model = torch.compile(model)

    def step():
        out = model(x)
        flat = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
        sum(t.float().sum() for t in flat if torch.is_tensor(t)).backward()

    compile_start = time.perf_counter()
    for _ in range(2):
        step()
    if compile_model:
        print(f"warm-up with compilation: {time.perf_counter() - compile_start:.0f} s", file=sys.stderr)
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
    parser.add_argument("--backbone", choices=["yolo", "efficientnet-lite0"], default="yolo")
    parser.add_argument("--freeze", default="0", help="layers given no gradient, one row per count (e.g. 0,1)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and input, as training uses where it helps")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (inductor), as training's compile=True")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: size,threads[,freeze]
    args = parser.parse_args()
    if args.one:
        size, threads, *freeze = (int(v) for v in args.one.split(","))
        print(json.dumps({"img_per_s": measure(size, threads, args.steps, args.backbone, freeze[0] if freeze else 0,
                                                args.channels_last, args.compile)}))
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")
    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, os.cpu_count() or 1})
    env = dict(os.environ)
    if args.wait_policy:
        env["OMP_WAIT_POLICY"] = args.wait_policy
    print(f"{os.cpu_count()} cores, load before {os.getloadavg()[0]:.2f}, OMP_WAIT_POLICY={args.wait_policy or 'default'}, "
          f"backbone {args.backbone}{', channels-last' if args.channels_last else ''}{', compiled' if args.compile else ''}")
    print("| input | frozen layers | background jobs | "
          + " | ".join(f"{t} thread{'s' if t > 1 else ''} img/s" for t in counts) + " |")
    print("|---|---|---|" + "---|" * len(counts))
    extra = (["--backbone", args.backbone] + (["--channels-last"] if args.channels_last else [])
             + (["--compile"] if args.compile else []))
    for busy, size, freeze in itertools.product([int(b) for b in args.busy.split(",")],
                                                [int(s) for s in args.sizes.split(",")],
                                                [int(f) for f in args.freeze.split(",")]):
        rates = []
        for threads in counts:
            procs = [mp.Process(target=spin, args=(time.time() + 600,)) for _ in range(busy)]
            for p in procs:
                p.start()
            try:
                out = subprocess.run([sys.executable, __file__, "--one", f"{size},{threads},{freeze}", "--steps",
                                      str(args.steps), *extra], capture_output=True, text=True, env=env, check=True).stdout
            finally:
                for p in procs:
                    p.terminate()
                    p.join()
            rates.append(json.loads(out.strip().splitlines()[-1])["img_per_s"])
        print(f"| {size} | {freeze} | {busy} | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
