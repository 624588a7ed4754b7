"""The convolutional autoencoder (pure ``nn.Module``; training lives in ``train.py``).

Encoder: per stage conv3x3 + ReLU + max-pool 2x2, then a 1x1 conv to a small
bottleneck map (``latent_channels`` x S/2**k x S/2**k). Decoder mirrors it with
nearest up-sampling + conv3x3 + ReLU, ending in a sigmoid so the reconstruction
lives in [0, 1] like the input. The bottleneck is kept spatial (not a dense
layer): fewer weights, faster on CPU, and it still forces the decoder to smooth
away small unusual details (stains, defects), which is what makes the error map
point at them.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (8, 16, 32), latent_channels: int = 4):
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one encoder stage")
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.latent_channels = latent_channels

        layers: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            layers += [nn.Conv2d(prev, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            prev = width
        layers.append(nn.Conv2d(prev, latent_channels, 1))
        self.encoder = nn.Sequential(*layers)

        layers = [nn.Conv2d(latent_channels, channels[-1], 3, padding=1), nn.ReLU(inplace=True)]
        prev = channels[-1]
        for width in reversed(channels[:-1]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, width, 3, padding=1), nn.ReLU(inplace=True)]
            prev = width
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, in_channels, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)

    @property
    def downsample(self) -> int:
        """Input size must be a multiple of this (each stage halves H and W)."""
        return 2 ** len(self.channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, bottleneck map) for a batch (N, C, H, W) in [0, 1]."""
        z = self.encoder(x)
        return self.decoder(z), z
