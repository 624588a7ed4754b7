"""What the review app's API returns: the response bodies of :mod:`rarespot.serve.routes`."""

from __future__ import annotations

from pydantic import BaseModel


class DetectionOut(BaseModel):
    # Pixel corners in the scan's own grid; the same records as Detections.to_records().
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int
    class_name: str


class DetectResponse(BaseModel):
    id: str  # opaque key of the cached scan, for /render, /annotated and /detections (this client only)
    filename: str  # the client's file name, sanitised; only ever echoed
    format: str
    width: int
    height: int
    channels: int
    dtype: str
    value_range: list[float]  # darkest and brightest grey value, for window/level controls
    window: list[float] | None = None  # the file's own display window (DICOM centre, width), if it has one
    model: str
    class_names: list[str]
    floor_conf: float  # every box at or above this is returned
    default_conf: float  # the page's initial slider position
    elapsed_ms: float
    detections: list[DetectionOut]
    warnings: list[str] = []  # what the operator should know about this result (e.g. an old model and an 8-bit scan)


class ModelInfo(BaseModel):
    name: str
    default: bool
    class_names: list[str]
    floor_conf: float
    tile: int | None = None
    overlap: float | None = None
    iou: float | None = None
    merge: str | None = None
    input_mapping: str | None = None  # how the model maps a scan to its 8-bit input (stored with the model)
    runtime: str | None = None  # what runs the network: torch, onnxruntime or openvino


class Health(BaseModel):
    status: str
    version: str
    models: list[str]
    cached_scans: int
    pending_detections: int  # queued or running, including timed-out ones still stopping
    stopping_detections: int  # timed out (the client got 504) but not yet stopped


class ErrorOut(BaseModel):
    detail: str


#: The error responses a route documents (each a JSON ``{"detail": ...}``).
ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 429, 500, 503, 504)}
