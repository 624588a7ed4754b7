"""``rarespot demo --quick``: the whole main job end to end on a tiny budget."""

from __future__ import annotations

import math
import re

import pytest
import torch

torch.set_num_threads(2)


def test_quick_demo_writes_an_honest_report(tmp_path):
    from rarespot.detect.demo import run_demo

    out = tmp_path / "demo"
    result = run_demo(out, quick=True, n_scans=10, progress=False)
    html = result.report.read_text()
    assert result.report == out / "report.html"
    for name in ("evaluation/metrics.json", "evaluation/pr_curve.png", "run/weights/best.pt", "run/metrics.csv"):
        assert (out / name).is_file(), name
    # the report shows the measured numbers, not placeholders
    assert f"<b>{result.f1:.3f}</b>" in html
    assert all(0.0 <= v <= 1.0 for v in (result.f1, result.precision, result.recall, result.map50))
    assert math.isfinite(result.conf) and result.test_images >= 1
    assert len(re.findall(r"<img src='data:image/(?:png|jpeg);base64,", html)) >= 3  # loss, PR curve, overlays
    assert "remap: agnostic" in html  # the exact settings
    # running again reuses the data and the finished training
    again = run_demo(out, quick=True, n_scans=10, progress=False)
    assert again.f1 == pytest.approx(result.f1)


def test_demo_rejects_too_few_scans(tmp_path):
    from rarespot.detect.demo import run_demo
    from rarespot.errors import InputError

    with pytest.raises(InputError, match="at least 5 scans"):
        run_demo(tmp_path / "d", quick=True, n_scans=3, progress=False)


def test_demo_output_folder_must_be_writable(tmp_path):
    from rarespot.detect.demo import run_demo
    from rarespot.errors import InputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable") as err:
        run_demo(blocker / "demo", quick=True, progress=False)
    assert str(blocker / "demo") in str(err.value)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the fixture trains the default demo: ~3 min quiet, much longer on a shared machine
def test_the_default_demo_learns_to_find_the_objects(trained_demo):
    """The README's main job as a user runs it (default settings): a model that finds the objects,
    not just a report. Measured 0.672 test F1 on a quiet 2-core machine (docs/benchmarks/detect_training.md);
    0.4 leaves room for thread-order differences between machines while failing a model that did not learn."""
    assert trained_demo.f1 >= 0.4, trained_demo
    assert trained_demo.map50 >= 0.3, trained_demo
    assert trained_demo.test_images >= 10
