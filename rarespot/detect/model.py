"""Which network to train: an Ultralytics architecture by name (built from its
yaml, random init, nothing downloaded) or a local checkpoint the user gives.

``yolo11n`` (default), ``yolov8n``, ``yolov5nu``, ``yolo26n`` ... any scale
letter (n/s/m/l/x) of an architecture Ultralytics ships a yaml for; or a path
to a ``.yaml`` model definition or a ``.pt`` checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

from rarespot.errors import InputError

# name -> the architecture yaml Ultralytics ships (the scale letter picks the width/depth).
_NAME = re.compile(r"^(yolo(?:v3|v5|v6|v8|v9|v10|11|12|26))([nslmxtcbe])?(u)?(-p2|-p6)?$", re.IGNORECASE)


def resolve_model(spec: str | Path) -> str:
    """What to hand Ultralytics as ``model=``: a yaml name it resolves offline, or a checked local file.

    Raises InputError naming the path when a file is missing or is not a model.
    """
    spec = str(spec).strip()
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in {".pt", ".pth"}:
        check_checkpoint(path)
        return str(path)
    if suffix in {".yaml", ".yml"}:
        if path.exists():
            _check_model_yaml(path)
            return str(path)
        if _NAME.match(path.stem):
            return _checked_builtin(path.stem)
        raise InputError(path, "model definition not found")
    if path.exists():
        raise InputError(path, "not a model: give a .pt checkpoint, a .yaml model definition, or a name like yolo11n")
    if _NAME.match(spec):
        return _checked_builtin(spec)
    raise InputError(
        path, "unknown model: use a name like yolo11n, yolov8n, yolov5nu, yolo26n, or a local .pt/.yaml file"
    )


def _checked_builtin(name: str) -> str:
    """``yolo11n`` -> ``yolo11n.yaml``, after checking Ultralytics ships that architecture."""
    from ultralytics.nn.tasks import yaml_model_load

    yaml_name = f"{name.lower()}.yaml"
    try:
        yaml_model_load(yaml_name)
    except Exception:  # Ultralytics raises FileNotFoundError or its own error types for unknown yamls
        raise InputError(Path(name), "unknown model name: Ultralytics ships no architecture for it") from None
    return yaml_name


def _check_model_yaml(path: Path) -> None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(path, f"model definition is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "backbone" not in data or "head" not in data:
        raise InputError(path, "not a model definition (an Ultralytics model yaml has 'backbone' and 'head')")


def check_checkpoint(path: str | Path) -> None:
    """Fail early, naming the file, if ``path`` is not an Ultralytics detection checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file not found")
    from ultralytics.nn.tasks import load_checkpoint

    try:
        model, _ = load_checkpoint(path)
    except Exception as exc:  # torch/pickle raise many types for a file that is not a checkpoint
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a YOLO model checkpoint ({reason})") from None
    task = getattr(model, "task", None)
    if task not in (None, "detect"):
        raise InputError(path, f"checkpoint is a {task!r} model; rarespot trains detection models")


def __getattr__(name: str):
    # Checkpoints written before the class had a module of its own pickled it under this module.
    if name == "RarespotDetectionModel":
        from rarespot.detect.loss import RarespotDetectionModel

        return RarespotDetectionModel
    raise AttributeError(name)
