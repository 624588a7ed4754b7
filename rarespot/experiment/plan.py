"""A study plan: a base training config, studies (axes) of cells that override
it, seeds, budget knobs, and peer arms. Loaded from YAML.

Each (study, cell, seed) is one training + evaluation run. Cells are plain
override dicts applied on top of ``base`` and ``budget``, so a plan knows
nothing of the trainer's internals and a new axis needs no code; the
``rarespot experiment`` command checks them against the detection training
config when it loads the plan.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator

from rarespot.config import StrictModel, read_yaml_mapping, validate_config
from rarespot.errors import InputError


def _check_training_settings(settings: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    model = (info.context or {}).get("training_settings")
    if model is not None:
        model.model_validate(settings)  # a misspelt key or a wrong value fails at load, named by its path
    return settings


# Training settings a plan layers (base <- budget <- cell <- seed), kept as written: each run's layered
# dict is what it trains with and records. The runner gives them no meaning; a run_fn's settings model
# (``load_plan(..., training_settings=DetectTrainConfig)``) checks them key by key when the plan loads.
TrainingOverrides = Annotated[dict[str, Any], AfterValidator(_check_training_settings)]


class SynthSource(StrictModel):
    """Synthetic scans made by ``rarespot.synth.generate``."""

    n: int = Field(100, ge=1, description="number of scans")
    seed: int = 0
    size: tuple[int, int] = Field((1500, 1216), description="(height, width); small sizes for smoke tests")


class Holdout(StrictModel):
    """A final test set cut off before anything else and never scored by the study."""

    share: float = 0.2
    seed: int = 0


class LongTail(StrictModel):
    """The training split made long-tailed (val/test keep the natural mix)."""

    ratios: list[float] = Field(description="class shares, in `order` (e.g. 1, 1/3, 1/10, ...)")
    order: list[str] | None = Field(None, description="the classes `ratios` belong to, in turn; None: the dataset's class order")
    seed: int = 0


class DataSource(StrictModel):
    """Where a plan's data comes from (``synth`` or ``path``) and how it is split.

    Its keys as written (``model_dump(exclude_unset=True)``) identify the cached splits of a study
    folder, so ``path`` stays the string the plan gives.
    """

    synth: SynthSource | None = Field(None, description="generate synthetic scans")
    path: str | None = Field(None, description="a dataset folder or annotation file")
    format: str = Field("auto", description="annotation format of `path` (rarespot.io.annotations.load_dataset)")
    holdout: Holdout | None = None
    fractions: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train/val/test shares")
    split_seed: int = 0
    longtail: LongTail | None = None

    @field_validator("synth", mode="before")
    @classmethod
    def _synth_null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value  # `synth:` alone means synthetic scans with the defaults

    @field_validator("holdout", "longtail", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value if value else None  # `holdout: {}` (or false) has always meant no holdout; so for longtail


class Evaluation(StrictModel):
    """How each trained model is scored (the same for every cell of the plan)."""

    overlap: float = Field(0.2, ge=0.0, lt=1.0, description="overlap of the tiles (and of SAHI's slices)")
    class_agnostic_merge: bool = Field(False, description="merge overlapping boxes across classes")
    # Off unless a plan asks: every cell of a study is scored the same way, including runs scored before
    # skipping existed.
    skip_background: bool = Field(False, description="skip tiles with no foreground (tiled inference)")
    class_recall_floor: float | None = Field(
        None, gt=0.0, le=1.0,
        description="also score every run at the screening point: one confidence, the best F1 among those keeping "
        "every class's validation recall at this floor (the floor_* columns of results.csv)",
    )


class Budget(StrictModel):
    """Knobs that make one plan fit 2 CPU cores or scale up on a GPU."""

    images: int | None = Field(None, description="training images used (None: all)")
    val_images: int | None = Field(None, description="validation images used (None: all); fewer = cheaper rounds")
    epochs: int | None = None
    imgsz: int | None = None
    model: str | None = Field(None, description="e.g. yolo11n, yolo11s, yolov8n")
    device: str | None = Field(None, description="cpu, 0, cuda:0 ...")
    batch: int | None = None
    threads: int | None = Field(None, description="torch threads per run on the CPU (1 when two runners share 2 cores)")

    def as_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None and k not in {"images", "val_images"}}


class Resources(StrictModel):
    """What one run reserves on a Ray cluster (``rarespot experiment PLAN --ray``); unset: its ``threads``
    CPUs (1 if unset) and one GPU per device it names (``device: 0`` is 1, ``0,1`` is 2, cpu is 0)."""

    cpus: float | None = Field(None, gt=0)
    gpus: float | None = Field(None, ge=0)


class Cell(StrictModel):
    """One arm: a label and the config keys it changes."""

    label: str
    set: TrainingOverrides = Field(default_factory=dict)
    # How the trained model is evaluated: the seed's fixed tiling, a plain
    # full-image pass, or SAHI's sliced prediction (a peer arm).
    inference: Literal["tiled", "full", "sahi"] = "tiled"
    # Reuse the model trained by another cell ("study/label") instead of training again.
    model_from: str | None = None
    # Who trains: rarespot's trainer with the cell's settings, or plain Ultralytics with its own
    # defaults (the peer; only model, epochs, imgsz, batch and seed are taken from the cell).
    trainer: Literal["rarespot", "ultralytics"] = "rarespot"
    # What its runs reserve on a Ray cluster, when not the plan's `resources`.
    resources: Resources | None = None

    @property
    def slug(self) -> str:
        return slugify(self.label)


class Study(StrictModel):
    name: str
    # Report form: which of the seed's tables/figures this reproduces.
    form: Literal["tiling", "augmentation", "remap", "ideal", "peers", "generic"] = "generic"
    cells: list[Cell]

    @field_validator("cells")
    @classmethod
    def _unique_labels(cls, cells: list[Cell]) -> list[Cell]:
        slugs = [c.slug for c in cells]
        dup = {s for s in slugs if slugs.count(s) > 1}
        if dup:
            raise ValueError(f"cell labels must be unique within a study: {sorted(dup)}")
        return cells


class Plan(StrictModel):
    name: str
    data: DataSource = Field(description="where the data comes from: {synth: {n, seed}} or {path, format, longtail}")
    base: TrainingOverrides = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    # What each run reserves on a Ray cluster (--ray); a cell's own `resources` win.
    resources: Resources = Field(default_factory=Resources)
    studies: list[Study]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("a plan needs at least one seed")
        return seeds

    def cell(self, ref: str) -> tuple[Study, Cell]:
        """Find a cell by "study/label"."""
        study_name, _, label = ref.partition("/")
        for study in self.studies:
            if study.name == study_name:
                for cell in study.cells:
                    if cell.label == label or cell.slug == slugify(label):
                        return study, cell
        raise KeyError(ref)

    def config_for(self, cell: Cell, seed: int) -> dict[str, Any]:
        """The full training config of one run: base <- budget <- cell <- seed."""
        cfg = dict(self.base)
        cfg.update(self.budget.as_overrides())
        cfg.update(cell.set)
        cfg["seed"] = seed
        return cfg

    def runs(self) -> list[tuple[Study, Cell, int]]:
        return [(s, c, seed) for s in self.studies for c in s.cells for seed in self.seeds]


def slugify(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower() or "cell"


def load_plan(
    path: str | Path, overrides: dict[str, Any] | None = None, training_settings: type[BaseModel] | None = None
) -> Plan:
    """Read a plan; ``overrides`` (e.g. budget knobs from the CLI) win over the file.

    ``training_settings``: the settings model of the runs (DetectTrainConfig for ``rarespot experiment``);
    when given, ``base`` and every cell's ``set`` are checked against it, so a misspelt key stops the plan
    before its first run, named by its path (``studies.0.cells.1.set.epocs: unknown key``)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "plan", noun="plan")
    for key, value in (overrides or {}).items():
        section, _, field = key.partition(".")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[key] = value
    plan = validate_config(Plan, raw, path, "plan", context={"training_settings": training_settings})
    for study in plan.studies:
        for cell in study.cells:
            if cell.model_from:
                try:
                    plan.cell(cell.model_from)
                except KeyError:
                    raise InputError(path, f"cell {study.name}/{cell.label}: model_from {cell.model_from!r} names no cell") from None
    return plan
