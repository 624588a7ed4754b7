"""How tiled detection runs: one settings object for :class:`~rarespot.detect.predict.TiledPredictor`.

``rarespot detect predict``/``evaluate``/``screen``, the review app, the demo, the experiment
runner and batch screening each build an :class:`InferenceSettings` and hand it on, instead of
passing tile size, thresholds, back-end and device as loose arguments through every layer.

    >>> settings = InferenceSettings(tile=512, conf=0.25, backend="openvino")
    >>> predictor = TiledPredictor("runs/exp/best.pt", settings)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, model_validator

from rarespot.config import StrictModel, validate_config
from rarespot.detect.foreground import ForegroundSettings
from rarespot.detect.merge import MATCH_METRICS, MERGE_METHODS
from rarespot.detect.preprocess import InputMapping
from rarespot.errors import InputError


#: Test-time views by name: each view is (flip left-right, flip up-down) of a tile; the unflipped view
#: always runs. A mirrored tile is another look at the same objects, but a model may not read it as well
#: (one that learned an object's handedness gives it another class): measure before using it.
TTA_VIEWS: dict[str, tuple[tuple[bool, bool], ...]] = {
    "none": ((False, False),),
    "hflip": ((False, False), (True, False)),
    "flips": ((False, False), (True, False), (False, True), (True, True)),
}


class InferenceSettings(StrictModel):
    """Settings of sliced inference; the defaults are ``rarespot detect predict``'s (the seed's protocol).

    tile, overlap: the grid (pixels, fraction of a tile); use the training tile size.
    conf: keep detections scoring at least this; iou: NMS / fusion threshold,
      used both inside each tile and across tiles.
    class_conf: class name -> its own threshold, instead of ``conf`` for that class (e.g. the
      ``class_conf`` that ``rarespot detect evaluate --per-class-conf`` chose on validation scans;
      :func:`class_conf_from` reads them); the predictor's own calls only, an explicit ``conf=`` wins.
    merge: "nms" keeps the best box of a cluster, "wbf" fuses its corners.
    class_agnostic: merge across classes (one object, one box).
    full_image_pass: also run the scan shrunk to one tile (objects larger than a tile).
    batch: tiles per forward pass. imgsz: network input size (default: the tile size).
    device, backend: where and on what the model runs (:func:`rarespot.detect.backends.load_backend`).
    match_metric: "iou" or "ios" for the cross-tile merge (IoS also folds a
      partial box cut by a tile edge into the whole one).
    max_det: cap per tile and per scan. pad_value: fill for tiles past the edge
      of a scan smaller than a tile (0, as the training tiles are padded).
    threads: CPU threads for the back-end (default: all cores this process may use).
    skip_background: run only the tiles that hold foreground (:mod:`rarespot.detect.foreground`:
      a test on the scan as read, once per scan; a scan without a uniform background at its
      border runs every tile). ``False`` runs every tile, as SAHI does. ``foreground``: its settings.
    input_mapping: how scans become the network's 8-bit input; default (None): the one stored
      with the model (:mod:`rarespot.detect.preprocess`), so inference maps scans as training did.
    tta: test-time views (:data:`TTA_VIEWS`): "none"; "hflip" also runs each tile mirrored left-right;
      "flips" also up-down and both (4 views, 4x the network time). Every view's boxes are mapped
      back and merged with the others by the cross-tile merge, as Ultralytics' ``augment=True``
      merges its views by NMS (its views also rescale; here objects keep their size in pixels). Check it on
      validation scans: a model that reads class from an object's handedness gets worse (OPIXray: docs/study.md, v8).
    """

    model_config = ConfigDict(frozen=True)  # StrictModel refuses unknown keys; frozen: shared by every caller

    tile: int = 512
    overlap: float = 0.2
    conf: float = 0.25
    class_conf: dict[str, float] | None = None
    iou: float = 0.5
    merge: str = "nms"
    class_agnostic: bool = False
    full_image_pass: bool = False
    batch: int = 8
    imgsz: int | None = None
    device: str = "cpu"
    backend: str = "auto"
    match_metric: str = "iou"
    max_det: int = 300
    pad_value: int = 0
    threads: int | None = None
    skip_background: bool = True
    foreground: ForegroundSettings = ForegroundSettings()
    input_mapping: InputMapping | None = None
    tta: str = "none"

    @model_validator(mode="after")
    def _check(self) -> "InferenceSettings":
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"merge must be one of {MERGE_METHODS}, got {self.merge!r}")
        if self.match_metric not in MATCH_METRICS:
            raise ValueError(f"match_metric must be one of {MATCH_METRICS}, got {self.match_metric!r}")
        if self.tile <= 0 or self.batch <= 0:
            raise ValueError(f"tile and batch must be positive, got tile={self.tile}, batch={self.batch}")
        if self.tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {', '.join(TTA_VIEWS)}, got {self.tta!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0.0 <= self.conf <= 1.0 or not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"conf and iou must be in [0, 1], got conf={self.conf}, iou={self.iou}")
        bad = {name: c for name, c in (self.class_conf or {}).items() if not 0.0 <= c <= 1.0}
        if bad:
            raise ValueError(f"class_conf values must be in [0, 1], got {bad}")
        from rarespot.detect.backends import backend_problem  # here, not at import: backends pulls in the decoders

        if problem := backend_problem(self.backend):
            raise ValueError(f"{problem}, got {self.backend!r}")
        return self

    @classmethod
    def from_options(cls, **options) -> "InferenceSettings":
        """Settings from command-line options: a bad value is one line naming the option
        (``overlap: overlap must be in [0, 1), got 1.5``), not a validation traceback."""
        return validate_config(cls, options, None, "inference settings")  # InputError with no file: a RarespotError

    def replace(self, **changes) -> "InferenceSettings":
        """A copy with ``changes``, validated. The fields given stay marked as given
        (``model_fields_set``): batch screening records those in its run's settings."""
        given = {name: getattr(self, name) for name in self.model_fields_set}
        return type(self)(**{**given, **changes})

    def given(self, *leave_out: str) -> dict:
        """The fields set explicitly (not left at their defaults), minus ``leave_out``, by name."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set) if name not in leave_out}


def check_class_names(named, class_names, model=None, what: str = "class_conf names") -> None:
    """Every class ``named`` (per-class confidences) must be one of the model's ``class_names``:
    a typo would otherwise silently never apply. InputError naming the model otherwise."""
    unknown = sorted(set(named) - set(class_names))
    if unknown:
        raise InputError(model, f"{what} {unknown}, which the model does not have (its classes: {list(class_names)})")


def class_conf_from(value: str | Path) -> dict[str, float]:
    """Per-class thresholds from ``name=conf,name=conf`` or from the ``metrics.json`` that
    ``rarespot detect evaluate --per-class-conf`` wrote (its ``class_names`` and ``class_conf``)."""
    import json

    path = Path(value)
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read per-class confidences: {exc}") from None
        if not isinstance(data, dict) or not data.get("class_conf") or len(data["class_conf"]) != len(data.get("class_names", [])):
            raise InputError(path, "no per-class confidences in it (write them with `rarespot detect evaluate "
                                   "--calibrate-on val --per-class-conf`)")
        return {name: float(c) for name, c in zip(data["class_names"], data["class_conf"])}
    out = {}
    for part in str(value).split(","):
        name, sep, number = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(number)
        except ValueError:
            raise InputError(None, f"per-class confidences: {part!r} is not NAME=CONF (e.g. Straight_Knife=0.12)") from None
    return out
