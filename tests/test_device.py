"""One device rule: Ultralytics' spelling for detection, a torch.device for lung sounds."""

from __future__ import annotations

import pytest
import torch

from rarespot import device as device_module
from rarespot.device import default_device, torch_device


@pytest.mark.parametrize("gpu", [True, False])
def test_not_given_means_the_first_gpu_if_there_is_one(gpu, monkeypatch):
    monkeypatch.setattr(device_module, "gpu_available", lambda: gpu)
    # What detect/train.py's default_device and sounds/train.py's pick_device gave.
    assert default_device(None) == ("0" if gpu else "cpu")
    assert torch_device("auto") == torch.device("cuda" if gpu else "cpu")


def test_given_devices_are_used_as_given(monkeypatch):
    monkeypatch.setattr(device_module, "gpu_available", lambda: True)
    assert default_device("cpu") == "cpu" and default_device("cuda:1") == "cuda:1" and default_device("auto") == "auto"
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("cuda:1") == torch.device("cuda", 1)
