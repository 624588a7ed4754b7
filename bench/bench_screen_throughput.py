"""Scoring throughput of saved screen models on the malaria test split (best of 3, 1 and 2 torch threads).

Times the full path of ``CAEDetector.analyze`` (uint8 cells -> resize -> CAE -> error + latent KDE) on the
4,410 test cells of bench_screen.py, in wall time and process CPU time, and prints the load average.

    nice -n 10 python bench/bench_screen_throughput.py /tmp/rarespot_screen_bench/<tag>/model.pt [more.pt ...]
"""
import os, sys, time, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_screen import split, DEFAULT_NPZ
from rarespot.screen.detectors import CAEDetector
with np.load(DEFAULT_NPZ) as npz: images, labels = npz["images"], npz["labels"].astype(int)
test = split(labels, 0.2, 0)
for model in sys.argv[1:]:
    det = CAEDetector.load(model)
    print(model, det.config_.score.error_pooling, det.config_.score.error_sign)
    for th in (1, 2):
        det.config_.train.threads = th
        det.analyze(images[test][:256])
        runs = []
        for _ in range(3):
            w, c = time.perf_counter(), time.process_time(); det.analyze(images[test]); runs.append((time.perf_counter() - w, time.process_time() - c))
        w, c = min(runs)
        print(f"threads {th}: {test.sum() / w:.0f} img/s wall, {test.sum() / c:.0f} img/CPU-s, loadavg {os.getloadavg()[0]:.2f}")
