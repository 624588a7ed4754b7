"""ONNX export and the onnxruntime path: same boxes as torch, bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_detect import make_untrained_yolo
from rarespot.detect.export import export_onnx
from rarespot.detect.predict import TiledPredictor
from rarespot.errors import InputError

NAMES = ["knife", "gun"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("export")
    pt = make_untrained_yolo(folder / "lively.pt", NAMES, lively=True)
    onnx = export_onnx(pt, folder / "out" / "lively.onnx", imgsz=128)
    return pt, onnx


def _scan(seed=0):
    return np.random.default_rng(seed).integers(0, 65535, (200, 300), dtype=np.uint16)


def test_export_writes_onnx_with_names_and_nothing_else(models):
    pt, onnx = models
    assert onnx.is_file() and onnx.stat().st_size > 1_000_000
    assert sorted(p.name for p in onnx.parent.iterdir()) == ["lively.onnx"]  # no temp folders left behind
    predictor = TiledPredictor(onnx, tile=128)
    assert type(predictor.backend).__name__ == "OnnxBackend"
    assert predictor.class_names == NAMES
    assert predictor.backend.fixed_batch is None  # dynamic batch


def test_onnxruntime_path_gives_the_torch_boxes(models):
    """The same boxes and scores up to float noise. Not asserted box for box: with random
    weights many boxes sit within 1e-6 of the conf or NMS threshold, and torch and
    onnxruntime (thread counts, kernels) may round such a tie either way."""
    from rarespot.metrics.detection import match_detections

    pt, onnx = models
    kw = dict(tile=128, overlap=0.25, conf=0.05, iou=0.5, batch=4)
    torch_dets = TiledPredictor(pt, **kw).predict(_scan())
    onnx_dets = TiledPredictor(onnx, **kw).predict(_scan())
    assert len(torch_dets) > 20
    assert abs(len(onnx_dets) - len(torch_dets)) <= max(1, len(torch_dets) // 20)
    pairs = match_detections(
        onnx_dets.boxes, onnx_dets.scores, onnx_dets.labels, torch_dets.boxes, torch_dets.labels, iou=0.99
    )
    assert (pairs >= 0).mean() >= 0.95
    matched = pairs >= 0
    np.testing.assert_allclose(onnx_dets.scores[matched], torch_dets.scores[pairs[matched]], atol=1e-4)


def test_onnxruntime_wbf_agrees_with_torch(models):
    """WBF clusters in score order, so float noise (~1e-6) between runtimes can swap two
    near-equal scores and move a fused corner; nearly all boxes must still agree."""
    from rarespot.metrics.detection import box_iou

    pt, onnx = models
    kw = dict(tile=128, overlap=0.25, conf=0.05, iou=0.5, batch=4, merge="wbf")
    a = TiledPredictor(pt, **kw).predict(_scan())
    b = TiledPredictor(onnx, **kw).predict(_scan())
    assert abs(len(a) - len(b)) <= max(1, len(a) // 20)
    agree = (box_iou(a.boxes, b.boxes).max(axis=1) >= 0.9).mean()
    assert agree >= 0.9


@pytest.mark.slow
def test_fixed_batch_export_pads_the_last_chunk(models, tmp_path):
    pt, onnx = models
    fixed = export_onnx(pt, tmp_path / "fixed.onnx", imgsz=128, dynamic=False, batch=4)
    predictor = TiledPredictor(fixed, tile=128, overlap=0.25, conf=0.05, batch=8)  # 6 tiles: chunks of 4 + 2 padded
    assert predictor.backend.fixed_batch == 4
    reference = TiledPredictor(onnx, tile=128, overlap=0.25, conf=0.05).predict(_scan())
    dets = predictor.predict(_scan())
    np.testing.assert_allclose(dets.boxes, reference.boxes, atol=0.05)


def test_export_bad_input_is_named(models, tmp_path):
    pt, _ = models
    with pytest.raises(InputError, match="missing.pt: model file not found"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    text = tmp_path / "weights.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(InputError, match="weights.pt: not a YOLO checkpoint"):
        export_onnx(text, tmp_path / "m.onnx")
    with pytest.raises(InputError, match="m.txt: output file must end in .onnx"):
        export_onnx(pt, tmp_path / "m.txt")
    with pytest.raises(InputError, match="multiple of 32"):
        export_onnx(pt, tmp_path / "m.onnx", imgsz=500)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="a_file: cannot write to the output folder"):
        export_onnx(pt, blocker / "m.onnx")


def test_onnx_without_names_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    path = tmp_path / "plain.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # one every onnxruntime since 1.10 reads
    onnx.save(model, path)
    with pytest.raises(InputError, match="plain.onnx: ONNX file has no 'names' metadata"):
        TiledPredictor(path)


@pytest.mark.slow
def test_int8_export_runs_and_stays_close_to_fp32(models, tmp_path):
    """INT8 on a random-weight model: the same class names, and most boxes still found (a
    random net is a harsh case for quantization; a trained one is checked with evaluate)."""
    from rarespot.io.images import write_image
    from rarespot.metrics.detection import box_iou

    pt, onnx = models
    for i in range(2):
        write_image(tmp_path / "calib" / f"c{i}.png", _scan(seed=10 + i))
    q8 = export_onnx(pt, tmp_path / "q8.onnx", imgsz=128, int8=True, calibration=[tmp_path / "calib"], calibration_tiles=8)
    kw = dict(tile=128, overlap=0.25, conf=0.05)
    fp32 = TiledPredictor(onnx, **kw).predict(_scan())
    int8 = TiledPredictor(q8, **kw)
    assert int8.class_names == NAMES
    dets = int8.predict(_scan())
    assert len(dets) > 0
    found = (box_iou(fp32.boxes, dets.boxes).max(axis=1) >= 0.5).mean()
    assert found >= 0.5


def test_int8_needs_calibration(models, tmp_path):
    pt, _ = models
    with pytest.raises(InputError, match="calibration"):
        export_onnx(pt, tmp_path / "q8.onnx", imgsz=128, int8=True)
    with pytest.raises(InputError, match="nothing_here: image file not found"):
        export_onnx(pt, tmp_path / "q8.onnx", imgsz=128, int8=True, calibration=[tmp_path / "nothing_here"])
