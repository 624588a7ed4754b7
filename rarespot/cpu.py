"""CPU facts the torch code paths share (no imports back up into the pipelines)."""

from __future__ import annotations

import platform


def channels_last_helps() -> bool:
    """Whether torch runs convolutions through oneDNN on an x86 CPU, where NHWC
    (channels_last) tensors are about 1.3-2x faster than the default layout
    (measured: docs/benchmarks/detect_inference.md, docs/benchmarks/screen.md)."""
    import torch

    return platform.machine() in {"x86_64", "AMD64"} and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def cpu_model() -> tuple[str, str]:
    """(model name, instruction-set flags) of this machine's CPU, as far as the OS tells."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        info = ""
    name = flags = ""
    for line in info.splitlines():
        field, _, value = line.partition(":")
        field = field.strip().lower()
        if not name and field in ("model name", "cpu model", "hardware"):
            name = value.strip()
        elif not flags and field in ("flags", "features"):
            flags = " ".join(sorted(value.split()))
        if name and flags:
            break
    return name or platform.processor() or platform.machine() or "unknown CPU", flags


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ThreadTuner:
    """Choose torch's CPU thread count from measured step times, afresh every epoch.

    Neither fixed choice is right: on an idle 2-core machine two threads train 1.3-1.7x
    faster than one, but when another job holds a core, OpenMP's busy-waiting threads make
    two threads up to 3x slower than one (docs/benchmarks/detect_training.md). Ultralytics
    fixes cores - 1. So at the start of each epoch a few steps run with every core and a few
    with one fewer, and the faster count is kept for the rest of the epoch.

    A step is the interval between two batch ends, so it includes loading the next batch.
    Results of a run depend slightly on the thread count (float sums in another order);
    pin ``threads`` for bit-identical reruns.
    """

    def __init__(self, max_threads: int, probe_steps: int = 3):
        self.candidates = sorted({max(1, max_threads), max(1, max_threads - 1)}, reverse=True)
        self.probe_steps = probe_steps
        self.chosen = self.candidates[0]
        self.current = self.chosen
        self.history: list[dict[int, float]] = []  # median step seconds per count, one dict per probe
        self._plan: list[int] = []
        self._samples: dict[int, list[float]] = {}
        self._previous: float | None = None
        self._warm = False

    def _use(self, threads: int) -> None:
        import torch

        self._warm = threads != self.current
        self.current = threads
        torch.set_num_threads(threads)

    def epoch_started(self, now: float) -> None:
        self._plan = [c for c in self.candidates for _ in range(self.probe_steps + 1)] if len(self.candidates) > 1 else []
        self._samples = {c: [] for c in self.candidates}
        self._previous = now
        self._use(self._plan.pop(0) if self._plan else self.chosen)
        self._warm = True  # the first step of an epoch also pays for the loader's start

    def step_done(self, now: float) -> None:
        if self._previous is None:
            self._previous = now
            return
        elapsed, self._previous = now - self._previous, now
        if not self._samples:
            return
        if not self._warm:
            self._samples[self.current].append(elapsed)
        if self._plan:
            self._use(self._plan.pop(0))
            return
        import numpy as np

        medians = {c: float(np.median(v)) for c, v in self._samples.items() if v}
        if len(medians) == len(self.candidates):
            self.chosen = min(medians, key=medians.get)
            self.history.append(medians)
        self._samples = {}
        self._use(self.chosen)
