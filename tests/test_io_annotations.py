"""VOC / YOLO / COCO: lossless round trips, validation on load, bad input named."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from rarespot.errors import InputError
from rarespot.io.annotations import detect_format, load_dataset, load_dataset_with_report, save_dataset
from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.images import write_image
from rarespot.io.validate import DatasetWarning, validate_dataset

CLASSES = ["zipper", "key", "pants button"]  # a space in a name must survive every format


def _make_dataset(root, float_boxes=False) -> DetectionDataset:
    """Three 16-bit images: two annotated (with subjects), one pure negative."""
    (root / "src").mkdir(parents=True)
    sizes = [(60, 40), (50, 70), (30, 30)]
    for k, (w, h) in enumerate(sizes):
        write_image(root / "src" / f"img{k}.png", np.full((h, w), 1000 + k, np.uint16))
    off = 0.25 if float_boxes else 0.0
    records = [
        ImageRecord("img0.png", 60, 40, [[1 + off, 2, 11, 12.5 if float_boxes else 12], [20, 5, 59, 39]], [0, 2], "alice"),
        ImageRecord("img1.png", 50, 70, [[0, 0, 50, 70]], [1], "bob"),
        ImageRecord("img2.png", 30, 30),
    ]
    return DetectionDataset(list(CLASSES), records, root / "src")


def _assert_same(a: DetectionDataset, b: DetectionDataset, exact=True):
    assert b.class_names == a.class_names
    assert [r.path.name for r in b] == [r.path.name for r in a]
    for ra, rb in zip(a, b):
        assert (rb.width, rb.height, rb.subject) == (ra.width, ra.height, ra.subject)
        assert np.array_equal(rb.labels, ra.labels)
        if exact:
            assert np.array_equal(rb.boxes, ra.boxes), (ra.path, ra.boxes, rb.boxes)
        else:
            np.testing.assert_allclose(rb.boxes, ra.boxes, rtol=0, atol=1e-9)


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_round_trip_integral_boxes_exact(tmp_path, fmt):
    ds = _make_dataset(tmp_path)
    save_dataset(ds, tmp_path / fmt, fmt)
    assert detect_format(tmp_path / fmt) == fmt
    back = load_dataset(tmp_path / fmt)
    # YOLO stores normalised floats: exact up to float rounding (1e-9 px).
    _assert_same(ds, back, exact=fmt != "yolo")
    assert back.records[2].boxes.shape == (0, 4)  # the pure negative survives


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_round_trip_float_boxes(tmp_path, fmt):
    ds = _make_dataset(tmp_path, float_boxes=True)
    back = load_dataset(save_dataset(ds, tmp_path / fmt, fmt))
    _assert_same(ds, back, exact=fmt == "voc")


def test_chain_voc_yolo_coco_voc(tmp_path):
    ds = _make_dataset(tmp_path)
    a = load_dataset(save_dataset(ds, tmp_path / "a", "voc"))
    b = load_dataset(save_dataset(a, tmp_path / "b", "yolo"))
    c = load_dataset(save_dataset(b, tmp_path / "c", "coco"))
    d = load_dataset(save_dataset(c, tmp_path / "d", "voc"))
    _assert_same(ds, d, exact=False)
    # VOC writes integral coordinates as integers: the file reads like the standard.
    xml = (tmp_path / "a" / "annotations" / "img0.xml").read_text()
    assert "<xmin>1</xmin>" in xml and "<subject>alice</subject>" in xml and "<name>pants button</name>" in xml


def test_copy_images_false_symlinks(tmp_path):
    ds = _make_dataset(tmp_path)
    out = save_dataset(ds, tmp_path / "linked", "coco", copy_images=False)
    link = out / "images" / "img0.png"
    assert link.is_symlink() and link.resolve() == (tmp_path / "src" / "img0.png").resolve()
    _assert_same(ds, load_dataset(out))


def test_voc_class_order_without_classes_txt_is_sorted(tmp_path):
    ds = _make_dataset(tmp_path)
    out = save_dataset(ds, tmp_path / "voc", "voc")
    (out / "classes.txt").unlink()
    back = load_dataset(out)
    assert back.class_names == ["key", "pants button", "zipper"]  # only names that occur, sorted
    assert [back.class_names[i] for i in back.records[0].labels] == ["zipper", "pants button"]


def test_explicit_class_names_win(tmp_path):
    ds = _make_dataset(tmp_path)
    out = save_dataset(ds, tmp_path / "voc", "voc")
    back = load_dataset(out, class_names=["pants button", "key", "zipper", "watch"])
    assert back.class_names[3] == "watch"
    assert [back.class_names[i] for i in back.records[0].labels] == ["zipper", "pants button"]


def test_voc_images_without_xml_are_negatives_and_xml_beside_images(tmp_path):
    ds = _make_dataset(tmp_path)
    out = save_dataset(ds, tmp_path / "voc", "voc")
    (out / "annotations" / "img2.xml").unlink()
    back = load_dataset(out)
    assert len(back) == 3 and len(back.records[2]) == 0
    # labelImg layout: the XML files next to the images.
    for p in (out / "annotations").glob("*.xml"):
        p.rename(out / "images" / p.name)
    (out / "annotations").rmdir()
    flat = load_dataset(out / "images", class_names=CLASSES)
    assert len(flat) == 3 and flat.class_counts().tolist() == [1, 1, 1]


def test_yolo_data_yaml_split_layout(tmp_path):
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        write_image(root / "images" / split / f"{split}.png", np.zeros((20, 40), np.uint8))
        (root / "labels" / split).mkdir(parents=True)
    (root / "labels" / "train" / "train.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "labels" / "val" / "val.txt").write_text("0 0.1 0.2 0.3 0.4 0.3 0.2\n")  # a polygon
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n")
    ds = load_dataset(root)
    assert ds.class_names == ["a", "b"]
    by_name = {r.path.name: r for r in ds}
    np.testing.assert_allclose(by_name["train.png"].boxes, [[10, 5, 30, 15]])
    np.testing.assert_allclose(by_name["val.png"].boxes, [[4, 4, 12, 8]])


def test_yolo_files_written_on_windows_read_fine(tmp_path):
    """A UTF-8 byte-order mark and CRLF line ends (Notepad's defaults)."""
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "yolo", "yolo")
    (out / "classes.txt").write_bytes("\ufeffzipper\r\nkey\r\npants button\r\n".encode("utf-8"))
    (out / "labels" / "img1.txt").write_bytes("\ufeff1 0.5 0.5 1 1\r\n".encode("utf-8"))
    back = load_dataset(out)
    assert back.class_names == CLASSES
    np.testing.assert_allclose(back.records[1].boxes, [[0, 0, 50, 70]])


def test_yolo_subjects_csv(tmp_path):
    ds = _make_dataset(tmp_path)
    out = save_dataset(ds, tmp_path / "yolo", "yolo")
    assert (out / "subjects.csv").read_text().splitlines()[0] == "image,subject"
    assert [r.subject for r in load_dataset(out)] == ["alice", "bob", None]


# ---------------------------------------------------------------- validation


def test_box_partly_outside_is_clipped_with_warning(tmp_path):
    ds = _make_dataset(tmp_path)
    ds.records[0].boxes[1] = [20, 5, 75, 45]  # runs past 60x40
    out = save_dataset(ds, tmp_path / "voc", "voc")
    with pytest.warns(DatasetWarning, match="clipped") as rec:
        back, report = load_dataset_with_report(out)
    assert "img0.png" in str(rec[0].message)
    assert back.records[0].boxes[1].tolist() == [20, 5, 60, 40]
    assert len(report.clipped) == 1 and report.clipped[0].before == (20, 5, 75, 45)
    assert report.clipped[0].class_name == "pants button"


def test_degenerate_box_is_dropped_with_warning(tmp_path):
    ds = _make_dataset(tmp_path)
    ds.records[0].boxes[0] = [5, 5, 5, 9]  # zero width
    ds.records[1].boxes[0] = [60, 10, 80, 20]  # wholly right of a 50-wide image
    out = save_dataset(ds, tmp_path / "coco", "coco")
    with pytest.warns(DatasetWarning, match="dropped"):
        back, report = load_dataset_with_report(out)
    assert len(back.records[0]) == 1 and back.records[0].labels.tolist() == [2]
    assert len(back.records[1]) == 0
    assert len(report.dropped) == 2 and report.objects == 1


def test_clean_dataset_warns_nothing(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "voc", "voc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = load_dataset_with_report(out)[1]
    assert report.ok and report.images == 3 and report.objects == 3 and report.negatives == 1


def test_validate_in_memory_out_of_range_label(tmp_path):
    ds = _make_dataset(tmp_path)
    ds.records[1].labels[0] = 7
    with pytest.raises(InputError, match="out of range") as exc:
        validate_dataset(ds)
    assert "img1.png" in str(exc.value)


def test_decode_finds_corrupt_image_and_collects_errors(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "voc", "voc")
    (out / "images" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (out / "images" / "img2.png").unlink()
    ds, report = load_dataset_with_report(out, strict=False, decode=True)
    assert not report.ok and len(report.errors) == 2
    assert any("img1.png" in e for e in report.errors) and any("img2.png" in e for e in report.errors)
    assert report.bit_depths == {"uint16 gray": 1}


# ---------------------------------------------------------------- bad input names the file


def test_voc_unknown_class(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "voc", "voc")
    (out / "classes.txt").write_text("zipper\nkey\n")
    with pytest.raises(InputError, match="unknown class") as exc:
        load_dataset(out)
    assert "img0.xml" in str(exc.value) and "pants button" in str(exc.value)


def test_voc_missing_image(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "voc", "voc")
    (out / "images" / "img1.png").unlink()
    with pytest.raises(InputError, match="not found") as exc:
        load_dataset(out)
    assert "img1" in str(exc.value) and "img1.xml" in str(exc.value)


def test_voc_bad_xml_and_bad_number(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "voc", "voc")
    xml = out / "annotations" / "img0.xml"
    good = xml.read_text()
    xml.write_text(good.replace("<xmin>1</xmin>", "<xmin>one</xmin>"))
    with pytest.raises(InputError, match="not a number") as exc:
        load_dataset(out)
    assert "img0.xml" in str(exc.value)
    xml.write_text(good[:50])
    with pytest.raises(InputError, match="not valid XML") as exc:
        load_dataset(out)
    assert "img0.xml" in str(exc.value)


def test_yolo_out_of_range_class_and_bad_line(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "yolo", "yolo")
    label = out / "labels" / "img1.txt"
    label.write_text("5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match="class id 5 out of range") as exc:
        load_dataset(out)
    assert "img1.txt" in str(exc.value)
    label.write_text("1 0.5 0.5\n")
    with pytest.raises(InputError, match="line 1") as exc:
        load_dataset(out)
    assert "img1.txt" in str(exc.value)


def test_yolo_missing_class_list(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "yolo", "yolo")
    (out / "classes.txt").unlink()
    (out / "data.yaml").unlink()
    with pytest.raises(InputError, match="classes.txt") as exc:
        load_dataset(out)
    assert "yolo" in str(exc.value)


def test_yolo_corrupt_image_header(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "yolo", "yolo")
    (out / "images" / "img0.png").write_bytes(b"garbage")
    with pytest.raises(InputError) as exc:
        load_dataset(out)
    assert "img0.png" in str(exc.value)


def test_coco_unknown_category_and_image(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "coco", "coco")
    path = out / "annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown category_id 99") as exc:
        load_dataset(out)
    assert "annotations.json" in str(exc.value)
    data["annotations"][0]["category_id"] = 1
    data["images"][0]["file_name"] = "gone.png"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not found") as exc:
        load_dataset(out)
    assert "gone.png" in str(exc.value)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON") as exc:
        load_dataset(out)
    assert "annotations.json" in str(exc.value)


def test_unknown_format_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot tell") as exc:
        load_dataset(tmp_path / "empty")
    assert "empty" in str(exc.value)
    with pytest.raises(InputError, match="not found") as exc:
        load_dataset(tmp_path / "absent")
    assert "absent" in str(exc.value)


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_opixray_subset_to_voc_and_back_gives_identical_boxes(opixray_dir, tmp_path):
    full = load_dataset(opixray_dir)
    assert len(full) == 2400 and full.num_classes == 5
    sub = full.subset(range(0, 2400, 48))  # 50 images spread over the set
    voc = load_dataset(save_dataset(sub, tmp_path / "voc", "voc"))
    _assert_same(sub, voc, exact=True)  # YOLO -> VOC: the pixel boxes are bit-identical
    yolo = load_dataset(save_dataset(voc, tmp_path / "yolo", "yolo"))
    _assert_same(sub, yolo, exact=False)
    # And the YOLO text itself: the same class ids and numbers as the original files.
    for rec in sub:
        orig = np.loadtxt(opixray_dir / "labels" / f"{rec.stem}.txt", ndmin=2)
        again = np.loadtxt(tmp_path / "yolo" / "labels" / f"{rec.stem}.txt", ndmin=2)
        np.testing.assert_allclose(again, orig, rtol=0, atol=1e-12)
    assert not any(p.name == "labels.cache" for p in (tmp_path / "yolo").rglob("*"))


def test_yolo_bad_yaml_and_undecodable_label(tmp_path):
    out = save_dataset(_make_dataset(tmp_path), tmp_path / "yolo", "yolo")
    (out / "classes.txt").unlink()
    (out / "data.yaml").write_text("names: [a, b\n")
    with pytest.raises(InputError, match="cannot read YAML") as exc:
        load_dataset(out)
    assert "data.yaml" in str(exc.value)
    (out / "data.yaml").write_text("- just a list\n")
    with pytest.raises(InputError, match="mapping") as exc:
        load_dataset(out)
    assert "data.yaml" in str(exc.value)
    (out / "data.yaml").write_text("names: [zipper, key, pants button]\n")
    (out / "labels" / "img0.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError) as exc:
        load_dataset(out)
    assert "img0.txt" in str(exc.value)
