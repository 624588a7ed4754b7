"""Which device a model runs on: one rule for every pipeline.

Not given (or ``"auto"`` for a torch device): the first GPU when torch sees one,
else the CPU; anything else is used as given. The answer comes in the two
spellings rarespot needs, since the libraries name the first GPU differently:
:func:`default_device` gives Ultralytics' string (``"0"`` or ``"cpu"``; detection),
:func:`torch_device` a ``torch.device`` (``cuda`` or ``cpu``; lung sounds).
"""

from __future__ import annotations


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_device(device: str | None = None) -> str:
    """``device`` as given, else the first GPU (``"0"``, Ultralytics' name for it) if there is one, else ``"cpu"``."""
    if device is not None:
        return device
    return "0" if gpu_available() else "cpu"


def torch_device(name: str | None = "auto"):
    """``torch.device(name)``; ``"auto"`` (or None): ``cuda`` if there is a GPU, else ``cpu``."""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if gpu_available() else "cpu")
    return torch.device(name)
