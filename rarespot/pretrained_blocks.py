"""The torch building block of :mod:`rarespot.pretrained`, at module level so models that hold it
(the detector's pretrained backbone) pickle and unpickle by name. Imports torch; the
``pretrained`` module itself does not, until an encoder is built."""

from __future__ import annotations

import torch
from torch import nn

from rarespot.pretrained import _fold_bn


class MBConv(nn.Module):
    """One MBConv block of EfficientNet-Lite (no squeeze-excitation, ReLU6), BatchNorms folded."""

    def __init__(self, block):
        super().__init__()
        args = block._block_args
        self.expand = _fold_bn(block._expand_conv, block._bn0) if args.expand_ratio != 1 else None
        self.depthwise = _fold_bn(block._depthwise_conv, block._bn1)
        self.project = _fold_bn(block._project_conv, block._bn2)
        self.skip = bool(args.id_skip and args.stride == 1 and args.input_filters == args.output_filters)

    def forward(self, x):
        y = x
        if self.expand is not None:
            y = torch.clamp(self.expand(y), 0.0, 6.0)  # ReLU6
        y = torch.clamp(self.depthwise(y), 0.0, 6.0)
        y = self.project(y)
        return y + x if self.skip else y
