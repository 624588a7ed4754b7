"""Seeded 60/20/20 split, one subject never on two sides."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.split import longtail_subsample, split_dataset, split_indices, subsample


def _ds(n: int, subjects=None) -> DetectionDataset:
    subjects = subjects or [None] * n
    return DetectionDataset(["a"], [ImageRecord(f"img{i}.png", 10, 10, subject=subjects[i]) for i in range(n)])


def test_without_subjects_counts_are_exact():
    parts = split_dataset(_ds(247))  # the seed's THEIA dataset size
    assert {k: len(v) for k, v in parts.items()} == {"train": 148, "val": 50, "test": 49}
    names = [r.path.name for part in parts.values() for r in part]
    assert sorted(names) == sorted(f"img{i}.png" for i in range(247))  # a partition


def test_deterministic_per_seed_and_differs_between_seeds():
    ds = _ds(100)
    a, b, c = split_indices(ds, seed=3), split_indices(ds, seed=3), split_indices(ds, seed=4)
    assert a == b
    assert a != c


def test_subjects_never_on_two_sides():
    subjects = [f"s{i // 3}" if i < 90 else None for i in range(120)]  # 30 people scanned 3 times, 30 once
    parts = split_dataset(_ds(120, subjects), seed=1)
    sides = {}
    for name, part in parts.items():
        for rec in part:
            if rec.subject is not None:
                assert sides.setdefault(rec.subject, name) == name
    sizes = [len(parts[k]) for k in ("train", "val", "test")]
    assert sum(sizes) == 120
    # Within one group (3 images) of the 72/24/24 targets.
    assert all(abs(s - t) <= 3 for s, t in zip(sizes, (72, 24, 24)))


def test_custom_fractions_and_bad_fractions():
    parts = split_dataset(_ds(10), fractions=(0.8, 0.2, 0.0))
    assert [len(parts[k]) for k in ("train", "val", "test")] == [8, 2, 0]
    with pytest.raises(ValueError, match="summing to 1"):
        split_dataset(_ds(10), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="three"):
        split_dataset(_ds(10), fractions=(0.5, 0.5))


def _labelled(n: int, rare_every: int, subjects=None) -> DetectionDataset:
    """Class 0 in every image, class 1 (rare) in every ``rare_every``-th."""
    records = []
    for i in range(n):
        labels = [0, 1] if i % rare_every == 0 else [0]
        records.append(ImageRecord(f"img{i}.png", 10, 10, [[0, 0, 5, 5]] * len(labels), labels,
                                   subjects[i] if subjects else None))
    return DetectionDataset(["common", "rare"], records)


def test_rare_class_reaches_every_side_when_stratified():
    ds = _labelled(100, rare_every=20)  # 5 rare objects: 3 / 1 / 1 is the fair share
    for seed in range(5):
        parts = split_dataset(ds, seed=seed)
        rare = {k: int(v.class_counts()[1]) for k, v in parts.items()}
        assert rare == {"train": 3, "val": 1, "test": 1}, (seed, rare)
        assert [len(parts[k]) for k in ("train", "val", "test")] == [60, 20, 20]


def test_stratified_split_still_groups_subjects():
    subjects = [f"s{i // 4}" for i in range(80)]
    parts = split_dataset(_labelled(80, rare_every=8, subjects=subjects), seed=2)
    seen = {}
    for name, part in parts.items():
        for rec in part:
            assert seen.setdefault(rec.subject, name) == name
    assert all(part.class_counts()[1] >= 1 for part in parts.values())


def test_unstratified_split_is_available():
    a = split_indices(_labelled(50, 10), seed=0, stratify=False)
    assert sum(len(v) for v in a.values()) == 50


# --- subsampling: one function for the experiment runner and the imbalance benchmark ----------
def _five_classes(n: int = 120) -> DetectionDataset:
    """Mostly one object per image, some two, a few none (seeded)."""
    rng = np.random.default_rng(3)
    records = []
    for i in range(n):
        k = 0 if i % 31 == 0 else (2 if i % 6 == 0 else 1)
        labels = rng.integers(0, 5, k)
        records.append(ImageRecord(f"img{i}.png", 10, 10, [[0, 0, 5, 5]] * k, labels))
    return DetectionDataset(["c0", "c1", "c2", "c3", "c4"], records)


def _numbers(ds: DetectionDataset) -> list[int]:
    return [int(r.path.stem[3:]) for r in ds.records]


# Recorded from experiment/detection.py's longtail_subsample before it moved here (keep by chance).
BY_CHANCE = [
    0, 3, 4, 7, 11, 12, 14, 19, 21, 22, 23, 31, 46, 50, 55, 59, 61, 62, 65, 79, 85, 93, 96, 100, 101, 112, 113,
    115, 117, 119
]


def test_longtail_by_chance_keeps_the_images_the_experiment_kept():
    ds = _five_classes()
    got = longtail_subsample(ds, [1.0, 0.3333, 0.1, 0.0333, 0.01], seed=0, order=["c2", "c1", "c0", "c3", "c4"])
    assert _numbers(got) == BY_CHANCE
    assert any(len(r.labels) == 0 for r in got.records)  # pure negatives are kept


def test_longtail_needs_a_ratio_per_class():
    with pytest.raises(ValueError, match="2 ratios for 5 classes"):
        longtail_subsample(_five_classes(), [1.0, 0.5])


def test_subsample_is_seeded_and_keeps_order():
    ds = _ds(30)
    a, b = subsample(ds, 10, seed=4), subsample(ds, 10, seed=4)
    assert _numbers(a) == _numbers(b) == sorted(_numbers(a)) and len(a) == 10
    assert subsample(ds, 30, seed=4) is ds and subsample(ds, None) is ds


def test_saved_splits_round_trip_and_name_a_bad_file(tmp_path):
    from rarespot.errors import InputError
    from rarespot.io.split import load_saved_splits, save_splits

    parts = split_dataset(_labelled(20, rare_every=5), seed=1)
    save_splits(parts, tmp_path / "split.json")
    back = load_saved_splits(tmp_path)
    assert list(back) == ["train", "val", "test"]
    for side, ds in parts.items():
        assert [r.path.name for r in back[side].records] == [r.path.name for r in ds.records]
        assert back[side].class_counts().tolist() == ds.class_counts().tolist()
    assert list(back["train"].class_names) == ["common", "rare"]
    (tmp_path / "split.json").write_text("{")
    with pytest.raises(InputError, match="not a readable split file"):
        load_saved_splits(tmp_path)
    with pytest.raises(InputError, match="no split.json"):
        load_saved_splits(tmp_path / "elsewhere")
