"""Lung-sound classifiers (pure nn.Modules): the seed's conv + CBAM + ViT hybrid, its ablations, a CNN baseline.

Variants (the seed's Table II ablation, plus a baseline):

* ``vit``            the transformer alone on the 3-channel feature image;
* ``conv_vit``       three parallel 3x3 conv branches (one per feature channel), then the transformer;
* ``conv_cbam_vit``  the seed's model: branches, then CBAM (channel then spatial attention), then the transformer;
* ``cnn``            a small 4-block CNN, for comparison;
* ``pooled``         the default: a linear (logistic-regression) head on time-pooled features - the mean and
                     standard deviation over time of each MFCC coefficient, optionally with the frozen
                     ImageNet-pretrained EfficientNet-Lite0 embedding of the whole feature image
                     (``pretrained_embedding``). Fitted by scikit-learn in seconds (``rarespot.sounds.train``);
* ``effnet``         the ImageNet-pretrained EfficientNet-Lite0 (``rarespot.pretrained``) as the spectrogram
                     encoder, up to ``effnet_stage``, then pooling and a linear head, fine-tuned by the usual loop
                     (``freeze_encoder`` keeps the ImageNet weights fixed);
* ``effnet_cbam_vit`` the seed's attention and transformer stages fed by EfficientNet-Lite0 feature maps
                     (stage ``effnet_stage``) instead of the raw feature image.

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
from pydantic import Field
from torch import nn

from rarespot.config import StrictModel
from rarespot.errors import InputError

VARIANTS = ("vit", "conv_vit", "conv_cbam_vit", "cnn", "pooled", "effnet", "effnet_cbam_vit")


class ModelConfig(StrictModel):
    variant: Literal["vit", "conv_vit", "conv_cbam_vit", "cnn", "pooled", "effnet", "effnet_cbam_vit"] = Field(
        "pooled", description="pooled = the best measured on unseen patients (docs/benchmarks/sounds.md)")
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
    pooled_channels: tuple[Literal["mfcc", "mel", "cqt"], ...] = Field(
        ("mfcc",), description="pooled: feature channels whose per-bin mean and std over time the head reads")
    pretrained_embedding: bool = Field(True, description="pooled: also the frozen ImageNet EfficientNet-Lite0 embedding (mean + max over "
                                       "time); needs the 'pretrained' extra and an image size that is a multiple of 32")
    effnet_stage: int = Field(6, ge=1, le=6, description="deepest EfficientNet-Lite0 stage used (6: 320 channels, stride 32)")
    freeze_encoder: bool = Field(False, description="effnet*: keep the ImageNet weights fixed (train only what follows)")
    tta_shifts: int = Field(1, ge=1, description="pooled: test-time augmentation, the class probabilities averaged over this many "
                            "circular time shifts of the image (evenly spaced; 1 = off). The MFCC statistics do not change "
                            "with a circular shift; only the EfficientNet-Lite0 embedding does")


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


# --------------------------------------------------------------------------- pretrained encoder models

_CHANNEL_INDEX = {"mfcc": 0, "mel": 1, "cqt": 2}


def _effnet_encoder(config: ModelConfig):
    """EfficientNet-Lite0 with its ImageNet weights (rarespot.pretrained), up to ``effnet_stage``.

    The input is the standardised 3-channel feature image (MFCC, Mel, CQT as "RGB"): after per-channel
    standardisation it has the zero mean and unit spread of an ImageNet-normalised photograph.
    """
    from rarespot.pretrained import STAGE_STRIDES, EfficientNetLite0Encoder

    stride, (h, w) = STAGE_STRIDES[config.effnet_stage], config.image_size
    if h % stride or w % stride:
        raise ValueError(f"EfficientNet-Lite0 up to stage {config.effnet_stage} needs an image size that is a multiple of "
                         f"{stride}; features.image_size is {h}x{w}")
    encoder = EfficientNetLite0Encoder(stages=(config.effnet_stage,))
    encoder.requires_grad_(not config.freeze_encoder)
    return encoder


def _time_pool(fmap: torch.Tensor) -> torch.Tensor:
    """(N, C, F, T) -> (N, 2C): mean over frequency, then mean and max over time."""
    seq = fmap.mean(dim=2)
    return torch.cat([seq.mean(dim=2), seq.amax(dim=2)], dim=1)


class PooledLinear(nn.Module):
    """Linear head on time-pooled features (the default model; fitted by scikit-learn, run by torch).

    embed(x): per-bin mean and std over time of the ``pooled_channels`` of the (standardised) feature image,
    plus, with ``pretrained_embedding``, the frozen EfficientNet-Lite0 embedding. forward(x): standardise the
    embedding with the training statistics (buffers), apply the linear head, add ``offset`` (a per-class
    log-odds shift, e.g. towards "normal"; chosen in training, stored with the weights).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.channels = [_CHANNEL_INDEX[c] for c in config.pooled_channels]
        if not self.channels:
            raise ValueError("pooled_channels needs at least one of mfcc, mel, cqt")
        self.encoder = _effnet_encoder(config.model_copy(update={"freeze_encoder": True})) if config.pretrained_embedding else None
        height = config.image_size[0]
        dim = 2 * height * len(self.channels)
        if self.encoder is not None:
            from rarespot.pretrained import STAGE_CHANNELS

            dim += 2 * STAGE_CHANNELS[config.effnet_stage]
        self.dim = dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(config.num_classes))
        self.head = nn.Linear(dim, config.num_classes)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        maps = x[:, self.channels]
        parts = [maps.mean(dim=3).flatten(1), maps.std(dim=3, unbiased=False).flatten(1)]
        if self.encoder is not None:
            self.encoder.eval()
            parts.append(_time_pool(self.encoder(x.contiguous())[-1]))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.config.tta_shifts
        if k <= 1:
            return self.head((self.embed(x) - self.mean) / self.scale) + self.offset
        # Test-time augmentation: mean probability over k circular time shifts, returned as log-probabilities.
        w = x.shape[-1]
        probs = torch.stack([torch.softmax(self.head((self.embed(torch.roll(x, shifts=s * w // k, dims=3)) - self.mean) / self.scale)
                                           + self.offset, dim=1) for s in range(k)]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


class _OnEffNetEncoder(nn.Module):
    """A model on the pretrained encoder (:func:`_effnet_encoder`, ``self.encoder``): a frozen
    encoder stays in eval mode (its batch-norm statistics fixed) while the rest trains."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = _effnet_encoder(config)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self


class EfficientNetClassifier(_OnEffNetEncoder):
    """ImageNet-pretrained EfficientNet-Lite0 (up to ``effnet_stage``) -> mean/max time pooling -> dropout -> linear."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        from rarespot.pretrained import STAGE_CHANNELS

        self.head = nn.Sequential(nn.Dropout(config.drop_rate), nn.Linear(2 * STAGE_CHANNELS[config.effnet_stage], config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(_time_pool(self.encoder(x.contiguous())[-1]))


class EfficientNetTransformer(_OnEffNetEncoder):
    """EfficientNet-Lite0 feature maps (stage ``effnet_stage``) -> CBAM -> the seed's ViT/DeiT on 1x1 patches."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)  # refuses an image size that is not a multiple of the stage's stride
        from rarespot.pretrained import STAGE_CHANNELS, STAGE_STRIDES

        channels, stride = STAGE_CHANNELS[config.effnet_stage], STAGE_STRIDES[config.effnet_stage]
        h, w = config.image_size
        self.attention = CBAM(channels, config.cbam_reduction)
        self.transformer = build_vit(config.model_copy(update={"image_size": (h // stride, w // stride), "patch_size": 1}), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.attention(self.encoder(x.contiguous())[-1]))


def build_model(config: ModelConfig) -> nn.Module:
    if config.variant == "cnn":
        return SmallCNN(config)
    if config.variant == "pooled":
        return PooledLinear(config)
    if config.variant == "effnet":
        return EfficientNetClassifier(config)
    if config.variant == "effnet_cbam_vit":
        return EfficientNetTransformer(config)
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
