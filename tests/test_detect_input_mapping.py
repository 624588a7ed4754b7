"""Every container of a scan gives the model the same input, and so the same boxes;
the mapping is stored with the model by training and read back by every predictor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from helpers_detect import make_untrained_yolo
from rarespot.detect.predict import TiledPredictor
from rarespot.detect.preprocess import (
    CURRENT_INPUT_MAPPING,
    LEGACY_INPUT_MAPPING,
    InputMapping,
    read_input_mapping,
    set_input_mapping,
    to_model_input,
    window_to_uint8,
)
from rarespot.io.images import read_image, write_image
from rarespot.metrics.detection import box_iou
from helpers_io import write_dicom
from serve_fixtures import body_scan

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    """One 16-bit body scan in every container the README invites, and its 8-bit exports."""
    folder = tmp_path_factory.mktemp("containers")
    scan = body_scan(608, 496)
    lo, hi = int(scan.min()), int(scan.max())
    stretched = np.rint((scan.astype(np.float64) - lo) * 255 / (hi - lo)).astype(np.uint8)
    shifted = (scan >> 8).astype(np.uint8)
    files = {
        "png16": write_image(folder / "scan16.png", scan),
        "tiff16": write_image(folder / "scan16.tif", scan),
        "dicom16 with a window": write_dicom(folder / "scan.dcm", scan, window=(20000, 8000)),
        "png8 shifted": write_image(folder / "shifted.png", shifted),
        "png8 stretched": write_image(folder / "stretched.png", stretched),
        "png8 rgb": write_image(folder / "rgb.png", np.dstack([shifted] * 3)),
    }
    jpeg = folder / "stretched_q95.jpg"
    jpeg.write_bytes(cv2.imencode(".jpg", stretched, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    files["jpeg q95"] = jpeg
    return files


def test_the_model_input_is_the_same_function_of_the_content_in_every_container(scan_files):
    reference = to_model_input(read_image(scan_files["png16"])).astype(np.int16)
    for name, path in scan_files.items():
        image = read_image(path)
        diff = np.abs(to_model_input(image).astype(np.int16) - reference)
        # Up to rounding: 8 bits hold ~200 of the scan's grey levels; JPEG adds a little noise.
        assert diff.mean() <= 1.0 and np.percentile(diff, 99) <= 4, (name, diff.mean(), np.percentile(diff, 99))
    # What models that store no mapping do: an 8-bit export is a different picture to them.
    legacy = to_model_input(read_image(scan_files["png8 shifted"]), LEGACY_INPUT_MAPPING).astype(np.int16)
    assert np.abs(legacy - reference).mean() > 10


def _share_matched(a, b, conf: float, margin: float = 0.03) -> float:
    """Share of ``a``'s boxes clearly above ``conf`` that ``b`` has too: same class, IoU >= 0.85,
    score within 0.03. (Near-tied overlapping boxes may swap in NMS on a rounding difference,
    so a few percent can move.)"""
    keep = a.scores >= conf + margin
    if not keep.any():
        return 1.0
    if len(b) == 0:
        return 0.0
    same_place = box_iou(a.boxes[keep], b.boxes) >= 0.85
    close = np.abs(a.scores[keep][:, None] - b.scores[None, :]) <= 0.03
    same_class = a.labels[keep][:, None] == b.labels[None, :]
    return float((same_place & close & same_class).any(axis=1).mean())


@pytest.fixture(scope="module")
def stamped_model(tmp_path_factory):
    """A content-sensitive nano YOLO (scores spread over 0..1, see helpers_detect) carrying the
    mapping training stores. Any change of the input shows as changed boxes."""
    path = make_untrained_yolo(tmp_path_factory.mktemp("m") / "model.pt", ["knife", "gun"], lively=True,
                               score_bias=-1.5)
    set_input_mapping(path, CURRENT_INPUT_MAPPING)
    return path


def test_a_scan_and_its_8bit_exports_give_the_same_boxes(stamped_model, scan_files):
    conf = 0.5
    predictor = TiledPredictor(stamped_model, tile=256, overlap=0.2, conf=conf)
    assert predictor.input_mapping == CURRENT_INPUT_MAPPING
    reference = predictor.predict(read_image(scan_files["png16"]))
    assert len(reference) >= 10
    for name, path in scan_files.items():
        image = read_image(path)
        assert predictor.input_warning(image) is None
        dets = predictor.predict(image)
        shares = _share_matched(reference, dets, conf), _share_matched(dets, reference, conf)
        assert min(shares) >= 0.85, (name, shares)
        assert np.allclose(dets.scores[:5], reference.scores[:5], atol=0.01), name  # the most confident boxes
        assert abs(len(dets) - len(reference)) <= 3, name
    # The same weights read the old way (8-bit passed through) lose the scan: what the issue found.
    legacy = TiledPredictor(stamped_model, tile=256, overlap=0.2, conf=conf, input_mapping=LEGACY_INPUT_MAPPING)
    shifted = read_image(scan_files["png8 shifted"])
    assert _share_matched(reference, legacy.predict(shifted), conf) < 0.5
    assert "input-mapping" in legacy.input_warning(shifted)


def test_a_model_without_a_stored_mapping_keeps_the_one_it_was_trained_with(tmp_path, scan_files):
    path = make_untrained_yolo(tmp_path / "old.pt", ["knife"])
    assert read_input_mapping(path) == LEGACY_INPUT_MAPPING
    predictor = TiledPredictor(path, tile=256)
    assert predictor.input_mapping == LEGACY_INPUT_MAPPING
    with pytest.warns(UserWarning, match="8-bit scans reach it unwindowed"):
        predictor.predict(read_image(scan_files["png8 shifted"]))
    assert predictor.input_warning(read_image(scan_files["png16"])) is None  # 16-bit: windowed either way
    # The CLI stores a mapping in an existing checkpoint.
    from typer.testing import CliRunner

    from rarespot.cli import app

    result = CliRunner().invoke(app, ["detect", "input-mapping", str(path), "--set", "percentile"])
    assert result.exit_code == 0, result.output
    assert read_input_mapping(path) == CURRENT_INPUT_MAPPING
    assert TiledPredictor(path, tile=256).input_mapping == CURRENT_INPUT_MAPPING
    shown = CliRunner().invoke(app, ["detect", "input-mapping", str(path)])
    assert "percentile: 0.5-99.5 percentile window of every scan" in shown.output
    bad = CliRunner().invoke(app, ["detect", "input-mapping", str(path), "--set", "magic"])
    assert bad.exit_code == 2 and "unknown input mapping 'magic'" in bad.output
    with pytest.raises(ValueError, match="unknown input mapping"):
        InputMapping.from_dict({"method": "magic"})


def test_training_stores_the_mapping_with_the_weights(tmp_path):
    """A real (1-epoch) run: best.pt and last.pt carry the mapping its training tiles got."""
    from rarespot.detect.config import DetectTrainConfig
    from rarespot.detect.train import train_on_splits
    from test_detect_train import make_scans

    ds = make_scans(tmp_path / "scans", 4, size=(96, 96))
    splits = {"train": ds.subset(range(3)), "val": ds.subset([3]), "test": ds.subset([3])}
    config = DetectTrainConfig(tiles=1, tile_size=64, imgsz=64, batch=4, nbs=4, epochs=1, warmup_epochs=0, val_every=1,
                         device="cpu", out=tmp_path / "run", aug=[])
    result = train_on_splits(config, splits, quiet=True)
    for weights in (result.best, result.last):
        assert read_input_mapping(weights) == CURRENT_INPUT_MAPPING, weights
    assert TiledPredictor(result.best, tile=64).input_mapping == CURRENT_INPUT_MAPPING


def test_onnx_export_carries_the_mapping(stamped_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from rarespot.detect.backends import OnnxBackend
    from rarespot.detect.export import export_onnx

    out = export_onnx(stamped_model, tmp_path / "model.onnx", imgsz=64, simplify=False)
    assert read_input_mapping(out) == CURRENT_INPUT_MAPPING
    assert OnnxBackend(out).input_mapping == CURRENT_INPUT_MAPPING


def test_a_grey_scan_becomes_three_equal_channels():
    rng = np.random.default_rng(2)
    scan16 = rng.integers(0, 65535, (130, 170), dtype=np.uint16)
    grey8 = rng.integers(0, 255, (130, 170), dtype=np.uint8)
    for image, mapping in ((scan16, CURRENT_INPUT_MAPPING), (scan16[::2, 1::3], CURRENT_INPUT_MAPPING),
                           (grey8, LEGACY_INPUT_MAPPING), (grey8[:, ::-2], LEGACY_INPUT_MAPPING)):
        out = to_model_input(image, mapping)
        windowed = window_to_uint8(image, mapping)
        assert out.dtype == np.uint8 and out.shape == windowed.shape + (3,) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, np.repeat(windowed[:, :, None], 3, axis=2))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # may be the first user of the trained_demo fixture
def test_a_trained_model_gives_the_same_detections_on_scans_and_their_8bit_exports(trained_demo, tmp_path):
    """Issue 16's check on a trained detector (the default demo's model), over every held-out scan:
    16-bit scans and their 8-bit exports (shifted, stretched, JPEG at quality 95) give the same
    detections and the same scores against the ground truth.

    An 8-bit export keeps only ~80-150 of the scan's grey levels inside the model's window, so a
    trained model's borderline boxes move a little (measured on a demo model: 79-94% of confident
    boxes agree at IoU >= 0.85 and score +-0.03, 94-100% at IoU >= 0.5 and +-0.1; test F1 0.619 from
    the 16-bit scans, 0.618-0.624 from the exports). Without the stored mapping the shifted export
    found nothing (issue 16)."""
    from rarespot.detect.config import load_config
    from rarespot.io.split import load_saved_splits
    from rarespot.metrics.detection import DetectionMatches, precision_recall_f1

    run_dir = trained_demo.run_dir
    config = load_config(run_dir / "config.yaml")
    test = load_saved_splits(run_dir)["test"]  # the scans training never saw, in the model's classes
    model = run_dir / "weights" / "best.pt"
    assert read_input_mapping(model) == CURRENT_INPUT_MAPPING  # training stored it
    conf = trained_demo.conf
    predictor = TiledPredictor(model, tile=config.tile_size, overlap=0.2, conf=0.05)
    names = ("16-bit", "png8 shifted", "png8 stretched", "jpeg q95")
    matches = {name: DetectionMatches(1, True, np.array([0.5])) for name in names}
    agree = {name: np.zeros(4, int) for name in names[1:]}  # [16-bit boxes the export has, of, and the reverse]
    for record in test.records:
        scan = read_image(test.image_path(record))
        assert scan.dtype == np.uint16
        lo, hi = int(scan.min()), int(scan.max())
        stretched = np.rint((scan.astype(np.float64) - lo) * 255 / max(1, hi - lo)).astype(np.uint8)
        jpeg = tmp_path / f"{record.stem}.jpg"
        jpeg.write_bytes(cv2.imencode(".jpg", stretched, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
        images = {"16-bit": scan, "png8 shifted": (scan >> 8).astype(np.uint8), "png8 stretched": stretched,
                  "jpeg q95": read_image(jpeg)}
        dets = {name: predictor.predict(image) for name, image in images.items()}
        for name in names:
            matches[name].add(dets[name].boxes, dets[name].scores, dets[name].labels, record.boxes,
                              np.zeros(len(record.labels), int))
        for name in names[1:]:
            agree[name] += (*_agreement(dets["16-bit"], dets[name], conf + 0.03), *_agreement(dets[name], dets["16-bit"], conf + 0.03))
    scores = {}
    for name in names:
        tp, fp, fn = matches[name].counts(conf, 0.5)
        scores[name] = (precision_recall_f1(tp, fp, fn)[2], matches[name].mean_ap(0.5))
    assert precision_recall_f1(*matches["16-bit"].counts(conf, 0.5))[1] >= 0.3, scores  # a model that finds the objects
    for name in names[1:]:
        found, of, found_back, of_back = agree[name]
        assert of >= 20 and found >= 0.9 * of and found_back >= 0.9 * of_back, (name, agree[name])
        assert abs(scores[name][0] - scores["16-bit"][0]) <= 0.03, (name, scores)  # F1 at the operating confidence
        assert abs(scores[name][1] - scores["16-bit"][1]) <= 0.03, (name, scores)  # AP50


def _agreement(a, b, conf: float) -> tuple[int, int]:
    """(how many of ``a``'s boxes scoring >= ``conf`` ``b`` has too: same class, IoU >= 0.5, score within 0.1;
    how many there are)."""
    keep = a.scores >= conf
    if not keep.any() or len(b) == 0:
        return 0, int(keep.sum())
    near = box_iou(a.boxes[keep], b.boxes) >= 0.5
    near &= np.abs(a.scores[keep][:, None] - b.scores[None, :]) <= 0.1
    near &= a.labels[keep][:, None] == b.labels[None, :]
    return int(near.any(axis=1).sum()), int(keep.sum())
