"""Reading an ONNX file's metadata, op types and input shape without the onnx package
(rarespot.detect.onnx_header) gives what ``onnx.load`` gives, and damaged files are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers_detect import make_untrained_yolo
from rarespot.detect.onnx_header import OnnxFormatError, read_onnx_header
from rarespot.detect.precision import onnx_metadata, stamp_precision
from rarespot.errors import InputError


def _with_onnx(path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
             for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {p.key: p.value for p in model.metadata_props}, {n.op_type for n in model.graph.node}, shape


def _assert_same(path):
    header = read_onnx_header(path)
    meta, ops, shape = _with_onnx(path)
    assert header.metadata == meta
    assert header.op_types == ops
    assert header.input_shape == shape
    return header


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from rarespot.detect.export import export_onnx, quantize_int8

    folder = tmp_path_factory.mktemp("header")
    pt = make_untrained_yolo(folder / "m.pt", ["knife", "gun"])
    dynamic = export_onnx(pt, folder / "dynamic.onnx", imgsz=64)
    fixed = export_onnx(pt, folder / "fixed.onnx", imgsz=64, dynamic=False, batch=4)
    int8 = quantize_int8(dynamic, folder / "int8.onnx", np.zeros((2, 64, 64, 3), np.uint8))
    return {"dynamic": dynamic, "fixed": fixed, "int8": int8}


def test_exports_read_as_onnx_reads_them(exports):
    dynamic = _assert_same(exports["dynamic"])
    assert dynamic.input_shape[1] == 3 and isinstance(dynamic.input_shape[0], str)  # dynamic batch: its name
    assert "names" in dynamic.metadata and "rarespot_input" in dynamic.metadata
    assert {"Conv", "Concat"} <= dynamic.op_types and "QuantizeLinear" not in dynamic.op_types
    assert _assert_same(exports["fixed"]).input_shape == [4, 3, 64, 64]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _assert_same(exports["int8"]).op_types


def test_stamped_metadata_and_unusual_shapes(exports, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    stamped = tmp_path / "stamped.onnx"
    stamped.write_bytes(exports["dynamic"].read_bytes())
    record = {"precision": "int8", "status": "passed", "f1": 0.71, "note": "Größe \"quoted\"\n✓"}
    stamp_precision(stamped, record)
    assert json.loads(_assert_same(stamped).metadata["rarespot_precision"]) == record

    dims = [-1, 3, "height", None]  # a negative size, a named one, one with neither
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (("a", "1"), ("b", ""), ("a", "2")):  # a repeated key: the last one counts, as in onnx
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    odd = tmp_path / "odd.onnx"
    onnx.save(model, odd)
    header = _assert_same(odd)
    assert header.input_shape == [-1, 3, "height", "?"] and header.metadata == {"a": "2", "b": ""}


def test_damaged_files_are_refused_naming_the_file(exports, tmp_path):
    data = exports["dynamic"].read_bytes()
    cases = {
        "random.onnx": np.random.default_rng(0).bytes(2048),
        "half.onnx": data[: len(data) // 2],
        "text.onnx": b"these are not weights\n",
        "no_graph.onnx": b"\x08\x07",  # ir_version 7 and nothing else
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(OnnxFormatError):
            read_onnx_header(path)
        with pytest.raises(InputError, match=f"{name}: not a valid ONNX model"):
            onnx_metadata(path)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="empty.onnx: not a valid ONNX model"):
        onnx_metadata(tmp_path / "empty.onnx")


def test_reading_a_header_imports_neither_onnx_nor_torch(exports):
    code = (
        "import sys\nfrom rarespot.detect.precision import onnx_metadata\n"
        f"meta, ops, shape = onnx_metadata({str(exports['int8'])!r})\n"
        "assert 'names' in meta and 'QuantizeLinear' in ops, (meta, ops)\n"
        "print(sorted(m for m in ('onnx', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
