"""A bounded load test of a running review server: N clients upload the same scan in parallel.

Bounded in count and in time, so it always stops by itself: at most
``requests`` uploads, none started after ``time_limit_s``. Used by
``bench/bench_serve_load.py`` and ``tests/test_serve_load.py``; point it at
your own deployment to see its latency on your hardware::

    from rarespot.serve.loadtest import run_load
    result = run_load("http://127.0.0.1:8000", scan_bytes, "scan.png", clients=8, requests=40)
    print(result.summary())
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    clients: int
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)  # successful requests only
    model_s: list[float] = field(default_factory=list)  # the server's own predict time of each (elapsed_ms)
    failures: list[str] = field(default_factory=list)  # "status: detail" or the exception, one per failed request
    not_started: int = 0  # requests skipped because the time limit passed

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def percentile_s(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    @property
    def throughput_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def model_busy_fraction(self) -> float:
        """Time the model spent predicting over the wall time: near 1 (one model) means the
        server keeps it busy and adds no throughput cost of its own; the rest is decode, HTTP, idle."""
        return sum(self.model_s) / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.ok} ok, {len(self.failures)} failed, {self.not_started} not started (time limit) | "
            f"{self.clients} clients | p50 {self.percentile_s(50):.2f} s, p95 {self.percentile_s(95):.2f} s, "
            f"max {max(self.latencies_s, default=float('nan')):.2f} s | "
            f"{self.throughput_per_s:.2f} scans/s over {self.wall_s:.1f} s | model busy {self.model_busy_fraction:.0%}"
        )


def run_load(
    base_url: str,
    data: bytes,
    filename: str,
    clients: int = 8,
    requests: int = 40,
    time_limit_s: float = 300.0,
    model: str | None = None,
) -> LoadResult:
    """``requests`` POSTs of ``data`` to ``/api/detect`` from ``clients`` threads; each checks a 200 with JSON."""
    import httpx

    lock = threading.Lock()
    issued = {"n": 0}
    start = time.perf_counter()
    deadline = start + time_limit_s
    result = LoadResult(clients=clients, wall_s=0.0)
    form = {"model": model} if model else {}

    def worker() -> None:
        with httpx.Client(base_url=base_url) as client:
            while True:
                with lock:
                    if issued["n"] >= requests:
                        return
                    if time.perf_counter() >= deadline:
                        result.not_started += 1
                        issued["n"] += 1
                        continue
                    issued["n"] += 1
                t0 = time.perf_counter()
                try:
                    # Per-request timeout: what is left of the run, so the test ends on time.
                    response = client.post(
                        "/api/detect", files={"file": (filename, data)}, data=form,
                        timeout=max(1.0, deadline - t0),
                    )
                    body = response.json() if response.status_code == 200 else {}
                    failure = None if "detections" in body else f"{response.status_code}: {response.text[:200]}"
                except Exception as exc:  # a failed request is a result of the test, not a crash of it
                    failure = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    if failure is None:
                        result.latencies_s.append(elapsed)
                        result.model_s.append(body["elapsed_ms"] / 1000)
                    else:
                        result.failures.append(failure)

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()) + 60)
    result.wall_s = time.perf_counter() - start
    return result
