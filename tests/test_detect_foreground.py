"""Tile skipping: the foreground test (rarespot.detect.foreground) and the predictor's use of it."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.detect.foreground import ALL_BACKGROUND, NO_CLEAR_BACKGROUND, ForegroundSettings, find_foreground
from rarespot.detect.predict import TiledPredictor
from rarespot.tiling import grid_tiles


class CountingBackend:
    """Scores each tile by its mean brightness (one box at its centre): output depends on the pixels."""

    class_names = ["object"]

    def __init__(self):
        self.tiles = 0

    def predict_tiles(self, tiles, conf, iou, class_agnostic=False, max_det=300):
        self.tiles += len(tiles)
        out = []
        for t in tiles:
            s = t.shape[0]
            score = float(t.mean()) / 255.0
            keep = score >= conf
            out.append((np.array([[s / 4, s / 4, 3 * s / 4, 3 * s / 4]])[:int(keep)], np.array([score])[:int(keep)],
                        np.zeros(int(keep), dtype=np.int64)))
        return out


def _air(h=700, w=900, level=1200.0, noise=150.0, ramp=0.0, seed=0):
    """An X-ray field with nothing in it: a flat (or ramped) air level with photon-like noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, w)[None, :]
    img = level + ramp * x + noise * rng.standard_normal((h, w))
    return np.clip(img, 0, 65535).astype(np.uint16)


def _best_tile_kept(boxes, windows, run) -> bool:
    """Every box keeps the tile that covered the most of it in the full grid."""
    for b in boxes:
        ix = np.clip(np.minimum(windows[:, 2], b[2]) - np.maximum(windows[:, 0], b[0]), 0, None)
        iy = np.clip(np.minimum(windows[:, 3], b[3]) - np.maximum(windows[:, 1], b[1]), 0, None)
        cover = ix * iy
        if cover[run].max(initial=0) < cover.max():
            return False
    return True


def test_synthetic_body_scans_skip_air_tiles_and_keep_every_object_tile():
    from rarespot.synth import generate_scan

    skipped = total = 0
    for index in range(3):
        image, boxes, _, _ = generate_scan(0, index)
        fg = find_foreground(image)
        assert fg.reliable and not fg.all_background
        windows = grid_tiles(*image.shape, 320, 0.2)
        run = fg.tiles_to_run(windows)
        assert _best_tile_kept(boxes, windows, run)
        skipped += int((~run).sum())
        total += len(run)
    assert 0.15 < skipped / total < 0.7  # the air around the body goes; the body stays


def test_air_only_scan_is_all_background_even_with_a_heel_ramp():
    for ramp in (0.0, 900.0):  # the tube's heel effect: a strong ramp across the field
        fg = find_foreground(_air(ramp=ramp))
        assert fg.reason == ALL_BACKGROUND and fg.all_background
        assert not fg.tiles_to_run(grid_tiles(700, 900, 256, 0.2)).any()
    assert find_foreground(np.zeros((300, 400), np.uint16)).all_background  # a blank frame


def test_a_faint_small_object_in_the_air_keeps_its_tile():
    image = _air().astype(np.float64)
    image[600:612, 80:92] += 400  # 12 px, under 3 noise deviations of a single pixel above the air
    fg = find_foreground(image.astype(np.uint16))
    windows = grid_tiles(700, 900, 256, 0.2)
    run = fg.tiles_to_run(windows)
    assert run.any() and not run.all()
    assert _best_tile_kept(np.array([[80, 600, 92, 612]]), windows, run)


def test_no_uniform_border_means_every_tile_runs():
    rng = np.random.default_rng(0)
    textured = rng.integers(1000, 60000, (400, 500), dtype=np.uint16)  # a scan cropped through dense clutter
    fg = find_foreground(textured)
    assert fg.reason == NO_CLEAR_BACKGROUND and not fg.reliable
    assert fg.tiles_to_run(grid_tiles(400, 500, 128, 0.2)).all()


def test_colour_baggage_scan_on_white_runs_only_the_tiles_with_the_bag():
    rng = np.random.default_rng(1)
    image = np.full((416, 832, 3), 250, np.int16) + rng.integers(-2, 3, (416, 832, 3))
    image[100:300, 40:300] = [60, 140, 200]  # an orange-blue object, as OPIXray draws them
    image = np.clip(image, 0, 255).astype(np.uint8)
    windows = grid_tiles(416, 832, 256, 0.2)
    run = find_foreground(image).tiles_to_run(windows)
    assert run[windows[:, 0] < 300].all() and not run[windows[:, 0] >= 360].any()


def test_settings_are_checked():
    with pytest.raises(ValueError):
        ForegroundSettings(k=0)
    with pytest.raises(ValueError):
        ForegroundSettings(border=0.6)


def test_predictor_skips_background_tiles_and_no_skip_runs_them_all():
    image = _air(700, 900)
    image[300:420, 380:520] = 20000  # one dense object in the middle
    backend = CountingBackend()
    skipping = TiledPredictor(backend, tile=256, overlap=0.2, conf=0.01)
    dets = skipping.predict(image)
    n_tiles = len(grid_tiles(700, 900, 256, 0.2))
    assert dets.info["tiles"] == n_tiles and 0 < dets.info["tiles_run"] < n_tiles
    assert backend.tiles == dets.info["tiles_run"] and dets.info["note"] == ""

    backend.tiles = 0
    everything = TiledPredictor(backend, tile=256, overlap=0.2, conf=0.01, skip_background=False).predict(image)
    assert backend.tiles == everything.info["tiles_run"] == n_tiles


def test_all_background_scan_gives_no_detections_and_says_so():
    backend = CountingBackend()
    dets = TiledPredictor(backend, tile=256, conf=0.0, full_image_pass=True).predict(_air())
    assert len(dets) == 0 and backend.tiles == 0
    assert dets.info["note"] == ALL_BACKGROUND and dets.info["tiles_run"] == 0


def test_screen_row_of_an_all_background_scan_is_a_note_not_an_error(tmp_path):
    import csv

    from rarespot.detect.screen_batch import screen_folder
    from rarespot.io.images import write_image

    src = tmp_path / "scans"
    write_image(src / "empty.png", _air(300, 400))
    body = _air(300, 400, seed=1)
    body[100:200, 150:250] = 30000
    write_image(src / "object.png", body)
    screen_folder(src, TiledPredictor(CountingBackend(), tile=128, conf=0.05), tmp_path / "out", progress=False)
    with (tmp_path / "out" / "screen.csv").open(newline="") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    empty = rows["empty.png"]
    assert (empty["n_detections"], empty["error"], empty["note"], empty["tiles_inspected"]) == ("0", "", ALL_BACKGROUND, "0")
    assert int(rows["object.png"]["tiles_inspected"]) > 0 and rows["object.png"]["note"] == ""


def test_screen_with_prefetch_equals_one_file_at_a_time(tmp_path):
    """Reading and preparing ahead in a thread changes nothing: same rows, same boxes, same order."""
    import json

    from rarespot.detect.predict import detections_to_records
    from rarespot.detect.screen_batch import CSV_FIELDS, screen_folder
    from rarespot.io.images import read_image, write_image

    src = tmp_path / "scans"
    for i in range(7):
        image = _air(260, 330, seed=i)
        image[40 + 20 * i : 120 + 20 * i, 60:200] = 9000 + 4000 * i
        write_image(src / f"s{i}.png", image)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    predictor = TiledPredictor(CountingBackend(), tile=128, overlap=0.2, conf=0.05)
    screen_folder(src, predictor, tmp_path / "out", conf=0.05, flag_conf=0.3, progress=False)

    expected = {}
    for path in sorted(src.glob("s*.png")):
        records = detections_to_records(predictor.predict(read_image(path)), predictor.class_names, min_score=0.05)
        expected[path.name] = records
    lines = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == sorted(expected)
    assert {line["file"]: line["detections"] for line in lines} == expected
    import csv

    with (tmp_path / "out" / "screen.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_FIELDS
    assert [r["file"] for r in rows] == ["broken.png"] + sorted(expected)
    assert rows[0]["error"] and all(r["n_detections"] == str(len(expected[r["file"]])) for r in rows[1:])


def test_resume_upgrades_a_csv_of_the_earlier_columns(tmp_path):
    from rarespot.detect.screen_batch import CSV_FIELDS, screen_folder
    from rarespot.io.images import write_image

    src = tmp_path / "scans"
    for i in range(2):
        write_image(src / f"s{i}.png", _air(200, 200, seed=i))
    out = tmp_path / "out"
    out.mkdir()
    (out / "screen.csv").write_text("file,n_detections,max_confidence,flagged,error\ns0.png,0,,0,\n")
    result = screen_folder(src, TiledPredictor(CountingBackend(), tile=128), out, progress=False)
    assert result.n_skipped == 1 and result.n_screened == 1
    header, *rows = (out / "screen.csv").read_text().splitlines()
    assert header.split(",") == CSV_FIELDS and len(rows) == 2 and rows[0].startswith("s0.png,0,,0,")
