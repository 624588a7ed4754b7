"""CPU facts the torch code paths share (no imports back up into the pipelines)."""

from __future__ import annotations

import platform


def channels_last_helps() -> bool:
    """Whether torch runs convolutions through oneDNN on an x86 CPU, where NHWC
    (channels_last) tensors are about 1.3-2x faster than the default layout
    (measured: docs/benchmarks/detect_inference.md, docs/benchmarks/screen.md)."""
    import torch

    return platform.machine() in {"x86_64", "AMD64"} and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
