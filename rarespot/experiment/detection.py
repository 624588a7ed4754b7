"""The detection pipeline as the experiment runner's ``run_fn``.

Data are prepared once per plan (generated or read, a holdout cut off, split
60/20/20 with a fixed split seed, the training split optionally made long-tailed
and cut to the image budget: :func:`draw_splits`, built from ``rarespot.io.split``)
and every run trains on those same splits: the seeds vary the model's
initialisation and the random tiles, not the test set. Each run
picks its operating confidence on the validation split (best F1) and reports
P/R/F1 at that confidence, with mAP, on the untouched test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rarespot.errors import InputError
from rarespot.experiment.plan import DataSource, Plan
from rarespot.experiment.runner import CellRun, run_dir_for
from rarespot.io.atomic import atomic_write_text
from rarespot.io.dataset import DetectionDataset


def prepare_splits(plan: Plan, out_dir: Path) -> dict[str, DetectionDataset]:
    """train/val/test for the whole plan, cached as ``out_dir/data/split.json``.

    Made under a file lock: runs that start together (two runners, or Ray tasks on one node) make
    the data once, and the others wait for it and read it."""
    import fcntl

    lock_path = Path(out_dir) / "data" / ".split.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare_splits(plan, Path(out_dir))


def _prepare_splits(plan: Plan, out_dir: Path) -> dict[str, DetectionDataset]:
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import load_saved_splits, save_splits

    data_dir = out_dir / "data"
    # The cached splits are only valid for the data section (as written) and image budget they were made from.
    spec_of = {"data": plan.data.model_dump(mode="json", exclude_unset=True), "images": plan.budget.images}
    if plan.budget.val_images is not None:  # only when set, so folders made before it existed stay valid
        spec_of["val_images"] = plan.budget.val_images
    wanted = json.dumps(spec_of, sort_keys=True, default=str)
    made_from = data_dir / "data_spec.json"
    if (data_dir / "split.json").exists():
        if made_from.exists() and made_from.read_text() == wanted:
            return load_saved_splits(data_dir)
        raise InputError(
            data_dir / "split.json",
            "these splits were made from another data section or image budget than the plan's now; "
            "use another --out for the changed plan (finished runs in this folder used the old splits)",
        )
    source = plan.data
    if source.synth is not None:
        from rarespot.synth import generate

        synth = source.synth
        dataset = generate(synth.n, data_dir / "scans", seed=synth.seed, size=synth.size)
    elif source.path is not None:
        path = Path(source.path).expanduser()
        if not path.exists():
            raise InputError(path, "the plan's data path does not exist")
        dataset = load_dataset(path, fmt=source.format)
    else:
        raise InputError(None, "plan data needs 'synth: {n, seed}' or 'path: DIR'")
    splits = draw_splits(dataset, source, plan.budget.images, plan.budget.val_images)
    data_dir.mkdir(parents=True, exist_ok=True)
    save_splits(splits, data_dir / "split.json")
    atomic_write_text(made_from, wanted)
    return splits


def draw_splits(
    dataset: DetectionDataset, spec: DataSource, images: int | None = None, val_images: int | None = None
) -> dict[str, DetectionDataset]:
    """The plan's train/val/test drawn from its dataset (``spec``: the plan's data section), seeded.

    In this order, each step from ``rarespot.io.split``: the holdout cut off, the 60/20/20
    (or ``fractions``) split with ``split_seed``, the training side made long-tailed,
    then the training and validation sides cut to their image budgets.
    """
    from rarespot.io.split import carve_holdout, longtail_subsample, split_dataset, subsample

    split_seed = spec.split_seed
    if spec.holdout is not None:
        # A final test set cut off before anything else and never scored by the study: the
        # study's "test" split is development data, so a recipe chosen on it stays honest.
        dataset, _ = carve_holdout(dataset, spec.holdout.share, spec.holdout.seed)
    splits = dict(split_dataset(dataset, spec.fractions, split_seed))
    longtail = spec.longtail
    if longtail is not None:
        # Only the training data become long-tailed; val/test keep the natural mix
        # so per-class recall of the rare classes is measured on enough objects.
        splits["train"] = longtail_subsample(splits["train"], list(longtail.ratios), longtail.seed, longtail.order)
    splits["train"] = subsample(splits["train"], images, split_seed)
    splits["val"] = subsample(splits["val"], val_images, split_seed + 1)
    return splits


def _resolve_score_remap(job: CellRun, remap: str | None) -> str | None:
    """``score:@study/label`` -> the evaluation JSON that cell wrote for this seed."""
    if not remap or not remap.startswith("score:@"):
        return remap
    study, cell = job.plan.cell(remap[len("score:@"):])
    path = run_dir_for(job.out_dir, study, cell, job.seed) / "val_eval" / "metrics.json"
    if not path.exists():
        raise InputError(path, f"score remap needs the validation evaluation of {study.name}/{cell.label} (seed {job.seed}); run that cell first")
    return f"score:{path}"


def make_predictor(job: CellRun, model: Path, config, scored: list[DetectionDataset]):
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.settings import InferenceSettings

    ev = job.plan.evaluation
    overlap = ev.overlap
    agnostic = ev.class_agnostic_merge
    if job.cell.inference == "sahi":
        from rarespot.detect.sahi_adapter import SahiPredictor

        return SahiPredictor(model, tile=config.tile_size, overlap=overlap, conf=0.001, class_agnostic=agnostic,
                             imgsz=config.input_size)
    tile = config.tile_size
    if job.cell.inference == "full" or config.full_image:
        # One tile as large as the largest scan = a plain letterboxed full-image pass.
        # Sized over every split it will score, so validation scans are never tiled either.
        tile, overlap = max(max(r.height, r.width) for ds in scored for r in ds.records), 0.0
    # Tile skipping stays off unless a plan asks for it: every cell of a study is scored the same way,
    # including runs scored before skipping existed (the evaluation setting `skip_background: true`).
    settings = InferenceSettings(tile=tile, overlap=overlap, conf=0.001, imgsz=config.input_size,
                                 class_agnostic=agnostic, skip_background=ev.skip_background)
    return TiledPredictor(model, settings)


def run_detection_cell(job: CellRun) -> dict[str, Any]:
    """Train (unless the cell reuses a model), calibrate on val, evaluate on test."""
    from rarespot.detect.config import load_config
    from rarespot.detect.evaluate import evaluate, operating_conf, write_evaluation_report
    from rarespot.detect.remap import remap_splits
    from rarespot.detect.train import train_on_splits
    from rarespot.io.split import load_saved_splits

    if job.model_from_dir is not None:
        model = job.model_from_dir / "train" / "weights" / "best.pt"
        if not model.exists():
            raise InputError(model, "the cell this one reuses has no trained model")
        config = load_config(job.model_from_dir / "train" / "config.yaml")
        splits = load_saved_splits(job.model_from_dir / "train")
        seconds = 0.0
    elif job.cell.trainer == "ultralytics":
        from rarespot.detect.peer import train_ultralytics_defaults

        config = load_config(None, **job.config, out=job.run_dir / "train", exist_ok=True)
        splits = remap_splits(prepare_splits(job.plan, job.out_dir), config.remap)
        peer = train_ultralytics_defaults(
            splits, job.run_dir, model=config.model, epochs=config.epochs, imgsz=config.input_size,
            batch=config.batch, seed=config.seed, device=config.device,
        )
        config.full_image = True  # the peer trains on whole images: score it on whole images
        model, seconds = peer.weights, peer.seconds
    else:
        settings = dict(job.config)
        settings["remap"] = _resolve_score_remap(job, settings.get("remap"))
        config = load_config(None, **settings, out=job.run_dir / "train", exist_ok=True)
        splits = remap_splits(prepare_splits(job.plan, job.out_dir), config.remap)
        result = train_on_splits(config, splits, quiet=True)
        model, seconds = result.model, result.seconds
    val, test = splits["val"], splits["test"]
    predictor = make_predictor(job, model, config, [val, test])
    val_result = evaluate(predictor, val, progress=False, keep_predictions=False)
    write_evaluation_report(val_result, job.run_dir / "val_eval")
    test_result = evaluate(predictor, test, conf_for_prf=val_result.best_f1_conf, progress=False)
    write_evaluation_report(test_result, job.run_dir / "test_eval")
    (job.run_dir / "cell.json").write_text(json.dumps({"config": job.config, "inference": job.cell.inference}, default=str))
    row = {
        "precision": test_result.precision,
        "recall": test_result.recall,
        "f1": test_result.f1,
        "map50": test_result.map50,
        "map50_95": test_result.map50_95,
        "conf": val_result.best_f1_conf,
        "train_seconds": round(seconds, 1),
        **class_summary(test_result),
    }
    floor = job.plan.evaluation.class_recall_floor
    if floor is not None:  # the same boxes again, at the screening point chosen on val
        floor_conf = operating_conf(val_result, class_recall_floor=floor)
        floored = evaluate(predictor, test, conf_for_prf=floor_conf, progress=False, predictions=test_result.predictions)
        write_evaluation_report(floored, job.run_dir / "test_eval_floor")
        row.update({"floor_conf": floor_conf, "floor_f1": floored.f1,
                    **{f"floor_{k}": v for k, v in class_summary(floored).items()}})
    return row


def class_summary(result) -> dict[str, Any]:
    """Mean-over-classes F1 (the other F1 tables quote) and per-class recall, as results.csv columns.

    Classes with no ground truth in the scored split are left out of both (named in the JSON as null).
    """
    present = [c for c in result.per_class if c.support > 0]
    recall = {c.name: (round(float(c.recall), 4) if c.support > 0 else None) for c in result.per_class}
    return {
        "f1_mean_class": float(np.mean([c.f1 for c in present])) if present else float("nan"),
        "class_recall": json.dumps(recall),
    }
