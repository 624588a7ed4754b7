"""Tiled inference: exact geometry with a fake back-end, then a real (untrained) YOLO."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers_detect import FakeBackend, make_untrained_yolo
from rarespot.detect.predict import Detections, TiledPredictor, check_image
from rarespot.detect.preprocess import to_model_input
from rarespot.errors import InputError
from rarespot.tiling import grid_tiles

# 1000 x 600 scan, 512 tiles, overlap 0.2: columns start at 0, 410, 488; rows at 0, 88.
GRID = [(0, 0), (410, 0), (488, 0), (0, 88), (410, 88), (488, 88)]


def _scan(height=600, width=1000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1000, 60000, (height, width), dtype=np.uint16)


def _predictor(boxes_at, origins, **kw):
    fake = FakeBackend(["knife", "gun"], boxes_at, tile=kw.get("tile", 512))
    fake.expect(origins)
    return TiledPredictor(fake, **kw), fake


def test_grid_is_what_the_fake_expects():
    assert [tuple(w[:2]) for w in grid_tiles(600, 1000, 512, 0.2)] == GRID


def test_boxes_are_shifted_to_scan_pixels_and_duplicates_merged_nms():
    # One object at scan [500, 100, 540, 140], seen by the tiles at x=410 and x=488.
    boxes_at = {
        (410, 0): [(90, 100, 130, 140, 0.8, 1)],
        (488, 0): [(13, 100, 53, 140, 0.7, 1)],  # one pixel off: scan [501, 100, 541, 140]
        (0, 88): [(10, 20, 30, 40, 0.6, 0)],  # scan [10, 108, 30, 128]
    }
    pred, fake = _predictor(boxes_at, GRID, conf=0.25, batch=4)
    dets = pred.predict(_scan())
    assert isinstance(dets, Detections) and dets.image_size == (600, 1000)
    np.testing.assert_allclose(dets.boxes, [[500, 100, 540, 140], [10, 108, 30, 128]])
    assert dets.scores.tolist() == pytest.approx([0.8, 0.6])
    assert dets.labels.tolist() == [1, 0]
    assert dets.info["tiles"] == 6 and dets.info["raw_boxes"] == 3
    # Batches of 4 then 2 uint8 BGR tiles of 512.
    assert [c[0] for c in fake.calls] == [(4, 512, 512, 3), (2, 512, 512, 3)]
    assert all(c[1] == np.uint8 for c in fake.calls)


def test_wbf_fuses_the_duplicate():
    boxes_at = {(410, 0): [(90, 100, 130, 140, 0.8, 1)], (488, 0): [(13, 100, 53, 140, 0.7, 1)]}
    pred, _ = _predictor(boxes_at, GRID, merge="wbf")
    dets = pred.predict(_scan())
    shift = 0.7 / 1.5  # score-weighted mean of x=500 (0.8) and x=501 (0.7)
    np.testing.assert_allclose(dets.boxes, [[500 + shift, 100, 540 + shift, 140]])
    assert dets.scores.tolist() == pytest.approx([0.8])


def test_class_aware_merge_keeps_two_classes_agnostic_keeps_one():
    boxes_at = {(410, 0): [(90, 100, 130, 140, 0.8, 1)], (488, 0): [(12, 100, 52, 140, 0.7, 0)]}
    pred, _ = _predictor(boxes_at, GRID)
    assert len(pred.predict(_scan())) == 2
    pred, _ = _predictor(boxes_at, GRID, class_agnostic=True)
    dets = pred.predict(_scan())
    assert len(dets) == 1 and dets.labels.tolist() == [1]


def test_tiles_are_cut_from_one_model_input_conversion():
    scan = _scan()
    pred, fake = _predictor({}, GRID, batch=8)
    pred.predict(scan)
    whole = to_model_input(scan)
    assert len(fake.tiles) == 6
    np.testing.assert_array_equal(fake.tiles[1], whole[0:512, 410:922])
    np.testing.assert_array_equal(fake.tiles[5], whole[88:600, 488:1000])


def test_small_scan_is_padded_and_boxes_clipped_to_it():
    scan = _scan(height=200, width=300)
    boxes_at = {
        (0, 0): [
            (250, 150, 400, 300, 0.9, 0),  # reaches into the padding: clipped to the scan
            (350, 250, 400, 300, 0.8, 0),  # wholly in the padding: dropped
        ]
    }
    pred, fake = _predictor(boxes_at, [(0, 0)])
    dets = pred.predict(scan)
    assert fake.calls[0][0] == (1, 512, 512, 3)
    assert (fake.tiles[0][200:, :] == 0).all() and (fake.tiles[0][:, 300:] == 0).all()
    np.testing.assert_allclose(dets.boxes, [[250, 150, 300, 200]])


def test_full_image_pass_scales_boxes_back():
    # 1000 x 600 shrunk by 0.512 to 512 x 307 in one padded tile.
    boxes_at = {"full": [(51.2, 30.7, 102.4, 61.4, 0.9, 0)]}
    pred, fake = _predictor(boxes_at, GRID + ["full"], full_image_pass=True)
    dets = pred.predict(_scan())
    assert len(fake.tiles) == 7
    np.testing.assert_allclose(dets.boxes, [[100, 60, 200, 120]], atol=1e-9)


class _HalfSighted:
    """A fake model that finds the bright block of a tile only when the block lies in the tile's left half
    (and, with ``top_only``, its top half): what it misses, a mirrored view of the tile shows it."""

    class_names = ["knife"]

    def __init__(self, top_only: bool = False):
        self.top_only = top_only
        self.tiles: list[np.ndarray] = []

    def predict_tiles(self, tiles, conf, iou, class_agnostic, max_det):
        out = []
        for tile in tiles:
            self.tiles.append(tile.copy())
            ys, xs = np.nonzero(tile[..., 0] > 127)
            side = tile.shape[0]
            seen = len(xs) and xs.max() < side // 2 and (not self.top_only or ys.max() < side // 2)
            boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if seen else np.zeros((0, 4))
            out.append((np.asarray(boxes, dtype=np.float64), np.full(len(boxes), 0.9), np.zeros(len(boxes), np.int64)))
        return out


def _block_scan():
    """64 x 64 scan, one tile of 64: a bright block at x 40-50, y 44-54 (the bottom-right quarter)."""
    scan = np.zeros((64, 64), dtype=np.uint8)
    scan[44:54, 40:50] = 255
    return scan


@pytest.mark.parametrize("tta, top_only, found", [
    ("none", False, False),  # the block is in the right half: the model alone misses it
    ("hflip", False, True),  # mirrored left-right it is in the left half
    ("hflip", True, False),  # still in the bottom half
    ("flips", True, True),  # mirrored both ways: left and top
])
def test_test_time_views_find_what_the_plain_tile_misses_and_map_it_back(tta, top_only, found):
    model = _HalfSighted(top_only)
    pred = TiledPredictor(model, tile=64, overlap=0.0, conf=0.25, skip_background=False, tta=tta)
    dets = pred.predict(_block_scan())
    assert len(model.tiles) == {"none": 1, "hflip": 2, "flips": 4}[tta]
    tile = pred.prepare(_block_scan()).bgr
    last_view = {"none": tile, "hflip": tile[:, ::-1], "flips": tile[::-1, ::-1]}[tta]
    np.testing.assert_array_equal(model.tiles[-1], last_view)
    if found:
        np.testing.assert_allclose(dets.boxes, [[40, 44, 50, 54]])  # in the scan's own pixels, not the mirror's
    else:
        assert len(dets) == 0


def test_every_view_finding_the_object_merges_to_one_box():
    class Sighted:  # sees the block anywhere
        class_names = ["knife"]

        def predict_tiles(self, tiles, conf, iou, class_agnostic, max_det):
            out = []
            for tile in tiles:
                ys, xs = np.nonzero(tile[..., 0] > 127)
                out.append((np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float64),
                            np.array([0.9]), np.array([0])))
            return out

    dets = TiledPredictor(Sighted(), tile=64, overlap=0.0, skip_background=False, tta="flips").predict(_block_scan())
    np.testing.assert_allclose(dets.boxes, [[40, 44, 50, 54]])
    assert dets.info["raw_boxes"] == 4


def test_full_image_pass_views_scale_boxes_back():
    # As test_full_image_pass_scales_boxes_back, through the left-right view: the fake answers the
    # mirrored canvas with the mirrored box (512 - 102.4 = 409.6 ...), which must come back to the same place.
    boxes_at = {"full": [(51.2, 30.7, 102.4, 61.4, 0.9, 0)], "full-h": [(409.6, 30.7, 460.8, 61.4, 0.9, 0)]}
    pred, fake = _predictor(boxes_at, GRID * 2 + ["full", "full-h"], full_image_pass=True,
                            tta="hflip", batch=8)
    dets = pred.predict(_scan())
    assert len(fake.tiles) == 14
    np.testing.assert_allclose(dets.boxes, [[100, 60, 200, 120]], atol=1e-9)
    assert dets.info["raw_boxes"] == 2


def test_an_unknown_view_is_refused():
    with pytest.raises(ValueError, match="tta must be one of none, hflip, flips"):
        TiledPredictor(FakeBackend(["knife"], {}, 512), tta="rot90")


def test_conf_threshold_and_per_call_override():
    boxes_at = {(0, 0): [(10, 10, 50, 50, 0.3, 0), (100, 100, 150, 150, 0.05, 1)]}
    pred, fake = _predictor(boxes_at, GRID, conf=0.25)
    assert len(pred.predict(_scan())) == 1
    fake.expect(GRID)
    assert len(pred.predict(_scan(), conf=0.01)) == 2
    assert fake.calls[-1][2] == 0.01


def test_per_class_thresholds_cut_each_class_at_its_own(tmp_path):
    from rarespot.detect.settings import class_conf_from

    # knife 0.3, gun 0.05 and gun 0.02: with conf 0.25 and gun's own 0.04, the knife and the 0.05 gun stay.
    boxes_at = {(0, 0): [(10, 10, 50, 50, 0.3, 0), (100, 100, 150, 150, 0.05, 1), (200, 200, 250, 250, 0.02, 1)]}
    pred, fake = _predictor(boxes_at, GRID, conf=0.25, class_conf={"gun": 0.04})
    assert pred.class_conf.tolist() == [0.25, 0.04]
    dets = pred.predict(_scan())
    assert fake.calls[-1][2] == 0.04  # the back-end keeps what the lowest threshold needs
    assert sorted(dets.scores.tolist()) == [0.05, 0.3]
    fake.expect(GRID)
    assert len(pred.predict(_scan(), conf=0.01)) == 3  # an explicit conf (an evaluation sweep) is one for all
    with pytest.raises(InputError, match=r"class_conf names \['pistol'\], which the model does not have"):
        _predictor(boxes_at, GRID, class_conf={"pistol": 0.1})
    with pytest.raises(ValueError, match="class_conf values must be in"):
        _predictor(boxes_at, GRID, class_conf={"gun": 1.5})
    # Where they come from: NAME=CONF,... or the metrics.json of `detect evaluate --per-class-conf`.
    assert class_conf_from("knife=0.4, gun=0.04") == {"knife": 0.4, "gun": 0.04}
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"class_names": ["knife", "gun"], "class_conf": [0.4, 0.04]}))
    assert class_conf_from(metrics) == {"knife": 0.4, "gun": 0.04}
    metrics.write_text(json.dumps({"class_names": ["knife", "gun"], "class_conf": None}))
    with pytest.raises(InputError, match="metrics.json: no per-class confidences"):
        class_conf_from(metrics)
    with pytest.raises(InputError, match="'gun' is not NAME=CONF"):
        class_conf_from("knife=0.4,gun")


def test_max_det_caps_the_scan():
    boxes_at = {(0, 0): [(10 * i, 0, 10 * i + 5, 5, 0.9 - 0.01 * i, 0) for i in range(20)]}
    pred, _ = _predictor(boxes_at, GRID, max_det=5)
    dets = pred.predict(_scan())
    assert len(dets) == 5 and dets.scores[0] == pytest.approx(0.9)


def test_records_are_json_and_above_filters():
    dets = Detections([[1.234, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.2], [1, 0], ["knife", "gun"])
    records = dets.to_records()
    assert records[0] == {"x1": 1.23, "y1": 2.0, "x2": 3.0, "y2": 4.0, "score": 0.9, "label": 1, "class_name": "gun"}
    json.dumps(records)
    assert len(dets.above(0.5)) == 1


@pytest.mark.parametrize(
    "image, problem",
    [
        (np.zeros((10, 10), dtype=np.int32), "unsupported pixel type int32"),
        (np.zeros((10, 10), dtype=bool), "unsupported pixel type bool"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "unexpected image shape"),
        (np.zeros((10,), dtype=np.uint8), "unexpected image shape"),
        (np.zeros((0, 10), dtype=np.uint8), "empty image"),
        (np.full((4, 4), np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_bad_images_are_refused_naming_the_file(image, problem, tmp_path):
    with pytest.raises(InputError, match=problem) as err:
        check_image(image, tmp_path / "scan.png")
    assert "scan.png" in str(err.value)


def test_predict_path_names_an_unreadable_file(tmp_path):
    pred, _ = _predictor({}, [])
    with pytest.raises(InputError, match="missing.png"):
        pred.predict_path(tmp_path / "missing.png")
    bad = tmp_path / "three_bytes.png"
    bad.write_bytes(b"abc")
    with pytest.raises(InputError, match="three_bytes.png"):
        pred.predict_path(bad)


def test_bad_settings_are_refused():
    fake = FakeBackend(["a"], {}, 512)
    for kw in ({"merge": "max"}, {"overlap": 1.0}, {"tile": 0}, {"conf": 1.5}, {"match_metric": "giou"}):
        with pytest.raises(ValueError):
            TiledPredictor(fake, **kw)


def test_settings_object_and_keywords_build_the_same_predictor():
    from rarespot.detect.settings import InferenceSettings

    fake = FakeBackend(["a"], {}, 256)
    settings = InferenceSettings(tile=256, conf=0.4, merge="wbf", match_metric="ios", skip_background=False)
    by_object = TiledPredictor(fake, settings)
    by_keywords = TiledPredictor(fake, tile=256, conf=0.4, merge="wbf", match_metric="ios", skip_background=False)
    assert by_object.settings == by_keywords.settings == settings
    assert TiledPredictor(fake, settings, conf=0.1).settings == settings.replace(conf=0.1)
    assert (by_object.tile, by_object.conf, by_object.merge, by_object.skip_background) == (256, 0.4, "wbf", False)
    with pytest.raises(ValueError):
        TiledPredictor(fake, unknown_option=1)
    with pytest.raises(TypeError, match="InferenceSettings"):
        TiledPredictor(fake, 512)


def test_cli_defaults_are_the_inference_settings_defaults():
    """The flags of `detect predict`/`evaluate`/`batch` state their defaults for --help; they are InferenceSettings'."""
    import typer.main

    from rarespot.detect.cli import _inference_settings, app
    from rarespot.detect.settings import InferenceSettings

    commands = {c.name: typer.main.get_command_from_info(c, pretty_exceptions_short=True, rich_markup_mode=None)
                for c in app.registered_commands}
    keys = ("conf", "tile", "overlap", "iou", "merge", "match", "agnostic", "full_pass", "batch", "imgsz", "device",
            "backend", "threads", "skip", "tta")
    predict_defaults = {p.name: p.default for p in commands["predict"].params}
    assert _inference_settings(*(predict_defaults[k] for k in keys)) == InferenceSettings()
    evaluate_defaults = {p.name: p.default for p in commands["evaluate"].params}
    assert all(evaluate_defaults[k] == predict_defaults[k] for k in keys if k != "conf")
    screen_defaults = {p.name: p.default for p in commands["batch"].params}
    fields = {"conf": "conf", "tile": "tile", "overlap": "overlap", "device": "device", "backend": "backend",
              "threads": "threads", "skip": "skip_background", "tta": "tta"}
    assert {f: screen_defaults[k] for k, f in fields.items()} == InferenceSettings().model_dump(include=set(fields.values()))


# -- model files ------------------------------------------------------------


def test_model_path_problems_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.pt: model file not found"):
        TiledPredictor(tmp_path / "nope.pt")
    with pytest.raises(InputError, match="not a file"):
        TiledPredictor(tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(InputError, match="notes.pt: not a YOLO checkpoint"):
        TiledPredictor(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.pt: model file is empty"):
        TiledPredictor(empty)
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(InputError, match="broken.onnx: not a valid ONNX model"):
        TiledPredictor(corrupt)
    cfg = tmp_path / "yolo11n.yaml"
    cfg.write_text("nc: 1\n")
    with pytest.raises(InputError, match="yolo11n.yaml: a model config"):
        TiledPredictor(cfg)


def test_a_non_detection_checkpoint_is_refused(tmp_path):
    import torch

    path = tmp_path / "classifier.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(InputError, match="classifier.pt"):
        TiledPredictor(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    return make_untrained_yolo(tmp_path_factory.mktemp("model") / "tiny.pt", ["knife", "gun"])


def test_untrained_yolo_runs_tiled_on_a_16bit_scan(tiny_model):
    pred = TiledPredictor(tiny_model, tile=128, overlap=0.25, conf=1e-4, batch=4)
    assert pred.class_names == ["knife", "gun"]
    scan = _scan(height=200, width=300)
    dets = pred.predict(scan)
    assert dets.info["tiles"] == 6 and len(dets) > 0
    assert (dets.boxes[:, [0, 2]] >= 0).all() and (dets.boxes[:, [0, 2]] <= 300).all()
    assert (dets.boxes[:, [1, 3]] >= 0).all() and (dets.boxes[:, [1, 3]] <= 200).all()
    assert set(dets.labels.tolist()) <= {0, 1}
    assert np.all(np.diff(dets.scores) <= 0)
    json.dumps(dets.to_records())
    # The same scan as 8-bit RGB also runs; a bigger conf keeps a subset.
    rgb = np.repeat((scan >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    assert len(pred.predict(rgb)) > 0
    assert len(pred.predict(scan, conf=0.5)) == 0


def test_torch_backend_matches_ultralytics_predict_on_one_tile(tmp_path):
    """Our batched forward + NMS gives YOLO.predict's boxes for a tile at the network size."""
    from ultralytics import YOLO

    tiny_model = make_untrained_yolo(tmp_path / "lively.pt", ["knife", "gun"], lively=True)
    rng = np.random.default_rng(1)
    tile = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    pred = TiledPredictor(tiny_model, tile=128, conf=0.05, iou=0.5)
    ours = pred.backend.predict_tiles(tile[None], 0.05, 0.5, False, 300)[0]
    ref = YOLO(str(tiny_model)).predict(tile, imgsz=128, conf=0.05, iou=0.5, verbose=False, device="cpu")[0]
    ref_boxes = ref.boxes.xyxy.numpy()
    assert len(ours[0]) == len(ref_boxes) > 0
    # Ultralytics clips boxes to the tile after NMS; the tiler clips to the scan instead.
    np.testing.assert_allclose(np.clip(ours[0], 0, 128), ref_boxes, atol=0.05)
    np.testing.assert_allclose(ours[1], ref.boxes.conf.numpy(), atol=1e-5)


def test_torch_backend_uses_channels_last_weights_on_x86_cpu_with_the_same_output(tiny_model):
    """NHWC weights are oneDNN's fast path (as in Ultralytics' AutoBackend); the numbers must not change."""
    import torch

    from rarespot.cpu import channels_last_helps

    pred = TiledPredictor(tiny_model, tile=128, conf=0.05)
    convs = [p for p in pred.backend.model.parameters() if p.dim() == 4]
    if not channels_last_helps():
        pytest.skip("not an x86 CPU with oneDNN: weights stay in the default layout")
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        nhwc = pred.backend.model(x)[0]
        pred.backend.model.to(memory_format=torch.contiguous_format)
        nchw = pred.backend.model(x)[0]
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)


def test_torch_path_takes_back_the_cpu_threads_ultralytics_lowered(tiny_model):
    """Ultralytics sets torch to 1 thread on import-first and cores - 1 per predictor."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        pred = TiledPredictor(tiny_model, tile=128, conf=0.5, threads=2)
        pred.predict(_scan(height=100, width=100))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_backend_times_all_cores_against_one_fewer_unless_threads_are_given(tiny_model):
    """On a shared machine two OpenMP threads can run slower than one; the back-end measures both."""
    import torch

    from rarespot.cpu import available_cores

    before = torch.get_num_threads()
    try:
        pinned = TiledPredictor(tiny_model, tile=64, threads=1).backend
        assert pinned.tuner is None
        auto = TiledPredictor(tiny_model, tile=64).backend
        if available_cores() < 2:
            assert auto.tuner is None
            return
        tiles = np.zeros((2, 64, 64, 3), np.uint8)
        for _ in range(2 * (auto.tuner.probe_steps + 1) + 1):
            auto.predict_tiles(tiles, 0.5, 0.5)
        assert len(auto.tuner.history) == 1  # one probe done, with a time for each count
        assert set(auto.tuner.history[0]) == {available_cores(), available_cores() - 1}
        assert torch.get_num_threads() == auto.tuner.chosen
    finally:
        torch.set_num_threads(before)
