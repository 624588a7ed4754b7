"""Operating-point rules compared on one `rarespot experiment opixray-screening` run, on validation-side data only.

Each rule chooses its confidence(s) on the study's validation images and is scored on its "study test" images
(the recipe's validation data; the 480-image holdout is never read): v2's one confidence of best pooled F1, one
confidence per class (each class's best F1), and a recall floor of 0.3 / 0.4 / 0.5 for every class, with one
confidence or one per class (``operating_conf(class_recall_floor=...)``). The run's predictions are cached in
the run folder (``predictions.pkl``); the table is printed and written to ``operating_rules.json`` there.

    python bench/opixray_operating_rules.py "studies/opixray-screening/runs/operating point/xray-small-10-epochs/seed0"
"""

from __future__ import annotations

import argparse
import json
import pickle
import warnings
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="one run folder of the opixray-screening study")
    parser.add_argument("--floors", default="0.3,0.4,0.5")
    args = parser.parse_args()

    import torch

    from rarespot.detect.evaluate import evaluate, operating_conf
    from rarespot.detect.predict import TiledPredictor
    from rarespot.detect.settings import InferenceSettings
    from rarespot.io.split import load_saved_splits

    torch.set_num_threads(1)  # beside a training run on the other core
    splits = load_saved_splits(args.run / "train")
    config = json.loads((args.run / "cell.json").read_text())["config"]
    tile = int(config.get("tile_size", 192))
    settings = InferenceSettings(tile=tile, overlap=0.2, conf=0.001, imgsz=tile)  # the study's evaluation
    predictor = TiledPredictor(args.run / "train" / "weights" / "last.pt", settings)
    cache = args.run / "predictions.pkl"
    if cache.exists():
        val_boxes, test_boxes = pickle.loads(cache.read_bytes())
    else:
        val_boxes = evaluate(predictor, splits["val"], progress=False).predictions
        test_boxes = evaluate(predictor, splits["test"], progress=False).predictions
        cache.write_bytes(pickle.dumps((val_boxes, test_boxes)))
    val = evaluate(predictor, splits["val"], progress=False, predictions=val_boxes)

    rules = {"best pooled F1 (v2)": operating_conf(val), "one per class (F1)": operating_conf(val, per_class=True)}
    for floor in (float(f) for f in args.floors.split(",")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rules[f"one conf, floor {floor}"] = operating_conf(val, class_recall_floor=floor)
            rules[f"per class, floor {floor}"] = operating_conf(val, per_class=True, class_recall_floor=floor)
        for w in caught[:1]:
            print(f"floor {floor}: {w.message}")
    out = {}
    names = list(val.class_names)
    print(f"{'rule':26s} test F1 | test recall {' / '.join(names)} | val recall")
    for name, conf in rules.items():
        test = evaluate(predictor, splits["test"], conf_for_prf=conf, progress=False, predictions=test_boxes,
                        keep_predictions=False)
        again = evaluate(predictor, splits["val"], conf_for_prf=conf, progress=False, predictions=val_boxes,
                         keep_predictions=False)
        out[name] = {"conf": conf, "test_f1": test.f1,
                     "test_recall": {c.name: c.recall for c in test.per_class},
                     "val_recall": {c.name: c.recall for c in again.per_class}}
        print(f"{name:26s} {test.f1:.3f} | " + " ".join(f"{c.recall:.2f}" for c in test.per_class)
              + " | " + " ".join(f"{c.recall:.2f}" for c in again.per_class), flush=True)
    (args.run / "operating_rules.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
