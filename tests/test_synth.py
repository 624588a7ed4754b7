"""The synthetic body-scan generator: format, determinism, resume, physics, long tail."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from rarespot.io.annotations import load_dataset
from rarespot.io.images import read_image_with_meta
from rarespot.synth import (
    CLASS_NAMES,
    CLS,
    Body,
    dress,
    generate,
    generate_scan,
    make_body,
    subject_id,
)
from rarespot.synth.scan import _subject_index


def test_seed_classes_in_order():
    assert len(CLASS_NAMES) == 18
    assert CLASS_NAMES[0] == "zipper" and CLASS_NAMES[-1] == "pants_button"


def test_generate_writes_a_voc_dataset_of_16_bit_scans(tmp_path):
    ds = generate(3, tmp_path / "syn", seed=0, workers=1, progress=False)
    assert len(ds) == 3 and ds.class_names == CLASS_NAMES
    img, meta = read_image_with_meta(tmp_path / "syn" / "images" / "scan_00000.png")
    assert img.dtype == np.uint16 and img.shape == (1500, 1216) and meta["bit_depth"] == 16
    assert img.max() > 10000  # uses the 16-bit range, not 8 bits
    back = load_dataset(tmp_path / "syn")  # validated: no box outside its image
    assert back.class_names == CLASS_NAMES
    for a, b in zip(ds, back):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
        assert a.subject == b.subject and a.subject.startswith("subject_")
        assert (b.width, b.height) == (1216, 1500)


def test_deterministic_per_seed_and_index():
    a_img, a_boxes, a_labels, a_subj = generate_scan(7, 4)
    b_img, b_boxes, b_labels, b_subj = generate_scan(7, 4)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_boxes, b_boxes) and a_subj == b_subj
    c_img = generate_scan(8, 4)[0]
    assert not np.array_equal(a_img, c_img)


def test_parallel_and_serial_runs_give_identical_files(tmp_path):
    generate(4, tmp_path / "one", seed=3, workers=1, progress=False)
    generate(4, tmp_path / "two", seed=3, workers=2, progress=False)
    for sub in ("images/scan_00003.png", "annotations/scan_00003.xml", "classes.txt"):
        assert (tmp_path / "one" / sub).read_bytes() == (tmp_path / "two" / sub).read_bytes()


def test_resume_keeps_existing_files_and_fills_gaps(tmp_path):
    out = tmp_path / "syn"
    generate(2, out, seed=1, workers=1, progress=False)
    keep = out / "images" / "scan_00000.png"
    gone = out / "images" / "scan_00001.png"
    before_keep, before_gone = keep.stat().st_mtime_ns, gone.read_bytes()
    gone.unlink()
    ds = generate(2, out, seed=1, workers=1, progress=False)
    assert keep.stat().st_mtime_ns == before_keep  # reused, not rewritten
    assert gone.read_bytes() == before_gone  # regenerated identically
    assert len(ds) == 2


def test_objects_add_attenuation_inside_their_boxes():
    """Dense objects make their box brighter than the ring around it (dense = bright)."""
    checked = 0
    for index in range(6):
        img, boxes, labels, _ = generate_scan(0, index)
        img = img.astype(np.float64)
        for (x1, y1, x2, y2), lab in zip(boxes.astype(int), labels):
            if CLASS_NAMES[lab] in ("drugs", "shirt_button", "bra", "glasses", "jewelry"):
                continue  # faint or thin by design
            inside = img[y1:y2, x1:x2].max()
            ring = img[max(0, y1 - 6):y2 + 6, max(0, x1 - 6):x2 + 6].copy()
            ring[y1 - max(0, y1 - 6):y1 - max(0, y1 - 6) + (y2 - y1), x1 - max(0, x1 - 6):x1 - max(0, x1 - 6) + (x2 - x1)] = np.nan
            assert inside > np.nanpercentile(ring, 90), (index, CLASS_NAMES[lab])
            checked += 1
    assert checked >= 10


def _dress_many(n: int, seed: int = 0):
    counts = collections.Counter()
    sizes = collections.defaultdict(list)
    for i in range(n):
        srng = np.random.default_rng((seed, _subject_index(seed, i), 0))
        rng = np.random.default_rng((seed, i, 2))
        body = make_body(srng, rng, (1500, 1216))
        obj = np.zeros((1500, 1216), np.float32)
        boxes, labels = dress(rng, srng, body, obj, 1.0)
        for box, lab in zip(boxes, labels):
            counts[CLASS_NAMES[lab]] += 1
            sizes[CLASS_NAMES[lab]].append((box[2] - box[0], box[3] - box[1]))
    return counts, sizes


def test_long_tail_and_object_sizes():
    counts, sizes = _dress_many(400)
    total = sum(counts.values())
    top4 = sum(counts[c] for c in ("pants_button", "unknown_anomaly", "shirt_button", "zipper")) / total
    assert 0.58 <= top4 <= 0.72, top4  # the seed: ~65%
    assert 3.5 <= total / 400 <= 5.5  # ~4.4 objects a scan
    assert len(counts) >= 16  # the rarest classes (~0.7%) may miss a 400-scan draw
    assert counts.most_common(1)[0][0] == "pants_button"
    button = np.array(sizes["pants_button"])
    assert 8 <= button.min() and button.max() <= 20  # tiny
    shoes = np.array(sizes["shoes"])
    assert shoes[:, 1].min() >= 100  # large


def test_placements_follow_the_body():
    for i in range(60):
        srng = np.random.default_rng((0, _subject_index(0, i), 0))
        rng = np.random.default_rng((0, i, 2))
        body: Body = make_body(srng, rng, (1500, 1216))
        obj = np.zeros((1500, 1216), np.float32)
        boxes, labels = dress(rng, srng, body, obj, 1.0)
        p = body.pts
        for (x1, y1, x2, y2), lab in zip(boxes, labels):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            name = CLASS_NAMES[lab]
            if name == "shoes":
                assert cy > p["knee_l"][1]
            elif name == "glasses":
                assert abs(cy - body.head[1]) < body.head[3]
            elif name == "pants_button":
                assert abs(cx - body.head[0]) < 15 and p["navel"][1] < cy < p["crotch"][1]
            elif name == "watch":
                assert min(np.hypot(cx - p[f"wrist_{s}"][0], cy - p[f"wrist_{s}"][1]) for s in "lr") < 60


def test_some_subjects_are_scanned_more_than_once():
    subjects = collections.Counter(subject_id(0, i) for i in range(100))
    repeats = sum(1 for c in subjects.values() if c > 1)
    assert 10 <= repeats and len(subjects) < 90
    assert subject_id(0, 0) == "subject_00000"


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        generate(-1, "/nonexistent", progress=False)
    with pytest.raises(ValueError, match="too small"):
        generate(1, "/nonexistent", size=(100, 100), progress=False)


def test_smaller_scans_scale_objects(tmp_path):
    ds = generate(1, tmp_path / "small", seed=0, size=(750, 608), workers=1, progress=False)
    img = read_image_with_meta(tmp_path / "small" / "images" / "scan_00000.png")[0]
    assert img.shape == (750, 608)
    assert all(r.width == 608 and r.height == 750 for r in ds)
    assert CLS["pants_button"] == 17


def test_resume_refuses_other_settings_and_foreign_folders(tmp_path):
    from rarespot.errors import InputError

    out = tmp_path / "syn"
    generate(1, out, seed=1, workers=1, progress=False)
    with pytest.raises(InputError, match="other settings") as exc:
        generate(1, out, seed=2, workers=1, progress=False)
    assert "syn" in str(exc.value)
    foreign = tmp_path / "mine"
    (foreign / "images").mkdir(parents=True)
    (foreign / "images" / "photo.png").write_bytes(b"x")
    with pytest.raises(InputError, match="did not make") as exc:
        generate(1, foreign, workers=1, progress=False)
    assert "mine" in str(exc.value)
