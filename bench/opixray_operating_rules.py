"""Operating-point rules compared on one `rarespot experiment opixray-screening` run, on validation-side data only.

Each rule chooses its confidence(s) on the study's validation images and is scored on its "study test" images
(the recipe's validation data; the 480-image holdout is never read): v2's one confidence of best pooled F1, one
confidence per class (each class's best F1), and a recall floor of 0.3 / 0.4 / 0.5 for every class, with one
confidence or one per class (``operating_conf(class_recall_floor=...)``). The run's predictions are cached in
the run folder (``predictions.pkl``); the table is printed and written to ``operating_rules.json`` there.

Before the rules, a table of what no threshold can change: for each class, the share of its objects that some
box of the same class overlaps at IoU >= 0.5 at the lowest confidence kept (0.001; the most recall any rule can
reach), the share overlapped only at IoU 0.3-0.5 (found but badly placed), the share with no box of any class
at IoU >= 0.3 (missed), and the median score of the best same-class box among those found.

    python bench/opixray_operating_rules.py "studies/opixray-screening/runs/operating point/xray-small-10-epochs/seed0"
"""

from __future__ import annotations

import argparse
import json
import pickle
import warnings
from pathlib import Path


def reachability(dataset, predictions) -> dict[str, dict[str, float]]:
    """Per class: what the boxes kept at the lowest confidence can reach (see the module docstring)."""
    import numpy as np

    from rarespot.metrics.detection import box_iou

    out = {}
    for cls, name in enumerate(dataset.class_names):
        rows = []
        for record, found in zip(dataset.records, predictions):
            for box in np.asarray(record.boxes, dtype=np.float64)[np.asarray(record.labels) == cls]:
                if len(found.boxes) == 0:
                    rows.append((0.0, 0.0, 0.0))
                    continue
                iou = box_iou(box[None], np.asarray(found.boxes, dtype=np.float64))[0]
                same = found.labels == cls
                best_same = iou[same].max() if same.any() else 0.0
                hit = same & (iou >= 0.5)
                rows.append((iou.max(), best_same, found.scores[hit].max() if hit.any() else 0.0))
        a = np.array(rows).reshape(-1, 3)
        out[name] = {
            "objects": len(a),
            "iou_0.5": float((a[:, 1] >= 0.5).mean()),
            "iou_0.3_0.5_only": float(((a[:, 1] >= 0.3) & (a[:, 1] < 0.5)).mean()),
            "missed": float((a[:, 0] < 0.3).mean()),
            "median_score_found": float(np.median(a[a[:, 2] > 0, 2])) if (a[:, 2] > 0).any() else 0.0,
        }
    return out


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

    reach = {"val": reachability(splits["val"], val_boxes), "test": reachability(splits["test"], test_boxes)}
    print("split class              objects  IoU>=0.5  IoU 0.3-0.5 only  missed  median score found")
    for split_name, table in reach.items():
        for name, r in table.items():
            print(f"{split_name:5s} {name:18s} {r['objects']:7d}  {r['iou_0.5']:8.2f}  {r['iou_0.3_0.5_only']:16.2f}"
                  f"  {r['missed']:6.2f}  {r['median_score_found']:.3f}")

    rules = {"best pooled F1 (v2)": operating_conf(val), "one per class (F1)": operating_conf(val, per_class=True)}
    for floor in (float(f) for f in args.floors.split(",")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rules[f"one conf, floor {floor}"] = operating_conf(val, class_recall_floor=floor)
            rules[f"per class, floor {floor}"] = operating_conf(val, per_class=True, class_recall_floor=floor)
        for w in caught[:1]:
            print(f"floor {floor}: {w.message}")
    out = {"reachable at conf 0.001": reach}
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
