"""How a tile-trained OPIXray model is best run on a scan, on the bench's validation images only.

The recipe trains on 192-px tiles cut at native resolution, and ``bench_opixray_recipe.py`` scores it on
192-px tiles with 20% overlap. This script scores the same checkpoints with other grids (more overlap,
larger tiles, the whole 416-px scan at once, and ``rarespot detect predict``'s 512-px default, which pads
the scan; all at native scale) on the 192 validation images of the bench's split; the holdout is not loaded.
Pooled F1 at the confidence best on those images, mAP50, the rare class's AP50 and the seconds each grid
took (docs/study.md, "How the recipe's model is run on a scan"). ``--grid NAME`` runs only the rows named.

    python bench/opixray_inference_modes.py studies/opixray_recipe_v4/recipe/seed6/train/weights/last.pt ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_opixray_recipe import DEFAULT_DATA, make_splits, score_on_val  # noqa: E402

# name -> TiledPredictor options; imgsz = tile keeps every grid at native scale.
GRIDS = {
    "192-px tiles, 20% overlap": {"tile": 192, "overlap": 0.2, "imgsz": 192},
    "192-px tiles, 50% overlap": {"tile": 192, "overlap": 0.5, "imgsz": 192},
    "256-px tiles, 20% overlap": {"tile": 256, "overlap": 0.2, "imgsz": 256},
    "the whole scan at 416 px": {"tile": 416, "overlap": 0.0, "imgsz": 416},
    # `rarespot detect predict`'s defaults: a 416-px scan runs whole, padded to 512 px with 0 (black), or with white
    # (OPIXray's background) as a check of what the padding costs.
    "predict's default: 512-px tile, padded with 0": {"tile": 512, "overlap": 0.2, "imgsz": 512},
    "512-px tile, padded with 255": {"tile": 512, "overlap": 0.2, "imgsz": 512, "pad_value": 255},
}


def main() -> None:
    from rarespot.detect.predict import TiledPredictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rare", default="Straight_Knife")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows here as JSON")
    parser.add_argument("--grid", action="append", choices=list(GRIDS), help="only these rows (repeatable; default: all)")
    args = parser.parse_args()
    val = make_splits(args.data)["val"]  # the holdout is carved off and dropped here
    rows = []
    for checkpoint in args.checkpoints:
        for grid in args.grid or GRIDS:
            options = GRIDS[grid]
            predictor = TiledPredictor(checkpoint, conf=0.001, device="cpu", **options)
            start = time.perf_counter()
            result = score_on_val(predictor, val)
            seconds = time.perf_counter() - start  # prediction, and scoring twice on the kept boxes (under a second)
            rows.append({"checkpoint": str(checkpoint), "grid": grid, "f1": result["f1"], "map50": result["map50"],
                         "rare_ap50": result["ap50"][args.rare], "seconds": seconds})
            print(f"{checkpoint} | {grid} | F1 {result['f1']:.3f} | mAP50 {result['map50']:.3f} | {args.rare} AP50 "
                  f"{result['ap50'][args.rare]:.3f} | {seconds:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
