"""Settings of the operator review app (`rarespot serve`), loadable from YAML.

Every limit the server enforces lives here, so an operator can read in one
place how big an upload may be, how long a detection may take and how many
scans stay in memory.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, field_validator

from rarespot.config import StrictModel, load_config_file
from rarespot.errors import InputError

if TYPE_CHECKING:
    from rarespot.detect.settings import InferenceSettings

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


TOKEN_ENV = "RARESPOT_SERVE_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeSettings(StrictModel):
    """Limits and inference parameters of the review app.

    models: model files (Ultralytics ``.pt``) offered in the page's model list;
        the first is the default. Empty when the app is built from predictor objects.
    floor_conf: the server returns every box at or above this confidence; the
        page's slider then filters live, without another round trip.

    Access (see README, "Operator review app"): the server answers only to the
    host names in ``allowed_hosts`` (plus this machine's loopback names), refuses
    state-changing requests from other origins, and with a token (``token``,
    ``token_file`` or the ``RARESPOT_SERVE_TOKEN`` environment variable) requires
    it on every request (HTTP Basic password or ``Authorization: Bearer``). A
    token is required when ``host`` is not a loopback address.
    """

    models: list[Path] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_mb: float = Field(64.0, gt=0)
    detect_timeout_s: float = Field(120.0, gt=0, description="per upload, waiting for the model included; then 504")
    cache_items: int = Field(8, ge=1, description="uploads kept in memory for re-rendering (LRU)")
    max_pending: int = Field(32, ge=1, description="detections queued or running; more get 503")
    workers: int = Field(1, ge=1, description="inference threads; each model is still used by one at a time")
    max_pixels: int = Field(
        100_000_000, ge=1, description="refuse images larger than this (read from the file header, before decoding)"
    )
    cache_mb: float = Field(2048.0, gt=0, description="memory for cached scans, all clients together")
    max_pending_per_client: int = Field(4, ge=1, description="detections one client may have queued or running; then 429")
    render_workers: int = Field(2, ge=1, description="view-filter renders run at once; others wait")
    # Access control.
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names or addresses clients use to reach the server ('*.example.org' allowed), "
        "besides localhost/127.0.0.1/::1 and the --host address; a request for any other Host gets 400",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="other web origins (scheme://host:port) allowed to send uploads"
    )
    token: SecretStr | None = Field(None, description="access token; prefer token_file or RARESPOT_SERVE_TOKEN")
    token_file: Path | None = Field(None, description="file holding the access token (first line)")
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM): serve HTTPS instead of plain HTTP")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) of ssl_certfile")
    # Connection timeouts (seconds).
    header_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within this")
    body_idle_timeout_s: float = Field(15.0, gt=0, description="longest pause while an upload is sent; then 408")
    body_timeout_s: float = Field(120.0, gt=0, description="a whole upload must arrive within this; then 408")
    keep_alive_s: float = Field(5.0, gt=0, description="an idle kept-alive connection is closed after this")
    max_connections: int = Field(64, ge=1, description="open connections at once; more get 503")
    # Inference parameters of a served model file (:meth:`inference`).
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
    backend: str = Field(
        "auto", description="what runs a model file, as in `rarespot detect predict --backend`: auto (on the CPU a .pt "
        "runs as its cached ONNX export on the faster of OpenVINO and onnxruntime), openvino, onnxruntime or torch",
    )
    tta: str = Field("none", description="test-time views, as in `rarespot detect predict --tta`: none, hflip or flips "
                     "(each tile also mirrored; 2x or 4x the network time a scan)")
    warmup: bool = Field(True, description="run each model once on a blank tile at startup")

    @field_validator("tta")
    @classmethod
    def _known_views(cls, value: str) -> str:
        from rarespot.detect.settings import TTA_VIEWS

        if value not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {', '.join(TTA_VIEWS)}")  # the settings' error adds the value given
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from rarespot.detect.backends import backend_problem

        if problem := backend_problem(value):
            raise ValueError(problem)  # the settings' error adds the value given
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        if value is None:
            return []
        if isinstance(value, (str, Path)):
            return [value]
        return value

    def inference(self) -> InferenceSettings:
        """The :class:`~rarespot.detect.settings.InferenceSettings` a model file is served with
        (``floor_conf`` is the predictor's threshold: the page filters above it)."""
        from rarespot.detect.settings import InferenceSettings

        return InferenceSettings(
            tile=self.tile, overlap=self.overlap, conf=self.floor_conf, iou=self.iou, merge=self.merge,
            class_agnostic=self.class_agnostic, full_image_pass=self.full_image_pass, batch=self.batch,
            device=self.device, backend=self.backend, tta=self.tta,
        )

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` is reachable from this machine only."""
        return is_loopback_host(self.host)

    def resolved_token(self) -> str | None:
        """The access token: ``token``, else the first line of ``token_file``, else $RARESPOT_SERVE_TOKEN."""
        if self.token is not None and self.token.get_secret_value().strip():
            return self.token.get_secret_value().strip()
        if self.token_file is not None:
            try:
                lines = self.token_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise InputError(self.token_file, f"cannot read the token file: {exc.strerror or exc}") from None
            token = lines[0].strip() if lines else ""
            if len(token) < 16:
                raise InputError(self.token_file, "the token file's first line must hold a token of 16 or more characters")
            return token
        env = os.environ.get(TOKEN_ENV, "").strip()
        if env and len(env) < 16:
            raise InputError(None, f"${TOKEN_ENV} must hold a token of 16 or more characters")
        return env or None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ServeSettings":
        """Read settings from a YAML mapping; unknown keys are an error (typos must not pass silently)."""
        return load_config_file(path, cls, "settings", noun="settings")
