"""Training pieces without training: config, model choice, the positive-tiling dataset, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from rarespot.detect.config import DetectTrainConfig, load_config, packaged_config
from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset, ImageRecord


# --- fixtures shared with test_detect_train_run.py ----------------------------------------------
def make_scans(
    folder: Path, n: int, size: tuple[int, int] = (200, 240), seed: int = 0, names=("metal", "organic"), objects=(1, 3)
) -> DetectionDataset:
    """Tiny 16-bit gray 'scans' (noise + bright/dark rectangles) with exact boxes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    records = []
    for i in range(n):
        img = rng.normal(20000, 1500, (height, width)).clip(0, 65535).astype(np.uint16)
        boxes, labels = [], []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            bw, bh = (int(v) for v in rng.integers(14, 30, 2))
            x1, y1 = int(rng.integers(0, width - bw)), int(rng.integers(0, height - bh))
            label = int(rng.integers(len(names)))
            img[y1 : y1 + bh, x1 : x1 + bw] = 52000 if label == 0 else 4000
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            labels.append(label)
        path = folder / f"scan_{i:03d}.png"
        cv2.imwrite(str(path), img)
        records.append(ImageRecord(path, width, height, np.array(boxes, float).reshape(-1, 4), labels))
    return DetectionDataset(list(names), records, folder)


def hyp_for(config: DetectTrainConfig):
    from ultralytics.cfg import get_cfg

    from rarespot.detect.train import ultralytics_overrides

    overrides = ultralytics_overrides(config, Path("unused"), "yolo11n.yaml")
    overrides.pop("save_dir")
    return get_cfg(overrides=overrides)


def tile_dataset(ds: DetectionDataset, mode: str = "train", **kw):
    from rarespot.detect.data import ScanTileDataset

    config_keys = set(DetectTrainConfig.model_fields) - {"copy_paste"}  # copy_paste here is the ready transform
    cfg = DetectTrainConfig(**{k: v for k, v in kw.items() if k in config_keys})
    options = dict(tiles=cfg.tiles, tile_size=cfg.tile_size, min_visible=cfg.min_visible,
                   negative_tiles=cfg.negative_tiles, full_image=cfg.full_image, val_overlap=cfg.val_overlap,
                   ultralytics_augment=cfg.ultralytics_augment)
    options.update({k: v for k, v in kw.items() if k not in config_keys})
    return ScanTileDataset(ds, mode=mode, imgsz=cfg.input_size, hyp=hyp_for(cfg), **options)


# --- config -----------------------------------------------------------------------------------
def test_defaults_follow_the_seed():
    cfg = DetectTrainConfig()
    assert (cfg.model, cfg.tiles, cfg.tile_size, cfg.batch, cfg.optimizer, cfg.lr0, cfg.val_every) == (
        "yolo11n", 4, 512, 8, "Adam", 0.001, 2
    )
    assert cfg.input_size == 512 and DetectTrainConfig(full_image=True).input_size == 640


def test_config_yaml_round_trip(tmp_path):
    cfg = DetectTrainConfig(tiles=6, tile_size=384, remap="agnostic", aug=["hflip", "rbc"], out=tmp_path / "run")
    path = cfg.dump_yaml(tmp_path / "cfg.yaml")
    assert load_config(path) == cfg
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not left with mkstemp's private mode


def test_flags_override_the_file_and_none_is_ignored(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tiles: 6\nepochs: 40\n")
    cfg = load_config(path, epochs=3, tiles=None)
    assert (cfg.tiles, cfg.epochs) == (6, 3)


def test_packaged_configs_load():
    for name in ("seed", "demo", "demo_quick", "xray-small"):
        load_config(packaged_config(name))
    assert load_config(packaged_config("seed")).remap == "agnostic"
    recipe = load_config("xray-small")  # what the OPIXray study chose (docs/study.md): the five classes kept
    assert (recipe.tiles, recipe.tile_size, recipe.full_image, recipe.remap, recipe.aug, recipe.backbone) == (
        4, 192, False, None, [], "efficientnet-lite0")
    assert recipe.min_epochs == 7  # the fewest epochs its runs had: a slower machine is told (BudgetWarning)
    assert recipe.copy_paste is None  # recipe v4 (copy-paste the rarest class) failed its confirmation
    assert load_config("seed") == load_config(packaged_config("seed"))  # a bare name finds the packaged file
    with pytest.raises(InputError, match="no packaged config named 'sede'"):
        load_config("sede")


@pytest.mark.parametrize(
    "text, expect",
    [("tiles: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "YAML mapping"), ("tilez: 3\n", "tilez"), ("tiles: 0\n", "tiles")],
)
def test_bad_config_names_the_file(tmp_path, text, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and expect in str(err.value)


def test_misspelt_copy_paste_target_names_the_file_and_the_choices(tmp_path):
    path = tmp_path / "cp.yaml"
    path.write_text("copy_paste: {p: 0.5, target_distribution: rarst}\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and "'rarest'" in str(err.value) and "rarst" in str(err.value)
    path.write_text("copy_paste: {p: 0.5, target_distribution: rarest}\n")
    assert load_config(path).copy_paste.target_distribution == "rarest"


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(InputError, match="config file not found") as err:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err.value)


# --- model choice -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, expect", [("yolo11n", "yolo11n.yaml"), ("yolov8n", "yolov8n.yaml"), ("yolov5nu", "yolov5nu.yaml")])
def test_builtin_models_resolve_offline(name, expect):
    from rarespot.detect.model import resolve_model

    assert resolve_model(name) == expect


def test_unknown_model_name():
    from rarespot.detect.model import resolve_model

    with pytest.raises(InputError, match="unknown model"):
        resolve_model("resnet50")


def test_weights_file_that_is_not_a_model(tmp_path):
    from rarespot.detect.model import resolve_model

    fake = tmp_path / "weights.pt"
    fake.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="not a YOLO model checkpoint") as err:
        resolve_model(fake)
    assert str(fake) in str(err.value)
    with pytest.raises(InputError, match="model file not found") as err:
        resolve_model(tmp_path / "missing.pt")
    assert "missing.pt" in str(err.value)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputError, match="not a model") as err:
        resolve_model(other)
    assert str(other) in str(err.value)


def test_model_yaml_that_is_not_a_model(tmp_path):
    from rarespot.detect.model import resolve_model

    path = tmp_path / "net.yaml"
    path.write_text("layers: 3\n")
    with pytest.raises(InputError, match="not a model definition") as err:
        resolve_model(path)
    assert str(path) in str(err.value)


# --- random positive tiling -------------------------------------------------------------------
def test_positive_tiles_contain_an_object_at_varying_positions(tmp_path):
    ds = make_scans(tmp_path, 3, objects=(1, 1))
    data = tile_dataset(ds, tiles=4, tile_size=96, imgsz=96)
    assert len(data) == 12  # 3 images x 4 tiles per epoch
    positions = set()
    for _ in range(5):
        for i in range(len(data)):
            item = data[i]
            assert item["img"].shape == (3, 96, 96)
            assert len(item["cls"]) == 1  # the one object is always in the tile
            cx, cy, w, h = item["bboxes"][0].tolist()
            rec = ds.records[data.items[i][0]]
            bw, bh = rec.boxes[0, 2] - rec.boxes[0, 0], rec.boxes[0, 3] - rec.boxes[0, 1]
            # whole (objects are smaller than the tile), so the size is exact
            assert w * 96 == pytest.approx(bw, abs=1e-3) and h * 96 == pytest.approx(bh, abs=1e-3)
            positions.add((round(cx * 96), round(cy * 96)))
    assert len(positions) > 20  # a fresh random position on every draw


def test_tile_boxes_match_the_crop_exactly(tmp_path):
    """The box in the tile covers exactly the bright rectangle in the tile's pixels."""
    ds = make_scans(tmp_path, 2, objects=(1, 1), names=("metal",))
    data = tile_dataset(ds, tiles=2, tile_size=64, imgsz=64)
    for i in range(len(data)):
        item = data[i]
        img = item["img"][0].numpy()
        cx, cy, w, h = (item["bboxes"][0] * 64).tolist()
        x1, y1, x2, y2 = round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)
        ys, xs = np.nonzero(img > 200)  # the object is brighter than anything else after windowing
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_boxes_cut_by_the_tile_edge_are_clipped_or_dropped(tmp_path):
    ds = DetectionDataset(
        ["a"], [ImageRecord(tmp_path / "x.png", 200, 100, [[10, 10, 40, 40], [90, 10, 150, 40]], [0, 0])], tmp_path
    )
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((100, 200), np.uint8))
    data = tile_dataset(ds, mode="val", tile_size=100, imgsz=100, min_visible=0.3)
    # grid x0 = 0, 100: first tile holds box 1 and 10/60 of box 2 (dropped); second holds 50/60 of box 2
    assert [origin for _, origin in data.items] == [(0, 0), (100, 0)]
    boxes0, _ = data.tile_labels(0)
    boxes1, _ = data.tile_labels(1)
    np.testing.assert_allclose(boxes0, [[10, 10, 40, 40]])
    np.testing.assert_allclose(boxes1, [[0, 10, 50, 40]])


def test_validation_tiles_are_a_fixed_grid(tmp_path):
    ds = make_scans(tmp_path, 2)
    a = tile_dataset(ds, mode="val", tile_size=96, imgsz=96)
    b = tile_dataset(ds, mode="val", tile_size=96, imgsz=96)
    # 200x240 with 96 tiles, no overlap: x0 in (0, 96, 144), y0 in (0, 96, 104) -> 9 tiles per image
    assert len(a) == 18 and a.items == b.items
    for i in (0, 5, 17):
        np.testing.assert_array_equal(a[i]["img"], b[i]["img"])
        np.testing.assert_array_equal(a[i]["bboxes"], b[i]["bboxes"])


def test_negative_tiles_and_pure_negative_images(tmp_path):
    ds = make_scans(tmp_path, 2, objects=(1, 1))
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.full((200, 240), 20000, np.uint16))
    ds.records.append(ImageRecord(empty, 240, 200))  # an empty label file: allowed, gives negative tiles
    data = tile_dataset(ds, tiles=2, tile_size=64, imgsz=64, negative_tiles=0.5)
    counts = {0: 0, 1: 0}
    for _ in range(30):
        for i in range(len(data)):
            n = len(data[i]["cls"])
            if data.items[i][0] == 2:
                assert n == 0
            else:
                counts[min(n, 1)] += 1
    assert 40 < counts[0] < 80 and 40 < counts[1] < 80  # about half the draws are negative


def test_full_image_mode_resizes_long_side(tmp_path):
    ds = make_scans(tmp_path, 1)
    data = tile_dataset(ds, full_image=True, imgsz=96)
    item = data[0]
    assert len(data) == 1 and item["img"].shape == (3, 96, 96)  # 240x200 -> 96x80, letterboxed to 96
    np.testing.assert_allclose(item["bboxes"][:, 2].numpy() * 96, (ds.records[0].boxes[:, 2] - ds.records[0].boxes[:, 0]) * 0.4, atol=1e-3)


def test_class_aware_object_choice_prefers_rare_classes(tmp_path):
    ds = make_scans(tmp_path, 1, objects=(2, 2), seed=3)
    ds.records[0] = ImageRecord(ds.records[0].path, 240, 200, ds.records[0].boxes, [0, 1])
    data = tile_dataset(ds, tile_size=64, object_weights=np.array([1.0, 9.0]))
    rng = np.random.default_rng(0)
    picks = [data.choose_object(ds.records[0].labels, rng) for _ in range(400)]
    assert 320 < picks.count(1) < 400


# --- bad input --------------------------------------------------------------------------------
def test_missing_image_is_named(tmp_path):
    from rarespot.detect.train import check_records

    ds = make_scans(tmp_path, 2)
    os.remove(ds.records[1].path)
    with pytest.raises(InputError, match="image file not found") as err:
        check_records({"train": ds, "val": ds})
    assert str(ds.records[1].path) in str(err.value)


@pytest.mark.parametrize(
    "image, problem",
    [
        (np.zeros((200, 240, 2), np.uint8), "unexpected image shape"),
        (np.zeros((200, 240), np.int32), "int32"),
    ],
)
def test_unexpected_depth_or_channels_is_named(tmp_path, image, problem):
    ds = make_scans(tmp_path, 1)
    path = tmp_path / "odd.tif"
    import tifffile

    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="contig")
    ds.records[0] = ImageRecord(path, 240, 200, ds.records[0].boxes, ds.records[0].labels)
    with pytest.raises(InputError, match=problem) as err:
        tile_dataset(ds, tile_size=64)
    assert str(path) in str(err.value)


def test_image_size_differs_from_annotation(tmp_path):
    ds = make_scans(tmp_path, 1)
    rec = ds.records[0]
    ds.records[0] = ImageRecord(rec.path, 300, 300, rec.boxes, rec.labels)
    with pytest.raises(InputError, match="annotation says 300x300") as err:
        tile_dataset(ds, tile_size=64)
    assert str(rec.path) in str(err.value)


def test_unwritable_output_folder(tmp_path):
    from rarespot.io.atomic import ensure_writable_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable") as err:
        ensure_writable_dir(blocker / "run")
    assert str(blocker / "run") in str(err.value)


def test_training_split_without_objects(tmp_path):
    from rarespot.detect.train import check_records

    ds = make_scans(tmp_path, 1)
    ds.records[0] = ImageRecord(ds.records[0].path, 240, 200)
    with pytest.raises(InputError, match="no annotated objects"):
        check_records({"train": ds, "val": ds})


def test_metrics_csv_keeps_one_row_per_epoch(tmp_path):
    from rarespot.detect.train import read_metrics_csv, write_metrics_csv

    results = tmp_path / "results.csv"
    results.write_text(
        "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
        "metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0\n"
        "1,1,1,2,3,nan,nan,nan,nan,nan,nan,nan,0.001\n"
        "2,2,1,1,1,0.5,0.25,0.3,0.1,1,1,2,0.001\n"
        "2,3,0.5,0.5,0.5,0.5,0.25,0.3,0.1,1,1,1,0.001\n"  # epoch 2 repeated after a resume
    )
    rows = write_metrics_csv(results, tmp_path / "metrics.csv")
    assert [r["train_loss"] for r in rows] == [6.0, 1.5]
    back = read_metrics_csv(tmp_path / "metrics.csv")
    assert np.isnan(back[0]["val_loss"]) and back[1]["val_loss"] == 3.0 and back[1]["map50"] == 0.3
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1].split(",")[9] == ""  # skipped validation: empty


def test_ultralytics_augmentations_on_request(tmp_path):
    """ultralytics_augment=True runs its v8 pipeline (mosaic of four tiles, HSV, flips, affine) after ours."""
    ds = make_scans(tmp_path, 4)
    data = tile_dataset(ds, tiles=2, tile_size=96, imgsz=64, ultralytics_augment=True)
    names = [type(t).__name__ for t in data.transforms.transforms]
    assert "RandomHSV" in names and "LetterBox" not in names
    for i in range(len(data)):
        item = data[i]
        assert item["img"].shape == (3, 64, 64)
        assert ((item["bboxes"] >= 0) & (item["bboxes"] <= 1)).all()
    plain = tile_dataset(ds, tiles=2, tile_size=96, imgsz=64)
    assert [type(t).__name__ for t in plain.transforms.transforms] == ["LetterBox", "Format"]


def test_repeat_factor_sampler_repeats_images_with_rare_classes(tmp_path):
    from rarespot.detect.trainer import imbalance_hooks

    ds = make_scans(tmp_path, 4, objects=(1, 1))
    labels = [0, 0, 0, 1]  # class 1 is in 1 of 4 images
    for i, lab in enumerate(labels):
        rec = ds.records[i]
        ds.records[i] = ImageRecord(rec.path, rec.width, rec.height, rec.boxes, [lab])
    cfg = DetectTrainConfig(sampler="repeat_factor", repeat_threshold=1.0, tiles=2)
    repeat, weights, copy_paste = imbalance_hooks(cfg, ds)
    # LVIS: r_c = max(1, sqrt(t / f_c)) -> class 0: sqrt(1/0.75) = 1.155, class 1: sqrt(1/0.25) = 2
    np.testing.assert_allclose(repeat, [np.sqrt(4 / 3)] * 3 + [2.0])
    assert weights is None and copy_paste is None
    data = tile_dataset(ds, tiles=2, tile_size=64, repeat_factors=repeat)
    per_image = [sum(1 for i, _ in data.items if i == k) for k in range(4)]
    # 2 x 1.155 = 2.31: 2 or 3 items (stochastic rounding, as LVIS); 2 x 2 = 4 exactly
    assert all(c in (2, 3) for c in per_image[:3]) and per_image[3] == 4


def test_repeat_factors_round_stochastically_to_the_expected_count(tmp_path):
    """round(2 x 1.2) would be 2 for every image, and the sampler would do nothing; the expected
    number of items is what LVIS asks for."""
    ds = make_scans(tmp_path, 4, objects=(1, 1))
    np.random.seed(0)
    data = tile_dataset(ds, tiles=2, tile_size=64, repeat_factors=np.full(4, 1.2))
    totals = [len(data.items)]
    for _ in range(199):
        totals.append(len(data._plan_items()))
    assert 2 * 4 < np.mean(totals) < 3 * 4
    assert abs(np.mean(totals) - 2.4 * 4) < 0.15  # 200 draws of 4 Bernoulli(0.4): std of the mean ~0.07
    np.random.seed(0)
    whole = tile_dataset(ds, tiles=2, tile_size=64, repeat_factors=np.ones(4))
    before = np.random.get_state()
    assert len(whole.items) == 8 and whole._plan_items() == whole.items
    after = np.random.get_state()
    # whole factors draw nothing, so runs without fractional factors are the same as before
    assert after[2] == before[2] and np.array_equal(after[1], before[1])


def test_copy_paste_and_class_aware_hooks_run_on_tiles(tmp_path):
    from rarespot.detect.trainer import imbalance_hooks

    ds = make_scans(tmp_path, 4, size=(200, 240), objects=(2, 3))
    cfg = DetectTrainConfig(tile_object_choice="class_aware", copy_paste={"p": 1.0}, tiles=2, tile_size=96)
    repeat, weights, copy_paste = imbalance_hooks(cfg, ds)
    assert repeat is None and weights.shape == (2,) and copy_paste is not None
    data = tile_dataset(ds, tiles=2, tile_size=96, imgsz=96, object_weights=weights, copy_paste=copy_paste)
    for i in range(len(data)):
        item = data[i]
        assert item["img"].shape == (3, 96, 96) and len(item["cls"]) >= 1


def test_a_class_missing_from_a_split_is_named(tmp_path):
    """The rarest class absent from validation: a warning naming the class and the split, not a NaN or a crash."""
    from rarespot.detect.train import MissingClassWarning, check_records

    ds = make_scans(tmp_path, 8, names=("metal", "organic", "rare"))
    keep = [i for i, r in enumerate(ds.records) if 2 not in r.labels]
    with_rare = [i for i, r in enumerate(ds.records) if 2 in r.labels]
    assert keep and with_rare
    splits = {"train": ds.subset(with_rare + keep[:1]), "val": ds.subset(keep[1:])}
    with pytest.warns(MissingClassWarning, match="class 'rare' has no objects in the val split"):
        check_records(splits)


def test_training_pace_reports_rate_and_time_left(monkeypatch):
    from rarespot.detect import train as train_module

    clock = iter([0.0, 10.0, 10.0, 30.0, 30.0, 45.0])
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(clock))
    pace = train_module.TrainingPace()
    pace.epoch_started()
    pace.epoch_done(1, 5, 200)  # 10 s for 200 items
    assert pace.items_per_second == pytest.approx(20.0) and pace.seconds_left == pytest.approx(40.0)
    pace.epoch_started()
    pace.epoch_done(2, 5, 200)  # 20 s: mean 15 s x 3 epochs left
    assert pace.items_per_second == pytest.approx(10.0) and pace.seconds_left == pytest.approx(45.0)
    assert pace.summary() == "10.0 img/s, about 45 s left"
    pace.epoch_started()
    pace.epoch_done(3, 5, 200, budget_left=12.0)  # a time budget that stops the run sooner
    assert pace.seconds_left == pytest.approx(12.0)


def test_an_epoch_cut_by_the_budget_counts_only_its_batches():
    from rarespot.detect.train import items_trained

    assert items_trained(864, 864, 8, 6912) == 6912
    assert items_trained(250, 864, 8, 6912) == 2000  # stopped by the clock after 250 batches
    assert items_trained(3, 3, 8, 20) == 20  # a short last batch


def test_budget_shortfall_says_what_time_would_fit():
    from rarespot.detect.config import DetectTrainConfig
    from rarespot.detect.train import budget_shortfall

    cfg = DetectTrainConfig(time_hours=0.75, min_epochs=7)
    told = budget_shortfall(cfg, 3, 900.0)
    assert told == ("the 0.75 h budget fits 3 epochs at 900 s an epoch on this machine, but this config was shown to "
                    "work with at least 7: expect lower recall, the rarest class first. time_hours=1.75 would fit 7 "
                    "(or fewer tiles / a smaller model)")
    assert budget_shortfall(cfg, 7, 380.0) is None  # enough epochs
    assert budget_shortfall(DetectTrainConfig(time_hours=0.75), 1, 900.0) is None  # no minimum given
    assert budget_shortfall(DetectTrainConfig(epochs=3, min_epochs=7), 3, 900.0) is None  # epochs, not a budget


def test_budget_warning_after_the_first_epoch(tmp_path, monkeypatch):
    """The reporter warns once, after the first epoch, from the epochs Ultralytics has re-planned for the budget."""
    from types import SimpleNamespace

    from rarespot.detect import train as train_module
    from rarespot.detect.config import DetectTrainConfig

    clock = iter([0.0, 600.0, 600.0, 1200.0])
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(clock))
    reporter = train_module._RunReporter(tmp_path, quiet=True)

    class Loader(list):  # 10 batches of 10 images
        dataset = range(100)

    trainer = SimpleNamespace(rs_config=DetectTrainConfig(time_hours=0.5, min_epochs=7), epoch=0, start_epoch=0,
                              epochs=3, csv=tmp_path / "results.csv", fitness=None, args=SimpleNamespace(time=0.5),
                              budget_share=lambda: 0.0, train_loader=Loader(range(10)), batch_size=10)
    reporter.on_epoch_start(trainer)
    for _ in range(10):
        reporter.on_batch_end(trainer)
    with pytest.warns(train_module.BudgetWarning, match="fits 3 epochs at 600 s an epoch.*time_hours=1.17 would fit 7"):
        reporter.on_epoch_end(trainer)
    assert reporter.pace.items_per_second == pytest.approx(100 / 600)  # a whole epoch: every image
    trainer.epoch = 1
    reporter.on_epoch_start(trainer)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not again at the second epoch
        reporter.on_epoch_end(trainer)


def test_per_class_validation_reads_ultralytics_metrics():
    """Ultralytics 8.4 gives ap_class_index as a numpy array; a class it never saw is blank (NaN), not 0."""
    from types import SimpleNamespace

    from rarespot.detect.train import per_class_validation

    box = SimpleNamespace(p=np.array([0.5, 0.9]), r=np.array([0.25, 0.0]), ap50=np.array([0.3, 0.1]))
    metrics = SimpleNamespace(box=box, ap_class_index=np.array([0, 2]), nt_per_class=np.array([4, 0, 3]))
    rows = per_class_validation(SimpleNamespace(metrics=metrics), ["a", "b", "c"])
    assert [(r["class"], r["instances"], r["recall"]) for r in rows[::2]] == [("a", 4, 0.25), ("c", 3, 0.0)]
    assert rows[1]["instances"] == 0 and np.isnan(rows[1]["recall"])


def test_thread_tuner_keeps_the_faster_count():
    """Probe 3 timed steps (after one warm step) at each count, then keep the faster one for the epoch."""
    import torch

    from rarespot.cpu import ThreadTuner

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, probe_steps=3)
        step = {2: 3.0, 1: 1.0}  # two threads slower: another job holds a core
        now = 0.0
        tuner.epoch_started(now)
        used = []
        for _ in range(12):
            used.append(tuner.current)
            now += step[tuner.current]
            tuner.step_done(now)
        assert used[:8] == [2, 2, 2, 2, 1, 1, 1, 1] and set(used[8:]) == {1}
        assert tuner.chosen == 1 and tuner.history == [{2: 3.0, 1: 1.0}]
        step = {2: 1.0, 1: 1.6}  # the other job ended: the next epoch goes back to two
        tuner.epoch_started(now)
        for _ in range(9):
            now += step[tuner.current]
            tuner.step_done(now)
        assert tuner.chosen == 2 and torch.get_num_threads() == 2
        assert ThreadTuner(1).candidates == [1]
    finally:
        torch.set_num_threads(before)


def test_the_run_model_is_the_checkpoint_the_config_names(tmp_path):
    from rarespot.detect.train import RunResult

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "last.pt").write_bytes(b"last")

    def run(**settings):
        config = DetectTrainConfig(data=tmp_path, out=tmp_path, **settings)
        return RunResult(tmp_path, weights / "best.pt", weights / "last.pt", ["a"], 2, None, None, {}, 1.0, config)

    assert run().model == weights / "last.pt"  # no validation round ever ran: there is no best.pt
    (weights / "best.pt").write_bytes(b"best")
    assert run().model == weights / "best.pt"  # the default: lowest validation loss (seed 3.3)
    assert run(model_checkpoint="last").model == weights / "last.pt"
    assert load_config(packaged_config("xray-small"), data=tmp_path).model_checkpoint == "last"
    with pytest.raises(ValueError, match="model_checkpoint"):
        DetectTrainConfig(data=tmp_path, model_checkpoint="newest")
