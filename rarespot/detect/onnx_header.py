"""What a back-end needs to know about an ONNX file before running it, read without the ``onnx`` package.

The metadata entries (class names, input size, input mapping, precision record), the node op
types (a quantized model has QuantizeLinear/DequantizeLinear nodes) and the first input's shape.
``import onnx`` costs ~0.6 CPU seconds (most of it its ml_dtypes extension), a good part of a
short ``rarespot detect batch``; this reads the few fields it needs straight from the protobuf
wire format (https://protobuf.dev/programming-guides/encoding/) and skips everything else (the
weights) by length, in a few milliseconds. tests/test_detect_onnx_header.py checks it against
``onnx.load`` on exports, quantized and stamped models, and refuses damaged files.

Field numbers, from onnx/onnx.proto: ModelProto.graph = 7, .metadata_props = 14;
StringStringEntryProto.key = 1, .value = 2; GraphProto.node = 1, .input = 11;
NodeProto.op_type = 4; ValueInfoProto.type = 2; TypeProto.tensor_type = 1;
TypeProto.Tensor.shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1, .dim_param = 2.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """The bytes are not a readable ONNX (protobuf) model."""


@dataclass
class OnnxHeader:
    metadata: dict[str, str] = field(default_factory=dict)
    op_types: set[str] = field(default_factory=set)
    input_shape: list = field(default_factory=list)  # ints for fixed sizes, the name (or "?") for dynamic ones


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise OnnxFormatError("varint longer than 10 bytes")


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of the message in ``buf[start:end]``: an int for varints,
    a (start, end) span for length-delimited fields, None for fixed-size ones."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxFormatError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _BYTES:
            size, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + size), pos + size
        elif wire == _FIXED64:
            value, pos = None, pos + 8
        elif wire == _FIXED32:
            value, pos = None, pos + 4
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise OnnxFormatError(f"wire type {wire}")
        if pos > end:
            raise OnnxFormatError("field runs past the end of its message")
        yield number, wire, value


def _span(wire: int, value, what: str) -> tuple[int, int]:
    if wire != _BYTES:
        raise OnnxFormatError(f"{what} is not length-delimited")
    return value


def _text(buf, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8")


def _submessage(buf, span: tuple[int, int], number: int, what: str):
    """Spans of field ``number`` (a message or string) inside the message at ``span``."""
    for n, wire, value in _fields(buf, *span):
        if n == number:
            yield _span(wire, value, what)


def _dimension(buf, span: tuple[int, int]):
    dim = "?"
    for n, wire, value in _fields(buf, *span):
        if n == 1 and wire == _VARINT:
            dim = value - (1 << 64) if value >= 1 << 63 else value  # int64, two's complement
        elif n == 2:
            dim = _text(buf, _span(wire, value, "dim_param")) or "?"
    return dim


def _input_shape(buf, span: tuple[int, int]) -> list:
    shape: list = []
    for type_span in _submessage(buf, span, 2, "ValueInfoProto.type"):
        for tensor_span in _submessage(buf, type_span, 1, "TypeProto.tensor_type"):
            for shape_span in _submessage(buf, tensor_span, 2, "TypeProto.Tensor.shape"):
                shape = [_dimension(buf, dim) for dim in _submessage(buf, shape_span, 1, "TensorShapeProto.dim")]
    return shape


def _parse(buf, end: int) -> OnnxHeader:
    header = OnnxHeader()
    graphs = []
    for number, wire, value in _fields(buf, 0, end):
        if number == 14:
            key = val = ""
            for n, w, v in _fields(buf, *_span(wire, value, "metadata_props")):
                if n == 1:
                    key = _text(buf, _span(w, v, "metadata key"))
                elif n == 2:
                    val = _text(buf, _span(w, v, "metadata value"))
            header.metadata[key] = val
        elif number == 7:
            graphs.append(_span(wire, value, "graph"))
        elif number == 1 and wire != _VARINT:
            raise OnnxFormatError("ir_version is not a varint")
    if not graphs:
        raise OnnxFormatError("no graph")
    first_input = None
    for graph in graphs:  # a repeated singular message merges: nodes and inputs add up
        for number, wire, value in _fields(buf, *graph):
            if number == 1:
                for op in _submessage(buf, _span(wire, value, "node"), 4, "op_type"):
                    header.op_types.add(_text(buf, op))
            elif number == 11 and first_input is None:
                first_input = _span(wire, value, "input")
    if first_input is not None:
        header.input_shape = _input_shape(buf, first_input)
    return header


def read_onnx_header(path: str | Path) -> OnnxHeader:
    """Metadata, op types and first input shape of an ONNX file; :class:`OnnxFormatError` when
    the file is not a readable ONNX model (external weight files are not opened)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            raise OnnxFormatError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            try:
                return _parse(mapped, size)
            except (IndexError, UnicodeDecodeError) as exc:
                raise OnnxFormatError(str(exc)) from None
