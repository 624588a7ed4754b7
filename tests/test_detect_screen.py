"""Batch screening (`rarespot detect batch`, once `detect screen`): CSV, contact sheet, resume, bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rarespot.detect.screen_batch import (
    CSV_FIELDS,
    detections_to_records,
    list_scans,
    screen_folder,
)
from rarespot.errors import InputError, RarespotError
from rarespot.io.images import write_image
from serve_fixtures import CLASS_NAMES, FakePredictor, FakeDetections, corrupt_png, scan_16bit, tiny_yolo


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path, monkeypatch):
    """A .pt screened on OpenVINO is exported once into the cache: a test's own, not the user's."""
    monkeypatch.setenv("RARESPOT_CACHE_DIR", str(tmp_path / "cache"))


def make_folder(root: Path) -> Path:
    """Scans whose brightest value sets the fake predictor's top score (0.9 * peak / 65535)."""
    src = root / "scans"
    (src / "day2").mkdir(parents=True)
    write_image(src / "a_bright.png", scan_16bit(120, 100, peak=65535))  # top score 0.9
    write_image(src / "day2" / "b_mid.tif", scan_16bit(120, 100, peak=43690, seed=1))  # 0.6
    write_image(src / "c_dim.png", scan_16bit(120, 100, peak=21845, seed=2))  # 0.3
    (src / "d_broken.png").write_bytes(corrupt_png())
    (src / "notes.txt").write_text("not a scan")
    return src


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def brightness_predictor() -> FakePredictor:
    # One box per scan, scored 0.9 x (brightest value / 65535).
    return FakePredictor(base_scores=(0.9,), scale_by_brightness=True)


def test_screen_writes_csv_sheet_and_thumbnails(tmp_path):
    src = make_folder(tmp_path)
    out = tmp_path / "out"
    result = screen_folder(src, brightness_predictor(), out, conf=0.25, flag_conf=0.5, progress=False)

    rows = read_csv(out / "screen.csv")
    assert list(rows[0]) == CSV_FIELDS
    by_file = {r["file"]: r for r in rows}
    assert sorted(by_file) == ["a_bright.png", "c_dim.png", "d_broken.png", "day2/b_mid.tif"]
    assert by_file["a_bright.png"] == {
        "file": "a_bright.png", "n_detections": "1", "max_confidence": "0.90000", "flagged": "1", "error": "",
        "tiles": "", "tiles_inspected": "", "note": "",  # a predictor object without tiles says nothing of them
    }
    assert by_file["day2/b_mid.tif"]["max_confidence"] == "0.60000" and by_file["day2/b_mid.tif"]["flagged"] == "1"
    assert by_file["c_dim.png"]["max_confidence"] == "0.30000" and by_file["c_dim.png"]["flagged"] == "0"
    broken = by_file["d_broken.png"]
    assert broken["n_detections"] == "0" and "corrupt or unreadable PNG" in broken["error"]
    assert "libpng error" in broken["error"]  # what the decoder said, in the file's own row
    assert (result.n_scans, result.n_flagged, result.n_errors, result.n_skipped) == (4, 2, 1, 0)

    # Contact sheet: flagged scans only, most confident first; the bad file listed with its error.
    sheet = (out / "contact_sheet.html").read_text()
    assert sheet.index("a_bright.png") < sheet.index("day2/b_mid.tif")
    assert "c_dim.png" not in sheet
    assert "d_broken.png" in sheet and "corrupt or unreadable PNG" in sheet
    thumbs = sorted(p.name for p in (out / "thumbs").iterdir())
    assert len(thumbs) == 2 and all(t.endswith(".png") for t in thumbs)
    for name in thumbs:
        assert f'src="thumbs/{name}"' in sheet

    # Boxes of every scan with detections, as flat records.
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert {x["file"] for x in lines} == {"a_bright.png", "day2/b_mid.tif", "c_dim.png"}
    first = next(x for x in lines if x["file"] == "a_bright.png")["detections"][0]
    assert first == {"x1": 10.0, "y1": 12.0, "x2": 30.0, "y2": 36.0, "score": 0.9, "label": 0, "class_name": "knife"}


def test_thumbnail_shows_the_box_in_green(tmp_path):
    import cv2

    src = tmp_path / "s"
    src.mkdir()
    write_image(src / "flat.png", np.full((800, 600), 30000, np.uint16))
    out = tmp_path / "out"
    screen_folder(src, FakePredictor(base_scores=(0.9,)), out, conf=0.25, flag_conf=0.5, thumb_px=200, progress=False)
    (thumb,) = (out / "thumbs").iterdir()
    bgr = cv2.imread(str(thumb))
    assert bgr.shape == (200, 150, 3)  # longest side shrunk to thumb_px, aspect kept
    green = (bgr[:, :, 1] > 150) & (bgr[:, :, 0] < 100) & (bgr[:, :, 2] < 100)
    ys, xs = np.nonzero(green)
    # The box spans 10-30 % of the width and height: the green edges lie there (label text aside).
    assert green.sum() > 0 and abs(np.median(xs) / 150 - 0.2) < 0.12 and abs(np.median(ys) / 200 - 0.2) < 0.12


class StopAfter(FakePredictor):
    """Simulates a crash (Ctrl-C) after ``n`` scans."""

    def __init__(self, n: int):
        super().__init__(base_scores=(0.9,), scale_by_brightness=True)
        self.n = n

    def predict(self, image):
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return super().predict(image)


def test_interrupted_run_resumes_without_redoing_finished_scans(tmp_path):
    src = make_folder(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        screen_folder(src, StopAfter(2), out, progress=False)
    # d_broken fails in the reader (a row with its error); the crash comes at day2/b_mid.
    assert [r["file"] for r in read_csv(out / "screen.csv")] == ["a_bright.png", "c_dim.png", "d_broken.png"]

    again = brightness_predictor()
    result = screen_folder(src, again, out, progress=False)
    assert again.calls == 1  # only day2/b_mid is new
    rows = read_csv(out / "screen.csv")
    assert [r["file"] for r in rows] == ["a_bright.png", "c_dim.png", "d_broken.png", "day2/b_mid.tif"]
    assert (result.n_scans, result.n_skipped, result.n_flagged) == (4, 3, 2)

    # A third run has nothing left to do and loads no model.
    idle = brightness_predictor()
    assert screen_folder(src, idle, out, progress=False).n_skipped == 4 and idle.calls == 0


def test_half_written_last_row_is_dropped_and_redone(tmp_path):
    src = make_folder(tmp_path)
    out = tmp_path / "out"
    screen_folder(src, brightness_predictor(), out, progress=False)
    text = (out / "screen.csv").read_text()
    cut = text[: text.rindex("day2/b_mid.tif") + 6]  # crash in the middle of the last row
    (out / "screen.csv").write_text(cut)
    again = brightness_predictor()
    screen_folder(src, again, out, progress=False)
    assert again.calls == 1
    assert [r["file"] for r in read_csv(out / "screen.csv")].count("day2/b_mid.tif") == 1


def test_changed_settings_refuse_to_resume_until_restart(tmp_path):
    src = make_folder(tmp_path)
    out = tmp_path / "out"
    screen_folder(src, brightness_predictor(), out, conf=0.25, progress=False)
    with pytest.raises(RarespotError, match=r"screen\.json: an earlier run used different conf"):
        screen_folder(src, brightness_predictor(), out, conf=0.1, progress=False)
    fresh = brightness_predictor()
    result = screen_folder(src, fresh, out, conf=0.1, restart=True, progress=False)
    assert fresh.calls == 3 and result.n_skipped == 0 and result.n_scans == 4


def test_screen_json_keeps_the_options_given(tmp_path, monkeypatch):
    """screen.json lists the predictor settings given (not every default), as the keyword options of
    earlier versions did: their runs resume. The CLI's are the flags it passes on."""
    from rarespot.cli import app
    from rarespot.detect import screen_batch
    from rarespot.detect.settings import InferenceSettings

    src = make_folder(tmp_path)

    def options(out):
        return json.loads((out / "screen.json").read_text())["predictor_options"]

    screen_folder(src, brightness_predictor(), tmp_path / "kw", tile=256, progress=False)
    screen_folder(src, brightness_predictor(), tmp_path / "obj", settings=InferenceSettings(tile=256), progress=False)
    assert options(tmp_path / "kw") == options(tmp_path / "obj") == {"tile": "256"}

    given = {}
    monkeypatch.setattr(screen_batch, "screen_folder", lambda *a, **kw: given.update(kw) or 1 / 0)
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    CliRunner().invoke(app, ["detect", "batch", str(src), "--model", str(model)])
    monkeypatch.undo()
    given.pop("ray")
    screen_folder(src, brightness_predictor(), tmp_path / "cli", progress=False, **given)
    assert options(tmp_path / "cli") == {"backend": "auto", "device": "cpu", "overlap": "0.2", "skip_background": "True",
                                         "threads": "None", "tile": "512", "tta": "none"}
    assert json.loads((tmp_path / "cli" / "screen.json").read_text())["conf"] == 0.25


def test_an_option_not_recorded_resumes_as_its_default_and_a_changed_one_is_refused(tmp_path):
    """A run records the options it was given; on resume an option missing from either side counts as its
    InferenceSettings default. So a run recorded before an option existed (here: no ``tta``) resumes under a
    command that passes every option at its default, and a real change is still refused, naming the file."""
    from rarespot.detect.settings import InferenceSettings

    src = make_folder(tmp_path)
    out = tmp_path / "out"
    screen_folder(src, brightness_predictor(), out, settings=InferenceSettings(tile=256), progress=False)
    meta = out / "screen.json"
    assert json.loads(meta.read_text())["predictor_options"] == {"tile": "256"}
    (out / "screen.csv").write_text("".join((out / "screen.csv").read_text().splitlines(keepends=True)[:2]))

    resumed = brightness_predictor()
    result = screen_folder(src, resumed, out, settings=InferenceSettings(tile=256, tta="none", overlap=0.2), progress=False)
    assert result.n_skipped == 1 and result.n_scans == 4
    assert json.loads(meta.read_text())["predictor_options"] == {"overlap": "0.2", "tile": "256", "tta": "none"}

    for changed in (InferenceSettings(tile=256, tta="flips"), InferenceSettings()):  # a new option on; tile back to 512
        with pytest.raises(RarespotError, match=r"screen\.json: an earlier run used different predictor_options"):
            screen_folder(src, brightness_predictor(), out, settings=changed, progress=False)


NOTICE = "`detect screen` is now `detect batch`; the old name keeps working"


def test_detect_batch_and_its_old_name_screen_the_same(tmp_path, monkeypatch):
    """`rarespot detect batch` is batch screening; `detect screen` (the old name, which clashed with the
    `rarespot screen` pipeline) still works, hidden, with a one-line notice on stderr."""
    from rarespot.cli import app
    from rarespot.detect import screen_batch

    src = make_folder(tmp_path)
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    real = screen_batch.screen_folder
    # The fake predictor instead of the model file; everything else as the command passes it.
    monkeypatch.setattr(screen_batch, "screen_folder",
                        lambda source, model, out, **kw: real(source, brightness_predictor(), out, **kw))
    results = {}
    for name in ("batch", "screen"):
        result = CliRunner().invoke(app, ["detect", name, str(src), "--model", str(model), "--out", str(tmp_path / name),
                                          "--flag-conf", "0.5"])
        assert result.exit_code == 0, result.output
        assert "4 scans (0 from an earlier run), 2 flagged, 1 unreadable" in " ".join(result.stdout.split())
        assert NOTICE not in result.stdout
        results[name] = result
    assert NOTICE not in results["batch"].stderr
    assert results["screen"].stderr.splitlines().count(NOTICE) == 1
    assert (tmp_path / "batch" / "screen.csv").read_text() == (tmp_path / "screen" / "screen.csv").read_text()
    assert (tmp_path / "batch" / "screen.json").read_text() == (tmp_path / "screen" / "screen.json").read_text()


def test_detect_help_lists_batch_not_the_old_name():
    import re

    import typer

    from rarespot.cli import app
    from rarespot.detect.cli import app as detect_app

    commands = typer.main.get_command(detect_app).commands
    assert not commands["batch"].hidden and commands["screen"].hidden
    text = CliRunner().invoke(app, ["detect", "--help"]).output
    names = re.findall(r"^│ (\S+)", text, flags=re.M)  # a command's first line in the Commands panel
    assert "batch" in names and "screen" not in names


def test_list_file_and_bad_sources(tmp_path):
    src = make_folder(tmp_path)
    listing = tmp_path / "todo.txt"
    listing.write_text("# tonight\nscans/a_bright.png\n\nscans/missing.png\n")
    root, files = list_scans(listing)
    assert root == tmp_path and files == [src / "a_bright.png", src / "missing.png"]
    out = tmp_path / "out"
    screen_folder(listing, brightness_predictor(), out, progress=False)
    rows = {r["file"]: r for r in read_csv(out / "screen.csv")}
    assert rows["scans/a_bright.png"]["flagged"] == "1"
    assert rows["scans/missing.png"]["error"] == "image file not found"

    with pytest.raises(InputError, match=r"nowhere: no such folder or list file"):
        list_scans(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no scans found"):
        list_scans(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match=r"blank\.txt: the list file names no scans"):
        list_scans(tmp_path / "blank.txt")


def test_output_folder_inside_the_source_is_not_screened(tmp_path):
    src = make_folder(tmp_path)
    screen_folder(src, brightness_predictor(), src / "results", progress=False)
    again = brightness_predictor()
    result = screen_folder(src, again, src / "results", progress=False)
    assert again.calls == 0 and result.n_scans == 4  # the thumbnails in results/thumbs were not picked up


def test_bad_thresholds_and_missing_model(tmp_path):
    src = make_folder(tmp_path)
    with pytest.raises(ValueError, match="flag_conf"):
        screen_folder(src, brightness_predictor(), tmp_path / "o", conf=0.5, flag_conf=0.3)
    with pytest.raises(InputError, match=r"gone\.pt: model file not found"):
        screen_folder(src, tmp_path / "gone.pt", tmp_path / "o2", progress=False)


def test_records_are_sorted_and_floored():
    det = FakeDetections(np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3.333]]), np.array([0.2, 0.7, 0.5]),
                         np.array([1, 0, 1]))
    records = detections_to_records(det, CLASS_NAMES, min_score=0.3)
    assert records == [
        {"x1": 1.0, "y1": 1.0, "x2": 2.0, "y2": 2.0, "score": 0.7, "label": 0, "class_name": "knife"},
        {"x1": 2.0, "y1": 2.0, "x2": 3.0, "y2": 3.33, "score": 0.5, "label": 1, "class_name": "gun"},
    ]


def test_cli_screen_with_a_real_untrained_yolo(tmp_path):
    """End to end: `rarespot detect batch` on real TiledPredictor output (a tiny untrained yolo11n),
    by default on OpenVINO: the .pt is exported to ONNX once, into the cache."""
    import torch

    from rarespot.cli import app

    torch.set_num_threads(2)
    model = tiny_yolo(tmp_path / "tiny.pt")
    src = tmp_path / "scans"
    src.mkdir()
    for i in range(2):
        write_image(src / f"s{i}.png", scan_16bit(256, 200, seed=i))
    out = tmp_path / "out"
    # Untrained scores are ~1e-4..1e-3: flag at 1e-4 so the sheet gets thumbnails from real boxes.
    args = ["detect", "batch", str(src), "--model", str(model), "--out", str(out),
            "--conf", "0.0001", "--flag-conf", "0.0001", "--tile", "256"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 scans (0 from an earlier run), 2 flagged, 0 unreadable" in " ".join(result.output.split())
    rows = read_csv(out / "screen.csv")
    assert [r["file"] for r in rows] == ["s0.png", "s1.png"]
    assert all(int(r["n_detections"]) > 0 and float(r["max_confidence"]) >= 1e-4 for r in rows)
    assert len(list((out / "thumbs").iterdir())) == 2
    assert all(r["tiles"] == "1" and r["tiles_inspected"] == "1" for r in rows)
    assert "scans/s" in result.output
    assert len(list((tmp_path / "cache" / "onnx").glob("tiny-*-256.onnx"))) == 1
    assert len(list((tmp_path / "cache" / "backend_choice").glob("tiny-*.json"))) == 1  # OpenVINO vs onnxruntime, timed once

    # The same screening in a fresh process, with the export and the back-end choice cached: the same rows,
    # and neither torch, torchvision, ultralytics nor onnx is imported (seconds of start-up).
    import os
    import subprocess
    import sys

    again = tmp_path / "again"
    code = (
        "import sys\nfrom rarespot.cli import app\n"
        f"try:\n    app({(args[:6] + [str(again)] + args[7:])!r})\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'torchvision', 'ultralytics', 'onnx') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "RARESPOT_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "IMPORTED []" in proc.stdout, proc.stdout[-2000:]
    assert (again / "screen.csv").read_text() == (out / "screen.csv").read_text()
    assert (again / "detections.jsonl").read_text() == (out / "detections.jsonl").read_text()

    bad = CliRunner().invoke(app, ["detect", "batch", str(src), "--model", str(model), "--conf", "0.5",
                                   "--flag-conf", "0.2"])
    assert bad.exit_code == 2 and "--flag-conf" in bad.output


@pytest.mark.slow
@pytest.mark.realdata
def test_screen_real_opixray_scans_from_a_list_file(opixray_dir, tmp_path):
    """Real 8-bit RGB X-ray JPEGs through a list file, the real TiledPredictor and the review API."""
    import torch
    from fastapi.testclient import TestClient

    from rarespot.serve.app import create_app
    from rarespot.serve.settings import ServeSettings

    torch.set_num_threads(2)
    images = sorted((opixray_dir / "images").glob("*.jpg"))[:4]
    listing = tmp_path / "tonight.txt"
    listing.write_text("".join(f"{p}\n" for p in images))  # absolute paths: the data stays where it is
    model = tiny_yolo(tmp_path / "tiny.pt", class_names=["Scissor", "Folding_Knife", "Straight_Knife",
                                                         "Utility_Knife", "Multi-tool_Knife"])
    result = screen_folder(listing, model, tmp_path / "out", conf=1e-4, flag_conf=1e-4, tile=416, progress=False)
    rows = read_csv(tmp_path / "out" / "screen.csv")
    assert [r["file"] for r in rows] == [p.as_posix() for p in images]
    assert all(r["error"] == "" and int(r["n_detections"]) > 0 for r in rows)
    assert result.n_flagged == 4 and len(list((tmp_path / "out" / "thumbs").iterdir())) == 4

    client = TestClient(create_app(model, ServeSettings(floor_conf=1e-4, tile=416)), base_url="http://localhost")
    response = client.post("/api/detect", files={"file": (images[0].name, images[0].read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["channels"], body["format"]) == (416, 416, 3, "JPEG")
    assert len(body["detections"]) > 0


# ------------------------------------------------------------------ resume: retries, JSONL/CSV pair, interrupts


def test_decoder_messages_go_into_the_row_not_onto_the_terminal(tmp_path, capfd):
    src = make_folder(tmp_path)
    screen_folder(src, brightness_predictor(), tmp_path / "out", progress=False)
    captured = capfd.readouterr()
    assert "libpng" not in captured.err and "libpng" not in captured.out
    row = next(r for r in read_csv(tmp_path / "out" / "screen.csv") if r["file"] == "d_broken.png")
    assert row["error"].startswith("corrupt or unreadable PNG file (libpng error: IDAT: ")


def test_failed_rows_are_retried_only_when_asked(tmp_path):
    src = make_folder(tmp_path)
    whole = (src / "a_bright.png").read_bytes()
    (src / "e_copying.png").write_bytes(whole[: len(whole) // 2])  # still being copied
    out = tmp_path / "out"
    screen_folder(src, brightness_predictor(), out, progress=False)
    row = next(r for r in read_csv(out / "screen.csv") if r["file"] == "e_copying.png")
    assert row["error"].startswith("truncated PNG") and "still being written" in row["error"]
    sheet = (out / "contact_sheet.html").read_text()
    assert "--retry-errors" in sheet and "e_copying.png" in sheet

    (src / "e_copying.png").write_bytes(whole)  # the copy finished
    plain = brightness_predictor()
    screen_folder(src, plain, out, progress=False)
    assert plain.calls == 0  # a plain resume keeps failed rows as they are

    retry = brightness_predictor()
    result = screen_folder(src, retry, out, retry_errors=True, progress=False)
    assert retry.calls == 1  # e_copying now reads; d_broken is tried again and still fails
    rows = {r["file"]: r for r in read_csv(out / "screen.csv")}
    assert len(rows) == 5 and rows["e_copying.png"]["error"] == "" and rows["e_copying.png"]["flagged"] == "1"
    assert "libpng error" in rows["d_broken.png"]["error"]
    assert result.n_errors == 1 and "--retry-errors" in (out / "contact_sheet.html").read_text()


def test_an_interrupt_between_the_jsonl_line_and_the_csv_row_leaves_no_duplicate(tmp_path):
    src = make_folder(tmp_path)
    out = tmp_path / "out"
    screen_folder(src, brightness_predictor(), out, progress=False)
    # The state such an interrupt leaves: day2/b_mid's JSONL line written, its CSV row not, a torn line after it.
    lines = (out / "screen.csv").read_text().splitlines(keepends=True)
    (out / "screen.csv").write_text("".join(line for line in lines if not line.startswith("day2/b_mid.tif")))
    with (out / "detections.jsonl").open("a") as fh:
        fh.write('{"file": "c_dim.png", "detec')
    again = brightness_predictor()
    screen_folder(src, again, out, progress=False)
    assert again.calls == 1
    files = [json.loads(x)["file"] for x in (out / "detections.jsonl").read_text().splitlines()]
    assert sorted(files) == ["a_bright.png", "c_dim.png", "day2/b_mid.tif"]  # each once
    assert len(read_csv(out / "screen.csv")) == 4


def test_ctrl_c_saves_the_sheet_and_says_how_to_resume(tmp_path):
    from rarespot.detect.screen_batch import ScreenInterrupted

    src = make_folder(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ScreenInterrupted) as stop:
        screen_folder(src, StopAfter(2), out, progress=False)
    assert (stop.value.done, stop.value.total, stop.value.n_errors) == (3, 4, 1)
    message = stop.value.message("rarespot detect batch scans --model m.pt")
    assert "interrupted after 3 of 4 scans" in message and "`rarespot detect batch scans --model m.pt` again to resume" in message
    assert "--retry-errors" in message
    assert "a_bright.png" in (out / "contact_sheet.html").read_text()  # the partial sheet is there


def test_cli_interrupt_prints_the_resume_hint(tmp_path, monkeypatch):
    from rarespot.cli import app
    from rarespot.detect.predict import TiledPredictor

    src = make_folder(tmp_path)
    model = tiny_yolo(tmp_path / "tiny.pt")

    def interrupted(self, scans, conf=None):  # Ctrl-C during the first scan (screening streams scans: predict_many)
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(TiledPredictor, "predict_many", interrupted)
    result = CliRunner().invoke(app, ["detect", "batch", str(src), "--model", str(model), "--out", str(tmp_path / "o")])
    assert result.exit_code == 130
    assert "interrupted after 0 of 4 scans" in result.output and "again to resume" in result.output
    assert "Traceback" not in result.output


def test_per_class_flag_confidences(tmp_path):
    # Knife boxes score 0.9 x brightness, gun boxes 0.6 x: a_bright 0.9 / 0.6, b_mid 0.6 / 0.4, c_dim 0.3 / 0.2.
    src = make_folder(tmp_path)
    predictor = FakePredictor(base_scores=(0.9, 0.6), scale_by_brightness=True)

    def flagged(out, **flags):
        screen_folder(src, predictor, tmp_path / out, conf=0.15, progress=False, **flags)
        return sorted(r["file"] for r in read_csv(tmp_path / out / "screen.csv") if r["flagged"] == "1")

    assert flagged("one", flag_conf=0.5) == ["a_bright.png", "day2/b_mid.tif"]
    # A rare class that scores low flags its scan at its own confidence (c_dim's gun at 0.2) ...
    assert flagged("low", flag_conf=0.5, flag_class_conf={"gun": 0.2}) == ["a_bright.png", "c_dim.png", "day2/b_mid.tif"]
    # ... and a class held to a higher one no longer flags by itself (b_mid's knife at 0.6 < 0.95).
    assert flagged("high", flag_conf=0.5, flag_class_conf={"knife": 0.95}) == ["a_bright.png"]
    sheet = (tmp_path / "low" / "contact_sheet.html").read_text()
    assert "3 flagged</b> (a box at its class&#x27;s flag confidence: gun 0.2; any other class 0.5)" in sheet
    assert json.loads((tmp_path / "low" / "screen.json").read_text())["flag_class_conf"] == {"gun": 0.2}
    assert "flag_class_conf" not in json.loads((tmp_path / "one" / "screen.json").read_text())  # earlier runs resume

    with pytest.raises(RarespotError, match="different flag_class_conf"):
        screen_folder(src, predictor, tmp_path / "low", conf=0.15, flag_conf=0.5, flag_class_conf={"gun": 0.3})
    with pytest.raises(InputError, match=r"flag confidences name \['Gun'\], which the model does not have"):
        screen_folder(src, predictor, tmp_path / "typo", conf=0.15, flag_conf=0.5, flag_class_conf={"Gun": 0.2})
    assert flagged("typo", flag_conf=0.5, flag_class_conf={"gun": 0.2})[1] == "c_dim.png"  # fixed, no --restart needed
    with pytest.raises(ValueError, match=r"flag confidence of gun \(0.1\) is below conf \(0.15\)"):
        screen_folder(src, predictor, tmp_path / "under", conf=0.15, flag_conf=0.5, flag_class_conf={"gun": 0.1})

    from rarespot.cli import app

    bad = CliRunner().invoke(app, ["detect", "batch", str(src), "--model", str(tmp_path / "m.pt"), "--conf", "0.3",
                                   "--flag-class-conf", "gun=0.2"])
    said = " ".join(bad.output.replace("│", " ").split())  # rich wraps the message in a box
    assert bad.exit_code == 2 and "--flag-class-conf" in said and "flag confidence of gun (0.2) is below conf (0.3)" in said
