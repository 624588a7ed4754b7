"""Seed 000's test protocol: fixed tiling of whole test scans, no augmentation,
precision / recall / F1 at IoU >= 0.5 with one-to-one matching, overall and
per class, plus COCO-style mAP50 and mAP50-95.

Predictions are made once at a low confidence (``sweep_conf``, 0.001) so the
precision-recall curve and AP are complete; precision, recall and F1 are then
read at one operating confidence, chosen (in this order) as

1. ``conf_for_prf`` when given (e.g. calibrated on validation data with
   :func:`calibrate_conf` — choosing it on the test set itself flatters the
   result); one confidence, or one per class (class-wise operating points:
   a rare class often scores lower, and one threshold for all cuts it first);
2. the highest confidence that reaches ``target_recall`` on this data
   (screening cares about recall first);
3. the predictor's own ``conf``.

The result also carries ``best_f1_conf`` (the confidence maximising F1 here)
and ``conf_at_target_recall``, pooled and per class; :func:`operating_conf`
turns a validation result into the operating confidence(s) for another set.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rarespot.errors import InputError
from rarespot.io.atomic import atomic_write_text
from rarespot.io.dataset import DetectionDataset
from rarespot.metrics.detection import COCO_IOU_THRESHOLDS, DetectionMatches, precision_recall_f1


@dataclass
class ClassMetrics:
    name: str
    support: int  # ground-truth objects of this class
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap50: float  # NaN when the class has no ground truth
    ap50_95: float
    best_f1_conf: float = float("nan")  # the confidence maximising this class's F1 here (NaN: no ground truth)
    conf_at_target_recall: float | None = None  # this class's, when a target recall was given and reached


@dataclass
class EvaluationResult:
    """Everything ``rarespot detect evaluate`` reports; ``to_dict()`` is its JSON."""

    class_names: list[str]
    num_images: int
    iou: float  # matching threshold of P/R/F1
    conf: float  # operating confidence of P/R/F1 (with ``class_conf``: the lowest of them)
    conf_source: str  # "given", "target_recall" or "predictor"
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    fp_per_image: float
    map50: float
    map50_95: float
    best_f1: float
    best_f1_conf: float
    target_recall: float | None
    conf_at_target_recall: float | None  # None when the target is never reached
    per_class: list[ClassMetrics]
    # Pooled precision-recall curve at ``iou``, by descending confidence.
    curve_conf: np.ndarray = field(repr=False)
    curve_precision: np.ndarray = field(repr=False)
    curve_recall: np.ndarray = field(repr=False)
    class_aware: bool = True
    class_conf: list[float] | None = None  # one operating confidence per class, when given so
    settings: dict = field(default_factory=dict)  # tiling/merge settings of the predictor
    predictions: list = field(default_factory=list, repr=False)  # Detections per image (sweep conf)
    image_paths: list[str] = field(default_factory=list, repr=False)
    # Each class's (confidence, recall) curve at ``iou``, by descending confidence (for operating_conf's floor).
    class_curves: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def operating_conf(self) -> float | list[float]:
        """What P/R/F1 were read at: one confidence, or one per class."""
        return self.conf if self.class_conf is None else self.class_conf

    @property
    def curve_f1(self) -> np.ndarray:
        p, r = self.curve_precision, self.curve_recall
        return np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)

    def to_dict(self, curve_points: int = 500) -> dict:
        """JSON-able summary; the PR curve is thinned to at most ``curve_points`` points."""
        idx = np.arange(len(self.curve_conf))
        if len(idx) > curve_points:
            idx = np.unique(np.linspace(0, len(idx) - 1, curve_points).round().astype(int))
        return _jsonable(
            {
                "num_images": self.num_images,
                "class_names": self.class_names,
                "class_aware": self.class_aware,
                "iou": self.iou,
                "conf": self.conf,
                "class_conf": self.class_conf,
                "conf_source": self.conf_source,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "tp": self.tp,
                "fp": self.fp,
                "fn": self.fn,
                "fp_per_image": self.fp_per_image,
                "map50": self.map50,
                "map50_95": self.map50_95,
                "best_f1": self.best_f1,
                "best_f1_conf": self.best_f1_conf,
                "target_recall": self.target_recall,
                "conf_at_target_recall": self.conf_at_target_recall,
                "per_class": [vars(c) for c in self.per_class],
                "settings": self.settings,
                "pr_curve": {
                    "conf": self.curve_conf[idx],
                    "precision": self.curve_precision[idx],
                    "recall": self.curve_recall[idx],
                },
            }
        )


def _jsonable(value):
    """numpy -> Python; NaN -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else round(v, 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _best_f1(conf: np.ndarray, precision: np.ndarray, recall: np.ndarray) -> tuple[float, float]:
    """(best F1, the confidence giving it) along a curve; ties take the higher confidence.

    Only the last point of each run of equal confidences is a real operating
    point (a threshold keeps all boxes of one score or none).
    """
    if len(conf) == 0:
        return 0.0, 1.0
    last_of_run = np.append(conf[1:] != conf[:-1], True)
    p, r, c = precision[last_of_run], recall[last_of_run], conf[last_of_run]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    i = int(np.argmax(f1))  # first maximum = highest confidence, as the curve runs downwards in conf
    return float(f1[i]), float(c[i])


def _conf_at_recall(conf: np.ndarray, recall: np.ndarray, target: float) -> float | None:
    """The highest confidence whose recall reaches ``target`` (None if none does)."""
    if len(conf) == 0:
        return None
    last_of_run = np.append(conf[1:] != conf[:-1], True)
    hits = np.flatnonzero(last_of_run & (recall >= target - 1e-12))
    return float(conf[hits[0]]) if len(hits) else None


def _predictor_settings(predictor) -> dict:
    keys = ("tile", "overlap", "conf", "iou", "merge", "class_agnostic", "full_image_pass", "match_metric", "max_det")
    out = {k: getattr(predictor, k) for k in keys if hasattr(predictor, k)}
    tta = getattr(getattr(predictor, "settings", None), "tta", "none")
    if tta != "none":  # written only when used: reports without test-time views stay as they were
        out["tta"] = tta
    if getattr(predictor, "model_path", None) is not None:
        out["model"] = str(predictor.model_path)
    return out


def evaluate(
    predictor,
    dataset: DetectionDataset,
    iou: float = 0.5,
    conf_for_prf: float | Sequence[float] | None = None,
    target_recall: float | None = None,
    progress: bool = True,
    *,
    sweep_conf: float = 0.001,
    class_aware: bool = True,
    keep_predictions: bool = True,
    predictions: Sequence | None = None,
) -> EvaluationResult:
    """Run ``predictor`` (a :class:`~rarespot.detect.predict.TiledPredictor`) over every
    image of ``dataset`` and score it against the annotations.

    ``dataset.class_names`` and the model's classes must match one to one (same
    order) when ``class_aware``; with ``class_aware=False`` any box matches any
    object (the seed's class-agnostic protocol). ``conf_for_prf`` may give one
    confidence per class (in the dataset's class order). ``predictions`` (the
    ``predictions`` of an earlier result on the same dataset, made at the sweep
    confidence) are scored again without inference, e.g. at another operating point.
    """
    from rarespot.detect.predict import check_image
    from rarespot.progress import progress_iter
    from rarespot.io.images import read_image

    if not 0.0 < iou < 1.0:
        raise ValueError(f"iou must be in (0, 1), got {iou}")
    if target_recall is not None and not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if len(dataset) == 0:
        raise InputError(dataset.root, "the dataset has no images to evaluate")
    if predictions is not None and len(predictions) != len(dataset):
        raise ValueError(f"{len(predictions)} predictions given for the {len(dataset)} images of {dataset.root}")
    model_names = list(predictor.class_names)
    if class_aware and len(model_names) != dataset.num_classes:
        raise InputError(
            getattr(predictor, "model_path", None),
            f"model has {len(model_names)} classes {model_names} but the dataset has "
            f"{dataset.num_classes} {dataset.class_names}; remap the data or pass class_aware=False",
        )
    class_conf = None
    if conf_for_prf is not None and np.ndim(conf_for_prf):
        class_conf = [float(c) for c in np.asarray(conf_for_prf, dtype=np.float64).reshape(-1)]
        expected = dataset.num_classes if class_aware else 1
        if len(class_conf) != expected:
            raise ValueError(f"{len(class_conf)} per-class confidences given for {expected} classes")
        if not class_aware:  # one "object" class: that is one confidence
            conf_for_prf, class_conf = class_conf[0], None
    thresholds = np.unique(np.round(np.append(COCO_IOU_THRESHOLDS, iou), 4))
    matches = DetectionMatches(dataset.num_classes if class_aware else 1, class_aware, thresholds)
    sweep = min(float(sweep_conf), float(getattr(predictor, "conf", sweep_conf)))
    given, predictions, paths = predictions, [], []

    for i, record in enumerate(progress_iter(dataset.records, progress and given is None, "evaluating")):
        path = dataset.image_path(record)
        if given is not None:
            dets = given[i]
        else:
            image = read_image(path)
            if image.shape[0] != record.height or image.shape[1] != record.width:
                raise InputError(
                    path,
                    f"image is {image.shape[1]}x{image.shape[0]} but its annotation says {record.width}x{record.height}",
                )
            check_image(image, path)
            dets = predictor.predict(image, conf=sweep)
        gt_labels = record.labels if class_aware else np.zeros(len(record.labels), dtype=np.int64)
        pred_labels = dets.labels if class_aware else np.zeros(len(dets.labels), dtype=np.int64)
        matches.add(dets.boxes, dets.scores, pred_labels, record.boxes, gt_labels)
        if keep_predictions:
            predictions.append(dets)
            paths.append(str(path))

    curve_conf, curve_p, curve_r = matches.curve(iou)
    best_f1, best_f1_conf = _best_f1(curve_conf, curve_p, curve_r)
    conf_target = _conf_at_recall(curve_conf, curve_r, target_recall) if target_recall is not None else None
    if class_conf is not None:
        conf, source = min(class_conf), "given"
    elif conf_for_prf is not None:
        conf, source = float(conf_for_prf), "given"
    elif conf_target is not None:
        conf, source = conf_target, "target_recall"
    else:
        conf, source = float(getattr(predictor, "conf", 0.25)), "predictor"

    operating = conf if class_conf is None else class_conf
    tp, fp, fn = matches.counts(operating, iou)
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    support = matches.support()
    ap50 = matches.per_class_ap(iou)
    ap_all = np.array([matches.per_class_ap(t) for t in COCO_IOU_THRESHOLDS])  # (T, classes)
    names = list(dataset.class_names) if class_aware else ["object"]
    per_class, class_curves = [], []
    for c, name in enumerate(names):
        label = c if class_aware else None
        ctp, cfp, cfn = matches.counts(operating, iou, label)
        cp, cr, cf = precision_recall_f1(ctp, cfp, cfn)
        col = ap_all[:, c]
        c_conf, c_precision, c_recall = matches.curve(iou, label)
        class_curves.append((c_conf, c_recall))
        c_best = _best_f1(c_conf, c_precision, c_recall)[1] if support[c] else float("nan")
        per_class.append(
            ClassMetrics(
                name, int(support[c]), ctp, cfp, cfn, cp, cr, cf, float(ap50[c]),
                float(np.mean(col)) if not np.isnan(col).any() else float("nan"),
                best_f1_conf=c_best,
                conf_at_target_recall=(
                    _conf_at_recall(c_conf, c_recall, target_recall) if target_recall is not None and support[c] else None
                ),
            )
        )
    return EvaluationResult(
        class_names=names,
        num_images=matches.num_images,
        iou=float(iou),
        conf=conf,
        conf_source=source,
        precision=precision,
        recall=recall,
        f1=f1,
        tp=tp,
        fp=fp,
        fn=fn,
        fp_per_image=fp / max(1, matches.num_images),
        map50=matches.mean_ap(0.5),
        map50_95=matches.mean_ap_50_95(),
        best_f1=best_f1,
        best_f1_conf=best_f1_conf,
        target_recall=target_recall,
        conf_at_target_recall=conf_target,
        per_class=per_class,
        curve_conf=curve_conf,
        curve_precision=curve_p,
        curve_recall=curve_r,
        class_aware=class_aware,
        class_conf=class_conf,
        settings={**_predictor_settings(predictor), "sweep_conf": sweep},
        predictions=predictions,
        image_paths=paths,
        class_curves=class_curves,
    )


def calibrate_conf(
    predictor, dataset: DetectionDataset, target_recall: float | None = None, per_class: bool = False,
    class_recall_floor: float | None = None, **kwargs,
) -> float | list[float]:
    """The operating confidence chosen on validation data (see :func:`operating_conf`)."""
    result = evaluate(predictor, dataset, target_recall=target_recall, keep_predictions=False, **kwargs)
    return operating_conf(result, per_class, class_recall_floor=class_recall_floor)


def operating_conf(
    result: EvaluationResult, per_class: bool = False, class_recall_floor: float | None = None
) -> float | list[float]:
    """The operating confidence a (validation) result implies: the highest reaching its
    target recall if one was given and reached, else the one maximising F1.

    ``per_class``: one such confidence per class, each from that class's own curve. A class
    with no objects in ``result``'s data gets the pooled confidence, with a warning naming it.

    ``class_recall_floor``: a screening operating point. Only confidences at which *every* class
    keeps at least this recall on ``result``'s data are candidates, and the choice above is made
    among them (one confidence: the best pooled F1 at or below the highest confidence meeting
    every floor; per class: each class's choice, lowered to its own floor's confidence). One
    threshold for all classes is set by the common ones, and a rare class that scores lower is cut
    first; the floor keeps it in. A class whose recall never reaches the floor is left out of it,
    with a warning naming the class and the recall it does reach.
    """
    from rarespot.detect.train import MissingClassWarning

    def pick(target_conf: float | None, best: float) -> float:
        return target_conf if result.target_recall is not None and target_conf is not None else best

    floors = _floor_confs(result, class_recall_floor) if class_recall_floor is not None else None
    cap = min((c for c in floors if c is not None), default=None) if floors else None
    if cap is None:
        pooled = pick(result.conf_at_target_recall, result.best_f1_conf)
    else:
        below = result.curve_conf <= cap + 1e-12  # the curve runs downwards in confidence
        best_below = _best_f1(result.curve_conf[below], result.curve_precision[below], result.curve_recall[below])[1]
        pooled = pick(None if result.conf_at_target_recall is None else min(result.conf_at_target_recall, cap), best_below)
    if not per_class:
        return pooled
    confs = []
    for i, c in enumerate(result.per_class):
        if c.support == 0:
            warnings.warn(
                f"class {c.name!r} has no objects in the {result.num_images} calibration images: its operating "
                f"confidence is the pooled one ({pooled:.4f})", MissingClassWarning, stacklevel=2,
            )
            confs.append(pooled)
            continue
        own = pick(c.conf_at_target_recall, c.best_f1_conf)
        confs.append(own if floors is None or floors[i] is None else min(own, floors[i]))
    return confs


def _floor_confs(result: EvaluationResult, floor: float) -> list[float | None]:
    """Each class's highest confidence keeping its recall at ``floor`` on ``result``'s data; None for a
    class with no objects there (warned by the caller's per-class path) or one that never reaches it (warned here)."""
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"class_recall_floor must be in (0, 1], got {floor}")
    if len(result.class_curves) != len(result.per_class):
        raise ValueError("this result has no per-class curves (made by an older rarespot?); evaluate again")
    out = []
    for c, (conf, recall) in zip(result.per_class, result.class_curves):
        at = _conf_at_recall(conf, recall, floor) if c.support else None
        if c.support and at is None:
            reached = float(recall.max()) if len(recall) else 0.0
            warnings.warn(
                f"class {c.name!r} reaches recall {reached:.3f} at most on the {result.num_images} calibration images, "
                f"below the floor {floor:g}: the operating confidence does not hold it to the floor",
                UserWarning, stacklevel=3,
            )
        out.append(at)
    return out


# -- report -----------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def evaluation_markdown(result: EvaluationResult) -> str:
    """The report as a markdown table (overall row first, then one row per class)."""
    if result.conf_source == "target_recall":
        why_conf = f"the highest reaching recall {result.target_recall:g}"
    else:
        why_conf = {"given": "given", "predictor": "the predictor's threshold"}[result.conf_source]
    agnostic = "" if result.class_aware else ", class-agnostic"
    per_class_conf = result.class_conf is not None
    at = f"one confidence per class ({why_conf}; column conf)" if per_class_conf else f"confidence {result.conf:.4f} ({why_conf})"
    lines = [
        "# Detection evaluation",
        "",
        f"{result.num_images} images; precision/recall/F1 at IoU >= {result.iou:g} with one-to-one matching{agnostic}, "
        f"at {at}; AP is COCO-style (101-point interpolation).",
        "",
        "| class | support | TP | FP | FN | precision | recall | F1 | AP50 | AP50-95 |" + (" conf |" if per_class_conf else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if per_class_conf else ""),
        f"| **all** | {result.tp + result.fn} | {result.tp} | {result.fp} | {result.fn} | {_fmt(result.precision)} | "
        f"{_fmt(result.recall)} | **{_fmt(result.f1)}** | {_fmt(result.map50)} | {_fmt(result.map50_95)} |"
        + (" |" if per_class_conf else ""),
    ]
    for i, c in enumerate(result.per_class):
        lines.append(
            f"| {c.name} | {c.support} | {c.tp} | {c.fp} | {c.fn} | {_fmt(c.precision)} | {_fmt(c.recall)} | "
            f"{_fmt(c.f1)} | {_fmt(c.ap50)} | {_fmt(c.ap50_95)} |"
            + (f" {result.class_conf[i]:.4f} |" if per_class_conf else "")
        )
    lines += [
        "",
        f"- false positives per image: {result.fp_per_image:.3f}",
        f"- best F1 on this data: {result.best_f1:.3f} at confidence {result.best_f1_conf:.4f}"
        " (chosen on the data it is measured on: optimistic; calibrate on validation data)",
    ]
    if result.target_recall is not None:
        reached = (
            f"confidence {result.conf_at_target_recall:.4f}"
            if result.conf_at_target_recall is not None
            else "never reached (the model misses some objects at every confidence)"
        )
        lines.append(f"- recall {result.target_recall:g}: {reached}")
    if result.settings:
        lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))
    lines += ["", "![precision-recall curve](pr_curve.png)", ""]
    return "\n".join(lines)


def plot_pr_curve(result: EvaluationResult, path: str | Path) -> Path:
    """PR curve (pooled, and per class when there are few) + F1 against confidence, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    path = Path(path)
    fig, (ax_pr, ax_f1) = plt.subplots(1, 2, figsize=(11, 4.5))
    r, p, c = result.curve_recall, result.curve_precision, result.curve_conf
    envelope = np.maximum.accumulate(p[::-1])[::-1] if len(p) else p
    ax_pr.plot(r, envelope, color="black", lw=2, label=f"all (mAP50 {result.map50:.3f})")
    operating = "per-class confs" if result.class_conf is not None else f"conf {result.conf:.3f}"
    ax_pr.plot([result.recall], [result.precision], "o", color="tab:red", label=f"operating point, {operating}")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"precision-recall, IoU {result.iou:g}")
    ax_pr.grid(alpha=0.3)
    ax_pr.legend(loc="lower left", fontsize=8)
    f1 = result.curve_f1
    ax_f1.plot(c, f1, color="tab:blue")
    ax_f1.axvline(result.best_f1_conf, color="tab:green", ls="--", label=f"best F1 {result.best_f1:.3f} @ {result.best_f1_conf:.3f}")
    if result.class_conf is None:  # per-class confs have no single place on the pooled F1 curve
        ax_f1.axvline(result.conf, color="tab:red", ls=":", label=f"operating conf {result.conf:.3f}")
    ax_f1.set(xlabel="confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02), title="F1 against confidence")
    ax_f1.grid(alpha=0.3)
    ax_f1.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_evaluation_report(result: EvaluationResult, out_dir: str | Path) -> Path:
    """Write ``report.md`` (table), ``pr_curve.png`` and ``metrics.json`` to ``out_dir``; returns report.md."""
    from rarespot.io.atomic import ensure_writable_dir

    out = ensure_writable_dir(out_dir)
    plot_pr_curve(result, out / "pr_curve.png")
    atomic_write_text(out / "metrics.json", json.dumps(result.to_dict(), indent=2) + "\n")
    report = out / "report.md"
    atomic_write_text(report, evaluation_markdown(result))
    return report


# -- data for the CLI -----------------------------------------------------------


def load_eval_data(
    data: str | Path,
    split: str | None = None,
    fmt: str = "auto",
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> DetectionDataset:
    """The images to evaluate on.

    ``data`` is a training run folder (its ``split.json`` names the exact
    held-out images; ``split`` defaults to "test"), a dataset folder/file
    (VOC, YOLO, COCO), or a folder made by ``rarespot data split`` (then
    ``split`` picks its sub-folder). A plain dataset with ``split`` given is
    split the way ``rarespot detect train`` splits it (seeded, by subject).
    """
    data = Path(data)
    if not data.exists():
        raise InputError(data, "dataset not found")
    if split is not None and split not in ("train", "val", "test", "all"):
        raise InputError(None, f"split must be train, val, test or all, got {split!r}")
    if (data / "split.json").is_file():
        from rarespot.io.split import load_saved_splits

        splits = load_saved_splits(data)
        name = split or "test"
        if name == "all":
            return DetectionDataset(
                splits["train"].class_names, [r for ds in splits.values() for r in ds.records], None
            )
        if name not in splits or len(splits[name]) == 0:
            raise InputError(data / "split.json", f"the run has no {name!r} split")
        return splits[name]
    from rarespot.io.annotations import load_dataset

    if split not in (None, "all") and (data / split).is_dir():
        return load_dataset(data / split, fmt)
    dataset = load_dataset(data, fmt)
    if split in (None, "all"):
        return dataset
    from rarespot.io.split import split_dataset

    return split_dataset(dataset, fractions, seed)[split]


def write_evaluation_overlays(
    result: EvaluationResult, dataset: DetectionDataset, out_dir: str | Path, limit: int = 12
) -> list[Path]:
    """Overlays (ground truth red, predictions at the operating confidence green) for
    the ``limit`` images with the most errors (missed objects + false alarms) first."""
    from rarespot.io.images import read_image
    from rarespot.metrics.detection import match_detections
    from rarespot.viz import render_overlay, save_png

    if not result.predictions or limit <= 0:
        return []
    errors = []
    for i, (dets, record) in enumerate(zip(result.predictions, dataset.records)):
        kept = dets.above(result.operating_conf)
        labels = kept.labels if result.class_aware else np.zeros(len(kept), dtype=np.int64)
        gt_labels = record.labels if result.class_aware else np.zeros(len(record), dtype=np.int64)
        matched = match_detections(kept.boxes, kept.scores, labels, record.boxes, gt_labels, result.iou)
        n_tp = int(np.sum(matched >= 0))
        errors.append(((len(kept) - n_tp) + (len(record) - n_tp), i))
    out = Path(out_dir) / "overlays"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for _, i in sorted(errors, key=lambda e: (-e[0], e[1]))[:limit]:
        record, kept = dataset.records[i], result.predictions[i].above(result.operating_conf)
        image = read_image(dataset.image_path(record))
        # Names as strings: an agnostic model's classes are not the dataset's.
        rgb = render_overlay(
            image,
            gt_boxes=record.boxes,
            pred_boxes=kept.boxes,
            gt_labels=[dataset.class_names[c] for c in record.labels],
            pred_labels=[kept.class_names[c] for c in kept.labels],
            pred_scores=kept.scores,
        )
        written.append(save_png(out / f"{i:04d}_{record.stem}.png", rgb))
    return written
