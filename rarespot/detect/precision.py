"""Reduced precision (INT8, BF16, FP16) only behind an accuracy check, recorded in the model file.

``rarespot detect export --precision int8|bf16|fp16`` calibrates on training tiles (INT8),
then runs the reduced model and the fp32 model over held-out annotated scans and compares F1
at the operating confidence (:func:`rarespot.detect.export.export_onnx`). The outcome is stored
in the ONNX file's metadata under :data:`PRECISION_KEY`::

    {"precision": "int8", "status": "passed", "f1": 0.712, "f1_fp32": 0.716, "max_drop": 0.01,
     "scans": 18, "conf": 0.25, "fp32_model": "best.onnx"}

``status`` is ``passed`` (F1 fell by at most ``max_drop``), ``failed`` (it fell more: export kept
fp32 and wrote the reduced model aside, named ``*.int8-rejected.onnx``) or ``forced`` (the user
accepted it with ``--force``). Back-ends read the stamp (:func:`check_precision`) and refuse a
failed or unchecked reduced-precision model with a message naming the file and what to do.

BF16 and FP16 change how OpenVINO computes, not the weights in the file: such a model is the
fp32 graph plus the stamp, and onnxruntime runs it in fp32.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from rarespot.errors import InputError

PRECISION_KEY = "rarespot_precision"
PRECISIONS = ("fp32", "int8", "bf16", "fp16")
REDUCED = ("int8", "bf16", "fp16")
#: Largest F1 drop (against fp32, on held-out scans) a reduced-precision model may have.
MAX_F1_DROP = 0.01


def read_stamp(meta: dict) -> dict | None:
    """The precision record of an ONNX export's metadata (None when it has none)."""
    raw = meta.get(PRECISION_KEY)
    if not raw:
        return None
    try:
        stamp = json.loads(raw)
    except ValueError:
        return {"precision": "unknown", "status": "unreadable"}
    return stamp if isinstance(stamp, dict) else {"precision": "unknown", "status": "unreadable"}


def check_precision(path: Path, meta: dict, ops: set[str], runtime: str) -> str:
    """The precision ``runtime`` should run the model at; refuses (InputError naming ``path``)
    a reduced-precision model whose accuracy check failed, is missing or is unreadable."""
    stamp = read_stamp(meta)
    quantized = "QuantizeLinear" in ops or "DequantizeLinear" in ops
    if stamp is None:
        if quantized:
            raise InputError(
                path,
                "an INT8 model without an accuracy check (made before rarespot checked reduced precision); "
                "export it again with `rarespot detect export MODEL.pt --precision int8 --data RUN_FOLDER`, "
                "which calibrates on the training scans and checks F1 on held-out ones, or use the fp32 export",
            )
        return "fp32"
    precision, status = stamp.get("precision"), stamp.get("status")
    if precision not in PRECISIONS or status not in ("passed", "failed", "forced", None):
        raise InputError(path, f"unreadable precision record {meta.get(PRECISION_KEY)!r}; export the model again")
    if precision == "fp32":
        return "fp32"
    if status == "failed":
        fp32 = stamp.get("fp32_model") or "the fp32 export"
        raise InputError(
            path,
            f"its {precision.upper()} accuracy check failed at export (F1 {_f(stamp.get('f1'))} against "
            f"{_f(stamp.get('f1_fp32'))} in fp32 on {stamp.get('scans', '?')} held-out scans, more than "
            f"{stamp.get('max_drop', MAX_F1_DROP)} lower): use {fp32} instead, or export again with --force "
            "to accept the loss",
        )
    if status is None:
        raise InputError(
            path,
            f"a {precision.upper()} model without an accuracy check; export it again with "
            f"`rarespot detect export MODEL.pt --precision {precision} --data RUN_FOLDER`",
        )
    if status == "forced":
        warnings.warn(
            f"{path.name}: {precision.upper()} accepted with --force at export "
            f"(F1 {_f(stamp.get('f1'))} against {_f(stamp.get('f1_fp32'))} in fp32)",
            stacklevel=3,
        )
    if precision in ("bf16", "fp16") and runtime != "openvino":
        return "fp32"  # the file is the fp32 graph; only OpenVINO computes it in 16 bits
    return precision


def _f(value) -> str:
    return "?" if value is None else f"{float(value):.3f}"


def write_metadata(path: str | Path, entries: dict[str, str]) -> Path:
    """Set ONNX metadata entries (replacing same-named ones), atomically."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key in entries:
            model.metadata_props.remove(prop)
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def stamp_precision(path: str | Path, record: dict) -> Path:
    return write_metadata(path, {PRECISION_KEY: json.dumps(record)})


def onnx_metadata(path: Path) -> tuple[dict, set[str], list]:
    """(metadata, op types, input shape) of an ONNX file, without running it, and without
    importing ``onnx`` (:mod:`rarespot.detect.onnx_header`, a few milliseconds)."""
    from rarespot.detect.onnx_header import OnnxFormatError, read_onnx_header

    try:
        header = read_onnx_header(path)
    except OnnxFormatError as exc:
        raise InputError(path, f"not a valid ONNX model ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read it ({exc.strerror or exc})") from None
    return header.metadata, header.op_types, header.input_shape
