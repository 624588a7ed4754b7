"""Lung-sound classifiers (pure nn.Modules): the seed's conv + CBAM + ViT hybrid, its ablations, a CNN baseline.

Variants (the seed's Table II ablation, plus a baseline):

* ``vit``            the transformer alone on the 3-channel feature image;
* ``conv_vit``       three parallel 3x3 conv branches (one per feature channel), then the transformer;
* ``conv_cbam_vit``  the seed's model: branches, then CBAM (channel then spatial attention), then the transformer;
* ``cnn``            a small 4-block CNN, for comparison.

The transformer is a timm ViT/DeiT built with ``pretrained=False`` (nothing is
downloaded); its size comes from the timm name (``deit_tiny_patch16_224``,
``deit_small_patch16_224``, ``deit_base_patch16_224``, ``vit_*``) with
``img_size``, ``patch_size``, ``in_chans`` and optionally ``depth`` overridden to
fit small spectrogram images. Weights the user has locally (e.g. ImageNet DeiT)
are loaded with ``load_encoder_weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from rarespot.errors import InputError

VARIANTS = ("vit", "conv_vit", "conv_cbam_vit", "cnn")


class ModelConfig(BaseModel):
    variant: Literal["vit", "conv_vit", "conv_cbam_vit", "cnn"] = "conv_cbam_vit"
    encoder: str = Field("deit_tiny_patch16_224", description="timm ViT/DeiT name (built with pretrained=False)")
    patch_size: int = 16
    depth: int | None = Field(None, description="transformer blocks; None keeps the timm config's depth")
    embed_dim: int | None = Field(None, description="token width; None keeps the timm config's (tiny 192, small 384, base 768)")
    num_heads: int | None = Field(None, description="attention heads; None keeps the timm config's")
    image_size: tuple[int, int] = (96, 128)
    in_chans: int = 3
    num_classes: int = 4
    branch_channels: int = Field(1, ge=1, description="output channels per conv branch (1 keeps 3 channels, so ImageNet ViT weights fit)")
    cbam_reduction: int = 16
    drop_rate: float = 0.1
    drop_path_rate: float = 0.1
    cnn_width: int = 32


# --------------------------------------------------------------------------- building blocks


class ChannelAttention(nn.Module):
    """CAM(x) = sigmoid(MLP(GAP(x)) + MLP(GMP(x)))  (seed eq. 11); one shared MLP, one hidden layer."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """SAM(x) = sigmoid(conv7x7([AVG_c(x); MAX_c(x)]))  (seed eq. 12)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled.contiguous(memory_format=torch.channels_last)))


class CBAM(nn.Module):
    """Woo et al. 2018: x' = CAM(x) * x, then x'' = SAM(x') * x'."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


class BranchConv(nn.Module):
    """One 3x3 conv + BN + ReLU per input channel (MFCC, Mel, CQT kept apart), same spatial size.

    The branches are one grouped convolution (groups = input channels): the same
    maths as separate per-channel convs, but one kernel call, about 5x faster on a CPU.
    """

    def __init__(self, in_chans: int = 3, out_per_branch: int = 1):
        super().__init__()
        out = in_chans * out_per_branch
        self.conv = nn.Conv2d(in_chans, out, 3, padding=1, groups=in_chans, bias=False)
        self.bn = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


# --------------------------------------------------------------------------- models


def build_vit(config: ModelConfig, in_chans: int) -> nn.Module:
    """A timm ViT/DeiT sized for the feature image, randomly initialised (pretrained=False)."""
    import timm

    kwargs = dict(
        pretrained=False,
        num_classes=config.num_classes,
        img_size=tuple(config.image_size),
        patch_size=config.patch_size,
        in_chans=in_chans,
        drop_rate=config.drop_rate,
        drop_path_rate=config.drop_path_rate,
    )
    for key in ("depth", "embed_dim", "num_heads"):
        if getattr(config, key) is not None:
            kwargs[key] = getattr(config, key)
    try:
        return timm.create_model(config.encoder, **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot build transformer {config.encoder!r} with {kwargs}: {exc}") from None


class LungSoundTransformer(nn.Module):
    """[BranchConv] -> [CBAM] -> ViT/DeiT -> class logits; the variant picks which parts are on."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        use_conv = config.variant in ("conv_vit", "conv_cbam_vit")
        channels = config.in_chans * config.branch_channels if use_conv else config.in_chans
        self.conv = BranchConv(config.in_chans, config.branch_channels) if use_conv else nn.Identity()
        self.attention = CBAM(channels, config.cbam_reduction) if config.variant == "conv_cbam_vit" else nn.Identity()
        self.encoder = build_vit(config, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last makes PyTorch's CPU kernels for these few-channel convs 2-4x faster.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(self.attention(self.conv(x)))


class SmallCNN(nn.Module):
    """Baseline: 4 x (conv3x3-BN-ReLU-maxpool), widths w, 2w, 4w, 8w, global average pool, linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w = config.cnn_width
        layers, c_in = [], config.in_chans
        for c_out in (w, 2 * w, 4 * w, 8 * w):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(config.drop_rate), nn.Linear(c_in, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


def build_model(config: ModelConfig) -> nn.Module:
    if config.variant == "cnn":
        return SmallCNN(config)
    return LungSoundTransformer(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- local weights


def load_encoder_weights(model: nn.Module, path: str | Path) -> dict:
    """Load a local ViT/DeiT state dict (e.g. ImageNet DeiT) into the model's transformer.

    Accepts a plain state dict or a checkpoint holding one under "model" / "state_dict".
    Position embeddings and patch-embedding kernels are resampled to this model's
    size by timm; the classification head is skipped when its size differs.
    Raises InputError naming the file when the weights do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weights file not found")
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise InputError(path, "encoder weights apply to the transformer variants, not the CNN baseline")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a PyTorch weights file ({str(exc).splitlines()[0][:160]})") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise InputError(path, "expected a state dict (parameter name -> tensor)")
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in blob.items()}
    try:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, encoder)
    except Exception as exc:  # timm cannot resample what does not match at all
        raise InputError(path, f"weights do not fit {model.config.encoder}: {str(exc).splitlines()[0][:200]}") from None
    own = encoder.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} in file vs {tuple(own[k].shape)} in model" for k, v in state.items() if k in own and v.shape != own[k].shape]
    head_only = all(k.startswith("head.") for k in (m.split()[0] for m in mismatched))
    if mismatched and not head_only:
        raise InputError(path, f"weights do not fit {model.config.encoder}: " + "; ".join(mismatched[:3]))
    state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    matched = len(state)
    if matched == 0:
        raise InputError(path, f"no parameter of {model.config.encoder} found in this file (is it a ViT/DeiT state dict?)")
    result = encoder.load_state_dict(state, strict=False)
    return {"loaded": matched, "missing": list(result.missing_keys), "skipped_head": bool(mismatched)}
