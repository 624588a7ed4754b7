"""Tiled (sliced) inference on full-resolution scans — seed 000's test protocol.

A scan is converted to the network's 8-bit BGR input once
(:func:`~rarespot.detect.preprocess.to_model_input`, the same mapping the
training tiles got), cut into a fixed grid of overlapping square tiles
(:func:`~rarespot.tiling.grid_tiles`; a scan smaller than a tile is padded),
the tiles go through the model in batches, their boxes are shifted back into
scan pixels and merged across tiles (NMS or weighted box fusion). An optional
extra pass over the whole scan, shrunk to one tile, finds objects larger than
a tile. Test-time views (``tta``) run every tile mirrored too; their boxes are
mirrored back and go into the same merge.

    >>> predictor = TiledPredictor("runs/exp/best.pt", InferenceSettings(tile=512, conf=0.25))
    >>> dets = predictor.predict_path("scan_0001.png")
    >>> dets.to_records()[0]
    {'x1': ..., 'y1': ..., 'x2': ..., 'y2': ..., 'score': ..., 'label': 0, 'class_name': 'knife'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from rarespot.detect.backends import DetectionBackend, load_backend, runnable_model_file
from rarespot.detect.foreground import ALL_BACKGROUND, find_foreground
from rarespot.detect.merge import merge_detections
from rarespot.detect.preprocess import CURRENT_INPUT_MAPPING, InputMapping, to_model_input
from rarespot.detect.settings import TTA_VIEWS, InferenceSettings, check_class_names
from rarespot.errors import InputError, RarespotError
from rarespot.io.atomic import ensure_writable_dir
from rarespot.progress import progress_iter
from rarespot.tiling import crop_tile, grid_tiles

#: Pixel types a scan may have (what rarespot.io.images.read_image returns, plus DICOM's signed 16-bit).
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


@dataclass
class PreparedScan:
    """What :meth:`TiledPredictor.prepare` makes of a scan before the network runs (a batch job
    prepares the next scans in another thread while the current one runs)."""

    windows: np.ndarray  # (k, 4) xyxy of the tiles to run
    n_tiles: int  # tiles in the full grid
    note: str  # the foreground test's remark (e.g. all background), "" when none
    bgr: np.ndarray | None  # the network's 8-bit input; None when no tile (and no full pass) runs
    shape: tuple[int, int]  # (height, width)


class DetectionCancelled(RarespotError):
    """A prediction stopped between two batches of tiles because its caller gave up (e.g. a timeout)."""


@dataclass
class Detections:
    """Objects found in one scan, in the scan's own pixels."""

    boxes: np.ndarray  # (n, 4) float pixel xyxy in the full image
    scores: np.ndarray  # (n,)
    labels: np.ndarray  # (n,) int, indices into class_names
    class_names: list[str]
    image_size: tuple[int, int] | None = None  # (height, width) of the scan
    info: dict = field(default_factory=dict)  # tiles, timings: for logs, not for metrics

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, conf) -> "Detections":
        """Only the detections with score >= ``conf`` (one confidence, or one per class)."""
        conf = np.asarray(conf, dtype=np.float64)
        keep = self.scores >= (conf[self.labels] if conf.ndim else conf)
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.class_names, self.image_size)

    def to_records(self) -> list[dict]:
        """One flat JSON-able dict per detection (CSV-friendly), highest score first."""
        return detections_to_records(self, self.class_names)


def detections_to_records(det, class_names: Sequence[str], min_score: float | None = None) -> list[dict]:
    """Detections (``boxes`` (n,4) xyxy px, ``scores``, ``labels``) of any predictor -> flat
    JSON-ready dicts (x1, y1, x2, y2, score, label, class_name), highest score first.

    ``det.class_names`` wins over ``class_names`` when it has any; ``min_score`` drops lower boxes.
    """
    boxes = np.asarray(getattr(det, "boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(getattr(det, "scores", np.zeros(0)), dtype=np.float64).reshape(-1)
    labels = np.asarray(getattr(det, "labels", np.zeros(0)), dtype=np.int64).reshape(-1)
    names = list(getattr(det, "class_names", None) or class_names)
    records = []
    for i in np.argsort(-scores, kind="stable"):
        if min_score is not None and scores[i] < min_score:
            continue
        label = int(labels[i])
        records.append(
            {
                **{k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), boxes[i])},
                "score": round(float(scores[i]), 5),
                "label": label,
                "class_name": names[label] if 0 <= label < len(names) else str(label),
            }
        )
    return records


def check_image(image: np.ndarray, path: str | Path | None = None) -> None:
    """Raise InputError (naming ``path``) for an array no scan reader would give."""
    if not isinstance(image, np.ndarray):
        raise InputError(path, f"expected a numpy image array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(path, f"unexpected image shape {image.shape}: expected HxW grey or HxWx3 colour")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(path, f"empty image (shape {image.shape})")
    if image.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            path, f"unsupported pixel type {image.dtype}: expected 8- or 16-bit integers (or float)"
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError(path, "image holds NaN or infinite values")


class Predictor(Protocol):
    """What the review app and batch screening need from a model: :class:`TiledPredictor`, or a
    stand-in in tests."""

    class_names: list[str]

    def predict(self, image: np.ndarray) -> Any: ...


class TiledPredictor:
    """Sliced inference with any back-end (``.pt`` via torch, ``.onnx`` via OpenVINO or onnxruntime).

    model: a weights file, or a ready :class:`DetectionBackend` (tests pass fakes).
    settings: an :class:`~rarespot.detect.settings.InferenceSettings` (tile, thresholds, merge,
      back-end, device ...; its fields are documented there).
    options: fields of the settings given as keywords, e.g. ``TiledPredictor(model, tile=512,
      conf=0.25)``; with ``settings`` too, they change those fields.
    """

    def __init__(
        self,
        model: str | Path | DetectionBackend,
        settings: InferenceSettings | None = None,
        **options,
    ):
        if settings is not None and not isinstance(settings, InferenceSettings):
            raise TypeError(
                f"settings must be an InferenceSettings, got {type(settings).__name__}; give tile, conf ... as keywords"
            )
        settings = settings or InferenceSettings()
        if options:
            settings = settings.replace(**options)
        self.settings = settings
        if isinstance(model, (str, Path)):
            self.backend = load_backend(
                model, backend=settings.backend, device=settings.device, imgsz=settings.imgsz,
                threads=settings.threads, tile=settings.tile,
            )
            self.model_path: Path | None = Path(model)
        else:
            self.backend = model
            self.model_path = None
        # Read on every batch and scan: plain attributes, copied from the (frozen) settings.
        self.tile, self.overlap, self.conf, self.iou = settings.tile, settings.overlap, settings.conf, settings.iou
        self.merge, self.class_agnostic, self.full_image_pass = settings.merge, settings.class_agnostic, settings.full_image_pass
        self.batch, self.match_metric, self.max_det = settings.batch, settings.match_metric, settings.max_det
        self.pad_value = settings.pad_value
        self.views = TTA_VIEWS[settings.tta]
        self.skip_background = settings.skip_background
        self.foreground = settings.foreground
        self.input_mapping: InputMapping = (
            settings.input_mapping or getattr(self.backend, "input_mapping", None) or CURRENT_INPUT_MAPPING
        )
        self._warned_8bit = False
        self.class_conf = self._class_thresholds(settings.class_conf)

    def _class_thresholds(self, class_conf: dict[str, float] | None) -> np.ndarray | None:
        """``settings.class_conf`` as one threshold per model class (``conf`` for the classes it does not name)."""
        if not class_conf:
            return None
        names = self.class_names
        check_class_names(class_conf, names, self.model_path)
        return np.array([class_conf.get(name, self.conf) for name in names], dtype=np.float64)

    def input_warning(self, image: np.ndarray) -> str | None:
        """A sentence for the operator when this model cannot read ``image`` as it reads its
        16-bit twin (a model that stores no input mapping, given an 8-bit scan); else None."""
        if self.input_mapping.windows(image):
            return None
        name = self.model_path.name if self.model_path is not None else "this model"
        return (
            f"{name} stores no input mapping (trained by plain Ultralytics, or by rarespot before it stored one): "
            f"8-bit scans reach it unwindowed, which is right for a model trained on 8-bit images; one trained on "
            f"16-bit scans may get fewer or no boxes from them. Then run "
            f"`rarespot detect input-mapping {self.model_path or 'MODEL'} --set percentile`, or retrain it."
        )

    def _warn_input_once(self, image: np.ndarray, stacklevel: int) -> None:
        """Warn (once per predictor) when :meth:`input_warning` has a sentence for ``image``."""
        import warnings

        if not self._warned_8bit and (note := self.input_warning(image)):
            warnings.warn(note, stacklevel=stacklevel)
            self._warned_8bit = True

    @property
    def class_names(self) -> list[str]:
        return list(self.backend.class_names)

    @property
    def runtime(self) -> str | None:
        """What runs the network: torch, onnxruntime or openvino (None for a back-end that does not say)."""
        return getattr(self.backend, "runtime", None)

    def predict_path(self, path: str | Path, conf: float | None = None) -> Detections:
        """Read a scan (PNG/TIFF/DICOM/JPEG, 8/16-bit) and predict; errors name the file."""
        from rarespot.io.images import read_image

        image = read_image(path)
        check_image(image, path)
        return self.predict(image, conf=conf)

    def prepare(self, image: np.ndarray) -> PreparedScan:
        """The tiles of ``image`` to run and the network's 8-bit input (no model call)."""
        check_image(image)
        height, width = image.shape[:2]
        windows = grid_tiles(height, width, self.tile, self.overlap)
        note = ""
        if self.skip_background:
            fg = find_foreground(image, self.foreground)  # on the scan as read: 16 bits stay 16 bits
            run = fg.tiles_to_run(windows)
            note = fg.reason
        else:
            run = np.ones(len(windows), dtype=bool)
        full = self.full_image_pass and (height > self.tile or width > self.tile) and note != ALL_BACKGROUND
        bgr = to_model_input(image, self.input_mapping) if run.any() or full else None
        return PreparedScan(windows[run], len(windows), note, bgr, (height, width))

    def predict(
        self, image: np.ndarray, conf: float | None = None, cancel=None, prepared: PreparedScan | None = None
    ) -> Detections:
        """Detections in a scan as read by ``read_image`` (HxW or HxWx3 RGB, 8/16-bit).

        ``conf`` overrides the predictor's threshold for this call (evaluation
        uses a low one to get the whole precision-recall curve). ``prepared``: this scan's
        :meth:`prepare`, when a caller made it ahead.
        ``cancel``: a ``threading.Event`` (or anything with ``is_set()``); once it is
        set, the prediction stops before the next batch of tiles with
        :class:`DetectionCancelled`, so a caller that gave up frees the CPU.
        """
        check_image(image)
        self._warn_input_once(image, stacklevel=3)
        ((_, _, result),) = self._stream([(None, lambda: (image, prepared))], conf, cancel)
        if isinstance(result, BaseException):
            raise result
        return result

    def predict_many(self, scans, conf: float | None = None):
        """Detections for a sequence of scans, in order, with the network kept busy from one scan
        to the next: batch work (``rarespot detect batch``).

        scans: (tag, load) pairs; ``load()`` returns (image, prepared or None) or raises.
        Yields (tag, image or None, Detections or the exception that scan raised): one scan's
        failure is its own result, the others go on. The same Detections as :meth:`predict` on
        each scan; on a back-end that runs asynchronously (OpenVINO) the next batch of tiles is
        already running while the previous one is decoded and merged.
        """

        def checked():
            for tag, load in scans:
                def load_checked(load=load):
                    image, prepared = load()
                    check_image(image)
                    self._warn_input_once(image, stacklevel=5)
                    return image, prepared

                yield tag, load_checked

        yield from self._stream(checked(), conf, None)

    def _stream(self, scans, conf: float | None, cancel):
        """The engine of :meth:`predict` and :meth:`predict_many`: batches of tiles go to the
        back-end in scan order; with an asynchronous back-end (``submit_tiles``/``collect_tiles``)
        one batch is submitted ahead of the one being collected, across scan boundaries too.
        Outputs are collected in submission order, so every scan's boxes come in the order of
        one-scan-at-a-time prediction, and merge to the same result."""
        import time
        from collections import deque

        # The predictor's own threshold may be one per class: the back-end keeps boxes above the lowest,
        # each scan's merged boxes are then cut at their class's. An explicit ``conf`` (evaluation sweeps) is one.
        per_class = self.class_conf if conf is None else None
        conf = self.conf if conf is None else float(conf)
        if per_class is not None:
            conf = min(conf, float(per_class.min()))
        asynchronous = hasattr(self.backend, "submit_tiles") and hasattr(self.backend, "collect_tiles")
        ahead = 1 if asynchronous else 0  # batches submitted beyond the one waited for
        inflight: deque = deque()  # (work, kind, extra, handle) in submission order
        waiting: deque = deque()  # scans in order, until all their batches are collected

        def check_cancelled() -> None:
            if cancel is not None and cancel.is_set():
                raise DetectionCancelled("detection cancelled")

        def submit(tiles: np.ndarray):
            if asynchronous:
                return self.backend.submit_tiles(tiles)
            return self.backend.predict_tiles(tiles, conf, self.iou, self.class_agnostic, self.max_det)

        def collect_oldest() -> None:
            work, kind, extra, handle = inflight.popleft()
            work.pending -= 1
            try:
                outputs = (
                    self.backend.collect_tiles(handle, conf, self.iou, self.class_agnostic, self.max_det)
                    if asynchronous else handle
                )
                if work.error is None:
                    self._add_outputs(work, kind, extra, outputs)
            except Exception as exc:  # this scan's failure, not the run's
                if work.error is None:
                    work.error = exc

        def finished():
            while waiting and waiting[0].submitted and waiting[0].pending == 0:
                work = waiting.popleft()
                if work.error is None:
                    try:
                        result = self._finish(work)
                        if per_class is not None:
                            result = result.above(per_class)
                    except Exception as exc:
                        result = exc
                else:
                    result = work.error
                yield work.tag, work.image, result

        try:
            for tag, load in scans:
                work = _ScanWork(tag, started=time.perf_counter())
                waiting.append(work)
                try:
                    check_cancelled()
                    work.image, prepared = load()
                    if prepared is None:
                        prepared = self.prepare(work.image)
                    elif prepared.shape != work.image.shape[:2]:
                        raise ValueError(f"prepared for a {prepared.shape} scan, given one of {work.image.shape[:2]}")
                    work.prepared = prepared
                    for kind, extra, tiles in self._batches(prepared):
                        check_cancelled()
                        inflight.append((work, kind, extra, submit(tiles)))
                        work.pending += 1
                        while len(inflight) > ahead:
                            collect_oldest()
                except DetectionCancelled:
                    raise
                except Exception as exc:  # unreadable scan, bad array: this scan's result
                    work.error = exc
                work.submitted = True
                yield from finished()
            while inflight:
                collect_oldest()
                yield from finished()
            yield from finished()
        finally:
            while inflight:  # cancelled or abandoned: wait for what already runs, so the back-end is free again
                work, _, _, handle = inflight.popleft()
                if asynchronous:
                    try:
                        self.backend.collect_tiles(handle, conf, self.iou, self.class_agnostic, self.max_det)
                    except Exception:
                        pass

    def _batches(self, prepared: PreparedScan):
        """(kind, extra, tiles) of one scan in order: batches of grid tiles, then the full-image tile;
        each batch once per test-time view (``settings.tta``), mirrored as the view says."""
        windows, bgr = prepared.windows, prepared.bgr
        height, width = prepared.shape
        for start in range(0, len(windows), self.batch):
            chunk = windows[start : start + self.batch]
            tiles = np.stack([crop_tile(bgr, int(x0), int(y0), self.tile, self.pad_value) for x0, y0, _, _ in chunk])
            for view in self.views:
                yield "tiles", (chunk, view), _flip_tiles(tiles, view)
        if self.full_image_pass and (height > self.tile or width > self.tile) and bgr is not None:
            canvas, sx, sy = self._full_canvas(bgr)
            for view in self.views:
                yield "full", (sx, sy, view), _flip_tiles(canvas[None], view)

    def _add_outputs(self, work: "_ScanWork", kind: str, extra, outputs) -> None:
        if kind == "full":
            sx, sy, view = extra
            boxes, scores, labels = outputs[0]
            boxes = _unflip_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), view, self.tile)
            boxes = boxes * np.array([sx, sy, sx, sy])
            work.boxes.append(boxes)
            work.scores.append(np.asarray(scores, dtype=np.float64))
            work.labels.append(np.asarray(labels, dtype=np.int64))
            return
        chunk, view = extra
        for (x0, y0, _, _), (boxes, scores, labels) in zip(chunk, outputs):
            # Clip to the tile first: the model saw nothing past it, and training labels were clipped
            # to their tiles too (rarespot.tiling.boxes_in_tile); Ultralytics and SAHI do the same.
            boxes = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 0, self.tile)
            boxes = _unflip_boxes(boxes, view, self.tile)
            work.boxes.append(boxes + [x0, y0, x0, y0])
            work.scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
            work.labels.append(np.asarray(labels, dtype=np.int64).reshape(-1))

    def _finish(self, work: "_ScanWork") -> Detections:
        """One scan's tile boxes -> clipped to the scan, merged across tiles, capped."""
        import time

        height, width = work.prepared.shape
        boxes = np.concatenate(work.boxes) if work.boxes else np.zeros((0, 4))
        scores = np.concatenate(work.scores) if work.scores else np.zeros(0)
        labels = np.concatenate(work.labels) if work.labels else np.zeros(0, dtype=np.int64)
        # Boxes may reach into the padding of a small scan: clip to the scan, drop what is left empty.
        boxes = np.clip(boxes, 0, [width, height, width, height])
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[visible], scores[visible], labels[visible]
        n_raw = len(scores)
        boxes, scores, labels = merge_detections(
            boxes, scores, labels, self.merge, self.iou, self.class_agnostic, self.match_metric
        )
        boxes, scores, labels = boxes[: self.max_det], scores[: self.max_det], labels[: self.max_det]
        info = {
            "tiles": int(work.prepared.n_tiles), "tiles_run": int(len(work.prepared.windows)),
            "note": work.prepared.note, "raw_boxes": int(n_raw), "seconds": time.perf_counter() - work.started,
        }
        return Detections(boxes, scores, labels, self.class_names, (height, width), info)

    def _full_canvas(self, bgr: np.ndarray):
        """The whole scan shrunk (aspect kept) into one padded tile, and the factors that scale its boxes back."""
        import cv2

        height, width = bgr.shape[:2]
        scale = self.tile / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        small = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return crop_tile(small, 0, 0, self.tile, self.pad_value), width / new_w, height / new_h


def _flip_tiles(tiles: np.ndarray, view: tuple[bool, bool]) -> np.ndarray:
    """(B, S, S, 3) tiles mirrored left-right and/or up-down as ``view`` says (a copy when flipped)."""
    flip_lr, flip_ud = view
    if flip_lr:
        tiles = tiles[:, :, ::-1]
    if flip_ud:
        tiles = tiles[:, ::-1]
    return np.ascontiguousarray(tiles) if (flip_lr or flip_ud) else tiles


def _unflip_boxes(boxes: np.ndarray, view: tuple[bool, bool], side: int) -> np.ndarray:
    """(n, 4) xyxy boxes found in a tile of ``side`` pixels mirrored as ``view`` says, in the unmirrored tile."""
    flip_lr, flip_ud = view
    if flip_lr:
        boxes = np.column_stack([side - boxes[:, 2], boxes[:, 1], side - boxes[:, 0], boxes[:, 3]])
    if flip_ud:
        boxes = np.column_stack([boxes[:, 0], side - boxes[:, 3], boxes[:, 2], side - boxes[:, 1]])
    return boxes


@dataclass
class _ScanWork:
    """One scan on its way through :meth:`TiledPredictor._stream`."""

    tag: object
    started: float
    image: np.ndarray | None = None
    prepared: PreparedScan | None = None
    error: BaseException | None = None
    pending: int = 0  # batches submitted and not yet collected
    submitted: bool = False  # all its batches submitted (or it failed)
    boxes: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    labels: list = field(default_factory=list)


# -- files in, files out (what `rarespot detect predict` runs) ---------------


def collect_images(inputs) -> list[Path]:
    """Image files from paths and folders (searched recursively), in a stable order."""
    from rarespot.io.images import is_image_file

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not images:
                raise InputError(path, "no images found in this folder")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise InputError(path, "image file not found")
    return found


def open_predictor(model: str | Path, settings: InferenceSettings | None = None) -> TiledPredictor:
    """A :class:`TiledPredictor` for a model file as ``detect predict``, ``detect batch`` and the review app open it:
    :func:`~rarespot.detect.backends.runnable_model_file` picks the file it runs (under ``auto`` on
    the CPU, a ``.pt``'s cached ONNX export); its messages name the file given, not the cached export."""
    settings = settings or InferenceSettings()
    predictor = TiledPredictor(runnable_model_file(model, settings), settings)
    predictor.model_path = Path(model)
    return predictor


def predict_files(
    predictor: TiledPredictor,
    inputs,
    out_dir: str | Path | None = None,
    overlays: bool = True,
    progress: bool = True,
    strict: bool = False,
) -> tuple[list[tuple[Path, Detections]], list[tuple[Path, str]]]:
    """Predict every image in ``inputs`` (files or folders); returns (results, skipped).

    With ``out_dir``: writes ``predictions.json`` (one entry per image, with the runtime that ran
    the network: torch, onnxruntime or openvino),
    ``predictions.csv`` (one row per box), ``skipped.csv`` (image, problem) when
    some could not be read and, with ``overlays``, ``overlays/<name>.png``
    (boxes drawn on the scan). An unreadable or malformed image is skipped and
    listed, or with ``strict`` stops the run with an error naming it; either
    way the predictions of the images already done are written first.
    """
    from rarespot.io.images import read_image

    paths = collect_images(inputs)
    out = ensure_writable_dir(out_dir) if out_dir is not None else None
    results: list[tuple[Path, Detections]] = []
    skipped: list[tuple[Path, str]] = []
    overlay_names: set[str] = set()
    try:
        for path in progress_iter(paths, progress, "predicting"):
            try:
                image = read_image(path)
                check_image(image, path)
            except InputError as exc:
                if strict:
                    raise
                skipped.append((path, exc.problem))
                continue
            dets = predictor.predict(image)
            results.append((path, dets))
            if out is not None and overlays:
                name = _unique_name(path, overlay_names)
                write_overlay(image, dets, out / "overlays" / f"{name}.png")
    finally:  # an error (or Ctrl-C) part-way still leaves the finished scans' predictions on disk
        if out is not None:
            write_predictions(results, out, skipped, runtime=getattr(predictor, "runtime", None))
    return results, skipped


def _unique_name(path: Path, taken: set[str]) -> str:
    name, k = path.stem, 1
    while name in taken:  # two folders may hold scans of the same name
        k += 1
        name = f"{path.stem}_{k}"
    taken.add(name)
    return name


def write_overlay(image: np.ndarray, dets: Detections, path: str | Path) -> Path:
    """The scan with its detections drawn (class and score), as a PNG."""
    from rarespot.viz import render_overlay, save_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = render_overlay(
        image, pred_boxes=dets.boxes, pred_labels=dets.labels, pred_scores=dets.scores, class_names=dets.class_names
    )
    return save_png(path, rgb)


def write_predictions(
    results: list[tuple[Path, Detections]], out_dir: str | Path, skipped: list[tuple[Path, str]] | None = None,
    runtime: str | None = None,
) -> tuple[Path, Path]:
    """``predictions.json`` and ``predictions.csv`` for a list of (image, detections); ``skipped.csv`` for unread images.
    ``runtime``: what ran the network (:attr:`TiledPredictor.runtime`), recorded in each entry when known."""
    import csv
    import io
    import json

    from rarespot.io.atomic import atomic_write_text

    out = Path(out_dir)
    entries = []
    buf = io.StringIO()
    fields = ["image", "x1", "y1", "x2", "y2", "score", "label", "class_name"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for path, dets in results:
        records = dets.to_records()
        height, width = dets.image_size or (None, None)
        entry = {"image": str(path), "width": width, "height": height, "detections": records}
        info = dets.info or {}
        if "tiles" in info:  # how much of the scan the network saw, and why not all of it
            entry.update(tiles=info["tiles"], tiles_inspected=info.get("tiles_run", info["tiles"]), note=info.get("note", ""))
        if runtime is not None:
            entry["runtime"] = runtime
        entries.append(entry)
        for rec in records:
            writer.writerow({"image": str(path), **rec})
    json_path = atomic_write_text(out / "predictions.json", json.dumps(entries, indent=1) + "\n")
    csv_path = atomic_write_text(out / "predictions.csv", buf.getvalue())
    if skipped:
        lines = io.StringIO()
        skip_writer = csv.writer(lines, lineterminator="\n")
        skip_writer.writerow(["image", "problem"])
        skip_writer.writerows((str(path), problem) for path, problem in skipped)
        atomic_write_text(out / "skipped.csv", lines.getvalue())
    elif (out / "skipped.csv").exists():
        (out / "skipped.csv").unlink()  # a stale list from an earlier run into this folder
    return json_path, csv_path
