"""The final comparison: rarespot's recipe for small X-ray datasets vs plain Ultralytics on OPIXray.

One command, both arms, several seeds, the same data, the same wall-clock budget, one evaluator:

- Data: ../shared/data/opixray (2,400 images). A fixed 20% holdout (480 images,
  ``rarespot.io.split.carve_holdout`` share 0.2 seed 0, the same one the `opixray` study plan
  never scores) is the test set; nobody tunes on it. The other 1,920 are split 90/10 into
  training (1,728) and validation (192) images; both arms train on the same 1,728.
- Peer: ``YOLO("yolo11n.yaml").train(data, imgsz=416, batch=16, workers=2, val=False, ...)``,
  Ultralytics' defaults otherwise (``rarespot.detect.peer``), with Ultralytics' own
  ``time=`` budget (epochs re-estimated to fill it).
- Recipe: ``rarespot detect train --config RECIPE`` (default: the packaged ``xray-small``),
  with the same ``time=`` budget; the checkpoint its config names (``model_checkpoint``: ``best.pt``,
  the lowest validation loss, seed 3.3, or ``last.pt``) is scored.
- Evaluation, the same for both (``rarespot.detect.evaluate``): the peer on whole images at its
  input size, the recipe on its own tile size with 20% overlap (a full-image recipe on whole
  images), the operating confidence that maximises F1 on the 192 validation images,
  P/R/F1 pooled over objects and averaged over classes, mAP50, and recall per class, on the
  480 holdout images. Beside it, a second operating point: one confidence per class, each
  chosen on the validation images from that class's own curve (``operating_conf(per_class=True)``;
  added after the first seeds, see docs/study.md), and a third, the screening point: one confidence, the best
  pooled F1 among those at which every class keeps recall 0.5 on the validation images
  (``operating_conf(class_recall_floor=0.5)``; pre-registered for recipe v3 and withdrawn on validation-side
  evidence before any run, see docs/study.md; kept as a reading), and a fourth, per-class screening: one
  confidence per class, each the best F1 among that class's confidences keeping its recall at 0.3 on the
  validation images (``operating_conf(per_class=True, class_recall_floor=0.3)``; recipe v3b, pre-registered in
  session 10 after it passed its validation-side rule, see docs/study.md);
  same models, same predictions.

Before each training run the machine's speed is probed (yolo11n forward + backward at 416 px on one thread,
``bench_train_threads.py``) and recorded; below ``--min-speed`` (default 0.5) of the machine the budget was set
on, the run is refused: a wall-clock budget on a machine 3x slower is a third of the budget.

Each (arm, seed) lands in ``OUT/results.json`` as it finishes; re-running skips finished runs
and restarts an interrupted one from nothing. ``OUT/results.md`` (tables) and ``OUT/recall_per_class.png``
are rewritten at the end; ``--report-only`` rewrites them from ``OUT/results.json`` alone, and
``--rescore`` scores the finished runs' checkpoints again (both operating points) without training
(``--checkpoint last`` scores the recipe's other checkpoint instead), and ``--checkpoints-on-val`` compares
each recipe run's best.pt and last.pt on the validation images only (``OUT/checkpoints_val.md``).
``--val-only`` is for choosing a change at the final budget: the recipe arm trains as usual (``--set KEY=VALUE``
changes its config) and is scored on the validation images alone (``OUT/results_val.json``, ``.md``); the holdout
is dropped before anything is scored. ``opixray_val_decision.py`` applies a written rule to two such folders.
``--tta`` scores the recipe's models with test-time views; ``--val-only --rescore --runs-from FOLDER`` scores the runs
of earlier ``--val-only`` folders again on the validation images (a change of prediction, not of training).
``--infer-tile PX`` cuts the recipe's evaluation tiles at PX instead of the model's training tile, so that a change of
training tile is scored by the same evaluator as the runs it is compared with.

    python bench/bench_opixray_recipe.py --minutes 45 --seeds 0,1,2 --out bench/out/opixray_recipe
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from rarespot.config import parse_set_options
from rarespot.detect.settings import TTA_VIEWS
from rarespot.io.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "opixray"
# The machine the 45-minute budget was set on: yolo11n forward + backward, batch 8 at 416 px, one thread,
# `bench/bench_train_threads.py` on the idle 2-core VM of 2026-12-01 (docs/benchmarks/detect_training.md).
REFERENCE_PROBE_IMG_S = 11.8


def probe_speed() -> float:
    """This machine's training speed now, on the reference probe (images per second), measured in a fresh
    interpreter so that its thread setting cannot leak into the run that follows."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "bench" / "bench_train_threads.py"), "--one", "416,1", "--steps", "4"],
                         capture_output=True, text=True, check=True, env={**os.environ, "YOLO_OFFLINE": "1"}).stdout
    return float(json.loads(out.strip().splitlines()[-1])["img_per_s"])


def make_splits(data: Path):
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import carve_holdout, split_dataset

    development, holdout = carve_holdout(load_dataset(data, fmt="yolo"), 0.2, 0)
    parts = split_dataset(development, (0.9, 0.1, 0.0), seed=0)
    return {"train": parts["train"], "val": parts["val"], "test": holdout}


def train_peer(splits, run_dir: Path, seed: int, hours: float, args):
    from rarespot.detect.peer import train_ultralytics_defaults

    peer = train_ultralytics_defaults(
        {"train": splits["train"], "val": splits["val"]}, run_dir, model="yolo11n", epochs=args.max_epochs,
        imgsz=args.peer_imgsz, batch=16, seed=seed, device=args.device, time_hours=hours,
    )
    return peer.weights, args.peer_imgsz


def train_recipe(splits, run_dir: Path, seed: int, hours: float, args):
    from rarespot.detect.config import load_config
    from rarespot.detect.remap import remap_splits
    from rarespot.detect.train import train_on_splits

    config = load_config(args.recipe, **{**args.overrides, "out": run_dir / "train", "seed": seed, "device": args.device,
                                         "time_hours": hours, "epochs": args.max_epochs, "exist_ok": True})
    if config.remap is not None:
        raise SystemExit(f"{args.recipe}: the comparison needs the original 5 classes (the recipe remaps to {config.remap})")
    run = train_on_splits(config, remap_splits({"train": splits["train"], "val": splits["val"]}, None), quiet=False)
    return run, config


def score(model: Path, run_dir: Path, splits, imgsz: int, full_image: bool, tile: int, args, tta: str = "none") -> dict:
    """The holdout metrics at the confidence chosen on validation (the pre-registered operating point),
    under ``per_class_conf`` the same at one confidence per class, and under ``recall_floor`` at the
    screening point (one confidence, best pooled F1 among those keeping every class's validation recall
    at ``args.class_recall_floor``), and under ``per_class_floor`` at one confidence per class, each keeping
    that class's validation recall at ``args.per_class_recall_floor``; all chosen on validation, all on the
    same holdout boxes."""
    from rarespot.detect.evaluate import evaluate, operating_conf, write_evaluation_report

    predictor = make_predictor(model, splits, imgsz, full_image, tile, args, tta)
    val = evaluate(predictor, splits["val"], progress=False, keep_predictions=False)
    pooled_conf, class_conf = operating_conf(val), operating_conf(val, per_class=True)
    floor_conf = operating_conf(val, class_recall_floor=args.class_recall_floor)
    class_floor_conf = operating_conf(val, per_class=True, class_recall_floor=args.per_class_recall_floor)
    test = evaluate(predictor, splits["test"], conf_for_prf=pooled_conf, progress=True)
    # The same boxes again, at the other operating points (no second inference).
    per_class = evaluate(predictor, splits["test"], conf_for_prf=class_conf, progress=False, predictions=test.predictions)
    floored = evaluate(predictor, splits["test"], conf_for_prf=floor_conf, progress=False, predictions=test.predictions)
    class_floored = evaluate(predictor, splits["test"], conf_for_prf=class_floor_conf, progress=False,
                             predictions=test.predictions)
    write_evaluation_report(test, run_dir / "test_eval")
    write_evaluation_report(per_class, run_dir / "test_eval_per_class_conf")
    write_evaluation_report(floored, run_dir / "test_eval_recall_floor")
    write_evaluation_report(class_floored, run_dir / "test_eval_per_class_floor")
    return {**summary(test, pooled_conf), "per_class_conf": summary(per_class, class_conf),
            "recall_floor": {**summary(floored, floor_conf), "floor": args.class_recall_floor},
            "per_class_floor": {**summary(class_floored, class_floor_conf), "floor": args.per_class_recall_floor}}


def recipe_predictor(model: Path, config, splits, args):
    """The evaluator's predictor for a recipe checkpoint trained with ``config``, with ``--tta``'s views."""
    return make_predictor(model, splits, config.input_size, config.full_image, recipe_tile(config, args), args, args.tta)


def recipe_tile(config, args) -> int:
    """The tile the evaluator cuts for a recipe model: ``--infer-tile`` if given (so a change of training tile can be
    scored with the same evaluator as the runs it is compared with), else the tile the model was trained on."""
    return args.infer_tile or config.tile_size


def make_predictor(model: Path, splits, imgsz: int, full_image: bool, tile: int, args, tta: str = "none"):
    """The evaluator's predictor: whole images for a full-image model, else its tile size with 20% overlap;
    ``tta``: test-time views (the recipe's ``--tta``; the peer keeps Ultralytics' default, none)."""
    from rarespot.detect.predict import TiledPredictor

    side = max(max(r.width, r.height) for s in ("val", "test") if s in splits for r in splits[s].records)
    tile, overlap = (side, 0.0) if full_image else (tile, 0.2)
    return TiledPredictor(model, tile=tile, overlap=overlap, conf=0.001, imgsz=imgsz, device=args.device, tta=tta)


def summary(test, conf) -> dict:
    """One operating point's numbers for results.json: pooled and class-mean P/R/F1, mAP, recall per class."""
    present = [c for c in test.per_class if c.support > 0]
    return {
        "precision": test.precision, "recall": test.recall, "f1": test.f1,
        "precision_mean_class": float(np.mean([c.precision for c in present])),
        "recall_mean_class": float(np.mean([c.recall for c in present])),
        "f1_mean_class": float(np.mean([c.f1 for c in present])),
        "map50": test.map50, "map50_95": test.map50_95, "conf": conf,
        "recall_per_class": {c.name: c.recall for c in test.per_class},
        "support_per_class": {c.name: c.support for c in test.per_class},
    }


def recipe_checkpoint(run_dir: Path, splits, which: str | None = None):
    """(checkpoint path, the run's config, its RunResult) of a finished recipe run: the run's model (the
    checkpoint its config names), or ``which`` ("best" = lowest validation loss, "last")."""
    from rarespot.detect.config import load_config
    from rarespot.detect.train import collect_result

    config = load_config(run_dir / "train" / "config.yaml")  # the run's own settings
    run = collect_result(run_dir / "train", config, splits, 0.0)  # its metrics.csv: which epoch is which
    model = {None: run.model, "best": run.best, "last": run.last}[which]
    return model, config, run


def score_drift(before: dict, after: dict) -> dict:
    """{metric: (before, after)} for the pooled F1 and mAP50 that a deterministic rescoring did not give back."""
    return {k: (before[k], after[k]) for k in ("f1", "map50") if abs(before[k] - after[k]) > 1e-9}


def rescore(results: dict, splits, args) -> None:
    """Score finished runs' checkpoints again, in place, at both operating points. By default each run's
    checkpoint scored before, whose pre-registered numbers must come back unchanged (the evaluation is
    deterministic; a change is printed); ``--checkpoint`` scores the recipe's other one instead, and the row
    records which."""
    arms = {a.strip() for a in args.arms.split(",") if a.strip()}
    for key in sorted(results):
        arm, seed = key.split("/")
        if arm not in arms:
            continue
        run_dir = args.out / arm / seed
        if arm == "peer":
            model, imgsz, full_image, tile = run_dir / "train" / "weights" / "last.pt", args.peer_imgsz, True, 0
        else:
            scored = results[key].get("checkpoint", "").removesuffix(".pt") or None  # by default, the one scored before
            model, config, _ = recipe_checkpoint(run_dir, splits, args.checkpoint or scored)
            imgsz, full_image, tile = config.input_size, config.full_image, recipe_tile(config, args)
        if not model.is_file():
            raise SystemExit(f"{model}: the checkpoint of {key} is gone; cannot rescore it")
        if arm == "recipe" and results[key].get("tta", "none") != args.tta:
            raise SystemExit(f"{key} was scored with --tta {results[key].get('tta', 'none')}; rescoring it in place with "
                             f"--tta {args.tta} would overwrite those numbers (copy {args.out} and rescore the copy)")
        if arm == "recipe" and results[key].get("infer_tile") != args.infer_tile:
            raise SystemExit(f"{key} was scored with --infer-tile {results[key].get('infer_tile') or '(its own)'}; rescoring "
                             f"it in place with another tile would overwrite those numbers (copy {args.out} and rescore the copy)")
        before = results[key].get("checkpoint", "last.pt" if arm == "peer" else "best.pt")
        fresh = score(model, run_dir, splits, imgsz, full_image, tile, args, "none" if arm == "peer" else args.tta)
        if model.name == before:
            drift = score_drift(results[key], fresh)
            told = "; CHANGED " + str(drift) if drift else ", pre-registered metrics unchanged"
        else:
            told = (f" with {model.name} (was {before}: F1 {results[key]['f1']:.3f} -> {fresh['f1']:.3f}, lowest class "
                    f"recall {min(results[key]['recall_per_class'].values()):.3f} -> {min(fresh['recall_per_class'].values()):.3f})")
        print(f"{key}: rescored{told}; per-class confs F1 {fresh['per_class_conf']['f1']:.3f}, lowest class recall "
              f"{min(fresh['per_class_conf']['recall_per_class'].values()):.3f}; recall floor F1 "
              f"{fresh['recall_floor']['f1']:.3f}, lowest class recall {min(fresh['recall_floor']['recall_per_class'].values()):.3f}; "
              f"per-class floor F1 {fresh['per_class_floor']['f1']:.3f}, lowest class recall "
              f"{min(fresh['per_class_floor']['recall_per_class'].values()):.3f}", flush=True)
        results[key].update(fresh, checkpoint=model.name)
        atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))


def score_on_val(predictor, val_data) -> dict:
    """A model (its predictor) on the validation images only: pooled F1 at the confidence best on those same
    images (optimistic, the same for every model compared), mAP50, and each class's AP50 and recall there."""
    from rarespot.detect.evaluate import evaluate, operating_conf

    first = evaluate(predictor, val_data, progress=False)
    val = evaluate(predictor, val_data, conf_for_prf=operating_conf(first), progress=False, predictions=first.predictions)
    return {"f1": val.f1, "map50": val.map50, "ap50": {c.name: c.ap50 for c in val.per_class},
            "recall": {c.name: c.recall for c in val.per_class}}


def checkpoints_on_val(results: dict, splits, args) -> None:
    """Each finished recipe run's best.pt (lowest validation loss) and last.pt, scored on the validation
    images only (the holdout is not touched): pooled F1 at the confidence best on those same images, mAP50,
    and each class's AP50 and recall. Written to ``OUT/checkpoints_val.md`` (and ``.json``)."""
    rows = {}
    for key in sorted(k for k in results if k.startswith("recipe/")):
        run_dir = args.out / key
        for which in ("best", "last"):
            model, config, run = recipe_checkpoint(run_dir, splits, which)
            epoch = run.best_epoch if which == "best" else run.epochs_run
            rows[f"{key} {which}.pt"] = row = {"epoch": epoch, "checkpoint": f"{which}.pt", **score_on_val(recipe_predictor(model, config, splits, args), splits["val"])}
            print(f"{key} {which}.pt (epoch {epoch}): validation F1 {row['f1']:.3f} mAP50 {row['map50']:.3f}", flush=True)
    text = val_table(rows, list(splits["val"].class_names),
                     f"Recipe checkpoints on the {len(splits['val'])} validation images (the holdout untouched)")
    print("\n" + text)
    atomic_write_text(args.out / "checkpoints_val.md", text)
    atomic_write_text(args.out / "checkpoints_val.json", json.dumps(rows, indent=2))


def rescore_on_val(splits, args) -> dict:
    """The recipe runs of earlier ``--val-only`` folders (``--runs-from``), their checkpoints scored again on the
    validation images with this command's predictor (``--tta``; the seconds an image it took, loading and scoring
    included, beside them): no training, the holdout not loaded. Keys are
    ``recipe/seedN@FOLDER`` (FOLDER: the last two parts of its path), so runs of one seed from several studies
    stay apart; each row keeps its run's epochs and says where it came from. A row scored as before must give the
    same numbers (the evaluation is deterministic): a change is printed."""
    results = {}
    for folder in args.runs_from:
        path = folder / "results_val.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no validation results to rescore (a --val-only run writes them)")
        label = f"{folder.parent.name}-{folder.name}"
        for key, before in sorted(json.loads(path.read_text()).items()):
            arm, seed = key.split("/")
            model, config, _ = recipe_checkpoint(folder / arm / seed, splits, before["checkpoint"].removesuffix(".pt"))
            if not model.is_file():
                raise SystemExit(f"{model}: the checkpoint of {folder}/{key} is gone; cannot rescore it")
            predictor, t0 = recipe_predictor(model, config, splits, args), time.perf_counter()
            row = {**score_on_val(predictor, splits["val"]), "epoch": before["epoch"], "checkpoint": model.name,
                   "tta": args.tta, **({"infer_tile": args.infer_tile} if args.infer_tile else {}),
                   "s_per_image": round((time.perf_counter() - t0) / len(splits["val"]), 4),
                   "rescored_from": str(folder), "commit": _commit()}
            told = ""
            if (before.get("tta", "none"), before.get("infer_tile")) == (args.tta, args.infer_tile):  # scored as the run was
                drift = score_drift(before, row)
                told = f"; CHANGED from the run's own scores ({', '.join(drift)})" if drift else ", the run's own scores unchanged"
            print(f"{folder}/{key} with --tta {args.tta}: validation F1 {row['f1']:.3f} mAP50 {row['map50']:.3f}{told}", flush=True)
            results[f"{arm}/{seed}@{label}"] = row
    return results


def val_table(rows: dict, classes: list[str], title: str) -> str:
    """Markdown table of validation-only scores (``score_on_val`` rows keyed "run checkpoint", with "epoch" and
    "checkpoint"): one line a row, then the mean of each checkpoint kind."""
    lines = [f"{title}: pooled F1 at the confidence best on these images, mAP50, AP50 and recall per class at that "
             "confidence.", "",
             "| run | checkpoint | epoch | F1 (pooled) | mAP50 | " + " | ".join(f"{c} AP50 / R" for c in classes) + " |",
             "|---|---|---|---|---|" + "---|" * len(classes)]
    for name, r in rows.items():
        lines.append(f"| {name.split()[0]} | {r['checkpoint']} | {r['epoch']} | {r['f1']:.3f} | {r['map50']:.3f} | "
                     + " | ".join(f"{r['ap50'][c]:.3f} / {r['recall'][c]:.2f}" for c in classes) + " |")
    for kind in dict.fromkeys(r["checkpoint"] for r in rows.values()):
        mine = [r for r in rows.values() if r["checkpoint"] == kind]
        lines.append(f"| mean | {kind} | | {np.mean([r['f1'] for r in mine]):.3f} | {np.mean([r['map50'] for r in mine]):.3f} | "
                     + " | ".join(f"{np.mean([r['ap50'][c] for r in mine]):.3f} / {np.mean([r['recall'][c] for r in mine]):.2f}"
                                  for c in classes) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "opixray_recipe")
    parser.add_argument("--recipe", default="xray-small", help="packaged config name or YAML path")
    parser.add_argument("--minutes", type=float, default=45.0, help="training wall-clock budget per run")
    parser.add_argument("--max-epochs", type=int, default=300, help="upper bound; the time budget decides")
    parser.add_argument("--peer-imgsz", type=int, default=416)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default="peer,recipe")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="smoke test: this many images per split")
    parser.add_argument("--report-only", action="store_true", help="only write the tables and plot of OUT/results.json")
    parser.add_argument("--rescore", action="store_true", help="score the finished runs' checkpoints again, no training")
    parser.add_argument("--checkpoint", choices=["best", "last"], default=None,
                        help="with --rescore: score this recipe checkpoint (default: the one scored before, else the one "
                             "the run's config names)")
    parser.add_argument("--min-speed", type=float, default=0.5,
                        help="refuse to train when the machine's probe speed is below this share of the reference "
                             f"({REFERENCE_PROBE_IMG_S} img/s; 0: never refuse)")
    parser.add_argument("--class-recall-floor", type=float, default=0.5,
                        help="the screening operating point's floor: every class's recall on the validation images")
    parser.add_argument("--per-class-recall-floor", type=float, default=0.3,
                        help="the per-class screening point's floor (recipe v3b): each class's recall on the validation images")
    parser.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the recipe's config (repeatable), e.g. --set backbone=yolo")
    parser.add_argument("--val-only", action="store_true",
                        help="recipe arm only: train, then score on the validation images alone (OUT/results_val.json, "
                             "OUT/results_val.md); the holdout is not loaded. For choosing a change at the final budget.")
    parser.add_argument("--checkpoints-on-val", action="store_true",
                        help="compare each recipe run's best.pt and last.pt on the validation images only")
    parser.add_argument("--tta", default="none", choices=list(TTA_VIEWS),
                        help="test-time views for the recipe's models (rarespot.detect.settings.TTA_VIEWS); the peer keeps "
                             "Ultralytics' default (none), what its users get")
    parser.add_argument("--infer-tile", type=int, default=None, metavar="PX",
                        help="the evaluator's tile for the recipe's models (default: the tile each was trained on), e.g. to "
                             "score a model trained on smaller tiles as the runs it is compared with were scored")
    parser.add_argument("--runs-from", type=Path, action="append", default=[], metavar="FOLDER",
                        help="with --val-only --rescore: score the recipe runs of this earlier --val-only folder "
                             "(repeatable) on the validation images, no training; written to OUT/results_val.json")
    args = parser.parse_args()
    args.overrides = parse_set_options(args.set_)
    if args.report_only:
        results_path = args.out / "results.json"
        if not results_path.is_file():
            raise SystemExit(f"{results_path}: no results yet (run without --report-only first)")
        print_table(json.loads(results_path.read_text()), args.out)
        return
    if not args.data.exists():
        raise SystemExit(f"{args.data}: OPIXray not found (see ../shared/data/README.md)")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    splits = make_splits(args.data)
    if bool(args.runs_from) != (args.val_only and args.rescore):
        raise SystemExit("--runs-from and --val-only --rescore go together: they score earlier --val-only runs on the "
                         "validation images again")
    if args.val_only:
        if args.arms.strip() != "recipe" or (args.rescore and not args.runs_from) or args.checkpoints_on_val:
            raise SystemExit("--val-only trains and scores the recipe arm only: give --arms recipe, without "
                             "--checkpoints-on-val (and --rescore only with --runs-from)")
        splits.pop("test")  # choosing on validation: the holdout must not be scored, so it is not even kept
    if args.limit:
        splits = {k: v.subset(range(min(args.limit, len(v)))) for k, v in splits.items()}
    print(f"OPIXray: train {len(splits['train'])}, val {len(splits['val'])}, holdout test "
          f"{len(splits['test']) if 'test' in splits else 'not loaded (--val-only)'}; "
          f"classes {splits['train'].class_names}", flush=True)
    hours = args.minutes / 60.0
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / ("results_val.json" if args.val_only else "results.json")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.runs_from:
        results = rescore_on_val(splits, args)
        atomic_write_text(results_path, json.dumps(results, indent=2))
        text = val_table(results, list(splits["val"].class_names),
                         f"Earlier runs rescored with --tta {args.tta}, on the {len(splits['val'])} validation images "
                         "(the holdout not loaded)")
        print("\n" + text)
        atomic_write_text(args.out / "results_val.md", text)
        return
    if args.rescore:
        rescore(results, splits, args)
        print_table(results, args.out)
        return
    if args.checkpoints_on_val:
        checkpoints_on_val(results, splits, args)
        return
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
            key = f"{arm}/seed{seed}"
            if key in results:
                print(f"{key}: done earlier, kept", flush=True)
                continue
            run_dir = args.out / arm / f"seed{seed}"
            speed = probe_speed()
            if speed < args.min_speed * REFERENCE_PROBE_IMG_S:
                # A wall-clock budget on a slower machine is a smaller budget: such a run would not compare.
                raise SystemExit(
                    f"{key}: not run. This machine trains at {speed:.1f} img/s on the probe, {speed / REFERENCE_PROBE_IMG_S:.0%} "
                    f"of the {REFERENCE_PROBE_IMG_S} img/s the {args.minutes:g}-minute budget was set at (--min-speed "
                    f"{args.min_speed:g}); wait for a quieter or faster machine, or pass --min-speed 0 to run anyway")
            if run_dir.exists():  # interrupted earlier: start again from nothing
                shutil.rmtree(run_dir)
            t0, load = time.perf_counter(), os.getloadavg()[0]
            if arm == "peer":
                model, imgsz = train_peer(splits, run_dir, seed, hours, args)
                metrics = score(model, run_dir, splits, imgsz, True, 0, args)
            elif arm == "recipe":
                run, config = train_recipe(splits, run_dir, seed, hours, args)
                model = run.model
                if args.val_only:  # the holdout is not loaded in this mode (see above)
                    metrics = {**score_on_val(recipe_predictor(model, config, splits, args), splits["val"]), "epoch": run.epochs_run,
                               "overrides": {k: str(v) for k, v in args.overrides.items()}}
                else:
                    metrics = score(model, run_dir, splits, config.input_size, config.full_image, recipe_tile(config, args), args,
                                    args.tta)
            else:
                raise SystemExit(f"unknown arm {arm}")
            if arm == "recipe" and args.infer_tile:
                metrics["infer_tile"] = args.infer_tile
            metrics.update(checkpoint=model.name, tta=args.tta if arm == "recipe" else "none", train_and_eval_s=round(time.perf_counter() - t0, 1), probe_img_s=round(speed, 2),
                           load_before=round(load, 2),
                           load_after=round(os.getloadavg()[0], 2), commit=_commit(),
                           machine=f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}")
            results[key] = metrics
            atomic_write_text(results_path, json.dumps(results, indent=2))
            if args.val_only:
                print(f"{key}: validation F1 {metrics['f1']:.3f} mAP50 {metrics['map50']:.3f} AP50/class "
                      f"{json.dumps({k: round(v, 3) for k, v in metrics['ap50'].items()})}", flush=True)
            else:
                print(f"{key}: F1 {metrics['f1']:.3f} (mean-class {metrics['f1_mean_class']:.3f}) mAP50 {metrics['map50']:.3f} "
                      f"recall/class {json.dumps({k: round(v, 2) for k, v in metrics['recall_per_class'].items()})}", flush=True)
    if args.val_only:
        overrides = " ".join(f"--set {k}={v}" for k, v in args.overrides.items()) or "(no --set)"
        text = val_table(results, list(splits["val"].class_names),
                         f"{args.recipe} {overrides}, {args.minutes:g}-minute runs, on the {len(splits['val'])} validation images "
                         "(the holdout not loaded)")
        print("\n" + text)
        atomic_write_text(args.out / "results_val.md", text)
    else:
        print_table(results, args.out)


def _commit() -> str:
    """The code that ran (arms may run in different sessions), with a mark when it had local edits."""
    import subprocess

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+edits" if git("status", "--porcelain", "--untracked-files=no") else "")


def runs_of(results: dict, arm: str) -> list[dict]:
    """One arm's runs, in seed order."""
    return [results[k] for k in sorted(results) if k.startswith(arm + "/")]


def print_table(results: dict, out: Path | None = None) -> None:
    """Mean ± std over seeds of each arm (pooled and mean-class P/R/F1, mAP50), recall per class (mean and
    the lowest seed), and each run's line; then the same at the other operating points (per-class confidences,
    the screening recall floor) for the runs scored at them.
    Printed, and written to ``out/results.md`` (and ``out/recall_per_class.png``) when given."""
    arms = sorted({k.split("/")[0] for k in results})
    classes = list(next(iter(results.values()))["recall_per_class"]) if results else []
    lines = ["Operating point: one confidence, the one maximising pooled F1 on the validation images (pre-registered).", ""]
    lines += _tables(results, arms, classes)
    lines += ["", "| run | checkpoint | F1 (pooled) | F1 (class mean) | mAP50 | lowest class recall | train + eval s | probe img/s "
                  f"(reference {REFERENCE_PROBE_IMG_S}) | load before/after | commit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(results):
        r = results[key]
        checkpoint = r.get("checkpoint", "last.pt" if key.startswith("peer/") else "best.pt")  # rows before the field: these
        lines.append(f"| {key} | {checkpoint} | {r['f1']:.3f} | {r['f1_mean_class']:.3f} | {r['map50']:.3f} | "
                     f"{min(r['recall_per_class'].values()):.3f} | {r['train_and_eval_s']:.0f} | {r.get('probe_img_s', 'not probed')} | "
                     f"{r['load_before']} / {r['load_after']} | {r['commit']} |")
    points = {"one confidence (pre-registered)": results}
    for field, title in (("per_class_conf", "one confidence per class, each maximising that class's F1 on the validation images"),
                         ("recall_floor", "screening: one confidence, the best pooled F1 among those keeping every class's "
                                          "recall on the validation images at {floor}"),
                         ("per_class_floor", "per-class screening: one confidence per class, each the best F1 among "
                                             "those keeping that class's recall on the validation images at {floor}")):
        scored = {k: r[field] for k, r in results.items() if field in r}
        if scored:
            title = title.format(floor=next(iter(scored.values())).get("floor"))
            lines += ["", f"Operating point: {title} ({len(scored)} of {len(results)} runs scored so):", ""]
            lines += _tables(scored, arms, classes)
            points[title.split(",")[0].split(":")[0]] = scored
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if out is not None:
        atomic_write_text(out / "results.md", text)
        plot_recall_per_class(points, arms, classes, out / "recall_per_class.png")


def _tables(results: dict, arms: list[str], classes: list[str]) -> list[str]:
    """The summary table, recall per class and the recipe-peer difference of one operating point."""
    keys = ["precision", "recall", "f1", "precision_mean_class", "recall_mean_class", "f1_mean_class", "map50", "map50_95"]
    lines = ["| arm | seeds | P | R | F1 (pooled) | P (class mean) | R (class mean) | F1 (class mean) | mAP50 | mAP50-95 |",
             "|---|---|" + "---|" * len(keys)]
    means = {}

    def cell(vals):
        vals = np.asarray(vals, dtype=float)
        return f"{vals.mean():.3f} ± {vals.std(ddof=1) if len(vals) > 1 else 0:.3f}"

    for arm in arms:
        runs = runs_of(results, arm)
        if not runs:
            continue
        for key in keys:
            means[(arm, key)] = float(np.mean([r[key] for r in runs]))
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cell([r[k] for r in runs]) for k in keys) + " |")
    lines += ["", "Recall per class, mean ± std over seeds (lowest seed):", "",
              "| arm | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for arm in arms:
        runs = runs_of(results, arm)
        if runs:
            per = [[r["recall_per_class"][c] for r in runs] for c in classes]
            lines.append(f"| {arm} | " + " | ".join(f"{cell(v)} ({min(v):.2f})" for v in per) + " |")
    if ("recipe", "f1") in means and ("peer", "f1") in means:
        lines += ["", f"recipe - peer: F1 pooled {means[('recipe', 'f1')] - means[('peer', 'f1')]:+.3f}, "
                      f"F1 mean over classes {means[('recipe', 'f1_mean_class')] - means[('peer', 'f1_mean_class')]:+.3f}, "
                      f"mAP50 {means[('recipe', 'map50')] - means[('peer', 'map50')]:+.3f}"]
    return lines


def plot_recall_per_class(points: dict[str, dict], arms: list[str], classes: list[str], path: Path) -> None:
    """Bars: each arm's recall per class (mean over seeds), a dot per seed, the target line at 0.30;
    one panel per operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    fig, axes = plt.subplots(len(points), 1, figsize=(9.5, 3.4 * len(points)), squeeze=False)
    width = 0.8 / max(len(arms), 1)
    x = np.arange(len(classes))
    for ax, (title, results) in zip(axes[:, 0], points.items()):
        for i, arm in enumerate(arms):
            runs = runs_of(results, arm)
            if not runs:
                continue
            values = np.array([[r["recall_per_class"][c] for c in classes] for r in runs])
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, values.mean(axis=0), width, label=f"{arm} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
            for row in values:
                ax.plot(pos, row, "k.", markersize=4)
        ax.axhline(0.30, color="grey", linestyle="--", linewidth=1, label="target 0.30")
        ax.set_xticks(x, classes, rotation=15)
        ax.set_ylim(0, 1)
        ax.set_ylabel("recall on the holdout")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
