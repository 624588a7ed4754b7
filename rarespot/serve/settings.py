"""Settings of the operator review app (`rarespot serve`), loadable from YAML.

Every limit the server enforces lives here, so an operator can read in one
place how big an upload may be, how long a detection may take and how many
scans stay in memory.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rarespot.errors import InputError

# Suffix -> format name. The only file names the server ever builds are private
# temp files with one of these suffixes; the client's file name is only echoed.
ALLOWED_SUFFIXES: dict[str, str] = {
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}


class ServeSettings(BaseModel):
    """Limits and inference parameters of the review app.

    models: model files (Ultralytics ``.pt``) offered in the page's model list;
        the first is the default. Empty when the app is built from predictor objects.
    floor_conf: the server returns every box at or above this confidence; the
        page's slider then filters live, without another round trip.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[Path] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_mb: float = Field(64.0, gt=0)
    detect_timeout_s: float = Field(120.0, gt=0, description="per upload, waiting for the model included; then 504")
    cache_items: int = Field(8, ge=1, description="uploads kept in memory for re-rendering (LRU)")
    max_pending: int = Field(32, ge=1, description="detections queued or running; more get 503")
    workers: int = Field(1, ge=1, description="inference threads; each model is still used by one at a time")
    max_pixels: int = Field(100_000_000, ge=1, description="refuse decoded images larger than this")
    # Inference parameters passed to TiledPredictor.
    floor_conf: float = Field(0.05, ge=0.0, le=1.0)
    default_conf: float = Field(0.25, ge=0.0, le=1.0, description="initial slider position in the page")
    tile: int = Field(512, ge=32)
    overlap: float = Field(0.2, ge=0.0, lt=1.0)
    iou: float = Field(0.5, gt=0.0, le=1.0)
    merge: str = "nms"
    class_agnostic: bool = False
    full_image_pass: bool = False
    batch: int = Field(8, ge=1)
    device: str = "cpu"
    warmup: bool = Field(True, description="run each model once on a blank tile at startup")

    @field_validator("models", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        if value is None:
            return []
        if isinstance(value, (str, Path)):
            return [value]
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ServeSettings":
        """Read settings from a YAML mapping; unknown keys are an error (typos must not pass silently)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError(path, "settings file not found") from None
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(path, f"cannot read settings: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(path, "settings must be a YAML mapping of key: value")
        try:
            return cls(**data)
        except ValueError as exc:
            # pydantic's message lists each bad field; keep it on one line for the CLI.
            problem = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in getattr(exc, "errors", lambda: [])()
            ) or str(exc)
            raise InputError(path, f"invalid settings: {problem}") from None
