"""Imbalance report: exact statistics on a hand-made dataset, files written, CLI and bad input."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from rarespot.cli import app
from rarespot.errors import InputError
from rarespot.imbalance.cli import report_splits
from rarespot.imbalance.report import gini, imbalance_report, normalised_entropy, split_stats, union_area
from rarespot.io.dataset import DetectionDataset, ImageRecord


def _hand_made() -> DetectionDataset:
    return DetectionDataset(
        ["a", "b", "c"],
        [
            ImageRecord("A.png", 100, 100, [[0, 0, 10, 10], [50, 50, 90, 90]], [0, 1]),  # small, medium
            ImageRecord("B.png", 200, 100, [[0, 0, 100, 100]], [0]),  # large
            ImageRecord("C.png", 100, 100),  # negative
        ],
    )


def test_split_stats_exact_values():
    st = split_stats(_hand_made(), bins=8)
    assert (st.images, st.objects, st.negative_images) == (3, 3, 1)
    assert st.class_counts == [2, 1, 0] and st.images_with_class == [2, 1, 0] and st.absent_classes == [2]
    assert st.imbalance_ratio == 2.0
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)
    assert st.normalised_entropy == pytest.approx(h)
    assert st.gini == pytest.approx(4 / 9)  # |2-1|+|2-0|+|1-0| = 4, doubled 8, / (2 * 9 * 1)
    assert st.coco_scale == {"small": 1, "medium": 1, "large": 1}
    assert st.coco_scale_per_class == {"small": [1, 0, 0], "medium": [0, 1, 0], "large": [1, 0, 0]}
    np.testing.assert_allclose(sorted(st.relative_sizes), [0.1, 0.4, math.sqrt(0.5)])
    assert st.relative_size_median_per_class[0] == pytest.approx((0.1 + math.sqrt(0.5)) / 2)
    assert st.relative_size_median_per_class[2] is None
    assert st.objects_per_image == {"0": 1, "1": 1, "2": 1} and st.mean_objects_per_image == 1.0
    assert st.mean_foreground_fraction == pytest.approx((0.17 + 0.5 + 0.0) / 3)
    assert st.foreground_background_ratio == pytest.approx(11700 / 28300)
    loc = np.asarray(st.location_histogram)
    assert loc.sum() == 3 and loc[0, 0] == 1 and loc[5, 5] == 1 and loc[4, 2] == 1  # rows = y, cols = x
    assert st.effective_number["0.999"][0] == pytest.approx((1 - 0.999**2) / 0.001)


def test_measures_limits():
    assert normalised_entropy([5, 5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([9, 0, 0]) == 0.0
    assert gini([4, 4]) == 0.0
    assert gini([6, 0, 0]) == pytest.approx(2 / 3)  # (C-1)/C


def test_union_area_overlaps_and_nesting():
    assert union_area(np.array([[0, 0, 2, 2], [1, 1, 3, 3]])) == 7.0
    assert union_area(np.array([[0, 0, 4, 4], [1, 1, 2, 2]])) == 16.0
    assert union_area(np.zeros((0, 4))) == 0.0


def test_report_writes_markdown_json_and_plots(tmp_path):
    ds = _hand_made()
    rep = imbalance_report({"train": ds, "val": ds.subset([0]), "test": ds.subset([1, 2])}, tmp_path / "rep")
    md = rep.markdown.read_text()
    assert "| | train | val | test |" in md and "imbalance ratio" in md and "Gini" in md
    assert "**train** has no objects of: c." in md
    data = json.loads(rep.json.read_text())
    assert data["splits"]["val"]["class_counts"] == [1, 1, 0]
    assert data["splits"]["test"]["imbalance_ratio"] == 1.0
    for p in rep.plots:
        assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in rep.plots} == {"class_counts.png", "scale.png", "locations.png", "objects_per_image.png"}
    assert not list((tmp_path / "rep").glob(".*tmp"))  # atomic writes leave no temp files


def test_report_rejects_mismatched_classes(tmp_path):
    a = _hand_made()
    b = DetectionDataset(["x"], [])
    with pytest.raises(ValueError, match="classes"):
        imbalance_report({"train": a, "val": b}, tmp_path)


def _write_yolo(root, n_images=10, classes=("knife", "gun")):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i in range(n_images):
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), np.full((32, 48, 3), 200, np.uint8))
        cls = 0 if i % 5 else 1
        (root / "labels" / f"{i:03d}.txt").write_text(f"{cls} 0.5 0.5 0.25 0.5\n")
    return root


def test_cli_report_single_set_is_split(tmp_path):
    data = _write_yolo(tmp_path / "ds")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["imbalance", "report", str(data), "--out", str(out), "--split-seed", "1"])
    assert result.exit_code == 0, result.output
    data_json = json.loads((out / "report.json").read_text())
    assert set(data_json["splits"]) == {"train", "val", "test"}
    assert sum(s["images"] for s in data_json["splits"].values()) == 10
    assert sum(s["class_counts"][1] for s in data_json["splits"].values()) == 2


def test_cli_report_split_folders(tmp_path):
    for name, n in (("train", 6), ("val", 2), ("test", 2)):
        _write_yolo(tmp_path / "ds" / name, n)
    splits = report_splits(tmp_path / "ds")
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "val": 2, "test": 2}
    whole = report_splits(tmp_path / "ds" / "train", no_split=True)
    assert list(whole) == ["all"]


def test_cli_missing_dataset_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as err:
        report_splits(missing)
    assert "nope" in str(err.value)
    result = CliRunner().invoke(app, ["imbalance", "report", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)


def test_cli_weights_and_paste_preview(tmp_path):
    data = _write_yolo(tmp_path / "ds")
    result = CliRunner().invoke(app, ["imbalance", "weights", str(data), "--beta", "0.9"])
    assert result.exit_code == 0, result.output
    assert "knife" in result.output and "objects" in result.output
    png = tmp_path / "prev.png"
    result = CliRunner().invoke(app, ["imbalance", "paste-preview", str(data), "--out", str(png), "--images", "2"])
    assert result.exit_code == 0, result.output
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (640, 640, 3)


@pytest.mark.slow
@pytest.mark.realdata
def test_report_on_opixray(opixray_dir, tmp_path):
    splits = report_splits(opixray_dir, split_seed=0)
    rep = imbalance_report(splits, tmp_path)
    train = rep.splits["train"]
    assert sum(len(ds) for ds in splits.values()) == 2400
    assert train.objects == sum(train.class_counts) and 1.0 <= train.imbalance_ratio < 3.0  # "mild, about 1:2"
    assert train.mean_objects_per_image == pytest.approx(1.0, abs=0.05)  # "one object per image"
