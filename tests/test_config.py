"""rarespot.config: one base for every settings model (unknown keys refused) and one error format,
``<file>: invalid <what>: <dotted.key>: <problem>``, for every settings file rarespot reads."""

from __future__ import annotations

import json
import textwrap
from importlib import resources
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from rarespot.config import StrictModel, config_problems, load_config_file, parse_set_options
from rarespot.errors import InputError

PLAN = textwrap.dedent(
    """
    name: toy
    data: {synth: {n: 4}}
    base: {tiles: 4}
    studies:
      - name: tiling
        cells:
          - {label: a, set: {tiles: 2}}
    """
)


def _load_detect(path):
    from rarespot.detect.config import load_config

    return load_config(path)


def _load_screen(path):
    from rarespot.screen.config import ScreenConfig

    return ScreenConfig.from_yaml(path)


def _load_sounds(path):
    pytest.importorskip("torch")
    from rarespot.sounds.train import SoundsTrainConfig

    return SoundsTrainConfig.from_yaml(path)


def _load_plan(path):
    from rarespot.experiment.plan import load_plan

    return load_plan(path)


def _load_detection_plan(path):
    """As `rarespot experiment` loads a plan: base and cell settings checked as detection settings."""
    from rarespot.detect.config import DetectTrainConfig
    from rarespot.experiment.plan import load_plan

    return load_plan(path, training_settings=DetectTrainConfig)


def _load_serve(path):
    from rarespot.serve.settings import ServeSettings

    return ServeSettings.from_yaml(path)


def _plan_with(**sections) -> str:
    plan = yaml.safe_load(PLAN)
    for dotted, value in sections.items():
        *parents, key = dotted.split("__")
        node = plan
        for parent in parents:
            node = node[int(parent)] if isinstance(node, list) else node[parent]
        node[key] = value
    return yaml.safe_dump(plan)


def _plan_typo_in_cell() -> str:
    plan = yaml.safe_load(PLAN)
    plan["studies"][0]["cells"][0]["set"] = {"tilez": 2}
    return yaml.safe_dump(plan)


# Each pipeline's settings file with one misspelt key, and the dotted path the error must name.
UNKNOWN_KEYS = [
    ("detect", _load_detect, "tiles: 2\ntilez: 3\n", "training config", "tilez"),
    ("detect copy_paste", _load_detect, "copy_paste: {p: 0.5, max_objectz: 2}\n", "training config", "copy_paste.max_objectz"),
    ("screen", _load_screen, "train: {epochs: 3, epocs: 3}\n", "screen config", "train.epocs"),
    ("screen top", _load_screen, "far: 0.1\nfra: 0.1\n", "screen config", "fra"),
    ("sounds", _load_sounds, "epochs: 3\nfeatures: {sample_rte: 4000}\n", "training config", "features.sample_rte"),
    ("plan", _load_plan, PLAN + "seedz: [0]\n", "plan", "seedz"),
    ("plan data", _load_plan, _plan_with(data={"synth": {"n": 4, "sed": 1}}), "plan", "data.synth.sed"),
    ("plan base", _load_detection_plan, _plan_with(base={"tiles": 4, "epocs": 3}), "plan", "base.epocs"),
    ("plan evaluation", _load_plan, _plan_with(evaluation={"overlapp": 0.3}), "plan", "evaluation.overlapp"),
    ("plan cell", _load_detection_plan, _plan_typo_in_cell(), "plan", "studies.0.cells.0.set.tilez"),
    ("serve", _load_serve, "port: 8000\nprot: 8001\n", "settings", "prot"),
]


@pytest.mark.parametrize("loader, text, what, key", [case[1:] for case in UNKNOWN_KEYS], ids=[c[0] for c in UNKNOWN_KEYS])
def test_unknown_keys_are_refused_naming_the_file_and_the_key(tmp_path, loader, text, what, key):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        loader(path)
    assert str(err.value) == f"{path}: invalid {what}: {key}: unknown key"


WRONG_TYPES = [
    ("detect", _load_detect, "tiles: ten\n", "tiles: Input should be a valid integer"),
    ("screen", _load_screen, "train: {epochs: ten}\n", "train.epochs: Input should be a valid integer"),
    ("sounds", _load_sounds, "model: {variant: cnnn}\n", "model.variant: Input should be 'vit'"),
    ("plan data", _load_plan, _plan_with(data={"synth": {"n": "ten"}}), "data.synth.n: Input should be a valid integer"),
    ("plan base", _load_detection_plan, _plan_with(base={"tiles": "ten"}), "base.tiles: Input should be a valid integer"),
    ("plan evaluation", _load_plan, _plan_with(evaluation={"overlap": 2}), "evaluation.overlap: Input should be less than 1"),
    ("serve", _load_serve, "port: eighty\n", "port: Input should be a valid integer"),
]


@pytest.mark.parametrize("loader, text, expect", [case[1:] for case in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES])
def test_a_wrong_value_names_its_key_path_and_the_value(tmp_path, loader, text, expect):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        loader(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid ") and expect in message
    assert "(got " in message


def test_a_plan_alone_gives_its_training_settings_no_meaning(tmp_path):
    """The runner is generic (its run_fn gives the settings their meaning): without a settings model
    any key passes, and the layered dicts are kept as written."""
    path = tmp_path / "plan.yaml"
    path.write_text(_plan_with(base={"tiles": 4, "anything": "goes"}))
    plan = _load_plan(path)
    assert plan.config_for(plan.studies[0].cells[0], 1) == {"tiles": 2, "anything": "goes", "seed": 1}
    with pytest.raises(InputError, match="invalid plan: base.anything: unknown key"):
        _load_detection_plan(path)


def test_union_member_names_are_not_keys_and_secrets_are_not_echoed():
    class Inner(StrictModel):
        bandwidth: float | str = 1.0
        token: str | None = None

    class Outer(StrictModel):
        inner: Inner = Inner()

    data = {"inner": {"bandwidth": [1], "token": 12345678}}
    with pytest.raises(ValidationError) as err:
        Outer.model_validate(data)
    problems = config_problems(err.value, data)
    assert problems.startswith("inner.bandwidth: Input should be a valid number or Input should be a valid string; ")
    assert "inner.token: Input should be a valid string" in problems and "12345678" not in problems


def test_load_config_file_reads_one_model(tmp_path):
    class Settings(StrictModel):
        epochs: int = 1

    path = tmp_path / "s.yaml"
    path.write_text("epochs: 3\n")
    assert load_config_file(path, Settings, "settings").epochs == 3
    path.write_text("")
    assert load_config_file(path, Settings, "settings").epochs == 1  # an empty file: the defaults
    path.write_text("- 1\n")
    with pytest.raises(InputError, match="settings must be a YAML mapping"):
        load_config_file(path, Settings, "settings")
    with pytest.raises(InputError, match="missing.yaml: config file not found"):
        load_config_file(tmp_path / "missing.yaml", Settings, "settings")


def _settings_models():
    """Every settings model: the classes reachable from each pipeline's top-level config."""
    pytest.importorskip("torch")
    from rarespot.detect.config import DetectTrainConfig
    from rarespot.experiment.plan import Plan
    from rarespot.filters import ViewFilter
    from rarespot.screen.config import ScreenConfig
    from rarespot.serve.settings import ServeSettings
    from rarespot.sounds.train import SoundsTrainConfig

    seen, todo = set(), [DetectTrainConfig, Plan, ViewFilter, ScreenConfig, ServeSettings, SoundsTrainConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            for arg in _types_in(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    todo.append(arg)
    return seen


def _types_in(annotation):
    from typing import get_args

    yield annotation
    for arg in get_args(annotation):
        yield from _types_in(arg)


def test_every_settings_model_derives_from_the_strict_base():
    models = _settings_models()
    assert len(models) >= 15
    assert all(issubclass(m, StrictModel) for m in models), [m.__name__ for m in models if not issubclass(m, StrictModel)]


def test_the_three_training_configs_have_distinct_names_and_the_documented_one_still_imports():
    pytest.importorskip("torch")
    import rarespot.sounds.train as sounds_train
    from rarespot.detect.config import DetectTrainConfig
    from rarespot.screen.config import ScreenTrainConfig

    names = {DetectTrainConfig.__name__, ScreenTrainConfig.__name__, sounds_train.SoundsTrainConfig.__name__}
    assert len(names) == 3
    with pytest.warns(DeprecationWarning, match="SoundsTrainConfig"):
        assert sounds_train.TrainConfig is sounds_train.SoundsTrainConfig


# --- every YAML shipped in the package ------------------------------------------------------------

PACKAGE = Path(str(resources.files("rarespot")))
LOADERS = {"detect/configs": _load_detect, "experiment/plans": _load_detection_plan}
PACKAGED = sorted(PACKAGE.rglob("*.yaml"))


def test_every_packaged_yaml_has_a_loader():
    assert PACKAGED
    assert all(str(p.parent.relative_to(PACKAGE)) in LOADERS for p in PACKAGED), PACKAGED


@pytest.mark.parametrize("path", PACKAGED, ids=[str(p.relative_to(PACKAGE)) for p in PACKAGED])
def test_every_packaged_yaml_loads(path):
    assert LOADERS[str(path.parent.relative_to(PACKAGE))](path) is not None


# --- the plan's typed sections keep what the dicts meant -----------------------------------------


@pytest.mark.parametrize("path", sorted((PACKAGE / "experiment" / "plans").glob("*.yaml")), ids=lambda p: p.stem)
def test_packaged_plans_data_section_identifies_the_cached_splits_as_before(path):
    """A study folder's cached splits are keyed by the plan's data section as written: typing it
    must not change that key, or every existing study folder would refuse its own splits."""
    plan = _load_plan(path)
    written = yaml.safe_load(path.read_text())["data"]
    assert json.dumps(plan.data.model_dump(mode="json", exclude_unset=True), sort_keys=True) == json.dumps(written, sort_keys=True)


def test_opixray_plan_keeps_the_running_studys_split_key():
    from rarespot.experiment.cli import plan_path

    plan = _load_plan(plan_path("opixray"))
    spec = {"data": plan.data.model_dump(mode="json", exclude_unset=True), "images": plan.budget.images,
            "val_images": plan.budget.val_images}
    # data/data_spec.json of the OPIXray study folder, made before the data section was typed
    assert json.dumps(spec, sort_keys=True, default=str) == (
        '{"data": {"fractions": [0.7, 0.15, 0.15], "holdout": {"seed": 0, "share": 0.2}, '
        '"path": "../shared/data/opixray", "split_seed": 0}, "images": 400, "val_images": 150}'
    )


def test_plan_sections_defaults_are_the_old_get_defaults(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    plan = _load_plan(path)
    assert (plan.evaluation.overlap, plan.evaluation.class_agnostic_merge, plan.evaluation.skip_background) == (0.2, False, False)
    data = plan.data
    assert (data.synth.n, data.synth.seed, data.synth.size) == (4, 0, (1500, 1216))
    assert (data.path, data.format, data.holdout, data.longtail) == (None, "auto", None, None)
    assert (data.fractions, data.split_seed) == ((0.6, 0.2, 0.2), 0)
    assert plan.base == {"tiles": 4}  # layered as written
    # An empty holdout (or long-tail) section has always meant none; `synth:` alone the default scans.
    path.write_text(_plan_with(data={"synth": None, "holdout": {}, "longtail": None}))
    data = _load_plan(path).data
    assert data.synth.n == 100 and data.holdout is None and data.longtail is None


def test_set_options_read_each_value_as_yaml_and_refuse_a_missing_equals_sign():
    # The one parser of KEY=VALUE overrides (`rarespot detect train --set`, the OPIXray bench's --set).
    got = parse_set_options(["threads=1", "backbone=yolo", "copy_paste={p: 0.5, target_distribution: rarest}", " aug = []"])
    assert got == {"threads": 1, "backbone": "yolo", "copy_paste": {"p": 0.5, "target_distribution": "rarest"}, "aug": []}
    assert parse_set_options(None) == {}
    with pytest.raises(InputError, match=r"--set expects key=value, got 'threads'"):
        parse_set_options(["threads"])
    with pytest.raises(InputError, match=r"--set copy_paste: the value is not valid YAML"):
        parse_set_options(["copy_paste={p: 0.5"])
