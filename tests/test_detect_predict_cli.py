"""`rarespot detect predict / evaluate / export` end to end on a tiny untrained model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers_detect import make_untrained_yolo
from rarespot.cli import app
from rarespot.errors import InputError
from rarespot.io.annotations import save_dataset
from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.images import write_image

NAMES = ["knife", "gun"]
runner = CliRunner()
TILE_ARGS = ["--tile", "128", "--overlap", "0.25"]


@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory):
    """Under `auto` a .pt is exported to ONNX once, into the cache: this module's own (made by the first
    test that predicts, reused by the others), not the user's."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RARESPOT_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    return make_untrained_yolo(tmp_path_factory.mktemp("cli_model") / "lively.pt", NAMES, lively=True)


@pytest.fixture
def scans(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "scans"
    for i in range(2):
        write_image(folder / f"scan{i}.png", rng.integers(0, 65535, (160, 220), dtype=np.uint16))
    single = write_image(tmp_path / "other.png", rng.integers(0, 255, (100, 150, 3), dtype=np.uint8))
    return folder, single


def test_predict_writes_json_csv_and_overlays(model, scans, tmp_path):
    folder, single = scans
    out = tmp_path / "pred"
    result = runner.invoke(
        app,
        ["detect", "predict", str(model), str(folder), str(single), "--out", str(out), "--conf", "0.05", "--threads", "2",
         *TILE_ARGS],
    )
    assert result.exit_code == 0, result.output
    entries = json.loads((out / "predictions.json").read_text())
    assert [e["image"].rsplit("/", 1)[-1] for e in entries] == ["scan0.png", "scan1.png", "other.png"]
    assert (entries[0]["width"], entries[0]["height"]) == (220, 160)
    n_boxes = sum(len(e["detections"]) for e in entries)
    assert n_boxes > 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == n_boxes and set(rows[0]) == {"image", "x1", "y1", "x2", "y2", "score", "label", "class_name"}
    assert all(float(r["score"]) >= 0.05 for r in rows)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["other.png", "scan0.png", "scan1.png"]
    assert f"3 scans, {n_boxes} boxes" in result.output


def test_predict_per_class_thresholds(model, scans, tmp_path):
    folder, _ = scans
    out = tmp_path / "pred"
    args = ["detect", "predict", str(model), str(folder), "--out", str(out), "--conf", "0.05", "--no-overlays", *TILE_ARGS]
    result = runner.invoke(app, [*args, "--class-conf", "gun=0.5"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert rows and all(float(r["score"]) >= (0.5 if r["class_name"] == "gun" else 0.05) for r in rows)
    assert "at per-class confs knife 0.05, gun 0.5" in result.output
    result = runner.invoke(app, [*args, "--class-conf", "pistol=0.1"])
    assert isinstance(result.exception, InputError) and "class_conf names ['pistol']" in str(result.exception)


def test_predict_runs_a_pt_on_its_cached_onnx_export_under_auto_with_the_torch_boxes(model, model_cache, tmp_path):
    """On the CPU with OpenVINO installed, `auto` runs a .pt as `detect batch` does: as its ONNX export (made once,
    cached) on the faster of OpenVINO and onnxruntime, and predictions.json says which ran. The boxes are torch's
    up to float noise (the tolerance of tests/test_detect_export.py); --backend torch keeps torch."""
    pytest.importorskip("openvino")
    from rarespot.detect.backends import backend_choice_file
    from rarespot.metrics.detection import match_detections

    # The scan and settings of test_onnx_paths_give_the_torch_boxes: with random weights many boxes sit at a
    # threshold, so on a smaller scan (fewer boxes) one or two flips already cost more than the 5% allowed.
    scan = write_image(tmp_path / "scan.png", np.random.default_rng(0).integers(0, 65535, (200, 300), dtype=np.uint16))
    runs = {}
    for name in ("auto", "torch", "onnxruntime"):
        out = tmp_path / name
        result = runner.invoke(app, ["detect", "predict", str(model), str(scan), "--out", str(out), "--conf", "0.05",
                                     "--batch", "4", "--no-overlays", "--backend", name, *TILE_ARGS])
        assert result.exit_code == 0, result.output
        (runs[name],) = json.loads((out / "predictions.json").read_text())
        assert f" on {runs[name]['runtime']}\n" in result.output
    assert (runs["torch"]["runtime"], runs["onnxruntime"]["runtime"]) == ("torch", "onnxruntime")
    (onnx,) = (model_cache / "onnx").glob("lively-*-128.onnx")  # exported once, for all the module's runs
    choice, _ = backend_choice_file(onnx, threads=None, imgsz=None, tile=128, rounds=3, batch=8)
    assert runs["auto"]["runtime"] == json.loads(choice.read_text())["backend"]  # the faster, and it really ran

    def arrays(entry):
        dets = entry["detections"]
        return (np.array([[d[k] for k in ("x1", "y1", "x2", "y2")] for d in dets]).reshape(-1, 4),
                np.array([d["score"] for d in dets]), np.array([d["label"] for d in dets], dtype=np.int64))

    torch_boxes, torch_scores, torch_labels = arrays(runs["torch"])
    assert len(torch_scores) > 20
    for name in ("auto", "onnxruntime"):
        boxes, scores, labels = arrays(runs[name])
        assert abs(len(scores) - len(torch_scores)) <= max(1, len(torch_scores) // 20)
        pairs = match_detections(boxes, scores, labels, torch_boxes, torch_labels, iou=0.99)
        assert (pairs >= 0).mean() >= 0.95
        matched = pairs >= 0
        np.testing.assert_allclose(scores[matched], torch_scores[pairs[matched]], atol=1e-4)


def test_predict_skips_and_lists_an_unreadable_scan_or_stops_with_strict(model, scans, tmp_path):
    folder, _ = scans
    (folder / "scan0b.png").write_bytes(b"\x89PNG not really")  # sorts between scan0.png and scan1.png
    out = tmp_path / "pred"
    result = runner.invoke(app, ["detect", "predict", str(model), str(folder), "--out", str(out), "--threads", "2", *TILE_ARGS])
    assert result.exit_code == 0, result.output
    assert [e["image"].rsplit("/", 1)[-1] for e in json.loads((out / "predictions.json").read_text())] == ["scan0.png", "scan1.png"]
    rows = list(csv.DictReader((out / "skipped.csv").open()))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["scan0b.png"] and rows[0]["problem"]
    assert "1 unreadable scan(s) skipped" in result.output
    # --strict stops at the bad scan, naming it, and keeps what was done before it.
    strict_out = tmp_path / "strict"
    result = runner.invoke(app, ["detect", "predict", str(model), str(folder), "--out", str(strict_out), "--strict", *TILE_ARGS])
    assert isinstance(result.exception, InputError) and "scan0b.png" in str(result.exception)
    done = json.loads((strict_out / "predictions.json").read_text())
    assert [e["image"].rsplit("/", 1)[-1] for e in done] == ["scan0.png"]
    assert not (strict_out / "skipped.csv").exists()


def test_predict_missing_inputs_are_named(model, tmp_path):
    result = runner.invoke(app, ["detect", "predict", str(model), str(tmp_path / "nope.png")])
    assert isinstance(result.exception, InputError) and "nope.png: image file not found" in str(result.exception)
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["detect", "predict", str(model), str(tmp_path / "empty")])
    assert "empty: no images found" in str(result.exception)


def test_cli_prints_one_line_and_exits_2_for_bad_input(tmp_path, scans):
    folder, _ = scans
    bad_model = tmp_path / "junk.pt"
    bad_model.write_text("junk")
    proc = subprocess.run(
        [sys.executable, "-m", "rarespot", "detect", "predict", str(bad_model), str(folder), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())  # rich wraps long lines at the terminal width
    assert "junk.pt: not a YOLO checkpoint" in message and "Traceback" not in proc.stderr


def _yolo_dataset(tmp_path, n=4):
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        path = write_image(tmp_path / "src" / f"img{i}.png", rng.integers(0, 65535, (160, 220), dtype=np.uint16))
        records.append(ImageRecord(path, 220, 160, [[20 + 10 * i, 30, 90, 100]], [i % 2]))
    records.append(ImageRecord(write_image(tmp_path / "src" / "negative.png", np.zeros((160, 220), np.uint16)), 220, 160))
    return save_dataset(DetectionDataset(NAMES, records), tmp_path / "data", "yolo")


def test_evaluate_writes_the_report(model, tmp_path):
    data = _yolo_dataset(tmp_path)
    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["detect", "evaluate", str(model), str(data), "--out", str(out), "--overlays", "2", *TILE_ARGS]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 5 and metrics["conf"] == 0.25 and metrics["conf_source"] == "predictor"
    assert 0.0 <= metrics["map50"] <= 1.0 and metrics["tp"] + metrics["fn"] == 4
    assert "| **all** | 4 |" in (out / "report.md").read_text()
    assert (out / "pr_curve.png").stat().st_size > 1000
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert "mAP50" in result.output


def test_evaluate_calibrates_on_a_split_and_targets_recall(model, tmp_path):
    data = _yolo_dataset(tmp_path, n=6)
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["detect", "evaluate", str(model), str(data), "--split", "test", "--calibrate-on", "val",
         "--target-recall", "0.5", "--out", str(out), "--overlays", "0", *TILE_ARGS],
    )
    assert result.exit_code == 0, result.output
    assert "chosen on" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["conf_source"] == "given" and metrics["target_recall"] == 0.5
    assert not (out / "overlays").exists() or not list((out / "overlays").iterdir())


def test_evaluate_per_class_conf(model, tmp_path):
    data = _yolo_dataset(tmp_path, n=6)
    out = tmp_path / "eval"
    args = ["detect", "evaluate", str(model), str(data), "--split", "test", "--out", str(out), "--overlays", "0", *TILE_ARGS]
    result = runner.invoke(app, [*args, "--calibrate-on", "val", "--per-class-conf"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["class_conf"]) == len(metrics["class_names"]) and metrics["conf"] == min(metrics["class_conf"])
    assert "per-class confs" in result.output
    result = runner.invoke(app, [*args, "--per-class-conf"])  # nothing to choose them on
    assert result.exit_code == 2 and "--calibrate-on" in result.output


def test_evaluate_class_recall_floor(model, tmp_path):
    data = _yolo_dataset(tmp_path, n=6)
    out = tmp_path / "eval"
    args = ["detect", "evaluate", str(model), str(data), "--split", "test", "--out", str(out), "--overlays", "0", *TILE_ARGS]
    plain = runner.invoke(app, [*args, "--calibrate-on", "val"])
    assert plain.exit_code == 0, plain.output
    best = json.loads((out / "metrics.json").read_text())["conf"]
    result = runner.invoke(app, [*args, "--calibrate-on", "val", "--class-recall-floor", "1.0"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["conf"] <= best  # a floor only ever lowers it
    result = runner.invoke(app, [*args, "--class-recall-floor", "0.5"])
    assert result.exit_code == 2 and "--calibrate-on" in result.output
    result = runner.invoke(app, [*args, "--calibrate-on", "val", "--class-recall-floor", "1.5"])
    assert result.exit_code == 2 and "must be in (0, 1]" in result.output


def test_evaluate_bad_output_folder_and_class_mismatch(model, tmp_path):
    data = _yolo_dataset(tmp_path)
    blocker = tmp_path / "report_file"
    blocker.write_text("x")
    result = runner.invoke(app, ["detect", "evaluate", str(model), str(data), "--out", str(blocker)])
    assert isinstance(result.exception, InputError) and "report_file: output path exists" in str(result.exception)
    three = make_untrained_yolo(tmp_path / "three.pt", ["a", "b", "c"])
    result = runner.invoke(app, ["detect", "evaluate", str(three), str(data), "--out", str(tmp_path / "e")])
    assert isinstance(result.exception, InputError) and "3 classes" in str(result.exception)
    result = runner.invoke(app, ["detect", "evaluate", str(model), str(tmp_path / "nodata"), "--out", str(tmp_path / "e")])
    assert "nodata: dataset not found" in str(result.exception)


@pytest.mark.slow
def test_export_cli(model, tmp_path):
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["detect", "export", str(model), "--out", str(out), "--imgsz", "128"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "dynamic batch" in result.output


def test_predict_says_which_tiles_ran_and_no_skip_runs_them_all(model, tmp_path):
    rng = np.random.default_rng(3)
    air = np.clip(1200 + 150 * rng.standard_normal((200, 300)), 0, 65535).astype(np.uint16)
    write_image(tmp_path / "air.png", air)
    for flags, inspected, note in (([], 0, "all background: no tile to inspect"), (["--no-skip"], 6, "")):
        out = tmp_path / f"pred{len(flags)}"
        result = runner.invoke(app, ["detect", "predict", str(model), str(tmp_path / "air.png"), "--out", str(out),
                                     "--no-overlays", *TILE_ARGS, *flags])
        assert result.exit_code == 0, result.output
        entry = json.loads((out / "predictions.json").read_text())[0]
        assert (entry["tiles"], entry["tiles_inspected"], entry["note"]) == (6, inspected, note)
        if inspected == 0:
            assert entry["detections"] == []


def test_export_cli_reduced_precision_needs_held_out_scans(model, tmp_path):
    result = runner.invoke(app, ["detect", "export", str(model), "--out", str(tmp_path / "m.onnx"), "--imgsz", "128",
                                 "--precision", "int8", "--calibration", str(tmp_path)])
    assert isinstance(result.exception, InputError) and "needs held-out annotated scans" in str(result.exception)


@pytest.mark.parametrize("command", ["predict", "screen"])
def test_a_bad_inference_option_is_one_line_naming_it(command, model, scans, tmp_path):
    """`--overlap 1.5` reaches the user as one RarespotError naming the option (the entry point prints
    it without a traceback), raised before any output is written."""
    from rarespot.errors import RarespotError

    folder, _ = scans
    out = tmp_path / "out"
    where = [str(model), str(folder)] if command == "predict" else [str(folder), "--model", str(model)]
    result = runner.invoke(app, ["detect", command, *where, "--out", str(out), "--tile", "128", "--overlap", "1.5"])
    assert isinstance(result.exception, RarespotError)
    assert "invalid inference settings: overlap must be in [0, 1), got 1.5" in str(result.exception)
    assert not out.exists()


def test_an_unknown_backend_is_one_line_before_the_model_loads(model, scans, tmp_path):
    from rarespot.errors import RarespotError

    folder, _ = scans
    out = tmp_path / "out"
    result = runner.invoke(app, ["detect", "predict", str(model), str(folder), "--out", str(out), "--backend", "gpu"])
    assert isinstance(result.exception, RarespotError)
    assert "invalid inference settings: backend must be one of auto, openvino, onnxruntime, torch, got 'gpu'" in str(
        result.exception)
    assert not out.exists()
