"""The Ultralytics trainer rarespot trains with: :class:`TileTrainer`, a ``DetectionTrainer``
fed by :class:`~rarespot.detect.data.ScanTileDataset` (random positive tiles, the seed's
augmentations, the imbalance hooks) that validates every ``val_every`` epochs and keeps the
checkpoint with the lowest validation loss.

A module-level class on purpose: Ultralytics' multi-GPU launcher (``--device 0,1``) pickles the
trainer class and rebuilds it in each DDP worker from ``(cfg, overrides)`` alone, so the class
must be importable by name and constructible from the run folder (``overrides["data"]`` is the
run's ``split.json``, beside its ``config.yaml``). Importing this module imports Ultralytics;
:mod:`rarespot.detect.train` imports it only when a run starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG, RANK
from ultralytics.utils.torch_utils import strip_optimizer, unwrap_model

from rarespot.detect.augment import build_augmentation
from rarespot.detect.config import DetectTrainConfig
from rarespot.detect.data import ScanTileDataset
from rarespot.detect.loss import RarespotDetectionModel
from rarespot.detect.preprocess import stamp_input_mapping
from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset


def _tuner_epoch_started(trainer) -> None:
    trainer.thread_tuner.epoch_started(time.perf_counter())


def _tuner_step_done(trainer) -> None:
    trainer.thread_tuner.step_done(time.perf_counter())


def clock_lr_factor(share: float, lrf: float) -> float:
    """lr / lr0 once ``share`` of the time budget is used: Ultralytics' linear fall, by the clock."""
    return (1.0 - share) * (1.0 - lrf) + lrf


def _follow_the_clock(trainer) -> None:
    """Set the rate for the next step (lr_schedule "time"); during warmup Ultralytics overwrites it
    before the step, ramping to the same factor."""
    factor = trainer.time_lr_factor()
    for group in trainer.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


class TileTrainer(DetectionTrainer):
    """DetectionTrainer fed by ScanTileDataset; validates every k epochs; best = lowest val loss."""

    def __init__(
        self,
        cfg=DEFAULT_CFG,
        overrides: dict | None = None,
        _callbacks=None,
        *,
        config: DetectTrainConfig | None = None,
        splits: dict[str, DetectionDataset] | None = None,
    ):
        # Ultralytics' own signature first: its DDP launcher pickles this class and rebuilds it in
        # each worker as TileTrainer(cfg=..., overrides=args). Then the run's config and splits are
        # read back from the run folder that ``overrides["data"]`` (its split.json) points to.
        if config is None or splits is None:
            from rarespot.detect.config import load_config
            from rarespot.io.split import load_saved_splits

            split_json = Path((overrides or {}).get("data", ""))
            if split_json.name != "split.json" or not split_json.is_file():
                raise InputError(split_json, "a rarespot trainer needs its run folder's split.json as data")
            config = config or load_config(split_json.parent / "config.yaml")
            splits = splits or load_saved_splits(split_json.parent)
        self.rs_config = config
        self.splits = splits
        super().__init__(cfg=cfg, overrides=overrides, _callbacks=_callbacks)
        self.thread_tuner = None
        if self.device.type == "cpu":
            # Ultralytics' select_device just set cores - 1 threads (one on a 2-core machine). A
            # pinned count is used as given; otherwise the tuner times both counts every epoch.
            from rarespot.cpu import ThreadTuner, available_cores

            if config.threads:
                torch.set_num_threads(config.threads)
            else:
                self.thread_tuner = ThreadTuner(available_cores())
                self.add_callback("on_train_epoch_start", _tuner_epoch_started)
                self.add_callback("on_train_batch_end", _tuner_step_done)
        if config.lr_schedule == "time":
            self.add_callback("on_train_batch_end", _follow_the_clock)

    # lr_schedule "time": the learning rate falls with the share of the wall-clock budget used, so it
    # reaches lrf * lr0 as the run stops. Ultralytics re-plans a time-budgeted run's epochs by rounding up
    # and stops inside the last one, whose rate is still about lr0 / epochs.
    def budget_share(self) -> float:
        """Share of the time budget used so far, by Ultralytics' own clock (the one its stop reads)."""
        start = getattr(self, "train_time_start", None)
        if not self.args.time or start is None:
            return 0.0
        return min(max((time.time() - start) / (self.args.time * 3600), 0.0), 1.0)

    def time_lr_factor(self, _epoch=None) -> float:
        return clock_lr_factor(self.budget_share(), self.args.lrf)

    def _setup_scheduler(self):
        super()._setup_scheduler()
        if self.rs_config.lr_schedule == "time":
            # Also the target of Ultralytics' warmup (initial_lr * lf(epoch)), so warmup ends on the clock's rate.
            self.lf = self.time_lr_factor
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)

    def get_dataset(self) -> dict:
        names = self.splits["train"].class_names
        return {
            "train": "rarespot:train",
            "val": "rarespot:val",
            "names": dict(enumerate(names)),
            "nc": len(names),
            "channels": 3,
        }

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        cfg = self.rs_config
        split = self.splits["train" if mode == "train" else "val"]
        gs = max(int(unwrap_model(self.model).stride.max()), 32) if self.model is not None else 32
        repeat, weights, copy_paste = None, None, None
        if mode == "train":
            repeat, weights, copy_paste = imbalance_hooks(cfg, split)
        return ScanTileDataset(
            split,
            mode=mode,
            imgsz=self.args.imgsz,
            hyp=self.args,
            batch_size=batch or cfg.batch,
            stride=gs,
            tiles=cfg.tiles,
            tile_size=cfg.tile_size,
            min_visible=cfg.min_visible,
            negative_tiles=cfg.negative_tiles,
            full_image=cfg.full_image,
            val_overlap=cfg.val_overlap,
            augmentation=build_augmentation(cfg.aug, cfg.aug_p, seed=cfg.seed) if mode == "train" else None,
            repeat_factors=repeat,
            object_weights=weights,
            copy_paste=copy_paste,
            ultralytics_augment=cfg.ultralytics_augment,
            cache_images=cfg.cache_images,
        )

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        rs = self.rs_config
        custom_loss = rs.cls_loss != "bce"
        model_cls = RarespotDetectionModel if custom_loss else DetectionModel
        model = model_cls(cfg, nc=self.data["nc"], ch=3, verbose=verbose and RANK == -1)
        if custom_loss:
            model.cls_loss_options = {
                "cls_loss": rs.cls_loss,
                "alpha": rs.focal_alpha,
                "gamma": rs.focal_gamma,
                "beta": rs.cb_beta,
                "class_counts": [int(c) for c in self.splits["train"].class_counts()],
            }
        if rs.backbone != "yolo":
            from rarespot.detect.backbone import attach_efficientnet_lite0

            attach_efficientnet_lite0(model)  # before any checkpoint is loaded, so resumed weights land on it
        model = self.set_model_names_for_load(model)
        stamp_input_mapping(model)  # preprocess.py: the scan -> 8-bit mapping training uses, saved with the weights
        if weights:
            model.load(weights)
        if self._channels_last():
            model.to(memory_format=torch.channels_last)
        return model

    def _channels_last(self) -> bool:
        """NHWC on an x86 CPU with oneDNN: yolo11n trains about 1.15x faster, and depthwise
        backbones (EfficientNet-Lite0) about 1.5-2x (docs/benchmarks/detect_training.md)."""
        setting = self.rs_config.channels_last
        if setting is not None:
            return bool(setting)
        from rarespot.cpu import channels_last_helps

        return self.device.type == "cpu" and channels_last_helps()

    def preprocess_batch(self, batch: dict) -> dict:
        batch = super().preprocess_batch(batch)
        if self._channels_last():
            batch["img"] = batch["img"].contiguous(memory_format=torch.channels_last)
        return batch

    def plot_training_labels(self):
        """Off: Ultralytics' label plots need a font download; rarespot draws its own plots."""

    # Validation every k epochs; fitness = -validation loss (seed 3.3: keep the lowest-loss model).
    def _skip_validation(self) -> bool:
        k = self.rs_config.val_every
        epoch = self.epoch + 1
        final = epoch >= self.epochs
        return not (final or epoch % k == 0 or self.stopper.possible_stop or self.stop)

    def validate(self):
        if self._skip_validation():
            return {key: float("nan") for key in self.metrics}, None
        metrics = self.validator(self)
        if metrics is None:
            return None, None
        metrics.pop("fitness", None)
        val_loss = sum(v for k, v in metrics.items() if k.startswith("val/"))
        fitness = -float(val_loss)
        if self.best_fitness is None or fitness > self.best_fitness:
            self.best_fitness = fitness
        return metrics, fitness

    def save_model(self):
        """Ultralytics' checkpoint, written to temp files and renamed: a crash never leaves a torn last.pt."""
        last, best = self.last, self.best
        tmp_last, tmp_best = last.with_name(".last.pt.tmp"), best.with_name(".best.pt.tmp")
        self.last, self.best = tmp_last, tmp_best
        try:
            saved = super().save_model()
        finally:
            self.last, self.best = last, best
        if tmp_last.exists():
            os.replace(tmp_last, last)
        if tmp_best.exists():
            if self.fitness is not None:  # an epoch without validation is never "best"
                os.replace(tmp_best, best)
            else:
                tmp_best.unlink()
        return saved

    def final_eval(self):
        """Strip optimiser state from the final checkpoints. best.pt's validation metrics are
        already in metrics.csv (its epoch's row), so Ultralytics' re-validation is skipped."""
        for ckpt in (self.last, self.best):
            if ckpt.exists():
                strip_optimizer(ckpt)


def imbalance_hooks(config: DetectTrainConfig, train: DetectionDataset):
    """(repeat factors, object-choice class weights, copy-paste transform) from the config; None where off."""
    repeat = weights = copy_paste = None
    labels_per_image = [r.labels for r in train.records]
    if config.sampler == "repeat_factor":
        from rarespot.imbalance.sampling import repeat_factors

        repeat = np.asarray(repeat_factors(labels_per_image, train.num_classes, config.repeat_threshold))
    if config.tile_object_choice == "class_aware":
        from rarespot.imbalance.sampling import class_aware_object_weights

        weights = np.asarray(class_aware_object_weights(train.class_counts(), power=config.object_weight_power))
    if config.copy_paste is not None:
        from rarespot.detect.preprocess import to_model_input
        from rarespot.imbalance.copy_paste import XrayCopyPaste

        # Pasting happens on the 8-bit model-input tile, so donors are put in that space too.
        copy_paste = XrayCopyPaste(train, donor_transform=to_model_input, **config.copy_paste.model_dump())
    return repeat, weights, copy_paste
