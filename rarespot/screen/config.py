"""Settings for anomaly screening, as pydantic models loadable from YAML.

One ``ScreenConfig`` says how images are prepared, how the autoencoder is built
and trained, how an image's score is computed and at which false-alarm rate the
thresholds are set. It is stored inside every saved model, so scoring always
prepares images exactly as training did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from rarespot.config import StrictModel, load_config_file


class DataConfig(StrictModel):
    size: int = Field(48, ge=8, description="images are resized to size x size; a multiple of 2**len(channels)")
    color: Literal["gray", "rgb"] = "gray"


class AutoencoderConfig(StrictModel):
    # 16/32/64 beat 8/16/32 and 32/64/128 on the malaria validation split (docs/benchmarks/screen.md).
    channels: tuple[int, ...] = Field((16, 32, 64), description="conv widths of the encoder stages (each halves H, W)")
    latent_channels: int = Field(4, ge=1, description="channels of the bottleneck map; latent dim = this * (size / 2**stages)**2")


class ScreenTrainConfig(StrictModel):
    # The malaria CAE's validation MSE still fell at epoch 40 (about 6 s an epoch for 8,000 48x48 cells on 2 cores).
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    patience: int = Field(5, ge=1, description="stop after this many epochs without a better validation loss")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="normal images held out for early stopping and threshold calibration")
    max_train_images: int | None = Field(None, ge=1, description="subsample the normal training set (speed)")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    seed: int = 0


class ScoreConfig(StrictModel):
    """How the per-pixel error map becomes one number per image, and the latent density."""

    # Defaults chosen on the malaria validation split (held-out Uninfected + non-test Parasitized cells;
    # never the test split): bench/bench_screen_select.py, docs/benchmarks/screen.md. Dark stains are the
    # anomaly there; for bright anomalies use error_sign "brighter" (or "both").
    error_sign: Literal["both", "darker", "brighter"] = Field(
        "darker", description="which pixel errors count: |x - recon|, only pixels darker than the reconstruction, or brighter"
    )
    error_smooth_sigma: float | None = Field(
        1.0, gt=0, description="Gaussian sigma (pixels at model size) applied to the signed error before the sign rule; None = per-pixel errors"
    )
    # Default chosen on a validation split of the malaria benchmark (never its test split;
    # docs/benchmarks/screen.md): the mean squared error of the worst 5% of object pixels beat the
    # plain mean (a stain covers a few percent of a cell; the mean drowns it) and the smoothed max.
    error_pooling: Literal["top_fraction", "mean_squared", "smoothed_max"] = Field(
        "top_fraction",
        description="mean squared error of the top_fraction worst (foreground) pixels; over all of them, as the seed; or max of the Gaussian-smoothed error map",
    )
    top_fraction: float = Field(0.05, gt=0, le=1, description="share of foreground pixels pooled by top_fraction")
    smooth_sigma: float = Field(1.5, gt=0, description="Gaussian sigma (pixels at model size) for smoothed_max")
    foreground_threshold: float | None = Field(
        0.08, description="ignore pixels darker than this (in [0, 1]) in the input, eroded by erode_px: background and object edges; None = use all pixels"
    )
    erode_px: int = Field(2, ge=0, description="erosion of the foreground mask, in pixels at model size (autoencoders blur object edges)")
    density_pca: int | None = Field(16, ge=1, description="PCA (whitened) of the latent before the KDE; None = raw latent")
    bandwidth: float | Literal["scott", "silverman", "cv"] = "scott"
    kde_max_points: int | None = Field(
        1024, ge=16, description="fast path: above this many training latents, the KDE is fitted on k-means centres weighted by cluster size"
    )
    # "error": on the malaria validation split the latent density (AUROC ~0.7) only dilutes the error.
    combine: Literal["error", "density", "combined"] = Field(
        "error", description="which score the detector thresholds: reconstruction error, -log density, or their combination"
    )


class PatchConfig(StrictModel):
    """The pretrained-feature detector (``detector: patch``; rarespot.screen.patch)."""

    method: Literal["patchcore", "padim", "gaussian"] = Field(
        "gaussian", description="nearest neighbour in a coreset memory bank, a Gaussian per patch position, or one Gaussian for all positions"
    )
    size: int = Field(96, ge=16, description="images are resized to size x size for the pretrained network; a multiple of the deepest stride")
    stages: tuple[int, ...] = Field((1, 2), description="EfficientNet-Lite0 stages whose feature maps are used (1: stride 4, 2: stride 8, 3: stride 16)")
    coreset_size: int = Field(2000, ge=1, description="patchcore: patches kept in the memory bank")
    coreset_candidates: int = Field(100_000, ge=1, description="patchcore: random object patches the coreset is chosen from")
    reg: float = Field(0.01, gt=0, description="padim / gaussian: added to the covariance diagonal")

    @model_validator(mode="after")
    def _stages_valid(self) -> "PatchConfig":
        from rarespot.pretrained import STAGE_STRIDES

        if not self.stages or min(self.stages) < 0 or max(self.stages) >= len(STAGE_STRIDES):
            raise ValueError(f"patch.stages must be in 0..{len(STAGE_STRIDES) - 1}, got {self.stages}")
        step = STAGE_STRIDES[max(self.stages)]
        if self.size % step:
            raise ValueError(f"patch.size {self.size} must be a multiple of {step} (stride of stage {max(self.stages)})")
        return self


class ScreenConfig(StrictModel):
    detector: Literal["cae", "patch"] = Field("cae", description="convolutional autoencoder (+ latent KDE), or pretrained patch features")
    data: DataConfig = DataConfig()
    model: AutoencoderConfig = AutoencoderConfig()
    train: ScreenTrainConfig = ScreenTrainConfig()
    score: ScoreConfig = ScoreConfig()
    patch: PatchConfig = PatchConfig()
    far: float = Field(0.05, gt=0, lt=1, description="false-alarm rate on held-out normal images at which thresholds are set")
    # Scoring only (training is torch): onnxruntime needs ~1.8x less CPU per image (docs/benchmarks/screen.md).
    backend: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto", description="network back-end for scoring: onnxruntime when installed (auto), or torch"
    )

    @model_validator(mode="after")
    def _size_fits_the_network(self) -> "ScreenConfig":
        step = 2 ** len(self.model.channels)
        if self.data.size % step:
            raise ValueError(f"data.size {self.data.size} must be a multiple of {step} ({len(self.model.channels)} pooling stages)")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ScreenConfig":
        return load_config_file(path, cls, "screen config")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
