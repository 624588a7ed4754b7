"""Class remapping (seed 000, 4.3): exact labels and class lists for every grouping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rarespot.detect.remap import (
    DEFAULT_CLOTHING,
    apply_remap,
    binary_map,
    mean_box_areas,
    read_per_class_f1,
    remap_dataset,
    remap_splits,
    score_group,
    size_map,
)
from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset, ImageRecord

SEED_CLASSES = [
    "zipper", "watch", "unknown anomaly", "surgical implant", "shoes", "piercing", "key", "jewelry",
    "holding shoes", "glasses", "drugs", "cuffs", "bra", "belt buckle", "zipper head", "ankle monitor",
    "shirt button", "pants button",
]


def box(side: float, x: float = 0.0) -> list[float]:
    return [x, 0.0, x + side, side]


@pytest.fixture
def four_class_dataset() -> DetectionDataset:
    # class areas: a = 100 (10x10), b = 400 (20x20), c = 2500 (50x50), d = 10000 (100x100)
    records = [
        ImageRecord("one.png", 300, 300, [box(10), box(20, 50), box(100, 100)], [0, 1, 3]),
        ImageRecord("two.png", 300, 300, [box(50), box(10, 60)], [2, 0]),
        ImageRecord("empty.png", 300, 300),
    ]
    return DetectionDataset(["a", "b", "c", "d"], records)


def test_agnostic_maps_every_label_to_zero(four_class_dataset):
    out = apply_remap(four_class_dataset, "agnostic")
    assert out.class_names == ["object"]
    assert [r.labels.tolist() for r in out.records] == [[0, 0, 0], [0, 0], []]
    np.testing.assert_array_equal(out.records[0].boxes, four_class_dataset.records[0].boxes)
    # the input is not modified
    assert four_class_dataset.records[0].labels.tolist() == [0, 1, 3]


def test_binary_default_map_for_the_seed_classes():
    mapping = binary_map(SEED_CLASSES)
    anomaly = sorted(c for c, g in mapping.items() if g == "anomaly")
    assert anomaly == ["ankle monitor", "cuffs", "drugs", "key", "surgical implant", "unknown anomaly"]
    assert sum(g == "clothing" for g in mapping.values()) == 12 == len(DEFAULT_CLOTHING)


def test_binary_matches_names_loosely_and_unknown_is_anomaly():
    mapping = binary_map(["Zipper_Head", "Belt-Buckle", "knife"])
    assert mapping == {"Zipper_Head": "clothing", "Belt-Buckle": "clothing", "knife": "anomaly"}


def test_binary_remap_labels():
    ds = DetectionDataset(["key", "zipper"], [ImageRecord("x.png", 50, 50, [box(5), box(6, 10)], [0, 1])])
    out = apply_remap(ds, "binary")
    assert out.class_names == ["clothing", "anomaly"]
    assert out.records[0].labels.tolist() == [1, 0]


def test_mean_box_areas_exact(four_class_dataset):
    np.testing.assert_allclose(mean_box_areas(four_class_dataset), [100.0, 400.0, 2500.0, 10000.0])


def test_size_quartiles_give_four_groups(four_class_dataset):
    # quartiles of [100, 400, 2500, 10000] = 325, 1450, 4375
    assert size_map(four_class_dataset) == {"a": "tiny", "b": "small", "c": "medium", "d": "large"}
    out = apply_remap(four_class_dataset, "size")
    assert out.class_names == ["large", "medium", "small", "tiny"]
    assert [r.labels.tolist() for r in out.records] == [[3, 2, 0], [1, 3], []]


def test_size_fixed_thresholds(four_class_dataset):
    out = apply_remap(four_class_dataset, "size:50,150,5000")
    # a=100 -> small, b=400 -> medium, c=2500 -> medium, d=10000 -> large; no tiny class
    assert out.class_names == ["large", "medium", "small"]
    assert [r.labels.tolist() for r in out.records] == [[2, 1, 0], [1, 2], []]


def test_size_drops_classes_without_boxes():
    ds = DetectionDataset(["seen", "never"], [ImageRecord("x.png", 50, 50, [box(5)], [0])])
    assert size_map(ds)["never"] is None


def test_size_thresholds_must_be_three_numbers(four_class_dataset):
    with pytest.raises(InputError, match="three"):
        apply_remap(four_class_dataset, "size:1,2")


def test_score_groups_use_the_seed_thresholds():
    assert [score_group(f) for f in (0.9, 0.75, 0.6, 0.5, 0.3, 0.25, 0.0)] == [
        "best", "high", "high", "medium", "medium", "low", "low"
    ]


def test_score_remap_from_evaluation_json(tmp_path, four_class_dataset):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"per_class": [
        {"name": "a", "f1": 0.8}, {"name": "b", "f1": 0.6}, {"name": "c", "f1": 0.1}
    ]}))
    out = apply_remap(four_class_dataset, f"score:{path}")
    # d is missing from the evaluation: F1 counts as 0 -> low
    assert out.class_names == ["best", "high", "low"]
    assert [r.labels.tolist() for r in out.records] == [[0, 1, 2], [2, 0], []]


def test_score_reads_csv(tmp_path):
    path = tmp_path / "per_class.csv"
    path.write_text("class,precision,recall,f1\nall,0.5,0.5,0.5\nknife,0.9,0.8,0.847\n")
    assert read_per_class_f1(path) == {"knife": 0.847}


def test_score_bad_file_names_it(tmp_path, four_class_dataset):
    path = tmp_path / "eval.json"
    path.write_text("{not json")
    with pytest.raises(InputError) as err:
        apply_remap(four_class_dataset, f"score:{path}")
    assert str(path) in str(err.value)
    with pytest.raises(InputError) as err:
        apply_remap(four_class_dataset, f"score:{tmp_path / 'missing.json'}")
    assert "missing.json" in str(err.value)


def test_user_map_file_with_drop_and_order(tmp_path, four_class_dataset):
    path = tmp_path / "map.yaml"
    path.write_text("map:\n  a: small\n  b: small\n  c: big\n  d: null\nnames: [big, small]\n")
    out = apply_remap(four_class_dataset, str(path))
    assert out.class_names == ["big", "small"]
    # d's box on one.png is dropped
    assert [r.labels.tolist() for r in out.records] == [[1, 1], [0, 1], []]
    assert len(out.records[0].boxes) == 2


def test_user_map_file_must_cover_every_class(tmp_path, four_class_dataset):
    path = tmp_path / "map.yaml"
    path.write_text("a: x\nb: x\n")
    with pytest.raises(InputError) as err:
        apply_remap(four_class_dataset, str(path))
    assert str(path) in str(err.value) and "'c'" in str(err.value)


def test_unknown_remap_is_a_clear_error(four_class_dataset):
    with pytest.raises(InputError, match="unknown remap"):
        apply_remap(four_class_dataset, "by-colour")


def test_remap_dataset_rejects_incomplete_mapping(four_class_dataset):
    with pytest.raises(ValueError, match="does not say"):
        remap_dataset(four_class_dataset, {"a": "x"})


def test_splits_share_the_train_mapping(four_class_dataset):
    """Size quartiles come from the training split; validation gets the same map even if its sizes differ."""
    val = DetectionDataset(["a", "b", "c", "d"], [ImageRecord("v.png", 300, 300, [box(100)], [0])])
    out = remap_splits({"train": four_class_dataset, "val": val}, "size")
    assert out["val"].class_names == out["train"].class_names
    assert out["val"].records[0].labels.tolist() == [out["train"].class_names.index("tiny")]
