"""Export a trained YOLO checkpoint to ONNX for onnxruntime inference.

Ultralytics' exporter does the work (graph export, onnxslim simplification,
class names / image size / stride in the ONNX metadata, which
:class:`rarespot.detect.backends.OnnxBackend` reads back). This module adds
what a deployment needs around it: the network size defaults to the tile
size used in training and inference, the file lands where asked (written
next to it first, then renamed: no half-written model), bad input is
reported naming the file, and optional INT8 quantization for CPUs.

Reduced precision (``precision="int8" | "bf16" | "fp16"``) only behind an accuracy gate
(:mod:`rarespot.detect.precision`): INT8 is onnxruntime's static quantization (QDQ, per-channel
weights; OpenVINO and onnxruntime both run it) calibrated on tiles cut from training scans with
the same fixed grid and 8-bit mapping as inference; the box/score decoding at the end of the
head stays fp32. BF16/FP16 are OpenVINO's 16-bit arithmetic on CPUs that have it (the file is
the fp32 graph). Then the reduced and the fp32 model run over held-out annotated scans, and
their F1 at the operating confidence is compared (INT8 on OpenVINO and on onnxruntime, which
round differently, and the lower F1 counts): a drop above 0.01 is reported and the fp32
model is written instead (the reduced one aside, marked as failed) unless ``force``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rarespot.errors import InputError


def export_onnx(
    model: str | Path,
    out: str | Path,
    imgsz: int = 512,
    dynamic: bool = True,
    batch: int = 1,
    simplify: bool = True,
    opset: int | None = None,
    half: bool = False,
    int8: bool = False,
    calibration=None,
    calibration_tiles: int = 32,
    *,
    precision: str | None = None,
    check=None,
    conf: float = 0.25,
    force: bool = False,
    max_drop: float | None = None,
    progress: bool = False,
) -> Path:
    """Export ``model`` (a YOLO detection ``.pt``) to ``out`` (an ``.onnx`` path).

    imgsz: the network input size; use the tile size (512 in the seed).
    dynamic: any batch size (and size) at run time. With ``dynamic=False`` the
      batch is fixed to ``batch``; the ONNX back-end pads the last chunk.
    half: fp16 weights (GPU only; CPU onnxruntime runs fp32 faster).
    precision: fp32 (default), int8, bf16 or fp16 (``int8=True`` is ``precision="int8"``).
    calibration: INT8's calibration scans: paths, a folder, or a DetectionDataset (the
      training split; a few dozen tiles are enough).
    check: held-out annotated scans (a DetectionDataset, a run folder's val split, a dataset
      folder) on which the reduced model's F1 at ``conf`` is compared with fp32's; required
      for reduced precision unless ``force``. The outcome is stored in the file (see
      :mod:`rarespot.detect.precision`); when F1 drops by more than ``max_drop`` (0.01) the fp32
      model is written to ``out``, the reduced one to ``OUT.<precision>-rejected.onnx``, and a
      warning says so, unless ``force``.
    """
    import warnings

    from rarespot.detect.backends import UltralyticsBackend
    from rarespot.detect.precision import MAX_F1_DROP, PRECISIONS, REDUCED, stamp_precision

    if precision is None:
        precision = "int8" if int8 else "fp32"
    if precision not in PRECISIONS:
        raise InputError(None, f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if int8 and precision != "int8":
        raise InputError(None, f"int8=True contradicts precision={precision!r}")
    int8 = precision == "int8"
    max_drop = MAX_F1_DROP if max_drop is None else float(max_drop)

    src = Path(model)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(out, "output file must end in .onnx")
    if imgsz <= 0 or imgsz % 32:
        raise InputError(None, f"imgsz must be a positive multiple of 32 (the network stride), got {imgsz}")
    if batch < 1:
        raise InputError(None, f"batch must be at least 1, got {batch}")
    if int8 and calibration is None:
        raise InputError(None, "int8 quantization needs calibration scans (a few of your own images)")
    if precision != "fp32" and half:
        raise InputError(None, f"choose {precision} or half, not both")
    if precision in REDUCED and check is None and not force:
        raise InputError(
            None,
            f"{precision} needs held-out annotated scans to check its F1 against fp32 (--data RUN_FOLDER, or "
            "--check DATA), or --force to export it unchecked",
        )
    if precision in ("bf16", "fp16"):
        _require_cpu_support(precision)
    mapping = UltralyticsBackend(src).input_mapping  # refuses a missing file, a non-checkpoint or a non-detection model
    tiles = calibration_tile_batch(calibration, imgsz, calibration_tiles, mapping) if int8 else None  # bad scans fail early
    check_data = _check_dataset(check) if check is not None else None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}.export-"))
    except OSError as exc:
        raise InputError(out.parent, f"cannot write to the output folder: {exc.strerror or exc}") from None
    try:
        # Ultralytics writes the export next to its input: export a private copy.
        local = work / f"{out.stem}.pt"
        shutil.copyfile(src, local)
        from ultralytics import YOLO

        exported = YOLO(str(local), task="detect").export(
            format="onnx", imgsz=imgsz, dynamic=dynamic, batch=batch, simplify=simplify, opset=opset,
            half=half, device="cpu" if not half else None, verbose=False,
        )
        from rarespot.detect.preprocess import add_onnx_mapping

        fp32 = Path(exported)
        add_onnx_mapping(fp32, mapping)  # the ONNX back-ends feed scans the way the model was trained
        if precision == "fp32":
            os.replace(fp32, out)
            return out
        reduced = work / f"{out.stem}.{precision}.onnx"
        if int8:
            quantize_int8(fp32, reduced, tiles)
            add_onnx_mapping(reduced, mapping)
        else:
            shutil.copyfile(fp32, reduced)  # 16-bit arithmetic is OpenVINO's choice at run time, not the file's
        record = {"precision": precision, "status": "forced", "max_drop": max_drop, "conf": conf, "fp32_model": out.name}
        if check_data is not None:
            stamp_precision(reduced, {**record, "status": "passed"})  # provisional: lets the back-end load it
            f1_fp32 = _f1_on(fp32, check_data, imgsz, conf, progress)
            # INT8 runs on either runtime (auto times both at load): it must pass on each.
            runtimes = ("openvino", "onnxruntime") if int8 else ("openvino",)
            f1 = min(_f1_on(reduced, check_data, imgsz, conf, progress, backend=b) for b in _installed(runtimes))
            passed = f1 >= f1_fp32 - max_drop - 1e-12
            record.update(f1=round(f1, 4), f1_fp32=round(f1_fp32, 4), scans=len(check_data),
                          status="passed" if passed else ("forced" if force else "failed"))
        if record["status"] == "failed":
            rejected = out.with_name(f"{out.stem}.{precision}-rejected.onnx")
            stamp_precision(reduced, record)
            stamp_precision(fp32, {"precision": "fp32", "status": "passed", "rejected": record})
            os.replace(reduced, rejected)
            os.replace(fp32, out)
            warnings.warn(
                f"{precision.upper()} lowered F1 from {record['f1_fp32']:.3f} (fp32) to {record['f1']:.3f} on "
                f"{record['scans']} held-out scans, more than {max_drop}: wrote the fp32 model to {out} and the "
                f"{precision.upper()} one to {rejected} (refused when loaded); --force keeps {precision.upper()}",
                stacklevel=2,
            )
            return out
        stamp_precision(reduced, record)
        os.replace(reduced, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _require_cpu_support(precision: str) -> None:
    """BF16/FP16 need the CPU's own 16-bit arithmetic (OpenVINO's list of what this CPU does)."""
    try:
        import openvino as ov
    except ImportError:
        raise InputError(None, f"{precision} runs on OpenVINO; install it (pip install 'rarespot[detect]')") from None
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if precision.upper() not in capabilities:
        raise InputError(
            None, f"this CPU has no {precision.upper()} arithmetic (OpenVINO reports {', '.join(capabilities)}): use int8 or fp32"
        )


def _check_dataset(check):
    """Held-out annotated scans for the accuracy check: a DetectionDataset, a run folder (its
    validation split) or a dataset folder."""
    from rarespot.io.dataset import DetectionDataset

    if isinstance(check, DetectionDataset):
        data = check
    else:
        from rarespot.detect.evaluate import load_eval_data

        path = Path(check)
        data = load_eval_data(path, "val" if (path / "split.json").is_file() else None)
    if len(data) == 0:
        raise InputError(getattr(data, "root", None), "no held-out scans to check the reduced precision on")
    return data


def _installed(runtimes) -> list[str]:
    from rarespot.detect.backends import _onnxruntime_available, openvino_available

    have = {"openvino": openvino_available(), "onnxruntime": _onnxruntime_available()}
    return [r for r in runtimes if have[r]] or ["onnxruntime"]


def _f1_on(model: Path, data, tile: int, conf: float, progress: bool, backend: str = "auto") -> float:
    """F1 of ``model`` at ``conf`` on ``data`` with the seed's protocol (tiles of the network size, IoU 0.5)."""
    from rarespot.detect.evaluate import evaluate
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.settings import InferenceSettings

    predictor = TiledPredictor(model, InferenceSettings(tile=tile, overlap=0.2, conf=conf, backend=backend))
    aware = not (len(predictor.class_names) == 1 and data.num_classes > 1)
    result = evaluate(predictor, data, conf_for_prf=conf, progress=progress, class_aware=aware, keep_predictions=False)
    return float(result.f1)


def cache_dir() -> Path:
    """Where converted models are kept: ``$RARESPOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rarespot``."""
    root = os.environ.get("RARESPOT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rarespot"
    )
    return Path(root)


def cached_onnx(model: str | Path, imgsz: int) -> Path:
    """The fp32 ONNX export of a ``.pt`` checkpoint at ``imgsz``, made once and kept in
    :func:`cache_dir` under the checkpoint's content hash (a retrained ``best.pt`` gets a new one)."""
    import hashlib

    src = Path(model)
    if not src.is_file():
        raise InputError(src, "model file not found")
    digest = hashlib.sha1()
    with src.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    target = cache_dir() / "onnx" / f"{src.stem}-{digest.hexdigest()[:16]}-{imgsz}.onnx"
    if not target.is_file():
        export_onnx(src, target, imgsz=imgsz)
    return target


def calibration_tile_batch(calibration, tile: int, limit: int = 32, mapping=None):
    """Up to ``limit`` uint8 BGR tiles from calibration scans, cut exactly as inference cuts them
    (with the model's input ``mapping``), spread evenly over the images and over the grid tiles
    that hold foreground (:mod:`rarespot.detect.foreground`)."""
    import numpy as np

    from rarespot.detect.foreground import find_foreground
    from rarespot.detect.predict import check_image, collect_images
    from rarespot.detect.preprocess import CURRENT_INPUT_MAPPING, to_model_input
    from rarespot.io.dataset import DetectionDataset
    from rarespot.io.images import read_image
    from rarespot.tiling import crop_tile, grid_tiles

    if isinstance(calibration, DetectionDataset):
        paths = [calibration.image_path(r) for r in calibration.records]
    else:
        items = [calibration] if isinstance(calibration, (str, Path)) else list(calibration)
        paths = collect_images(items)
    if not paths:
        raise InputError(None, "no calibration images")
    paths = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(len(paths), limit)).astype(int))]
    per_image = max(1, -(-limit // len(paths)))  # ceil
    tiles = []
    for path in paths:
        image = read_image(path)
        check_image(image, path)
        bgr = to_model_input(image, mapping or CURRENT_INPUT_MAPPING)
        windows = grid_tiles(bgr.shape[0], bgr.shape[1], tile, 0.2)
        # Calibrate on what the network will see: the tiles tile skipping keeps (air tiles would set
        # the activation ranges of an empty picture).
        keep = find_foreground(image).tiles_to_run(windows)
        if keep.any():
            windows = windows[keep]
        for k in np.unique(np.linspace(0, len(windows) - 1, min(len(windows), per_image)).astype(int)):
            x0, y0 = int(windows[k][0]), int(windows[k][1])
            tiles.append(crop_tile(bgr, x0, y0, tile))
    return np.stack(tiles[:limit])


def quantize_int8(src: Path, out: Path, tiles) -> Path:
    """Static INT8 (QDQ) quantization of an Ultralytics ONNX export, calibrated on ``tiles``.

    The detection head's decoding (DFL, anchors, sigmoid, concat) and the last
    1x1 convolutions that produce box distributions and class logits stay fp32.
    """
    import re

    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(src)).graph
    input_name = graph.input[0].name
    prefixes = [m.group(0) for n in graph.node if (m := re.match(r"^/model\.(\d+)/", n.name))]
    head = max(prefixes, key=lambda p: int(p.split(".")[1].rstrip("/"))) if prefixes else None
    last_convs = re.compile(r"cv[23]\.\d+\.2/Conv$")  # the 1x1 convs that emit box bins and class logits
    exclude = [
        n.name for n in graph.node
        if head and n.name.startswith(head) and (n.op_type != "Conv" or "/dfl/" in n.name or last_convs.search(n.name))
    ]

    class Tiles(CalibrationDataReader):
        def __init__(self):
            # BGR uint8 HWC -> RGB float CHW in [0, 1], as the network is fed at inference.
            self._batches = iter(
                {input_name: (t[None, :, :, ::-1].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)} for t in tiles
            )

        def get_next(self):
            return next(self._batches, None)

    quantize_static(
        str(src), str(out), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
    )
    return out
