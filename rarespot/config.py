"""The one base of rarespot's settings models, and the one way a settings file is read.

Every settings model (detection and sounds training, screening, experiment plans, the
review app, view filters) derives from :class:`StrictModel`, so a key the model does not
know is an error: a typo in a YAML file fails loudly instead of being ignored.

:func:`load_config_file` reads a YAML mapping and validates it; every problem becomes one
:class:`~rarespot.errors.InputError` in one format, naming the file, the dotted key path
and the problem::

    run.yaml: invalid training config: epocs: unknown key
    run.yaml: invalid training config: train.epochs: Input should be a valid integer, ... (got 'ten')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rarespot.errors import InputError

__all__ = ["StrictModel", "config_problems", "load_config_file", "parse_set_options", "read_yaml_mapping", "validate_config"]

M = TypeVar("M", bound=BaseModel)

# Shown at most; a file with more problems is mostly the wrong file.
MAX_PROBLEMS = 10
# Values never echoed in an error message (they may be secrets).
_SECRET_WORDS = ("token", "secret", "password", "key_file", "keyfile")


class StrictModel(BaseModel):
    """Base of every settings model: unknown keys are refused (a misspelt option must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


def read_yaml_mapping(path: str | Path, what: str, noun: str = "config") -> dict[str, Any]:
    """The YAML mapping in ``path`` (an empty file is ``{}``); a missing, unreadable or non-mapping file
    raises InputError naming it. ``noun`` names the file kind in "<noun> file not found"."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"{noun} file not found") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the {noun} file: {getattr(exc, 'strerror', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, f"{_article(what)} must be a YAML mapping of key: value")
    return data


def parse_set_options(items: list[str] | None, option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` command-line overrides as a mapping, each value read as YAML (``3`` is a number,
    ``"{p: 0.5}"`` a mapping); anything without ``=`` raises InputError naming ``option``."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(None, f"{option} expects key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(None, f"{option} {key.strip()}: the value is not valid YAML: {exc}") from None
    return overrides


def validate_config(model_cls: type[M], data: Any, path: str | Path | None, what: str, context: dict | None = None) -> M:
    """``model_cls`` validated from ``data``; a ValidationError becomes one InputError naming ``path``
    (None: the settings came from no file) and each bad key: ``<path>: invalid <what>: <key>: <problem>``.
    ``context`` is pydantic's validation context, for validators that need one."""
    try:
        return model_cls.model_validate(data, context=context)
    except ValidationError as exc:
        raise InputError(path, f"invalid {what}: {config_problems(exc, data)}") from None


def load_config_file(path: str | Path, model_cls: type[M], what: str, noun: str = "config") -> M:
    """Read the YAML mapping in ``path`` and validate it as ``model_cls`` (see :func:`validate_config`)."""
    return validate_config(model_cls, read_yaml_mapping(path, what, noun), path, what)


def config_problems(exc: ValidationError, data: Any = None) -> str:
    """pydantic's errors on one line, each as ``dotted.key.path: problem`` ("unknown key" for a key the
    model does not know, the value given for a wrong one), joined by "; ".

    ``data`` (what was validated) tells real keys from the union member names pydantic adds to a
    location (``bandwidth.float``): a part of the location not found in ``data`` is left out, and the
    problems of one key (one per union member) are joined by " or ".
    """
    by_key: dict[str, list[str]] = {}
    for error in exc.errors():
        parts = _key_parts(error["loc"], data, error["type"])
        key = ".".join(str(p) for p in parts)
        if error["type"] == "extra_forbidden":
            problem = "unknown key"
        else:
            problem = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            shown = _shown_value(error, parts)
            if shown is not None:
                problem = f"{problem} (got {shown})"
        problems = by_key.setdefault(key, [])
        if problem not in problems:
            problems.append(problem)
    lines = [f"{key}: {' or '.join(p)}" if key else " or ".join(p) for key, p in by_key.items()]
    if len(lines) > MAX_PROBLEMS:
        lines = lines[:MAX_PROBLEMS] + [f"and {len(lines) - MAX_PROBLEMS} more"]
    return "; ".join(lines)


def _key_parts(loc: tuple, data: Any, error_type: str) -> list:
    """The parts of a pydantic error location that are keys or list positions in ``data``."""
    parts, node, known = [], data, data is not None
    for i, part in enumerate(loc):
        if not known:  # no data to check against: every part is kept
            parts.append(part)
            continue
        if isinstance(node, dict) and part in node:
            parts.append(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(part)
            node = node[part]
        elif isinstance(node, BaseModel) and isinstance(part, str) and part in type(node).model_fields:
            parts.append(part)
            node = getattr(node, part)
        elif i == len(loc) - 1 and error_type == "missing":
            parts.append(part)  # a required key that is absent
        # else: a union member's name, not a key
    return parts


def _shown_value(error: dict, parts: list) -> str | None:
    """The offending value, for a scalar given to a key that is not secret; else None."""
    if error["type"] in {"missing", "extra_forbidden"} or not parts:
        return None
    value = error.get("input")
    if not isinstance(value, (str, int, float, bool)) or any(w in str(p).lower() for p in parts for w in _SECRET_WORDS):
        return None
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _article(what: str) -> str:
    """"a training config", "an ...", or ``what`` as is when it is plural ("settings")."""
    if what.endswith("settings"):
        return what
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
