"""`rarespot synth` and `rarespot data convert | split | check | view`, as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from rarespot.cli import app
from rarespot.errors import InputError
from rarespot.io.annotations import load_dataset, save_dataset
from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.images import read_image, write_image

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    result = runner.invoke(app, ["synth", "--n", "4", "--out", str(out), "--seed", "0", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 scans" in result.output
    return out


def test_synth_then_check(synth_dir):
    result = runner.invoke(app, ["data", "check", str(synth_dir)])
    assert result.exit_code == 0, result.output
    assert "uint16 gray: 4" in result.output
    assert "1216x1500: 4" in result.output
    assert "pants_button" in result.output and "ok" in result.output


def test_synth_then_view_with_filter(synth_dir, tmp_path):
    out = tmp_path / "view.png"
    image = synth_dir / "images" / "scan_00001.png"
    result = runner.invoke(app, ["data", "view", str(image), "--dataset", str(synth_dir),
                                 "--filter", "clahe:clip=2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rgb = read_image(out)
    assert rgb.shape == (1500, 1216, 3) and rgb.dtype == np.uint8
    n_boxes = len(load_dataset(synth_dir).records[1])
    assert f"{n_boxes} boxes" in result.output
    # Red box edges are on the picture.
    assert np.any((rgb[:, :, 0] == 255) & (rgb[:, :, 1] == 40))


def test_view_with_a_voc_file_and_no_annotations(synth_dir, tmp_path):
    image = synth_dir / "images" / "scan_00000.png"
    xml = synth_dir / "annotations" / "scan_00000.xml"
    result = runner.invoke(app, ["data", "view", str(image), "-a", str(xml), "--classes",
                                 str(synth_dir / "classes.txt"), "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "view", str(image), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 0 and "0 boxes" in result.output


def _small_dataset(root) -> DetectionDataset:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(10):
        write_image(root / f"im{i}.png", np.full((20, 30), i * 100, np.uint16))
        records.append(ImageRecord(f"im{i}.png", 30, 20, [[1, 2, 10, 12]] if i % 3 else [], [i % 2] if i % 3 else [],
                                   f"p{i // 2}"))
    return DetectionDataset(["a", "b"], records, root)


@pytest.mark.parametrize("to", ["yolo", "coco", "voc"])
def test_convert(tmp_path, to):
    src = save_dataset(_small_dataset(tmp_path / "raw"), tmp_path / "src", "voc")
    result = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / to), "--to", to])
    assert result.exit_code == 0, result.output
    back = load_dataset(tmp_path / to)
    orig = load_dataset(src)
    assert [r.subject for r in back] == [r.subject for r in orig]
    for a, b in zip(orig, back):
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-9)


def test_split_keeps_subjects_together(tmp_path):
    src = save_dataset(_small_dataset(tmp_path / "raw"), tmp_path / "src", "voc")
    result = runner.invoke(app, ["data", "split", str(src), str(tmp_path / "parts"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "parts" / "split.csv").read_text().splitlines()
    assert rows[0] == "image,split,subject" and len(rows) == 11
    side_of = {}
    for row in rows[1:]:
        _, side, subject = row.split(",")
        assert side_of.setdefault(subject, side) == side
    sizes = {k: len(load_dataset(tmp_path / "parts" / k)) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 10


def test_bad_inputs_name_the_file(tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path / "absent")])
    assert isinstance(result.exception, InputError) and "absent" in str(result.exception)
    result = runner.invoke(app, ["data", "view", str(tmp_path / "none.png"), "-o", str(tmp_path / "x.png")])
    assert isinstance(result.exception, InputError) and "none.png" in str(result.exception)
    result = runner.invoke(app, ["data", "convert", str(tmp_path), str(tmp_path / "o"), "--to", "pascal"])
    assert isinstance(result.exception, InputError) and "pascal" in str(result.exception)
    src = save_dataset(_small_dataset(tmp_path / "raw"), tmp_path / "src", "voc")
    result = runner.invoke(app, ["data", "split", str(src), str(tmp_path / "p"), "--fractions", "0.5,0.5"])
    assert isinstance(result.exception, InputError) and "fractions" in str(result.exception)
    result = runner.invoke(app, ["data", "view", str(src / "images" / "im1.png"), "--filter", "blur:k=3"])
    assert isinstance(result.exception, InputError) and "blur" in str(result.exception)


def test_check_lists_every_broken_file_and_exits_1(tmp_path):
    src = save_dataset(_small_dataset(tmp_path / "raw"), tmp_path / "src", "voc")
    (src / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "images" / "im4.png").unlink()
    xml = src / "annotations" / "im2.xml"
    xml.write_text(xml.read_text().replace("<xmax>10</xmax>", "<xmax>99</xmax>"))
    result = runner.invoke(app, ["data", "check", str(src)])
    assert result.exit_code == 1, result.output
    assert "im1.png" in result.output and "im4.png" in result.output
    assert "2 error(s)" in result.output
    assert "clipped" in result.output and "im2.png" in result.output


def test_root_cli_prints_the_error_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rarespot", "data", "check", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # (rich may wrap a long path at the console width; the message itself is one line)
    text = "".join(proc.stderr.split())
    assert "nowhere:datasetnotfound" in text


def test_view_dicom_uses_its_own_window(tmp_path):
    from helpers_io import write_dicom

    raw = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (60, 1))  # 60 x 100 ramp 0..3960
    path = write_dicom(tmp_path / "scan.dcm", raw, center=2000, width=1000)
    out = tmp_path / "dcm.png"
    result = runner.invoke(app, ["data", "view", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "window_level:center=2000,width=1000" in result.output
    rgb = read_image(out)
    assert rgb[0, 30, 0] == 0 and rgb[0, 70, 0] == 255  # 1200 below the window, 2800 above it


def test_view_with_yolo_and_coco_annotation_files(tmp_path):
    ds = _small_dataset(tmp_path / "raw")
    yolo = save_dataset(ds, tmp_path / "yolo", "yolo")
    coco = save_dataset(ds, tmp_path / "coco", "coco")
    image = yolo / "images" / "im1.png"
    result = runner.invoke(app, ["data", "view", str(image), "-a", str(yolo / "labels" / "im1.txt"),
                                 "-o", str(tmp_path / "y.png")])
    assert result.exit_code == 0 and "1 boxes" in result.output, result.output
    result = runner.invoke(app, ["data", "view", str(coco / "images" / "im1.png"), "-a",
                                 str(coco / "annotations.json"), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and "1 boxes" in result.output, result.output
    # The same box drawn either way.
    assert np.array_equal(read_image(tmp_path / "y.png"), read_image(tmp_path / "c.png"))
    result = runner.invoke(app, ["data", "view", str(image), "-a", str(tmp_path / "gone.xml")])
    assert isinstance(result.exception, InputError) and "gone.xml" in str(result.exception)
    result = runner.invoke(app, ["data", "view", str(coco / "images" / "im1.png"), "-d", str(yolo / "labels")])
    assert isinstance(result.exception, InputError)


def test_convert_reports_fixed_boxes_as_plain_warnings(tmp_path):
    ds = _small_dataset(tmp_path / "raw")
    ds.records[1].boxes[0] = [20, 2, 45, 12]  # past the 30-pixel width
    src = save_dataset(ds, tmp_path / "src", "voc")
    result = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "out"), "--to", "coco"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "clipped" in result.output and "im1.png" in result.output
    assert load_dataset(tmp_path / "out").records[1].boxes.tolist() == [[20, 2, 30, 12]]
