"""Export a trained YOLO checkpoint to ONNX for onnxruntime inference.

Ultralytics' exporter does the work (graph export, onnxslim simplification,
class names / image size / stride in the ONNX metadata, which
:class:`rarespot.detect.backends.OnnxBackend` reads back). This module adds
what a deployment needs around it: the network size defaults to the tile
size used in training and inference, the file lands where asked (written
next to it first, then renamed: no half-written model), bad input is
reported naming the file, and optional INT8 quantization for CPUs.

INT8 (``int8=True``): onnxruntime's static quantization (QDQ, per-channel
weights) calibrated on tiles cut from a few of the user's own scans with the
same fixed grid and 8-bit mapping as inference. The box/score decoding at the
end of the head stays fp32, where a rounding error would move boxes or scores
directly. On CPUs with VNNI it needs ~40% less CPU time per scan (see
docs/benchmarks/detect_inference.md); check what it costs in accuracy with
``rarespot detect evaluate model_int8.onnx DATA`` before relying on it.
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
) -> Path:
    """Export ``model`` (a YOLO detection ``.pt``) to ``out`` (an ``.onnx`` path).

    imgsz: the network input size; use the tile size (512 in the seed).
    dynamic: any batch size (and size) at run time. With ``dynamic=False`` the
      batch is fixed to ``batch``; the ONNX back-end pads the last chunk.
    half: fp16 weights (GPU only; CPU onnxruntime runs fp32 faster).
    int8: quantize for CPU inference; needs ``calibration``: scan paths, a
      folder of scans, or a DetectionDataset (a few dozen tiles are enough).
    """
    from rarespot.detect.backends import UltralyticsBackend

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
    if int8 and half:
        raise InputError(None, "choose int8 or half, not both")
    mapping = UltralyticsBackend(src).input_mapping  # refuses a missing file, a non-checkpoint or a non-detection model
    tiles = calibration_tile_batch(calibration, imgsz, calibration_tiles, mapping) if int8 else None  # bad scans fail early
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
        if int8:
            quantized = work / f"{out.stem}.int8.onnx"
            quantize_int8(Path(exported), quantized, tiles)
            exported = quantized
        from rarespot.detect.preprocess import add_onnx_mapping

        add_onnx_mapping(exported, mapping)  # the ONNX back-end feeds scans the way the model was trained
        os.replace(exported, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def calibration_tile_batch(calibration, tile: int, limit: int = 32, mapping=None):
    """Up to ``limit`` uint8 BGR tiles from calibration scans, cut exactly as inference cuts them
    (with the model's input ``mapping``), spread evenly over the images and their grids."""
    import numpy as np

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
