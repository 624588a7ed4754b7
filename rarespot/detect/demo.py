"""``rarespot demo``: the whole pipeline on synthetic scans, in minutes, on a laptop CPU.

1. generate synthetic 16-bit body scans with VOC boxes (``rarespot.synth``),
2. split them 60/20/20 (seeded),
3. train a nano YOLO with random positive tiling (class-agnostic, the seed's best remap),
4. pick the operating confidence that maximises F1 on the validation scans,
5. evaluate with tiled inference on the held-out test scans,
6. write ``report.html``: metrics overall and per class, the loss curve, the
   precision-recall curve, overlays (ground truth red, predictions green) and
   the exact settings.

Every number in the report is measured in this run; nothing is pre-computed.
Steps already done (data generated, training finished) are reused when the
demo is run again into the same folder.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rarespot.detect.config import DetectTrainConfig, load_config, packaged_config
from rarespot.io.atomic import atomic_write_text
from rarespot.errors import InputError


@dataclass
class DemoResult:
    report: Path
    run_dir: Path
    f1: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    conf: float
    test_images: int
    seconds: float
    cpu_seconds: float


def demo_config(
    out: Path, quick: bool, epochs: int | None, device: str | None, seed: int, overrides: dict | None = None
) -> DetectTrainConfig:
    """The packaged demo settings (``configs/demo.yaml`` or ``demo_quick.yaml``) for this run."""
    name = "demo_quick" if quick else "demo"
    settings = dict(overrides or {})
    settings.update(out=out / "run", epochs=epochs, device=device, seed=seed, exist_ok=True)
    return load_config(packaged_config(name), **settings)


def generate_data(folder: Path, n_scans: int, seed: int):
    """Synthetic scans in ``folder`` (reused when a previous demo made the same ones)."""
    from rarespot.io.annotations import load_dataset
    from rarespot.synth import generate

    marker = folder / "generated.json"
    wanted = {"n": n_scans, "seed": seed}
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == wanted:
                return load_dataset(folder)
        except (ValueError, InputError):
            pass  # stale or half-written: generate again
    dataset = generate(n_scans, folder, seed=seed)
    atomic_write_text(marker, json.dumps(wanted))
    return dataset


def run_demo(
    out: str | Path = "demo",
    quick: bool = False,
    n_scans: int | None = None,
    epochs: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    overrides: dict | None = None,
) -> DemoResult:
    """Run the main job into ``out``; ``overrides`` change any DetectTrainConfig key of the packaged demo config."""
    from rich.console import Console

    from rarespot.detect.remap import remap_splits
    from rarespot.detect.train import train_on_splits
    from rarespot.io.atomic import ensure_writable_dir
    from rarespot.io.split import split_dataset

    console = Console(quiet=not progress)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    out = Path(out)
    ensure_writable_dir(out)
    config = demo_config(out, quick, epochs, device, seed, overrides)
    n_scans = n_scans or (10 if quick else 90)
    if n_scans < 5:
        raise InputError(None, f"the demo needs at least 5 scans to split into train/val/test, got {n_scans}")

    console.rule("[bold]1/4 synthetic scans")
    t0 = time.perf_counter()
    data = generate_data(out / "data", n_scans, seed)
    original_splits = dict(split_dataset(data, tuple(config.split), seed))
    empty = [name for name in ("train", "val", "test") if len(original_splits.get(name, ())) == 0]
    if empty:  # the split keeps each subject on one side, so a handful of scans can leave a side empty
        raise InputError(out / "data", f"{len(data)} scans leave the {'/'.join(empty)} split empty; use more --scans")
    splits = remap_splits(original_splits, config.remap)
    console.print(
        f"{len(data)} scans, {int(data.class_counts().sum())} objects in {data.num_classes} classes "
        f"-> {config.remap or 'original'} classes {splits['train'].class_names}; "
        f"train/val/test {len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} ({time.perf_counter() - t0:.0f} s)"
    )

    console.rule("[bold]2/4 training (random positive tiling)")
    t0 = time.perf_counter()
    if _finished(config):
        console.print(f"reusing the finished run in {config.out}")
        from rarespot.detect.train import collect_result

        run = collect_result(Path(config.out).resolve(), config, splits, 0.0)
    else:
        run = train_on_splits(config, splits, quiet=not progress)
    train_seconds = time.perf_counter() - t0
    model = run.model

    console.rule("[bold]3/4 tiled evaluation on held-out scans")
    t0 = time.perf_counter()
    evaluation, conf = evaluate_run(model, config, splits, out / "evaluation", progress)
    eval_seconds = time.perf_counter() - t0
    console.print(
        f"test F1 {evaluation.f1:.3f}  precision {evaluation.precision:.3f}  recall {evaluation.recall:.3f}  "
        f"mAP50 {evaluation.map50:.3f} at confidence {conf:.3f} (best F1 on validation)"
    )

    console.rule("[bold]4/4 report")
    timings = {
        "training": train_seconds,
        "evaluation": eval_seconds,
        "total": time.perf_counter() - started,
        "cpu": _cpu_seconds() - cpu_started,
    }
    found = recall_by_original_class(evaluation, original_splits["test"], evaluation.conf)
    report = write_report(out, config, run, evaluation, splits, data, timings, quick, found)
    console.print(f"report: {report}")
    return DemoResult(
        report=report,
        run_dir=Path(config.out),
        f1=evaluation.f1,
        precision=evaluation.precision,
        recall=evaluation.recall,
        map50=evaluation.map50,
        map50_95=evaluation.map50_95,
        conf=conf,
        test_images=evaluation.num_images,
        seconds=time.perf_counter() - started,
        cpu_seconds=timings["cpu"],
    )


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): on a busy machine it says more than the wall clock."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _finished(config: DetectTrainConfig) -> bool:
    """A complete earlier run with the same settings (its last.pt is final: optimiser stripped)."""
    run = Path(config.out)
    last = run / "weights" / "last.pt"
    if not (last.exists() and (run / "config.yaml").exists()):
        return False
    from rarespot.detect.train import checkpoint_is_final

    try:
        return load_config(run / "config.yaml") == config and checkpoint_is_final(last)
    except Exception:  # unreadable or different: train again
        return False


def evaluate_run(best: Path, config: DetectTrainConfig, splits: dict, out_dir: Path, progress: bool = True):
    """Seed protocol: fixed-grid tiled inference at the training tile size; confidence chosen on validation."""
    from rarespot.detect.evaluate import calibrate_conf, evaluate, write_evaluation_report
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.settings import InferenceSettings
    from rarespot.device import default_device

    device = default_device(config.device or None)
    tile = config.tile_size if not config.full_image else max(max(r.width, r.height) for r in splits["test"].records)
    settings = InferenceSettings(tile=tile, overlap=0.2, conf=0.25, iou=0.5, imgsz=config.input_size, device=device)
    predictor = TiledPredictor(best, settings)
    conf = float(calibrate_conf(predictor, splits["val"], progress=progress))
    result = evaluate(predictor, splits["test"], iou=0.5, conf_for_prf=conf, progress=progress)
    write_evaluation_report(result, out_dir)
    return result, conf


# --- report.html -------------------------------------------------------------------------------
def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _jpeg_data_uri(rgb: np.ndarray, max_side: int = 900) -> str:
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def overlay_images(evaluation, test, conf: float, count: int = 4) -> list[tuple[str, np.ndarray]]:
    """A few test scans with ground truth (red) and predictions at the operating confidence (green)."""
    from rarespot.io.images import read_image
    from rarespot.viz import render_overlay

    out = []
    for det, rec in list(zip(evaluation.predictions, test.records))[:count]:
        keep = np.asarray(det.scores) >= conf
        image = read_image(test.image_path(rec))
        rgb = render_overlay(
            image, rec.boxes, np.asarray(det.boxes)[keep], rec.labels, np.asarray(det.labels)[keep],
            np.asarray(det.scores)[keep], test.class_names,
        )
        caption = f"{test.image_path(rec).name}: {len(rec.labels)} objects, {int(keep.sum())} detections"
        out.append((caption, rgb))
    return out


def recall_by_original_class(evaluation, original_test, conf: float) -> list[dict]:
    """After a remap, which kinds of object were found: recall per ORIGINAL class at the operating confidence.

    Any prediction may match any object here (one to one, IoU >= the evaluation's), so this reads
    "how many zippers were detected as something", the screening question.
    """
    from rarespot.metrics.detection import match_detections

    names = original_test.class_names
    objects = np.zeros(len(names), dtype=int)
    found = np.zeros(len(names), dtype=int)
    sides: list[list[float]] = [[] for _ in names]
    for det, rec in zip(evaluation.predictions, original_test.records):
        keep = np.asarray(det.scores) >= conf
        matched = match_detections(
            np.asarray(det.boxes)[keep], np.asarray(det.scores)[keep], np.asarray(det.labels)[keep],
            rec.boxes, rec.labels, iou=evaluation.iou, class_aware=False,
        )
        hit = np.zeros(len(rec.labels), dtype=bool)
        hit[matched[matched >= 0]] = True
        np.add.at(objects, rec.labels, 1)
        np.add.at(found, rec.labels[hit], 1)
        for box, label in zip(rec.boxes, rec.labels):
            sides[label].append(float(np.sqrt((box[2] - box[0]) * (box[3] - box[1]))))
    return [
        {"class": n, "objects": int(objects[i]), "found": int(found[i]),
         "recall": found[i] / objects[i] if objects[i] else float("nan"),
         "size": float(np.median(sides[i])) if sides[i] else float("nan")}
        for i, n in enumerate(names) if objects[i]
    ]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def write_report(
    out: Path, config: DetectTrainConfig, run, evaluation, splits: dict, data, timings: dict, quick: bool = False,
    found: list[dict] | None = None,
) -> Path:
    """A self-contained report.html (images embedded), written atomically."""
    import yaml

    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.support}</td><td>{c.tp}</td><td>{c.fp}</td><td>{c.fn}</td>"
        f"<td>{_fmt(c.precision)}</td><td>{_fmt(c.recall)}</td><td><b>{_fmt(c.f1)}</b></td>"
        f"<td>{_fmt(c.ap50)}</td><td>{_fmt(c.ap50_95)}</td></tr>"
        for c in evaluation.per_class
    )
    overall = (
        f"<tr class='all'><td>all</td><td>{evaluation.tp + evaluation.fn}</td><td>{evaluation.tp}</td>"
        f"<td>{evaluation.fp}</td><td>{evaluation.fn}</td><td>{_fmt(evaluation.precision)}</td>"
        f"<td>{_fmt(evaluation.recall)}</td><td><b>{_fmt(evaluation.f1)}</b></td><td>{_fmt(evaluation.map50)}</td>"
        f"<td>{_fmt(evaluation.map50_95)}</td></tr>"
    )
    found_rows = "".join(
        f"<tr><td>{html.escape(f['class'])}</td><td>{f['objects']}</td><td>{f['found']}</td>"
        f"<td><b>{_fmt(f['recall'])}</b></td><td>{f['size']:.0f}</td></tr>"
        for f in sorted(found or [], key=lambda f: -f["size"])
    )
    found_table = (
        "<h2>Which objects were found</h2><p class='note'>Recall per original class at the operating confidence "
        "(any detection may match any object), largest objects first; size = median sqrt(box area) in pixels.</p>"
        "<table><tr><th>original class</th><th>objects</th><th>found</th><th>recall</th><th>size px</th></tr>"
        f"{found_rows}</table>"
        if found_rows and config.remap else ""
    )
    figures = []
    loss_png = Path(run.run_dir) / "loss.png"
    if loss_png.exists():
        figures.append(("Training and validation loss (best.pt = lowest validation loss)", _png_data_uri(loss_png)))
    pr_png = out / "evaluation" / "pr_curve.png"
    if pr_png.exists():
        figures.append(("Precision-recall on the test scans", _png_data_uri(pr_png)))
    overlays = "".join(
        f"<figure><img src='{_jpeg_data_uri(rgb)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, rgb in overlay_images(evaluation, splits["test"], evaluation.conf)
    )
    figs = "".join(f"<figure><img src='{uri}'><figcaption>{html.escape(cap)}</figcaption></figure>" for cap, uri in figures)
    settings = html.escape(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    counts = ", ".join(f"{n}: {c}" for n, c in zip(data.class_names, data.class_counts()))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rarespot demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} tr.all {{ background: #eef; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.9em; color: #555; }} pre {{ background: #f6f6f6; padding: 1em; font-size: 0.85em; }}
.note {{ color: #555; font-size: 0.95em; }}
</style></head><body>
<h1>rarespot demo: synthetic body scans</h1>
<p class="note">Synthetic 16-bit scans ({len(data)} generated: {html.escape(counts)}), split
{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} (train/validation/test).
A {html.escape(config.model)} network was trained from scratch (no pretrained weights) for {run.epochs_run} epochs with
random positive tiling ({config.tiles} tiles of {config.tile_size} px per scan per epoch), classes remapped
"{html.escape(str(config.remap or 'original'))}". Test scans were never seen in training or model selection.
Evaluation follows seed 000: fixed-grid tiles of the whole test scans at the training tile size, no augmentation,
one-to-one matching at IoU &ge; {evaluation.iou}; the confidence {evaluation.conf:.3f} is the one that maximised F1
on the validation scans. All numbers below were measured in this run.</p>
<h2>Test metrics</h2>
<table><tr><th>class</th><th>objects</th><th>TP</th><th>FP</th><th>FN</th><th>precision</th><th>recall</th><th>F1</th><th>AP50</th><th>AP50-95</th></tr>
{overall}{rows}</table>
<p class="note">{evaluation.num_images} test scans, {_fmt(evaluation.fp_per_image)} false positives per scan.
Best epoch {run.best_epoch} (validation loss {_fmt(run.best_val_loss)}). Time: training {timings['training']:.0f} s,
evaluation {timings['evaluation']:.0f} s, total {timings['total']:.0f} s wall clock
({timings['cpu']:.0f} s of CPU time over all threads).</p>
{found_table}
<h2>Curves</h2>{figs}
<h2>Test scans: ground truth red, predictions green</h2>{overlays}
<h2>Exact settings</h2><pre>{settings}</pre>
<p class="note">Reproduce: <code>rarespot demo --out {html.escape(str(out))}{' --quick' if quick else ''}</code>; training run folder: <code>{html.escape(str(run.run_dir))}</code>.</p>
</body></html>
"""
    report = out / "report.html"
    atomic_write_text(report, page)
    return report
