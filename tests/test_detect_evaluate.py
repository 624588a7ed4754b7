"""The seed's evaluation protocol on a hand-computed three-image case, and its report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rarespot.detect.evaluate import calibrate_conf, evaluate, operating_conf, write_evaluation_report
from rarespot.detect.predict import Detections
from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.images import write_image

NAMES = ["knife", "gun"]
# Per image (keyed by its first pixel): predictions (x1, y1, x2, y2, score, label).
PREDICTIONS = {
    1: [(10, 10, 40, 40, 0.9, 0), (50, 50, 90, 70, 0.3, 1), (0, 0, 5, 5, 0.6, 0)],
    2: [(20, 20, 60, 48.8, 0.8, 1)],  # IoU 0.72 with its object: matched at IoU 0.50..0.70 only
    3: [(30, 30, 50, 50, 0.4, 0)],  # a false alarm on a pure negative
}
GROUND_TRUTH = {
    1: ([[10, 10, 40, 40], [50, 50, 90, 70]], [0, 1]),
    2: ([[20, 20, 60, 60]], [1]),
    3: (np.zeros((0, 4)), []),
}


class FakePredictor:
    """Answers from PREDICTIONS by the image's first pixel; honours the sweep conf."""

    def __init__(self, class_names=NAMES, conf=0.5):
        self.class_names = list(class_names)
        self.conf = conf
        self.seen_conf: list[float] = []

    def predict(self, image, conf=None):
        self.seen_conf.append(conf)
        rows = np.asarray([r for r in PREDICTIONS[int(image.flat[0])] if r[4] >= conf], dtype=float).reshape(-1, 6)
        return Detections(rows[:, :4], rows[:, 4], rows[:, 5].astype(int), self.class_names, image.shape[:2])


@pytest.fixture
def dataset(tmp_path):
    records = []
    for key, (boxes, labels) in GROUND_TRUTH.items():
        img = np.zeros((80, 100), dtype=np.uint16)
        img.flat[0] = key
        path = write_image(tmp_path / f"scan{key}.png", img)
        records.append(ImageRecord(path.name, 100, 80, boxes, labels))
    return DetectionDataset(NAMES, records, root=tmp_path)


def test_prf_at_the_predictor_conf_and_curve_summaries(dataset):
    predictor = FakePredictor(conf=0.5)
    result = evaluate(predictor, dataset, progress=False)
    assert predictor.seen_conf == [0.001] * 3  # one low-confidence sweep per image
    assert result.num_images == 3 and result.conf == 0.5 and result.conf_source == "predictor"
    # Kept at 0.5: 0.9 TP, 0.8 TP, 0.6 FP; the 0.3 gun is missed.
    assert (result.tp, result.fp, result.fn) == (2, 1, 1)
    assert result.precision == pytest.approx(2 / 3) and result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(2 / 3)
    assert result.fp_per_image == pytest.approx(1 / 3)
    # Pooled curve: 0.9 T, 0.8 T, 0.6 F, 0.4 F, 0.3 T over 3 objects.
    assert result.curve_conf.tolist() == [0.9, 0.8, 0.6, 0.4, 0.3]
    assert result.curve_precision.tolist() == pytest.approx([1, 1, 2 / 3, 1 / 2, 3 / 5])
    assert result.curve_recall.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    assert result.best_f1 == pytest.approx(0.8) and result.best_f1_conf == pytest.approx(0.8)
    assert result.conf_at_target_recall is None
    # Each class has AP 1 at IoU 0.5; at 0.75+ the gun found at IoU 0.72 no longer counts:
    # its class then ranks a FP above its only TP (AP 51 * 0.5 / 101).
    assert result.map50 == pytest.approx(1.0)
    gun_50_95 = (5 * 1.0 + 5 * (51 * 0.5 / 101)) / 10
    assert result.map50_95 == pytest.approx((1.0 + gun_50_95) / 2)
    knife, gun = result.per_class
    assert (knife.name, knife.support, knife.tp, knife.fp, knife.fn) == ("knife", 1, 1, 1, 0)
    assert (gun.support, gun.tp, gun.fp, gun.fn) == (2, 1, 0, 1)
    assert gun.recall == pytest.approx(0.5) and gun.ap50_95 == pytest.approx(gun_50_95)


def test_given_conf_and_target_recall(dataset):
    result = evaluate(FakePredictor(), dataset, conf_for_prf=0.35, progress=False)
    assert result.conf_source == "given" and (result.tp, result.fp, result.fn) == (2, 2, 1)
    result = evaluate(FakePredictor(), dataset, target_recall=0.9, progress=False)
    assert result.conf_at_target_recall == pytest.approx(0.3)
    assert result.conf_source == "target_recall" and result.recall == pytest.approx(1.0)
    assert result.precision == pytest.approx(0.6)
    # A given conf wins over the target; the target's conf is still reported.
    result = evaluate(FakePredictor(), dataset, conf_for_prf=0.7, target_recall=0.9, progress=False)
    assert result.conf == 0.7 and result.conf_at_target_recall == pytest.approx(0.3)


def test_calibrate_conf(dataset):
    assert calibrate_conf(FakePredictor(), dataset, progress=False) == pytest.approx(0.8)
    assert calibrate_conf(FakePredictor(), dataset, target_recall=0.9, progress=False) == pytest.approx(0.3)


def test_per_class_operating_points(dataset, tmp_path):
    # Each class's own curve: knife 0.9 T, 0.6 F, 0.4 F (1 object) -> best F1 1.0 at 0.9;
    # gun 0.8 T, 0.3 T (2 objects) -> best F1 1.0 at 0.3. One pooled conf (0.8) loses the 0.3 gun.
    result = evaluate(FakePredictor(), dataset, progress=False)
    knife, gun = result.per_class
    assert knife.best_f1_conf == pytest.approx(0.9) and gun.best_f1_conf == pytest.approx(0.3)
    assert operating_conf(result) == pytest.approx(0.8)
    assert operating_conf(result, per_class=True) == pytest.approx([0.9, 0.3])
    assert calibrate_conf(FakePredictor(), dataset, per_class=True, progress=False) == pytest.approx([0.9, 0.3])

    per_class = evaluate(FakePredictor(), dataset, conf_for_prf=[0.9, 0.3], progress=False)
    assert (per_class.tp, per_class.fp, per_class.fn) == (3, 0, 0) and per_class.f1 == pytest.approx(1.0)
    assert per_class.class_conf == [0.9, 0.3] and per_class.conf == 0.3 and per_class.conf_source == "given"
    assert [(c.tp, c.fp, c.fn) for c in per_class.per_class] == [(1, 0, 0), (2, 0, 0)]
    # The same per-class rule decides what an overlay shows: the 0.6 knife goes, the 0.3 gun stays.
    kept = per_class.predictions[0].above(per_class.operating_conf)
    assert kept.scores.tolist() == [0.9, 0.3]
    text = write_evaluation_report(per_class, tmp_path / "eval").read_text()
    assert "one confidence per class (given; column conf)" in text and "| gun | 2 | 2 | 0 | 0 |" in text
    assert text.count("0.3000 |") == 1 and "0.9000 |" in text
    with pytest.raises(ValueError, match="3 per-class confidences given for 2 classes"):
        evaluate(FakePredictor(), dataset, conf_for_prf=[0.5, 0.5, 0.5], progress=False)

    # A target recall per class: the highest confidence reaching it on that class's curve.
    target = evaluate(FakePredictor(), dataset, target_recall=0.9, progress=False)
    assert [c.conf_at_target_recall for c in target.per_class] == pytest.approx([0.9, 0.3])
    assert operating_conf(target, per_class=True) == pytest.approx([0.9, 0.3])


def test_class_recall_floor_keeps_every_class_in(dataset):
    # Pooled curve 0.9 T(knife) 0.8 T(gun) 0.6 F 0.4 F 0.3 T(gun): best F1 at 0.8 finds 1 of the 2 guns.
    # A floor of 0.75 for every class needs the 0.3 gun, so the one confidence drops to 0.3.
    result = evaluate(FakePredictor(), dataset, progress=False)
    assert operating_conf(result, class_recall_floor=0.75) == pytest.approx(0.3)
    # A floor that the F1-best confidence already meets changes nothing (gun recall 0.5 at 0.8).
    assert operating_conf(result, class_recall_floor=0.5) == pytest.approx(0.8)
    # Per class: each class's own choice, lowered to its floor's confidence (here both already at it).
    assert operating_conf(result, per_class=True, class_recall_floor=0.75) == pytest.approx([0.9, 0.3])
    assert calibrate_conf(FakePredictor(), dataset, class_recall_floor=0.75, progress=False) == pytest.approx(0.3)
    floored = evaluate(FakePredictor(), dataset, conf_for_prf=0.3, progress=False)
    assert [c.recall for c in floored.per_class] == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="class_recall_floor must be in"):
        operating_conf(result, class_recall_floor=0.0)


def test_class_recall_floor_out_of_reach_warns_and_is_left_out(dataset):
    # A third gun nobody predicts: guns reach 2/3 at most, so a 0.9 floor holds only the knife (0.9).
    records = list(dataset.records)
    records[2] = type(records[2])(records[2].path, 100, 80, np.array([[70.0, 5, 95, 30]]), np.array([1]))
    result = evaluate(FakePredictor(), DetectionDataset(NAMES, records, root=dataset.root), progress=False)
    with pytest.warns(UserWarning, match="class 'gun' reaches recall 0.667 at most on the 3 calibration images"):
        conf = operating_conf(result, class_recall_floor=0.9)
    assert conf == pytest.approx(result.best_f1_conf)


def test_predictions_of_an_earlier_result_are_rescored_without_inference(dataset):
    first = evaluate(FakePredictor(), dataset, progress=False)
    predictor = FakePredictor()
    again = evaluate(predictor, dataset, conf_for_prf=[0.9, 0.3], progress=False, predictions=first.predictions)
    assert predictor.seen_conf == []  # no image was predicted again
    direct = evaluate(FakePredictor(), dataset, conf_for_prf=[0.9, 0.3], progress=False)
    assert (again.tp, again.fp, again.fn, again.map50) == (direct.tp, direct.fp, direct.fn, direct.map50) == (3, 0, 0, direct.map50)
    assert [(c.tp, c.fp, c.fn) for c in again.per_class] == [(c.tp, c.fp, c.fn) for c in direct.per_class]
    with pytest.raises(ValueError, match="2 predictions given for the 3 images"):
        evaluate(FakePredictor(), dataset, progress=False, predictions=first.predictions[:2])


def test_per_class_conf_for_a_class_missing_from_calibration_warns(dataset):
    from rarespot.detect.train import MissingClassWarning

    guns_only = DetectionDataset(NAMES, [r for r in dataset.records if r.labels.tolist() == [1]], root=dataset.root)
    result = evaluate(FakePredictor(), guns_only, progress=False)
    with pytest.warns(MissingClassWarning, match="class 'knife' has no objects in the 1 calibration images"):
        confs = operating_conf(result, per_class=True)
    assert confs == pytest.approx([result.best_f1_conf, 0.8])


def test_class_agnostic_protocol_ignores_labels(dataset):
    class Swapped(FakePredictor):
        def predict(self, image, conf=None):
            dets = super().predict(image, conf)
            dets.labels = 1 - dets.labels
            return dets

    aware = evaluate(Swapped(), dataset, conf_for_prf=0.001, progress=False)
    agnostic = evaluate(Swapped(), dataset, conf_for_prf=0.001, progress=False, class_aware=False)
    assert aware.tp == 0
    assert agnostic.tp == 3 and agnostic.class_names == ["object"] and len(agnostic.per_class) == 1


def test_report_explains_each_conf_source(dataset, tmp_path):
    from rarespot.detect.evaluate import evaluation_markdown

    assert "the predictor's threshold" in evaluation_markdown(evaluate(FakePredictor(), dataset, progress=False))
    given = evaluate(FakePredictor(), dataset, conf_for_prf=0.35, progress=False)
    assert "at confidence 0.3500 (given)" in evaluation_markdown(given)
    target = evaluate(FakePredictor(), dataset, target_recall=0.9, progress=False)
    assert "the highest reaching recall 0.9" in evaluation_markdown(target)


def test_report_files(dataset, tmp_path):
    result = evaluate(FakePredictor(), dataset, target_recall=0.9, progress=False)
    report = write_evaluation_report(result, tmp_path / "out" / "eval")
    assert report.name == "report.md"
    text = report.read_text()
    assert "| **all** | 3 | 3 | 2 | 0 | 0.600 | 1.000 | **0.750** | 1.000 |" in text
    assert "| knife | 1 |" in text and "pr_curve.png" in text
    png = report.parent / "pr_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((report.parent / "metrics.json").read_text())
    assert data["f1"] == pytest.approx(0.75) and data["conf_at_target_recall"] == pytest.approx(0.3)
    assert data["pr_curve"]["conf"] == [0.9, 0.8, 0.6, 0.4, 0.3]
    assert [c["name"] for c in data["per_class"]] == NAMES
    assert not list(report.parent.glob(".*tmp"))  # atomic writes leave no temp files


def test_unwritable_output_folder_is_named(dataset, tmp_path):
    result = evaluate(FakePredictor(), dataset, progress=False)
    blocker = tmp_path / "a_file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="a_file.txt: output path exists and is not a folder"):
        write_evaluation_report(result, blocker)
    with pytest.raises(InputError, match="cannot write to the output folder") as err:
        write_evaluation_report(result, blocker / "sub")
    assert "a_file.txt" in str(err.value)


def test_bad_inputs_are_named(dataset, tmp_path):
    with pytest.raises(InputError, match="3 classes"):
        evaluate(FakePredictor(class_names=["a", "b", "c"]), dataset, progress=False)
    missing = DetectionDataset(NAMES, [ImageRecord("gone.png", 100, 80)], root=tmp_path)
    with pytest.raises(InputError, match="gone.png"):
        evaluate(FakePredictor(), missing, progress=False)
    wrong_size = DetectionDataset(NAMES, [ImageRecord("scan1.png", 640, 480)], root=tmp_path)
    with pytest.raises(InputError, match="scan1.png: image is 100x80 but its annotation says 640x480"):
        evaluate(FakePredictor(), wrong_size, progress=False)
    with pytest.raises(InputError, match="no images"):
        evaluate(FakePredictor(), DetectionDataset(NAMES, [], root=tmp_path), progress=False)


class OraclePredictor:
    """Returns each image's own annotation (optionally shifted right by ``shift`` of its width)."""

    def __init__(self, dataset, shift=0.0):
        self.class_names = list(dataset.class_names)
        self.conf = 0.25
        self._queue = list(dataset.records)
        self.shift = shift

    def predict(self, image, conf=None):
        rec = self._queue.pop(0)
        boxes = rec.boxes.copy()
        boxes[:, [0, 2]] += self.shift * (boxes[:, 2:3] - boxes[:, 0:1])
        return Detections(boxes, np.full(len(boxes), 0.9), rec.labels, self.class_names, image.shape[:2])


@pytest.mark.realdata
def test_oracle_on_real_opixray_annotations_scores_one(opixray_dir):
    """Real YOLO labels and JPEGs through the whole protocol: the annotation itself scores 1.0;
    shifted by 0.3 of its width every box has IoU 0.7 / 1.3 = 0.538: a hit at 0.50, a miss from 0.55 up."""
    from rarespot.io.annotations import load_dataset

    ds = load_dataset(opixray_dir).subset(range(40))
    perfect = evaluate(OraclePredictor(ds), ds, progress=False)
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    assert perfect.map50 == pytest.approx(1.0) and perfect.map50_95 == pytest.approx(1.0)
    shifted = evaluate(OraclePredictor(ds, shift=0.3), ds, iou=0.5, progress=False)
    assert shifted.map50 == pytest.approx(1.0)
    assert shifted.map50_95 == pytest.approx(0.1)  # only the 0.50 threshold of ten


@pytest.mark.realdata
@pytest.mark.slow
def test_tiled_model_on_real_opixray_images(opixray_dir, tmp_path):
    """416x416 8-bit colour scans are smaller than a 512 tile: padded, predicted, scored, reported."""
    import torch

    from helpers_detect import make_untrained_yolo
    from rarespot.detect.predict import TiledPredictor
    from rarespot.io.annotations import load_dataset

    torch.set_num_threads(2)
    ds = load_dataset(opixray_dir).subset(range(3))
    model = make_untrained_yolo(tmp_path / "m.pt", ds.class_names, lively=True)
    result = evaluate(TiledPredictor(model, tile=512), ds, progress=False)
    assert result.num_images == 3 and result.tp + result.fn == sum(len(r) for r in ds.records)
    assert all(d.image_size == (416, 416) for d in result.predictions)
    assert write_evaluation_report(result, tmp_path / "report").is_file()
