"""The ICBHI 2017 challenge score for 4-class respiratory cycle classification.

Official definitions (Rocha et al. 2019; the seed's eqs. 14-16 written as TP/FN):

    Se = (Pc + Pw + Pb) / (Nc + Nw + Nb)    abnormal cycles predicted as their *exact* class
    Sp = Pn / Nn                            normal cycles predicted normal
    Score = (Se + Sp) / 2

so a crackle cycle predicted "both" counts against Se (``se_mode="exact"``, the
challenge's rule and the default). ``se_mode="any_abnormal"`` gives the lenient
variant some papers use (any abnormal prediction for an abnormal cycle counts),
which is the 2-class normal/abnormal sensitivity. Values are fractions in [0, 1];
multiply by 100 for the percentages the literature quotes. Predicting "normal"
for every cycle gives Se = 0, Sp = 1, Score = 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ICBHI_CLASSES = ("normal", "crackle", "wheeze", "both")


@dataclass
class IcbhiScores:
    se: float
    sp: float
    score: float
    accuracy: float
    per_class_recall: dict[str, float]
    confusion: np.ndarray  # rows = true class, columns = predicted class
    class_names: tuple[str, ...] = ICBHI_CLASSES
    n_normal: int = 0
    n_abnormal: int = 0
    se_mode: str = "exact"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "se": self.se,
            "sp": self.sp,
            "score": self.score,
            "accuracy": self.accuracy,
            "per_class_recall": dict(self.per_class_recall),
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
            "n_normal": self.n_normal,
            "n_abnormal": self.n_abnormal,
            "se_mode": self.se_mode,
        }

    def summary(self) -> str:
        return f"Se {100 * self.se:.2f}  Sp {100 * self.sp:.2f}  Score {100 * self.score:.2f}  (n={self.confusion.sum()})"


def icbhi_scores(
    y_true,
    y_pred,
    *,
    class_names: tuple[str, ...] = ICBHI_CLASSES,
    normal_class: int = 0,
    se_mode: str = "exact",
) -> IcbhiScores:
    """Se, Sp, Score, accuracy, per-class recall and confusion matrix of class indices.

    A score whose denominator is empty (no normal or no abnormal cycle) is NaN.
    """
    if se_mode not in ("exact", "any_abnormal"):
        raise ValueError(f"se_mode must be 'exact' or 'any_abnormal', not {se_mode!r}")
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    k = len(class_names)
    for name, arr in (("true", y_true), ("predicted", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise ValueError(f"{name} labels must be class indices in 0..{k - 1}")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)

    normal = y_true == normal_class
    abnormal = ~normal
    n_normal, n_abnormal = int(normal.sum()), int(abnormal.sum())
    sp = float((y_pred[normal] == normal_class).sum() / n_normal) if n_normal else float("nan")
    if se_mode == "exact":
        hits = (y_pred[abnormal] == y_true[abnormal]).sum()
    else:
        hits = (y_pred[abnormal] != normal_class).sum()
    se = float(hits / n_abnormal) if n_abnormal else float("nan")
    per_class = {}
    for i, name in enumerate(class_names):
        total = confusion[i].sum()
        per_class[name] = float(confusion[i, i] / total) if total else float("nan")
    accuracy = float((y_true == y_pred).mean()) if y_true.size else float("nan")
    return IcbhiScores(
        se=se,
        sp=sp,
        score=(se + sp) / 2,
        accuracy=accuracy,
        per_class_recall=per_class,
        confusion=confusion,
        class_names=tuple(class_names),
        n_normal=n_normal,
        n_abnormal=n_abnormal,
        se_mode=se_mode,
    )


def plot_confusion(scores: IcbhiScores, path: str | Path, title: str = "") -> Path:
    """Write the confusion matrix (counts, and row-normalised recall as colour) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    cm = scores.confusion
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    names = scores.class_names
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title((title + "\n" if title else "") + scores.summary(), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, format="png")
