"""Metrics for anomaly screening (scikit-learn underneath).

Convention: ``y_true`` is 1 for an anomaly, 0 for normal; ``scores`` are
*higher = more anomalous*; an image is flagged when ``score > threshold``.
"""

from __future__ import annotations

import numpy as np


def flagged_metrics(y_true, flagged) -> dict[str, float | int]:
    """Precision, recall, F1 and false-alarm rate of a yes/no decision (True = flagged anomalous)."""
    from sklearn.metrics import precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(int)
    flagged = np.asarray(flagged).astype(int)
    if y_true.shape != flagged.shape:
        raise ValueError(f"y_true {y_true.shape} and flags {flagged.shape} differ in shape")
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, flagged, average="binary", pos_label=1, zero_division=0)
    normals = y_true == 0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "false_alarm_rate": float(flagged[normals].mean()) if normals.any() else float("nan"),
        "n_flagged": int(flagged.sum()),
        "n_normal": int(normals.sum()),
        "n_anomaly": int((~normals).sum()),
    }


def anomaly_metrics(y_true, scores, threshold: float | None = None) -> dict[str, float | int]:
    """AUROC and AUPRC (average precision) of ``scores``, plus P/R/F1 at ``threshold`` if given.

    AUROC/AUPRC are NaN when only one class is present (they are undefined then).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true {y_true.shape} and scores {scores.shape} differ in shape")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must be 0 (normal) or 1 (anomaly)")
    both = 0 < y_true.sum() < len(y_true)
    out: dict[str, float | int] = {
        "auroc": float(roc_auc_score(y_true, scores)) if both else float("nan"),
        "auprc": float(average_precision_score(y_true, scores)) if both else float("nan"),
    }
    if threshold is not None:
        out["threshold"] = float(threshold)
        out.update(flagged_metrics(y_true, scores > threshold))
    return out
