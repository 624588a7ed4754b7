"""Training configuration: one flat pydantic model, loadable from / dumped to YAML.

Flat on purpose: an experiment plan overrides any key with ``{key: value}``
and the run folder's ``config.yaml`` reads like the seed's list of settings.
Defaults follow seed 000 (Adam, lr 0.001, batch 8, 4 positive tiles of 512,
validation every other epoch, best checkpoint by validation loss).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from rarespot.config import StrictModel, read_yaml_mapping, validate_config
from rarespot.detect.augment import AUGMENTATION_NAMES as AUGMENTATIONS
from rarespot.errors import InputError
from rarespot.io.atomic import atomic_write_text

ClsLoss = Literal["bce", "focal", "cb-bce", "cb-focal"]
CLS_LOSSES: tuple[str, ...] = get_args(ClsLoss)  # rarespot.detect.loss checks against these


class CopyPasteConfig(StrictModel):
    """Options passed to ``rarespot.imbalance.copy_paste.XrayCopyPaste``.

    Its other keyword options (max_objects, scale, blend, ...) are passed on as given, so they keep one
    home (the class); a key it does not take is refused here, not when training starts.
    """

    model_config = ConfigDict(extra="allow")
    p: float = Field(0.5, ge=0.0, le=1.0, description="probability that a training tile receives pasted objects")
    target_distribution: str | dict[str, float] | None = Field(
        "uniform", description="class mix the pasting aims for: 'uniform', 'rarest' (the class with the fewest "
        "training objects only) or {class: share}"
    )

    @field_validator("target_distribution")
    @classmethod
    def _named_target(cls, value):
        """A misspelt name is refused when the config is read, not when training starts."""
        from rarespot.imbalance.copy_paste import NAMED_TARGETS

        if isinstance(value, str) and value not in NAMED_TARGETS:
            raise ValueError(f"must be one of {', '.join(repr(n) for n in NAMED_TARGETS)} or {{class: share}}")
        return value

    @model_validator(mode="after")
    def _known_options(self) -> "CopyPasteConfig":
        unknown = [key for key in self.model_extra or {} if key not in copy_paste_options()]
        if unknown:  # reported like any unknown key: copy_paste.<key>: unknown key
            raise ValidationError.from_exception_data(
                type(self).__name__, [{"type": "extra_forbidden", "loc": (key,), "input": self.model_extra[key]} for key in unknown]
            )
        return self


def copy_paste_options() -> list[str]:
    """The keyword options of XrayCopyPaste a config may set (not the donors or the callables training passes)."""
    import inspect

    from rarespot.imbalance.copy_paste import XrayCopyPaste

    skip = {"self", "donors", "reader", "donor_transform"}
    return [name for name in inspect.signature(XrayCopyPaste.__init__).parameters if name not in skip]


class DetectTrainConfig(StrictModel):
    """Everything one detection training run needs; ``rarespot detect train --config run.yaml`` reads this."""

    model_config = ConfigDict(validate_assignment=True)  # extra="forbid" from StrictModel

    # --- data ---------------------------------------------------------------------------
    data: Path | None = Field(None, description="dataset folder or annotation file (VOC, YOLO, COCO)")
    data_format: str = Field("auto", description="annotation format for rarespot.io.annotations.load_dataset")
    val_data: Path | None = Field(None, description="separate validation set; if unset, 'data' is split")
    split: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train/val/test shares (seed: 60/20/20)")

    # --- model --------------------------------------------------------------------------
    model: str = Field("yolo11n", description="yolo11n, yolov8n, yolov5nu, ... (built from its yaml), or a local .pt/.yaml")
    backbone: Literal["yolo", "efficientnet-lite0"] = Field(
        "yolo",
        description="yolo: the model's own backbone, random init; efficientnet-lite0: ImageNet-pretrained "
        "EfficientNet-Lite0 stages under the model's neck and head (yolo11 / yolov8 layouts; rarespot[pretrained])",
    )

    freeze: int = Field(
        0, ge=0,
        description="train with the model's first N layers frozen (Ultralytics' freeze=); with backbone "
        "efficientnet-lite0, 1 freezes the ImageNet stem and stages 0-2 (stride 2-8, the highest-resolution layers)",
    )

    # --- tiling (seed 3.5) --------------------------------------------------------------
    full_image: bool = Field(False, description="train on whole images resized to imgsz (the seed's baseline)")
    tiles: int = Field(4, ge=1, description="random positive tiles per training image per epoch")
    tile_size: int = Field(512, ge=32, description="tile side in image pixels")
    imgsz: int | None = Field(None, description="network input side; default: tile_size when tiling, 640 full-image")
    min_visible: float = Field(0.3, gt=0.0, le=1.0, description="keep a clipped box if this share of it is in the tile")
    negative_tiles: float = Field(0.0, ge=0.0, lt=1.0, description="share of training tiles drawn with no object")
    val_overlap: float = Field(0.0, ge=0.0, lt=1.0, description="overlap of the fixed validation grid")

    # --- class remapping (seed 4.3) -----------------------------------------------------
    remap: str | None = Field(
        None, description="agnostic | binary | size | size:A1,A2,A3 | score:RUN_EVAL.json | path/to/map.yaml"
    )

    # --- augmentation (seed 3.4) --------------------------------------------------------
    aug: list[str] = Field(default_factory=list, description=f"any of {', '.join(AUGMENTATIONS)}")
    aug_p: float = Field(0.5, ge=0.0, le=1.0, description="probability of each augmentation (seed: 0.5)")
    ultralytics_augment: bool = Field(False, description="also use Ultralytics' own mosaic/HSV/flip/affine defaults")

    # --- class imbalance ----------------------------------------------------------------
    sampler: Literal["none", "repeat_factor"] = "none"
    repeat_threshold: float = Field(0.1, gt=0.0, le=1.0, description="LVIS repeat-factor threshold t")
    tile_object_choice: Literal["uniform", "class_aware"] = "uniform"
    object_weight_power: float = Field(0.5, ge=0.0, description="class_aware: weight of a class ~ count^-power")
    copy_paste: CopyPasteConfig | None = None
    cls_loss: ClsLoss = "bce"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cb_beta: float = 0.999

    # --- optimisation (seed 4) ----------------------------------------------------------
    epochs: int = Field(150, ge=1)
    time_hours: float | None = Field(
        None, gt=0, description="wall-clock budget in hours; when set, epochs are re-estimated to fill it (Ultralytics' time=)"
    )
    min_epochs: int | None = Field(
        None, ge=1, description="with time_hours: the fewest epochs this config was shown to work with; a budget "
        "that fits fewer on this machine gets a warning after the first epoch, with the time_hours that would fit them",
    )
    batch: int = Field(8, ge=1)
    nbs: int = Field(64, ge=1, description="nominal batch: gradients accumulate to this many images per step")
    optimizer: str = "Adam"
    lr0: float = Field(0.001, gt=0.0)
    lrf: float = Field(0.01, gt=0.0, le=1.0, description="final learning rate as a fraction of lr0")
    lr_schedule: Literal["epochs", "time"] = Field(
        "epochs",
        description="epochs: Ultralytics' linear fall from lr0 to lrf * lr0, stepped each epoch over the planned "
        "epochs; time (needs time_hours): the same fall by the clock, updated every optimiser step, so it reaches "
        "lrf * lr0 as the budget ends (a time-budgeted run otherwise stops inside an epoch it planned by rounding up, "
        "at about lr0 / epochs)",
    )
    warmup_epochs: float = Field(3.0, ge=0.0)
    # Ultralytics' default 0.1 suits SGD at lr 0.01; with Adam at lr 0.001 it is a 100x spike on the biases.
    warmup_bias_lr: float = Field(0.0, ge=0.0, description="bias learning rate at the start of warmup")
    weight_decay: float = Field(0.0005, ge=0.0)
    val_every: int = Field(2, ge=1, description="validate every k epochs (seed: every other); always the last")
    patience: int = Field(50, ge=1, description="stop after this many epochs without a lower validation loss")
    model_checkpoint: Literal["lowest_val_loss", "last"] = Field(
        "lowest_val_loss",
        description="the run's model: best.pt (lowest validation loss, seed 3.3) or last.pt (the end of the "
        "learning-rate schedule; for short, time-budgeted runs where the last epochs still learn)",
    )
    device: str | None = Field(None, description="cpu, 0, cuda:0 ... (default: first GPU if any, else cpu)")
    workers: int = Field(0, ge=0, description="dataloader workers (Ultralytics forces 0 on CPU)")
    threads: int | None = Field(
        None, ge=1,
        description="torch threads on the CPU; default: timed every epoch, every core vs one fewer (pin it for bit-identical reruns)",
    )
    channels_last: bool | None = Field(
        None, description="NHWC tensors in training (default: on for a CPU where oneDNN runs them faster)"
    )
    seed: int = 0
    cache_images: bool = Field(True, description="keep each image's model input in RAM after the first read")

    # --- output -------------------------------------------------------------------------
    out: Path = Field(Path("runs/train"), description="run folder: config.yaml, weights/, metrics.csv, plots")
    exist_ok: bool = Field(False, description="train into an existing run folder (its checkpoints are replaced)")

    @field_validator("aug", mode="before")
    @classmethod
    def _split_aug(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [a.strip() for a in value.split(",") if a.strip() and a.strip().lower() != "none"]
        return value

    @field_validator("aug")
    @classmethod
    def _known_aug(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {list(AUGMENTATIONS)}")
        return value

    @field_validator("remap", mode="before")
    @classmethod
    def _none_remap(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none", "original"}):
            return None
        return str(value)

    @model_validator(mode="after")
    def _check_split(self) -> "DetectTrainConfig":
        if any(s < 0 for s in self.split) or self.split[0] <= 0 or self.split[1] <= 0:
            raise ValueError(f"split needs positive train and val shares, got {self.split}")
        return self

    @model_validator(mode="after")
    def _check_lr_schedule(self) -> "DetectTrainConfig":
        if self.lr_schedule == "time" and self.time_hours is None:
            raise ValueError("lr_schedule 'time' follows the clock of a time budget: set time_hours too")
        return self

    @property
    def input_size(self) -> int:
        """The network's input side: the tile size when tiling (no resizing), else imgsz or 640."""
        if self.imgsz is not None:
            return self.imgsz
        return 640 if self.full_image else self.tile_size

    def dump_yaml(self, path: str | Path) -> Path:
        """Write the resolved config atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        atomic_write_text(path, text)
        return path


def load_config(path: str | Path | None = None, **overrides: Any) -> DetectTrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``overrides`` (None values are ignored).

    ``path`` may also name a packaged config: ``seed`` (the seed's ideal parameters), ``demo``.

    Bad files raise InputError naming the file and every bad key.
    """
    raw: dict[str, Any] = {}
    source = Path(path) if path is not None else None
    if source is not None and not source.exists() and not source.suffix and source.name == str(path):
        source = packaged_config(source.name)  # a bare name: one of the shipped configs ('seed', 'demo')
    if source is not None:
        raw.update(read_yaml_mapping(source, "training config"))
        # Relative data paths in a config file mean "relative to the file", not to the cwd.
        for key in ("data", "val_data"):
            if raw.get(key) and not Path(str(raw[key])).is_absolute():
                candidate = source.parent / str(raw[key])
                if candidate.exists():
                    raw[key] = str(candidate)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(DetectTrainConfig, raw, source, "training config")


def packaged_config(name: str) -> Path:
    """Path of a default config shipped in ``rarespot/detect/configs`` (e.g. 'seed', 'demo')."""
    ref = resources.files("rarespot.detect") / "configs" / f"{name}.yaml"
    path = Path(str(ref))
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise InputError(path, f"no packaged config named {name!r}; available: {available}")
    return path
