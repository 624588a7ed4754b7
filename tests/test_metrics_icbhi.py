"""ICBHI Se / Sp / Score: exact values on hand-made predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rarespot.metrics.icbhi import icbhi_scores, plot_confusion

N, C, W, B = 0, 1, 2, 3


def test_all_normal_scores_exactly_50():
    y_true = [N] * 70 + [C] * 15 + [W] * 10 + [B] * 5
    s = icbhi_scores(y_true, [N] * 100)
    assert (s.se, s.sp, s.score) == (0.0, 1.0, 0.5)
    assert s.per_class_recall == {"normal": 1.0, "crackle": 0.0, "wheeze": 0.0, "both": 0.0}
    assert s.accuracy == 0.7


def test_perfect_prediction():
    y = [N, C, W, B, N]
    s = icbhi_scores(y, y)
    assert (s.se, s.sp, s.score, s.accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert s.confusion.tolist() == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_hand_computed_example():
    # 4 normal (3 right), 2 crackle (1 right, 1 called both), 2 wheeze (1 right, 1 called normal), 2 both (1 right, 1 called crackle)
    y_true = [N, N, N, N, C, C, W, W, B, B]
    y_pred = [N, N, N, W, C, B, W, N, B, C]
    s = icbhi_scores(y_true, y_pred)
    assert s.sp == 3 / 4
    assert s.se == 3 / 6  # exact class: C, W, B right once each
    assert s.score == pytest.approx((3 / 4 + 3 / 6) / 2)
    assert (s.n_normal, s.n_abnormal) == (4, 6)
    assert s.per_class_recall == {"normal": 0.75, "crackle": 0.5, "wheeze": 0.5, "both": 0.5}
    assert s.confusion[C, B] == 1 and s.confusion[W, N] == 1 and s.confusion[B, C] == 1 and s.confusion[N, W] == 1
    # Lenient variant: any abnormal prediction of an abnormal cycle counts (5 of 6: only the wheeze called normal misses).
    lenient = icbhi_scores(y_true, y_pred, se_mode="any_abnormal")
    assert lenient.se == 5 / 6 and lenient.sp == 3 / 4


def test_wrong_abnormal_class_counts_against_se():
    s = icbhi_scores([C, C, W], [B, W, C])
    assert s.se == 0.0
    assert math.isnan(s.sp) and math.isnan(s.score)


def test_input_checks():
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        icbhi_scores([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="class indices in 0..3"):
        icbhi_scores([0, 4], [0, 0])
    with pytest.raises(ValueError, match="se_mode"):
        icbhi_scores([0], [0], se_mode="loose")


def test_confusion_png(tmp_path):
    s = icbhi_scores([N, C, W, B, N, C], [N, C, N, B, W, C])
    path = plot_confusion(s, tmp_path / "sub" / "cm.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic write left no temp file
    assert s.as_dict()["confusion"] == np.asarray(s.confusion).tolist()
