"""`rarespot detect` commands (filled in by the detect pipeline)."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from rarespot.ray_backend import RAY_HELP, WORKERS_HELP  # help texts only: Ray itself is imported with --ray

app = typer.Typer(no_args_is_help=True)


@app.command("train")
def train(
    config: Path = typer.Option(None, "--config", "-c", help="YAML training config, or a packaged one: 'seed' (the seed's ideal settings), 'xray-small' (the recipe for small X-ray sets), 'demo' (flags override it)."),
    data: Path = typer.Option(None, "--data", "-d", help="Dataset folder or annotation file (VOC, YOLO, COCO)."),
    val_data: Path = typer.Option(None, "--val-data", help="Separate validation set (default: split --data 60/20/20)."),
    data_format: str = typer.Option(None, "--format", help="Annotation format: auto, voc, yolo, coco."),
    model: str = typer.Option(None, "--model", "-m", help="yolo11n (default), yolov8n, yolov5nu, ... or a local .pt/.yaml."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (seed: 150)."),
    batch: int = typer.Option(None, "--batch", help="Batch size (seed: 8)."),
    tiles: int = typer.Option(None, "--tiles", help="Random positive tiles per image per epoch (seed: 4)."),
    tile_size: int = typer.Option(None, "--tile-size", help="Tile side in pixels (seed: 512)."),
    full_image: bool = typer.Option(None, "--full-image/--tiled", help="Train on whole images (the seed's baseline)."),
    imgsz: int = typer.Option(None, "--imgsz", help="Network input size (default: tile size, or 640 full-image)."),
    remap: str = typer.Option(None, "--remap", help="agnostic | binary | size | size:A1,A2,A3 | score:EVAL.json | map.yaml"),
    aug: str = typer.Option(None, "--aug", help="Comma list of hflip, blur, rbc, noise (each with probability --aug-p)."),
    aug_p: float = typer.Option(None, "--aug-p", help="Probability of each augmentation (seed: 0.5)."),
    ultralytics_augment: bool = typer.Option(None, "--ultralytics-augment/--no-ultralytics-augment", help="Also use Ultralytics' mosaic/HSV/affine."),
    val_every: int = typer.Option(None, "--val-every", help="Validate every k epochs (seed: 2)."),
    patience: int = typer.Option(None, "--patience", help="Stop after this many epochs without lower validation loss."),
    device: str = typer.Option(None, "--device", help="cpu, 0, cuda:0 ... (default: GPU if any)."),
    seed: int = typer.Option(None, "--seed", help="Seed for the split and training."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default runs/train)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out from its last.pt."),
    exist_ok: bool = typer.Option(None, "--exist-ok", help="Train into an existing run folder, replacing its checkpoints."),
    set_: list[str] = typer.Option(None, "--set", help="Any other config key, e.g. --set sampler=repeat_factor (repeatable)."),
) -> None:
    """Train a YOLO detector with random positive tiling (seed 000); writes a run folder with best.pt/last.pt."""
    from rarespot.config import parse_set_options
    from rarespot.detect.config import load_config
    from rarespot.detect.train import resume_run
    from rarespot.detect.train import train as run_training

    if resume:
        result = resume_run(out or Path("runs/train"))
    else:
        extra = parse_set_options(set_)
        flags = dict(
            data=data, val_data=val_data, data_format=data_format, model=model, epochs=epochs, batch=batch,
            tiles=tiles, tile_size=tile_size, full_image=full_image, imgsz=imgsz, remap=remap, aug=aug, aug_p=aug_p,
            ultralytics_augment=ultralytics_augment, val_every=val_every, patience=patience, device=device,
            seed=seed, out=out, exist_ok=exist_ok,
        )
        for key, value in extra.items():  # a named flag wins over --set of the same key
            if flags.get(key) is None:
                flags[key] = value
        cfg = load_config(config, **flags)
        result = run_training(cfg)
    best = "" if result.best_epoch is None else f", best epoch {result.best_epoch} (validation loss {result.best_val_loss:.4f})"
    typer.echo(f"trained {result.epochs_run} epochs in {result.seconds:.0f} s{best}\n"
               f"model ({result.config.model_checkpoint}): {result.model}\nrun: {result.run_dir}")


def _inference_settings(conf, tile, overlap, iou, merge, match, agnostic, full_pass, batch, imgsz, device, backend,
                        threads, skip, tta):
    """The flags `detect predict` and `detect evaluate` share, as the predictor's settings
    (their defaults are InferenceSettings' own: tests/test_detect_predict.py checks)."""
    from rarespot.detect.settings import InferenceSettings

    return InferenceSettings.from_options(
        conf=conf, tile=tile, overlap=overlap, iou=iou, merge=merge, match_metric=match, class_agnostic=agnostic,
        full_image_pass=full_pass, batch=batch, imgsz=imgsz, device=device, backend=backend, threads=threads,
        skip_background=skip, tta=tta,
    )


_TILE = typer.Option(512, "--tile", help="Tile size in pixels (use the training tile size; seed: 512).")
_OVERLAP = typer.Option(0.2, "--overlap", help="Overlap of neighbouring tiles, as a fraction of a tile.")
_IOU = typer.Option(0.5, "--iou", help="IoU above which boxes are merged (inside and across tiles).")
_MERGE = typer.Option("nms", "--merge", help="Cross-tile merge: nms (keep the best box) or wbf (fuse boxes).")
_MATCH = typer.Option("iou", "--match", help="Merge overlap measure: iou, or ios (also folds boxes cut by a tile edge).")
_AGNOSTIC = typer.Option(False, "--agnostic", help="Merge boxes across classes (one object, one box).")
_FULL = typer.Option(False, "--full-pass", help="Also run the whole scan shrunk to one tile (objects larger than a tile).")
_BATCH = typer.Option(8, "--batch", help="Tiles per forward pass.")
_IMGSZ = typer.Option(None, "--imgsz", help="Network input size (default: the tile size).")
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda:0 ...")
_BACKEND = typer.Option(
    "auto", "--backend",
    help="auto (.onnx -> the faster of openvino and onnxruntime, timed once per model and machine, kept in the cache; "
         "RARESPOT_RETIME_BACKEND=1 times again; .pt -> its ONNX export, made once and cached, on that faster runtime "
         "when OpenVINO is installed and --device is the CPU, torch otherwise), openvino, onnxruntime "
         "or torch (openvino/onnxruntime with a .pt export it once, cached).",
)
# evaluate is the reference evaluator: a .pt is measured as trained, on torch (the documented figures).
_EVAL_BACKEND = typer.Option(
    "auto", "--backend",
    help="auto (.onnx -> the faster of openvino and onnxruntime, timed once per model and machine, kept in the cache; "
         "RARESPOT_RETIME_BACKEND=1 times again; .pt -> torch), openvino, onnxruntime "
         "or torch (openvino/onnxruntime with a .pt export it once, cached).",
)
_SKIP = typer.Option(
    True, "--skip-background/--no-skip",
    help="Run only tiles that hold foreground (a test on the scan, once per scan); --no-skip runs every tile, as SAHI.",
)
_TTA = typer.Option(
    "none", "--tta",
    help="Test-time views: none, hflip (each tile also mirrored left-right: 2x the network time) or flips "
         "(also up-down and both: 4x); every view's boxes are mirrored back and merged.",
)
_THREADS = typer.Option(None, "--threads", help="CPU threads (default: all cores; fewer on a machine busy with other jobs).")


@app.command("predict")
def predict(
    model: Path = typer.Argument(..., help="Trained model: a YOLO .pt checkpoint or an exported .onnx."),
    images: list[Path] = typer.Argument(..., help="Scans and/or folders of scans (PNG, TIFF, DICOM, JPEG; 8/16-bit)."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder."),
    conf: float = typer.Option(0.25, "--conf", help="Keep boxes scoring at least this."),
    class_conf: str = typer.Option(
        None, "--class-conf",
        help="Per-class thresholds instead of --conf for the classes named: NAME=CONF,... or the metrics.json of "
             "`detect evaluate --calibrate-on val --per-class-conf`.",
    ),
    tile: int = _TILE, overlap: float = _OVERLAP, iou: float = _IOU, merge: str = _MERGE, match: str = _MATCH,
    agnostic: bool = _AGNOSTIC, full_pass: bool = _FULL, batch: int = _BATCH, imgsz: int = _IMGSZ,
    device: str = _DEVICE, backend: str = _BACKEND, threads: int = _THREADS, skip: bool = _SKIP, tta: str = _TTA,
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write a PNG of each scan with its boxes."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable scan (default: skip it and list it in skipped.csv)."),
) -> None:
    """Tiled inference on full-resolution scans: predictions.json, predictions.csv and overlay PNGs."""
    from rarespot.detect.predict import collect_images, open_predictor, predict_files
    from rarespot.detect.settings import class_conf_from

    paths = collect_images(images)  # a missing input fails before the model loads
    settings = _inference_settings(conf, tile, overlap, iou, merge, match, agnostic, full_pass, batch, imgsz, device,
                                   backend, threads, skip, tta)
    if class_conf is not None:
        settings = settings.replace(class_conf=class_conf_from(class_conf))
    predictor = open_predictor(model, settings)  # under auto on the CPU, a .pt runs as its cached ONNX export
    results, skipped = predict_files(predictor, paths, out, overlays=overlays, strict=strict)
    n_boxes = sum(len(d) for _, d in results)
    flagged = sum(1 for _, d in results if len(d))
    on = f" on {predictor.runtime}" if predictor.runtime else ""
    at = f"conf >= {conf:g}" if class_conf is None else "per-class confs " + ", ".join(
        f"{n} {c:g}" for n, c in zip(predictor.class_names, predictor.class_conf))
    typer.echo(f"{len(results)} scans, {n_boxes} boxes (in {flagged} scans) at {at}{on}\n"
               f"results: {out / 'predictions.json'}, {out / 'predictions.csv'}"
               + (f", overlays in {out / 'overlays'}" if overlays else ""))
    if skipped:
        typer.echo(f"{len(skipped)} unreadable scan(s) skipped, listed in {out / 'skipped.csv'} "
                   f"(first: {skipped[0][0]}: {skipped[0][1]})", err=True)


@app.command("evaluate")
def evaluate(
    model: Path = typer.Argument(..., help="Trained model (.pt or .onnx)."),
    data: Path = typer.Argument(..., help="A training run folder (uses its held-out split), or a dataset (VOC/YOLO/COCO)."),
    split: str = typer.Option(None, "--split", help="train, val, test or all (default: test for a run folder, all for a dataset)."),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Output folder: report.md, pr_curve.png, metrics.json, overlays/."),
    calibrate_on: str = typer.Option(None, "--calibrate-on", help="Choose the operating confidence on this data (a split name such as val, or a dataset path)."),
    target_recall: float = typer.Option(None, "--target-recall", help="Operating confidence = the highest reaching this recall (on --calibrate-on data if given)."),
    conf: float = typer.Option(None, "--conf", help="Operating confidence for P/R/F1 (default: calibrated, else 0.25)."),
    per_class_conf: bool = typer.Option(
        False, "--per-class-conf",
        help="With --calibrate-on: one operating confidence per class, each from that class's own curve "
             "(a rare class often scores lower than the rest, and one threshold for all cuts it first).",
    ),
    class_recall_floor: float = typer.Option(
        None, "--class-recall-floor",
        help="With --calibrate-on: a screening operating point. Only confidences at which every class keeps at "
             "least this recall on the calibration data are candidates (best F1 among them), so no class is cut "
             "below it there.",
    ),
    match_iou: float = typer.Option(0.5, "--match-iou", help="IoU a prediction needs to count as a hit (seed: 0.5)."),
    class_agnostic_eval: bool = typer.Option(None, "--class-agnostic/--class-aware", help="Match boxes regardless of class (default: agnostic only for a one-class model on a multi-class dataset)."),
    data_format: str = typer.Option("auto", "--format", help="Annotation format: auto, voc, yolo, coco."),
    seed: int = typer.Option(0, "--seed", help="Split seed (as given to `rarespot detect train`)."),
    overlays: int = typer.Option(12, "--overlays", help="Overlay PNGs of the scans with the most errors (0: none)."),
    tile: int = _TILE, overlap: float = _OVERLAP, iou: float = _IOU, merge: str = _MERGE, match: str = _MATCH,
    agnostic: bool = _AGNOSTIC, full_pass: bool = _FULL, batch: int = _BATCH, imgsz: int = _IMGSZ,
    device: str = _DEVICE, backend: str = _EVAL_BACKEND, threads: int = _THREADS, skip: bool = _SKIP,
    tta: str = _TTA,
) -> None:
    """The seed's test protocol: tiled inference on whole held-out scans; P/R/F1 (IoU >= 0.5), mAP50, mAP50-95."""
    from rarespot.detect.evaluate import (
        calibrate_conf, evaluate as run_evaluation, load_eval_data, write_evaluation_overlays, write_evaluation_report,
    )
    from rarespot.detect.predict import TiledPredictor
    from rarespot.io.atomic import ensure_writable_dir

    for flag, given in (("--per-class-conf", per_class_conf), ("--class-recall-floor", class_recall_floor is not None)):
        if given and (calibrate_on is None or conf is not None):
            raise typer.BadParameter("needs --calibrate-on (the data the confidences are chosen on) and no --conf",
                                     param_hint=flag)
    if class_recall_floor is not None and not 0.0 < class_recall_floor <= 1.0:
        raise typer.BadParameter(f"must be in (0, 1], got {class_recall_floor}", param_hint="--class-recall-floor")
    ensure_writable_dir(out)  # fail before the long part
    dataset = load_eval_data(data, split, data_format, seed)
    settings = _inference_settings(conf if conf is not None else 0.25, tile, overlap, iou, merge, match, agnostic,
                                   full_pass, batch, imgsz, device, backend, threads, skip, tta)
    predictor = TiledPredictor(model, settings)
    class_aware = not class_agnostic_eval
    if class_agnostic_eval is None:
        class_aware = not (len(predictor.class_names) == 1 and dataset.num_classes > 1)
        if not class_aware:
            typer.echo(f"one-class model on {dataset.num_classes} classes: matching boxes regardless of class")
    operating = conf
    if calibrate_on is not None and conf is None:
        if calibrate_on in ("train", "val", "test", "all"):
            calibration = load_eval_data(data, calibrate_on, data_format, seed)
        else:
            calibration = load_eval_data(calibrate_on, None, data_format, seed)
        operating = calibrate_conf(predictor, calibration, target_recall=target_recall, per_class=per_class_conf,
                                   class_recall_floor=class_recall_floor, iou=match_iou, class_aware=class_aware)
        names = dataset.class_names if class_aware else ["object"]
        shown = (", ".join(f"{n} {c:.4f}" for n, c in zip(names, operating)) if per_class_conf
                 else f"{operating:.4f}")
        typer.echo(f"operating confidence {shown} chosen on {len(calibration)} calibration images")
    result = run_evaluation(predictor, dataset, iou=match_iou, conf_for_prf=operating, target_recall=target_recall,
                            class_aware=class_aware)
    report = write_evaluation_report(result, out)
    write_evaluation_overlays(result, dataset, out, limit=overlays)
    at = "per-class confs" if result.class_conf is not None else f"conf {result.conf:.4f}"
    typer.echo(f"F1 {result.f1:.3f} (precision {result.precision:.3f}, recall {result.recall:.3f}) at {at}; "
               f"mAP50 {result.map50:.3f}, mAP50-95 {result.map50_95:.3f} on {result.num_images} images\nreport: {report}")


@app.command("export")
def export(
    model: Path = typer.Argument(..., help="Trained YOLO detection checkpoint (.pt)."),
    out: Path = typer.Option(None, "--out", "-o", help="ONNX file to write (default: MODEL with .onnx)."),
    imgsz: int = typer.Option(512, "--imgsz", help="Network input size: the tile size used for inference."),
    batch: int = typer.Option(None, "--batch", help="Fix the batch size (default: dynamic, any number of tiles)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify the graph with onnxslim."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default: Ultralytics' choice)."),
    int8: bool = typer.Option(False, "--int8", help="The same as --precision int8."),
    precision: str = typer.Option(
        "fp32", "--precision",
        help="fp32, int8 (calibrated on training scans), bf16 or fp16 (OpenVINO, CPUs that have them). Reduced precision "
             "is checked against fp32 on held-out scans: F1 lower by more than 0.01 keeps fp32 unless --force.",
    ),
    data: Path = typer.Option(
        None, "--data", help="Training run folder: calibrate on its training scans, check on its validation scans."
    ),
    calibration: list[Path] = typer.Option(None, "--calibration", help="Scans or folders to calibrate INT8 on (repeatable; default: --data's training split)."),
    check: Path = typer.Option(None, "--check", help="Held-out annotated scans to check reduced precision on (default: --data's validation split)."),
    conf: float = typer.Option(0.25, "--conf", help="Operating confidence at which the check compares F1."),
    force: bool = typer.Option(False, "--force", help="Keep reduced precision even when the check fails (or without one)."),
) -> None:
    """Export to ONNX (class names, input size, input mapping and precision check in its metadata), for
    `rarespot detect predict model.onnx` on OpenVINO or onnxruntime."""
    import warnings

    from rarespot.detect.export import export_onnx
    from rarespot.detect.precision import onnx_metadata, read_stamp

    if int8:
        precision = "int8"
    out = out or model.with_suffix(".onnx" if precision == "fp32" else f".{precision}.onnx")
    if precision == "int8" and not calibration and data is not None:
        from rarespot.detect.evaluate import load_eval_data

        calibration = load_eval_data(data, "train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_onnx(model, out, imgsz=imgsz, dynamic=batch is None, batch=batch or 1, simplify=simplify,
                           opset=opset, precision=precision, calibration=calibration or None,
                           check=check or data, conf=conf, force=force)
    for w in caught:
        if "F1" in str(w.message):
            typer.echo(str(w.message), err=True)
    stamp = read_stamp(onnx_metadata(path)[0]) or {"precision": "fp32"}
    check_text = ""
    if stamp.get("rejected"):
        check_text = f"; {stamp['rejected']['precision']} rejected"
    elif stamp.get("f1") is not None:
        check_text = (f"; check: F1 {stamp['f1']:.3f} vs fp32 {stamp['f1_fp32']:.3f} on {stamp['scans']} held-out "
                      f"scans, {stamp['status']}")
    elif stamp.get("status") == "forced":
        check_text = "; unchecked (--force)"
    typer.echo(f"wrote {path} ({'dynamic batch' if batch is None else f'batch {batch}'}, {imgsz}x{imgsz}, "
               f"{stamp['precision']}{check_text})")


@app.command("input-mapping")
def input_mapping(
    model: Path = typer.Argument(..., help="Trained YOLO checkpoint (.pt) or ONNX export."),
    set_to: str = typer.Option(
        None, "--set", help="Store this mapping in a .pt checkpoint: percentile (every scan windowed) or percentile16."
    ),
) -> None:
    """Show (or set) how scans become the model's 8-bit input; training stores it with the model."""
    from rarespot.detect.preprocess import MAPPING_KEY, InputMapping, read_input_mapping, set_input_mapping

    if set_to is not None:
        if model.suffix.lower() == ".onnx":
            raise typer.BadParameter("export the .pt again after setting its mapping", param_hint="MODEL")
        try:
            mapping = InputMapping(set_to)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--set") from None
        set_input_mapping(model, mapping)
        typer.echo(f"{model}: input mapping set to {mapping}")
        return
    mapping = read_input_mapping(model)
    typer.echo(f"{model}: {mapping}")
    if mapping.method != "percentile":
        typer.echo(f"(no '{MAPPING_KEY}' stored: trained before rarespot stored it; 8-bit scans are passed through)")


def demo(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Output folder (report.html, data, run)."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (about a minute) that checks the pipeline, not the model."),
    scans: int = typer.Option(None, "--scans", help="Synthetic scans to generate (default 90; quick: 10)."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (default 16; quick: 1)."),
    device: str = typer.Option(None, "--device", help="cpu, 0, cuda:0 ... (default: GPU if any)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data generation, split and training."),
) -> None:
    """Run the main job: synthetic scans -> positive-tiling training -> tiled evaluation -> demo/report.html."""
    from rarespot.detect.demo import run_demo

    result = run_demo(out, quick=quick, n_scans=scans, epochs=epochs, device=device, seed=seed)
    typer.echo(
        f"test F1 {result.f1:.3f} (precision {result.precision:.3f}, recall {result.recall:.3f}, "
        f"mAP50 {result.map50:.3f}) on {result.test_images} held-out scans; {result.seconds:.0f} s\n"
        f"report: {result.report}"
    )


@app.command("batch")
def batch(
    source: Path = typer.Argument(..., help="Folder of scans (searched recursively) or a text file listing scans."),
    model: Path = typer.Option(..., "--model", "-m", help="Trained model file (.pt or exported .onnx)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default ./screen_SOURCENAME)."),
    conf: float = typer.Option(0.25, help="Drop boxes below this confidence."),
    flag_conf: float = typer.Option(0.5, help="Flag a scan when its most confident box reaches this."),
    flag_class_conf: str = typer.Option(
        None, "--flag-class-conf",
        help="Flag a scan when a box of a named class reaches that class's own confidence (other classes: --flag-conf): "
             "NAME=CONF,... or the metrics.json of `detect evaluate --calibrate-on val --per-class-conf`. Each must be "
             "at least --conf.",
    ),
    tile: int = typer.Option(512, help="Tile size for tiled inference."),
    overlap: float = typer.Option(0.2, help="Tile overlap fraction."),
    device: str = typer.Option("cpu", help="Inference device, e.g. cpu or 0."),
    backend: str = typer.Option(
        "auto", "--backend",
        help="auto: a .pt is exported to ONNX once (cached) and run on the faster of OpenVINO and onnxruntime (timed once per "
             "model and machine; RARESPOT_RETIME_BACKEND=1 times again); or name one.",
    ),
    threads: int = _THREADS,
    skip: bool = _SKIP,
    tta: str = _TTA,
    restart: bool = typer.Option(False, "--restart", help="Start over instead of resuming an earlier run in --out."),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="On resume, screen again the files that could not be read (e.g. still being copied)."
    ),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP),
    workers: int = typer.Option(None, "--workers", help=WORKERS_HELP),
    shared_disk: bool = typer.Option(
        False, "--shared-disk",
        help="With --ray: the workers read the scans at these paths (a disk every node mounts at the same place) "
             "instead of this process sending them.",
    ),
) -> None:
    """Screen a folder of scans: CSV of detections per scan + HTML contact sheet of the flagged ones. Resumable."""
    import shlex
    import sys

    from rarespot.detect.screen_batch import FlagRule, ScreenInterrupted, screen_folder
    from rarespot.detect.settings import InferenceSettings, class_conf_from
    from rarespot.ray_backend import settings_from_cli

    per_class_flag = class_conf_from(flag_class_conf) if flag_class_conf is not None else None
    try:  # before any scan is read
        FlagRule.of(flag_conf, per_class_flag, conf)
    except ValueError as exc:
        hint = "--flag-conf" if per_class_flag is None or flag_conf < conf else "--flag-class-conf"
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    out = out or Path(f"screen_{source.resolve().name or 'scans'}")
    on_ray = settings_from_cli(ray, workers, shared_disk=shared_disk)
    settings = InferenceSettings.from_options(
        conf=conf, tile=tile, overlap=overlap, device=device, backend=backend, threads=threads, skip_background=skip,
        tta=tta,
    )
    try:
        result = screen_folder(
            source, model, out, settings=settings, flag_conf=flag_conf, flag_class_conf=per_class_flag, restart=restart,
            retry_errors=retry_errors, ray=on_ray,
        )
    except ScreenInterrupted as stop:
        # The same command resumes (without --restart, which would throw the finished scans away).
        argv = [a for a in sys.argv[1:] if a != "--restart"]
        ran_from_shell = argv[:2] in (["detect", "batch"], ["detect", "screen"])
        command = "rarespot " + " ".join(shlex.quote(a) for a in argv) if ran_from_shell else None
        typer.echo(f"\n{stop.message(command)}\npartial contact sheet: {out / 'contact_sheet.html'}", err=True)
        raise typer.Exit(130) from None
    typer.echo(
        f"{result.n_scans} scans ({result.n_skipped} from an earlier run), {result.n_flagged} flagged, "
        f"{result.n_errors} unreadable in {result.seconds:.1f} s"
        + (f" ({result.scans_per_second:.2f} scans/s)" if result.n_screened else "") + "\n"
        f"CSV: {result.csv_path}\ncontact sheet: {result.sheet_path}"
    )


@app.command("screen", hidden=True)
@functools.wraps(batch)
def screen(**options) -> None:
    # The old name (till issue #19): it clashed with the `rarespot screen` pipeline. Kept working, with a notice.
    typer.echo("`detect screen` is now `detect batch`; the old name keeps working", err=True)
    batch(**options)
