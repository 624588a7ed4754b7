"""rarespot's COCO-style AP against the reference implementation, pycocotools' COCOeval.

`rarespot.metrics.detection` is written by hand (its docstring says why); this checks that
it gives COCOeval's numbers, to float precision, on random data with the awkward cases in it:
classes with no ground truth, images with no predictions or no objects, duplicates, misses.
"""

import numpy as np
import pytest

from rarespot.metrics.detection import DetectionMatches

pytest.importorskip("pycocotools", reason="pycocotools (the dev extra) is the reference implementation")


def _random_dataset(seed: int, n_images: int = 25, n_classes: int = 4):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        n_gt = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (n_gt, 2))
        wh = rng.uniform(8, 80, (n_gt, 2))
        gt = np.hstack([xy, xy + wh])
        gt_labels = rng.integers(0, n_classes - 1, n_gt)  # the last class never has ground truth
        preds, scores, labels = [], [], []
        for box, label in zip(gt, gt_labels):
            for _ in range(int(rng.integers(0, 3))):  # 0 (a miss), 1 or 2 (a duplicate) detections
                preds.append(box + rng.normal(0, 6, 4))
                labels.append(label if rng.random() < 0.85 else rng.integers(0, n_classes))
                scores.append(rng.uniform(0.05, 1.0))
        for _ in range(int(rng.integers(0, 4))):  # false positives anywhere
            p = rng.uniform(0, 300, 2)
            preds.append(np.hstack([p, p + rng.uniform(8, 80, 2)]))
            labels.append(rng.integers(0, n_classes))
            scores.append(rng.uniform(0.0, 0.7))
        preds = np.array(preds, dtype=np.float64).reshape(-1, 4)
        preds[:, 2:] = np.maximum(preds[:, 2:], preds[:, :2] + 1)
        images.append((preds, np.array(scores), np.array(labels, dtype=np.int64), gt, gt_labels))
    return images


def _cocoeval(images, n_classes: int):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts, dts = [], []
    for i, (preds, scores, labels, gt, gt_labels) in enumerate(images):
        for box, label in zip(gt, gt_labels):
            w, h = box[2] - box[0], box[3] - box[1]
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": int(label), "bbox": [box[0], box[1], w, h],
                        "area": w * h, "iscrowd": 0})
        for box, score, label in zip(preds, scores, labels):
            dts.append({"image_id": i, "category_id": int(label), "score": float(score),
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(len(images))], "annotations": gts,
                    "categories": [{"id": c} for c in range(n_classes)]}
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dts), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0], ev.stats[1]  # AP@[.50:.95], AP@.50 (area all, 100 detections per image)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_cocoeval(seed):
    n_classes = 4
    images = _random_dataset(seed, n_classes=n_classes)
    assert max(len(p) for p, *_ in images) <= 100  # COCOeval keeps 100 detections per image
    matches = DetectionMatches(num_classes=n_classes)
    for image in images:
        matches.add(*image)
    ref_50_95, ref_50 = _cocoeval(images, n_classes)
    assert matches.mean_ap(0.5) == pytest.approx(ref_50, abs=1e-9)
    assert matches.mean_ap_50_95() == pytest.approx(ref_50_95, abs=1e-9)
