"""Real (tiny) training runs: yolo11n from its yaml, 1-2 epochs at imgsz 64 on generated scans."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rarespot.detect.config import DetectTrainConfig
from rarespot.detect.train import read_metrics_csv, resume_run, train_on_splits
from rarespot.io.split import load_saved_splits
from rarespot.errors import InputError
from test_detect_train import make_scans

torch.set_num_threads(2)


def tiny_config(out, **kw) -> DetectTrainConfig:
    base = dict(tiles=2, tile_size=96, imgsz=64, batch=4, nbs=4, epochs=1, warmup_epochs=0, val_every=1,
                device="cpu", out=out, aug=["hflip"])
    base.update(kw)
    return DetectTrainConfig(**base)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    ds = make_scans(tmp_path_factory.mktemp("scans"), 6)
    return {"train": ds.subset(range(4)), "val": ds.subset([4]), "test": ds.subset([5])}


def test_one_epoch_end_to_end(tmp_path, splits):
    result = train_on_splits(tiny_config(tmp_path / "run"), splits, quiet=True)
    run = result.run_dir
    for name in ("config.yaml", "split.json", "metrics.csv", "loss.png", "weights/best.pt", "weights/last.pt"):
        assert (run / name).is_file(), name
    rows = read_metrics_csv(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1]
    assert math.isfinite(rows[0]["train_loss"]) and math.isfinite(rows[0]["val_loss"])
    assert result.best_epoch == 1 and result.best_val_loss == pytest.approx(rows[0]["val_loss"])
    assert result.class_names == ["metal", "organic"]
    # per-class validation results of every round, so a class stuck at 0 shows during training
    import csv

    with (run / "val_per_class.csv").open() as fh:
        per_class = list(csv.DictReader(fh))
    assert [(r["epoch"], r["class"]) for r in per_class] == [("1", "metal"), ("1", "organic")]
    val_counts = splits["val"].class_counts()
    # instances in the validation tiles: an object cut by two overlapping tiles counts in both
    assert [int(r["instances"]) >= int(n) for r, n in zip(per_class, val_counts)] == [True, True]
    assert [int(r["instances"]) == 0 for r in per_class] == [int(n) == 0 for n in val_counts]
    for r in per_class:
        assert r["recall"] == "" if r["instances"] == "0" else 0.0 <= float(r["recall"]) <= 1.0
    # the held-out split is saved for evaluation, exactly
    saved = load_saved_splits(run)
    assert [r.path.name for r in saved["test"].records] == [r.path.name for r in splits["test"].records]
    # best.pt is a plain Ultralytics checkpoint the tiled predictor can load
    from ultralytics import YOLO

    model = YOLO(str(result.best))
    assert model.names == {0: "metal", 1: "organic"}
    # training the same folder again needs --resume or exist_ok
    with pytest.raises(InputError, match="already holds a training run"):
        train_on_splits(tiny_config(tmp_path / "run"), splits, quiet=True)


def test_validation_every_other_epoch_and_resume(tmp_path, splits):
    """Epoch 1 is not validated (val_every=2); interrupting after epoch 1 and resuming finishes the run."""
    from rarespot.detect import train as train_module

    cfg = tiny_config(tmp_path / "run", epochs=3, val_every=2, model="yolov8n")

    class Interrupt(Exception):
        pass

    original = train_module._RunReporter.on_epoch_end

    def crash_after_first_epoch(self, trainer):
        original(self, trainer)
        if trainer.epoch == 0:
            raise Interrupt

    train_module._RunReporter.on_epoch_end = crash_after_first_epoch
    try:
        with pytest.raises(Interrupt):
            train_on_splits(cfg, splits, quiet=True)
    finally:
        train_module._RunReporter.on_epoch_end = original
    run = tmp_path / "run"
    assert (run / "weights" / "last.pt").exists()  # the finished epoch is kept
    assert not (run / "weights" / "best.pt").exists()  # an unvalidated epoch is never "best"
    first = read_metrics_csv(run / "metrics.csv")
    assert len(first) == 1 and math.isnan(first[0]["val_loss"])

    result = resume_run(run, quiet=True)
    rows = read_metrics_csv(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [math.isnan(r["val_loss"]) for r in rows] == [True, False, False]  # epoch 2 (k=2) and the last
    best_epoch = min((r for r in rows if not math.isnan(r["val_loss"])), key=lambda r: r["val_loss"])["epoch"]
    assert result.best_epoch == int(best_epoch) and result.best.exists()
    with pytest.raises(InputError, match="already finished"):
        resume_run(run, quiet=True)


def test_resume_without_a_run(tmp_path):
    with pytest.raises(InputError, match="nothing to resume") as err:
        resume_run(tmp_path / "nothing", quiet=True)
    assert "last.pt" in str(err.value)


def test_full_image_training_with_remap_and_local_weights(tmp_path, splits):
    """The seed's baseline (whole images), agnostic remap, starting from a local checkpoint."""
    from rarespot.detect.remap import remap_splits

    first = train_on_splits(tiny_config(tmp_path / "a"), splits, quiet=True)
    agnostic = remap_splits(splits, "agnostic")
    cfg = tiny_config(tmp_path / "b", full_image=True, imgsz=64, model=str(first.best), remap="agnostic")
    result = train_on_splits(cfg, agnostic, quiet=True)
    assert result.class_names == ["object"]
    from ultralytics import YOLO

    assert YOLO(str(result.best)).names == {0: "object"}


def _rarespot(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "rarespot", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_train_on_a_yolo_folder(tmp_path):
    """``rarespot detect train --data DIR``: load, split 60/20/20, remap, train, report; the test split is kept."""
    from rarespot.io.annotations import save_dataset

    data = save_dataset(make_scans(tmp_path / "raw", 6), tmp_path / "data", "yolo")
    out = tmp_path / "run"
    proc = _rarespot(
        "detect", "train", "--data", str(data), "--epochs", "1", "--tiles", "1", "--tile-size", "96", "--imgsz", "64",
        "--batch", "4", "--remap", "agnostic", "--aug", "hflip,rbc", "--device", "cpu", "--out", str(out),
        "--set", "warmup_epochs=0", "--set", "val_every=1",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"model (lowest_val_loss): {out / 'weights' / 'best.pt'}" in proc.stdout and (out / "weights" / "best.pt").is_file()
    saved = load_saved_splits(out)
    assert saved["train"].class_names == ["object"]
    assert sum(len(saved[s]) for s in ("train", "val", "test")) == 6 and len(saved["test"]) >= 1


def test_cli_bad_input_is_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "no_such_data"
    proc = _rarespot("detect", "train", "--data", str(missing), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
    fake = tmp_path / "model.pt"
    fake.write_text("not a model")
    data = tmp_path / "data"
    from rarespot.io.annotations import save_dataset

    save_dataset(make_scans(tmp_path / "raw", 5), data, "yolo")
    proc = _rarespot("detect", "train", "--data", str(data), "--model", str(fake), "--out", str(tmp_path / "run2"))
    assert proc.returncode == 2 and str(fake) in proc.stderr and "not a YOLO model checkpoint" in proc.stderr
    proc = _rarespot("detect", "train", "--data", str(data), "--set", "tilez=3")
    assert proc.returncode == 2 and "tilez" in proc.stderr


def test_imbalance_loss_checkpoint_loads(tmp_path, splits):
    """A class-balanced focal loss run: the criterion is rarespot's, the checkpoint still loads for inference."""
    cfg = tiny_config(tmp_path / "run", cls_loss="cb-focal", sampler="repeat_factor", tile_object_choice="class_aware")
    result = train_on_splits(cfg, splits, quiet=True)
    from ultralytics import YOLO

    model = YOLO(str(result.best))
    assert type(model.model).__name__ == "RarespotDetectionModel"
    assert model.model.cls_loss_options["cls_loss"] == "cb-focal"
    from rarespot.detect.loss import ImbalanceDetectionLoss

    assert isinstance(model.model.init_criterion(), ImbalanceDetectionLoss)


def test_cpu_threads_pinned_or_timed(tmp_path, splits, monkeypatch):
    """Ultralytics sets cores - 1 torch threads on the CPU; rarespot uses a pinned count as given,
    and otherwise times every core against one fewer at the start of each epoch."""
    from rarespot import cpu
    from rarespot.detect import train as train_module

    seen = []
    original = train_module._RunReporter.on_epoch_end

    def record(self, trainer):
        seen.append((torch.get_num_threads(), trainer.thread_tuner))
        original(self, trainer)

    monkeypatch.setattr(train_module._RunReporter, "on_epoch_end", record)
    train_on_splits(tiny_config(tmp_path / "one", threads=1, epochs=2), splits, quiet=True)
    assert [(n, tuner) for n, tuner in seen] == [(1, None), (1, None)]
    seen.clear()
    monkeypatch.setattr(cpu, "available_cores", lambda: 3)
    train_on_splits(tiny_config(tmp_path / "auto", batch=1, nbs=1), splits, quiet=True)  # 8 steps: a whole probe
    (threads, tuner), = seen
    assert tuner.candidates == [3, 2] and len(tuner.history) == 1 and set(tuner.history[0]) == {3, 2}
    assert threads == tuner.chosen == min(tuner.history[0], key=tuner.history[0].get)
    torch.set_num_threads(2)


def test_progress_lines_in_a_log_file(tmp_path, splits, capsys):
    """Not a terminal: one plain line per epoch with img/s, the time left and recall by class."""
    train_on_splits(tiny_config(tmp_path / "run", epochs=2), splits, quiet=False)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, out
    assert "img/s" in lines[0] and "left" in lines[0] and "img/s" in lines[1]
    assert out.count("recall by class:") == 2


def test_ultralytics_ddp_script_rebuilds_the_rarespot_trainer(tmp_path, splits, monkeypatch):
    """Multi-GPU training (``--device 0,1``): Ultralytics writes a script that unpickles the trainer
    class and rebuilds it from (cfg, overrides) in each worker. Run that script, as generated, in a
    fresh interpreter up to the launch itself (which needs GPUs): it must construct a TileTrainer
    with the run's own config and splits."""
    import subprocess
    import sys

    from ultralytics.utils import dist

    from rarespot.detect.train import ultralytics_overrides
    from rarespot.io.split import save_splits
    from rarespot.detect.trainer import TileTrainer

    monkeypatch.setattr(dist, "USER_CONFIG_DIR", tmp_path)
    monkeypatch.setattr(dist, "check_requirements", lambda *a, **k: None, raising=False)
    import ultralytics.utils.checks as checks

    monkeypatch.setattr(checks, "check_requirements", lambda *a, **k: True)
    config = tiny_config(tmp_path / "run", cls_loss="focal")
    run_dir = config.out
    run_dir.mkdir(parents=True)
    config.dump_yaml(run_dir / "config.yaml")
    save_splits(splits, run_dir / "split.json")
    trainer = TileTrainer(overrides=ultralytics_overrides(config, run_dir, "yolo11n.yaml"), config=config, splits=splits)
    trainer.model = trainer.get_model(cfg="yolo11n.yaml", verbose=False)
    script = Path(dist.generate_ddp_file(trainer))
    text = script.read_text()
    assert "trainer.train()" in text
    probe = text.replace(
        "trainer.train()",
        "ds = trainer.build_dataset('', 'train'); "
        "print('BUILT', type(trainer).__module__, type(trainer).__name__, trainer.rs_config.cls_loss, "
        "len(trainer.splits['train']), type(trainer.get_model(cfg='yolo11n.yaml', verbose=False)).__name__, len(ds) > 0)",
    )
    probe_path = tmp_path / "probe_ddp.py"
    probe_path.write_text(probe)
    proc = subprocess.run([sys.executable, str(probe_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"BUILT rarespot.detect.trainer TileTrainer focal {len(splits['train'])} RarespotDetectionModel True" in proc.stdout


def test_pretrained_backbone_trains_saves_and_predicts(tmp_path, splits):
    """backbone: efficientnet-lite0 starts from the ImageNet weights (layer 0 = the folded pretrained stem),
    trains channels-last, and its checkpoint loads and predicts through the tiled predictor."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="rarespot[pretrained] is not installed")
    from ultralytics.nn.tasks import DetectionModel

    from rarespot.detect.backbone import attach_efficientnet_lite0
    from rarespot.detect.predict import TiledPredictor
    from rarespot.pretrained import _fold_bn, load_efficientnet_lite0

    full = load_efficientnet_lite0(256)
    stem = _fold_bn(full._conv_stem, full._bn0).weight
    fresh = attach_efficientnet_lite0(DetectionModel("yolo11n.yaml", nc=2, verbose=False))
    assert torch.equal(fresh.model[0].stem.weight, stem)
    assert [int(s) for s in fresh.stride] == [8, 16, 32]
    result = train_on_splits(tiny_config(tmp_path / "run", backbone="efficientnet-lite0", channels_last=True,
                                         imgsz=64, tile_size=64), splits, quiet=True)
    from ultralytics import YOLO

    model = YOLO(str(result.best)).model
    assert type(model.model[0]).__name__ == "EfficientNetStem"
    assert not torch.equal(model.model[0].stem.weight.float(), stem)  # fine-tuned, not frozen
    predictor = TiledPredictor(result.best, tile=96, overlap=0.2, conf=0.001, imgsz=64, device="cpu")
    from rarespot.io.images import read_image

    dets = predictor.predict(read_image(splits["test"].image_path(splits["test"].records[0])))
    assert dets.boxes.ndim == 2 and dets.boxes.shape[1] == 4 and len(dets.scores) == len(dets.boxes)


def test_freeze_keeps_the_pretrained_stem_and_trains_the_rest(tmp_path, splits):
    """freeze: 1 with the EfficientNet backbone: layer 0 (ImageNet stem + stages 0-2) leaves training exactly as
    it was loaded, while the layers after it change."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="rarespot[pretrained] is not installed")
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from rarespot.detect.backbone import attach_efficientnet_lite0

    fresh = attach_efficientnet_lite0(DetectionModel("yolo11n.yaml", nc=2, verbose=False))
    result = train_on_splits(tiny_config(tmp_path / "run", backbone="efficientnet-lite0", freeze=1, epochs=2,
                                         imgsz=64, tile_size=64), splits, quiet=True)
    trained = YOLO(str(result.last)).model

    def saved(t):  # Ultralytics saves the EMA weights in half precision and loads them back as float
        return t.half().float()

    before, after = fresh.model[0].state_dict(), trained.model[0].state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(saved(before[k]), after[k]) for k in before)
    before, after = fresh.model[5].state_dict(), trained.model[5].state_dict()
    assert not all(torch.equal(saved(before[k]), after[k]) for k in before)
    with pytest.raises(ValueError):
        DetectTrainConfig(freeze=-1)


def test_time_schedule_sets_every_steps_rate_from_the_budget_share(tmp_path, splits, monkeypatch):
    """lr_schedule 'time': each step's rate is lr0 * clock_lr_factor(share of the budget used), here a share
    pinned at 0.5 (the real one is the clock's); the run still stops by Ultralytics' own clock."""
    from rarespot.detect.trainer import TileTrainer, clock_lr_factor

    assert clock_lr_factor(0.0, 0.1) == 1.0 and clock_lr_factor(1.0, 0.1) == pytest.approx(0.1)
    assert clock_lr_factor(0.5, 0.1) == pytest.approx(0.55)
    monkeypatch.setattr(TileTrainer, "budget_share", lambda self: 0.5)
    cfg = tiny_config(tmp_path / "run", epochs=50, time_hours=0.002, lr_schedule="time", lr0=0.01, lrf=0.1,
                      optimizer="SGD", val_every=50)
    result = train_on_splits(cfg, splits, quiet=True)
    rows = read_metrics_csv(result.run_dir / "metrics.csv")
    assert 1 <= len(rows) < 50  # stopped by the 7.2-second budget
    assert [r["lr"] for r in rows] == pytest.approx([0.0055] * len(rows))


def test_time_schedule_needs_a_time_budget():
    with pytest.raises(ValueError, match="set time_hours too"):
        DetectTrainConfig(lr_schedule="time")
