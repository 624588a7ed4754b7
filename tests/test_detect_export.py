"""ONNX export, the onnxruntime and OpenVINO paths (same boxes as torch), the reduced-precision
gate, and bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_detect import make_untrained_yolo
from rarespot.detect.export import export_onnx
from rarespot.detect.predict import TiledPredictor
from rarespot.errors import InputError

NAMES = ["knife", "gun"]


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RARESPOT_CACHE_DIR", str(tmp_path / "cache"))


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
    # auto: OpenVINO and onnxruntime timed on the same tiles, the faster kept
    assert set(predictor.backend.timed) == {"openvino", "onnxruntime"}
    faster = min(predictor.backend.timed, key=predictor.backend.timed.get)
    assert type(predictor.backend).__name__ == {"openvino": "OpenVinoBackend", "onnxruntime": "OnnxBackend"}[faster]
    assert predictor.class_names == NAMES
    assert predictor.backend.fixed_batch is None  # dynamic batch
    assert predictor.backend.precision == "fp32"
    ort = TiledPredictor(onnx, tile=128, backend="onnxruntime")
    assert type(ort.backend).__name__ == "OnnxBackend" and ort.class_names == NAMES


def test_the_auto_choice_is_timed_once_per_model_and_machine_and_kept(models, tmp_path, monkeypatch):
    """A later process reads the verdict from the cache and opens only the chosen runtime;
    RARESPOT_RETIME_BACKEND=1 times again; a verdict for another machine or file is not used."""
    import json

    from rarespot.detect import backends

    _, onnx = models
    opened = []
    for cls in (backends.OpenVinoBackend, backends.OnnxBackend):
        monkeypatch.setattr(cls, "_raw", lambda self, batch, _raw=cls._raw: (opened.append(type(self).__name__), _raw(self, batch))[1])

    def load():
        monkeypatch.setattr(backends, "_FASTEST", {})  # a new process: nothing remembered in memory
        opened.clear()
        return TiledPredictor(onnx, tile=128).backend

    first = load()
    assert {"OpenVinoBackend", "OnnxBackend"} <= set(opened)  # both timed
    files = list((tmp_path / "cache" / "backend_choice").glob("lively-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["backend"] == {"OpenVinoBackend": "openvino", "OnnxBackend": "onnxruntime"}[type(first).__name__]
    assert set(record["timed"]) == {"openvino", "onnxruntime"} and record["key"]["cores"] >= 1

    # Read back: only the chosen runtime is opened, none is timed. A hand-edited verdict shows it is the file that decides.
    record["backend"] = "onnxruntime" if record["backend"] == "openvino" else "openvino"
    files[0].write_text(json.dumps(record))
    second = load()
    assert opened == [] and type(second).__name__ != type(first).__name__
    assert second.timed == record["timed"]

    monkeypatch.setenv("RARESPOT_RETIME_BACKEND", "1")
    load()
    assert {"OpenVinoBackend", "OnnxBackend"} <= set(opened)  # timed again, and the verdict replaced
    assert json.loads(files[0].read_text())["timed_at"] and json.loads(files[0].read_text())["key"] == record["key"]
    monkeypatch.delenv("RARESPOT_RETIME_BACKEND")

    record["key"] = {**record["key"], "cpu": "another CPU"}  # a verdict copied from another machine
    files[0].write_text(json.dumps(record))
    load()
    assert {"OpenVinoBackend", "OnnxBackend"} <= set(opened)


def test_openvino_keeps_its_compiled_model_in_the_cache_with_the_same_outputs(models, tmp_path):
    from rarespot.detect.backends import OpenVinoBackend

    _, onnx = models
    tiles = np.random.default_rng(1).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    first = OpenVinoBackend(onnx, tile=128)
    blobs = list((tmp_path / "cache" / "openvino").glob("*.blob"))
    assert first.compile_cache == tmp_path / "cache" / "openvino" and len(blobs) == 1
    second = OpenVinoBackend(onnx, tile=128)  # imported from the blob, not compiled
    assert list((tmp_path / "cache" / "openvino").glob("*.blob")) == blobs
    np.testing.assert_array_equal(first._raw(first._prepare(tiles, 128)), second._raw(second._prepare(tiles, 128)))


class _OneBatchAtATime:
    """A back-end without its asynchronous methods: the tiler waits for every batch."""

    def __init__(self, backend):
        self.backend, self.class_names, self.input_mapping = backend, backend.class_names, backend.input_mapping

    def predict_tiles(self, *args):
        return self.backend.predict_tiles(*args)


def _same_detections(a, b):
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert {k: v for k, v in a.info.items() if k != "seconds"} == {k: v for k, v in b.info.items() if k != "seconds"}


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("full_image_pass", [False, True])
def test_streamed_scans_equal_one_batch_at_a_time(models, runtime, full_image_pass):
    """predict_many keeps a batch running while the last is decoded, across scans: the same boxes,
    in the same order, as waiting for each batch; a scan that fails is its own result."""
    from rarespot.detect.backends import OnnxBackend, OpenVinoBackend
    from rarespot.errors import InputError

    _, onnx = models
    backend = {"openvino": OpenVinoBackend, "onnxruntime": OnnxBackend}[runtime](onnx, tile=128)
    kw = dict(tile=128, overlap=0.25, conf=0.05, iou=0.5, batch=3, full_image_pass=full_image_pass)
    streamed, waited = TiledPredictor(backend, **kw), TiledPredictor(_OneBatchAtATime(backend), **kw)
    scans = [_scan(seed) for seed in range(4)] + [np.zeros((90, 400), np.uint16), _scan(9)[:130, :150]]

    def load(k):
        if k == 2:
            raise InputError("scan_2.png", "cannot read it")
        return scans[k], (streamed.prepare(scans[k]) if k % 2 else None)  # prepared ahead or not

    out = list(streamed.predict_many((k, lambda k=k: load(k)) for k in range(len(scans))))
    assert [tag for tag, _, _ in out] == list(range(len(scans)))
    assert isinstance(out[2][2], InputError) and out[2][1] is None
    n_boxes = 0
    for k, image, dets in out:
        if k != 2:
            assert image is scans[k]
            _same_detections(dets, waited.predict(scans[k]))
            _same_detections(streamed.predict(scans[k]), dets)
            n_boxes += len(dets)
    assert n_boxes > 20
    assert out[4][2].info["note"]  # the blank scan: nothing to inspect, said so


def test_openvino_cancel_and_threads_leave_the_back_end_usable(models):
    import threading

    from rarespot.detect.backends import OpenVinoBackend
    from rarespot.detect.predict import DetectionCancelled

    _, onnx = models
    backend = OpenVinoBackend(onnx, tile=128)
    predictor = TiledPredictor(backend, tile=128, overlap=0.25, conf=0.05, batch=2)
    reference = predictor.predict(_scan(0))

    class CancelAfter:  # set once the tiler asked twice: two batches are then running or done
        def __init__(self):
            self.asked = 0

        def is_set(self):
            self.asked += 1
            return self.asked > 3

    with pytest.raises(DetectionCancelled):
        predictor.predict(_scan(0), cancel=CancelAfter())
    results = [None] * 4

    def work(k):
        results[k] = predictor.predict(_scan(k % 2))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _same_detections(results[0], reference)
    _same_detections(results[2], reference)
    _same_detections(results[1], results[3])
    assert backend._idle and all(r.wait_for(0) for r in backend._idle)  # every request back in the pool, idle


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_paths_give_the_torch_boxes(models, backend):
    """The same boxes and scores up to float noise. Not asserted box for box: with random
    weights many boxes sit within 1e-6 of the conf or NMS threshold, and torch and
    onnxruntime/OpenVINO (thread counts, kernels) may round such a tie either way."""
    from rarespot.metrics.detection import match_detections

    pt, onnx = models
    kw = dict(tile=128, overlap=0.25, conf=0.05, iou=0.5, batch=4)
    torch_dets = TiledPredictor(pt, **kw).predict(_scan())
    onnx_dets = TiledPredictor(onnx, backend=backend, **kw).predict(_scan())
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
    b = TiledPredictor(onnx, backend="onnxruntime", **kw).predict(_scan())
    assert abs(len(a) - len(b)) <= max(1, len(a) // 20)
    agree = (box_iou(a.boxes, b.boxes).max(axis=1) >= 0.9).mean()
    assert agree >= 0.9


@pytest.mark.slow
def test_fixed_batch_export_pads_the_last_chunk(models, tmp_path):
    pt, onnx = models
    fixed = export_onnx(pt, tmp_path / "fixed.onnx", imgsz=128, dynamic=False, batch=4)
    reference = TiledPredictor(onnx, tile=128, overlap=0.25, conf=0.05, backend="onnxruntime").predict(_scan())
    for backend in ("onnxruntime", "openvino"):
        # 6 tiles: chunks of 4 + 2 padded
        predictor = TiledPredictor(fixed, tile=128, overlap=0.25, conf=0.05, batch=8, backend=backend)
        assert predictor.backend.fixed_batch == 4
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


def _check_set(folder, n=3):
    """A few annotated 16-bit scans (VOC) for the accuracy check."""
    from rarespot.io.dataset import DetectionDataset, ImageRecord
    from rarespot.io.images import write_image

    records = []
    for i in range(n):
        write_image(folder / "images" / f"c{i}.png", _scan(seed=20 + i))
        records.append(ImageRecord(path=folder / "images" / f"c{i}.png", width=300, height=200,
                                   boxes=np.array([[40.0, 40.0, 90.0, 100.0]]), labels=np.array([i % 2])))
    return DetectionDataset(NAMES, records, folder)


@pytest.mark.slow
def test_int8_export_runs_and_stays_close_to_fp32(models, tmp_path):
    """INT8 on a random-weight model, checked on annotated scans: the same class names, the check's
    outcome stored, and most boxes still found (a random net is a harsh case for quantization)."""
    from rarespot.detect.precision import onnx_metadata, read_stamp
    from rarespot.io.images import write_image
    from rarespot.metrics.detection import box_iou

    pt, onnx = models
    for i in range(2):
        write_image(tmp_path / "calib" / f"c{i}.png", _scan(seed=10 + i))
    q8 = export_onnx(pt, tmp_path / "q8.onnx", imgsz=128, int8=True, calibration=[tmp_path / "calib"],
                     calibration_tiles=8, check=_check_set(tmp_path / "check"), conf=0.05, force=True)
    stamp = read_stamp(onnx_metadata(q8)[0])
    assert stamp["precision"] == "int8" and stamp["scans"] == 3 and stamp["f1"] is not None
    assert stamp["status"] in ("passed", "forced")
    kw = dict(tile=128, overlap=0.25, conf=0.05)
    fp32 = TiledPredictor(onnx, **kw).predict(_scan())
    for backend in ("openvino", "onnxruntime"):
        int8 = TiledPredictor(q8, backend=backend, **kw)
        assert int8.class_names == NAMES and int8.backend.precision == "int8"
        dets = int8.predict(_scan())
        assert len(dets) > 0
        found = (box_iou(fp32.boxes, dets.boxes).max(axis=1) >= 0.5).mean()
        assert found >= 0.5


def _cpu_has(precision: str) -> bool:
    import openvino as ov

    return precision.upper() in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(not _cpu_has("bf16"), reason="this CPU has no BF16 arithmetic")
def test_reduced_precision_that_loses_f1_keeps_fp32_and_the_rejected_file_is_refused(models, tmp_path, monkeypatch):
    """The gate itself: an F1 drop of 0.02 (> 0.01) writes fp32 to the output and the BF16 model aside,
    which every back-end then refuses, naming the file and what to do; --force keeps it."""
    import rarespot.detect.export as export
    from rarespot.detect.precision import onnx_metadata, read_stamp

    pt, _ = models
    scores = iter([0.80, 0.78, 0.80, 0.78, 0.80, 0.795])  # fp32, reduced: failed; forced; passed (0.005 drop)
    monkeypatch.setattr(export, "_f1_on", lambda *a, **k: next(scores))
    check = _check_set(tmp_path / "check")
    with pytest.warns(UserWarning, match=r"lowered F1 from 0.800 \(fp32\) to 0.780"):
        out = export_onnx(pt, tmp_path / "m.onnx", imgsz=128, precision="bf16", check=check)
    assert read_stamp(onnx_metadata(out)[0])["precision"] == "fp32"
    assert TiledPredictor(out, tile=128).backend.precision == "fp32"
    rejected = tmp_path / "m.bf16-rejected.onnx"
    assert read_stamp(onnx_metadata(rejected)[0])["status"] == "failed"
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(InputError, match=r"m.bf16-rejected.onnx: its BF16 accuracy check failed .* use m.onnx"):
            TiledPredictor(rejected, tile=128, backend=backend)

    forced = export_onnx(pt, tmp_path / "f.onnx", imgsz=128, precision="bf16", check=check, force=True)
    assert read_stamp(onnx_metadata(forced)[0])["status"] == "forced"
    with pytest.warns(UserWarning, match="accepted with --force"):
        assert TiledPredictor(forced, tile=128).backend.precision == "bf16"
    passed = export_onnx(pt, tmp_path / "p.onnx", imgsz=128, precision="bf16", check=check)
    assert read_stamp(onnx_metadata(passed)[0])["status"] == "passed"
    assert TiledPredictor(passed, tile=128).backend.precision == "bf16"
    assert TiledPredictor(passed, tile=128, backend="onnxruntime").backend.precision == "fp32"  # 16 bits: OpenVINO only


def test_unchecked_int8_and_another_input_size_are_refused(models, tmp_path):
    from rarespot.detect.export import quantize_int8

    pt, onnx = models
    legacy = quantize_int8(onnx, tmp_path / "legacy_int8.onnx", np.zeros((2, 128, 128, 3), np.uint8))
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(InputError, match="legacy_int8.onnx: an INT8 model without an accuracy check.*--precision int8"):
            TiledPredictor(legacy, tile=128, backend=backend)
        with pytest.raises(InputError, match=r"lively.onnx: exported for a 128-px network input, but tiles of 256 px "
                                              r"need 256 px: export it again .*--imgsz 256.*or predict with --tile 128"):
            TiledPredictor(onnx, tile=256, backend=backend)
    with pytest.raises(InputError, match="needs held-out annotated scans"):
        export_onnx(pt, tmp_path / "q.onnx", imgsz=128, precision="int8", calibration=[tmp_path])


def test_a_pt_on_openvino_is_exported_once_into_the_cache(models, tmp_path):
    pt, _ = models
    first = TiledPredictor(pt, tile=128, backend="openvino")
    cached = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.endswith("-128.onnx")
    stamp = cached[0].stat().st_mtime_ns
    second = TiledPredictor(pt, tile=128, backend="openvino")
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not exported again
    assert type(first.backend).__name__ == type(second.backend).__name__ == "OpenVinoBackend"


def test_int8_needs_calibration(models, tmp_path):
    pt, _ = models
    with pytest.raises(InputError, match="calibration"):
        export_onnx(pt, tmp_path / "q8.onnx", imgsz=128, int8=True)
    with pytest.raises(InputError, match="nothing_here: image file not found"):
        export_onnx(pt, tmp_path / "q8.onnx", imgsz=128, int8=True, calibration=[tmp_path / "nothing_here"], force=True)
