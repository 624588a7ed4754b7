"""Each test-time view alone: a recipe run's model scored on OPIXray's validation images through one mirror at a time.

Why recipe v8 (test-time flips, docs/study.md) lost: every tile is mirrored, run, and its boxes mirrored back; here
each mirror is scored by itself (pooled F1 at the confidence best on these images, mAP50, AP50 per class), so a view
the model reads worse than the scan as it is shows as such. The holdout is not loaded.

    python bench/opixray_view_diagnostic.py /work/studies/opixray_v5_val/v2/recipe/seed9 --out studies/opixray_v8_val/views_v5_seed9.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

from rarespot.io.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_opixray_recipe", HERE / "bench_opixray_recipe.py")
recipe_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe_bench)

VIEWS = {"as is": (False, False), "left-right": (True, False), "up-down": (False, True), "both": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a recipe run folder (RUN/train/config.yaml, RUN/train/weights/)")
    parser.add_argument("--data", type=Path, default=recipe_bench.DEFAULT_DATA)
    parser.add_argument("--checkpoint", choices=["best", "last"], default="last")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the scores")
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    splits = recipe_bench.make_splits(args.data)
    splits.pop("test")  # validation only
    model, config, _ = recipe_bench.recipe_checkpoint(args.run, splits, args.checkpoint)
    args.device, args.tta = "cpu", "none"
    scores = {}
    for name, view in VIEWS.items():
        predictor = recipe_bench.recipe_predictor(model, config, splits, args)
        predictor.views = (view,)  # this one view instead of the settings' set (a plain attribute, read per batch)
        scores[name] = row = recipe_bench.score_on_val(predictor, splits["val"])
        print(f"{name:>10}: F1 {row['f1']:.3f} mAP50 {row['map50']:.3f} AP50 "
              + " / ".join(f"{c} {v:.3f}" for c, v in row["ap50"].items()), flush=True)
    atomic_write_text(args.out, json.dumps({"run": str(args.run), "checkpoint": model.name, "views": scores}, indent=2))


if __name__ == "__main__":
    main()
