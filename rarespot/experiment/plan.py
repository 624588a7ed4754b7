"""A study plan: a base training config, studies (axes) of cells that override
it, seeds, budget knobs, and peer arms. Loaded from YAML.

Each (study, cell, seed) is one training + evaluation run. Cells are plain
override dicts applied on top of ``base`` and ``budget``, so a plan knows
nothing of the trainer's internals and a new axis needs no code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rarespot.errors import InputError


class Budget(BaseModel):
    """Knobs that make one plan fit 2 CPU cores or scale up on a GPU."""

    model_config = ConfigDict(extra="forbid")
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


class Resources(BaseModel):
    """What one run reserves on a Ray cluster (``rarespot experiment PLAN --ray``); unset: its ``threads``
    CPUs (1 if unset) and one GPU per device it names (``device: 0`` is 1, ``0,1`` is 2, cpu is 0)."""

    model_config = ConfigDict(extra="forbid")
    cpus: float | None = Field(None, gt=0)
    gpus: float | None = Field(None, ge=0)


class Cell(BaseModel):
    """One arm: a label and the config keys it changes."""

    model_config = ConfigDict(extra="forbid")
    label: str
    set: dict[str, Any] = Field(default_factory=dict)
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


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    data: dict[str, Any] = Field(description="where the data comes from: {synth: {n, seed}} or {path, format, longtail}")
    base: dict[str, Any] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    evaluation: dict[str, Any] = Field(default_factory=dict)
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


def load_plan(path: str | Path, overrides: dict[str, Any] | None = None) -> Plan:
    """Read a plan; ``overrides`` (e.g. budget knobs from the CLI) win over the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "plan file not found") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "a plan must be a YAML mapping with name, data, base, studies")
    for key, value in (overrides or {}).items():
        section, _, field = key.partition(".")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[key] = value
    try:
        plan = Plan.model_validate(raw)
    except Exception as exc:  # pydantic's message lists every bad field
        raise InputError(path, f"invalid plan: {exc}") from None
    for study in plan.studies:
        for cell in study.cells:
            if cell.model_from:
                try:
                    plan.cell(cell.model_from)
                except KeyError:
                    raise InputError(path, f"cell {study.name}/{cell.label}: model_from {cell.model_from!r} names no cell") from None
    return plan
