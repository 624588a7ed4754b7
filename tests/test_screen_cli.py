"""`rarespot screen fit | score | evaluate` end to end on generated data, and its bad-input paths."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from helpers_screen import TINY, make_cells

from rarespot.cli import app
from rarespot.errors import InputError

runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("screen_cli")
    images = np.concatenate([make_cells(60, 0), make_cells(20, 1, spots=True)])
    np.savez(d / "cells.npz", images=images, labels=np.r_[np.zeros(60), np.ones(20)].astype(np.uint8))
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["screen", "fit", str(d / "cells.npz"), "--out", str(d / "model"), "-c", str(d / "tiny.yaml"), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "training on 60 normal images" in result.output
    return d


def test_fit_writes_model_summary_and_curve(workdir):
    model = workdir / "model"
    for name in ("model.pt", "summary.json", "training_curve.png", "checkpoint.pt"):
        assert (model / name).is_file(), name
    summary = json.loads((model / "summary.json").read_text())
    assert summary["n_normal"] == 60 and summary["n_train"] == 48 and summary["n_calibration"] == 12
    assert summary["thresholds"]["far"] == 0.05
    assert cv2.imread(str(model / "training_curve.png")) is not None


def test_score_csv_matches_stored_thresholds(workdir):
    out = workdir / "scores.csv"
    result = runner.invoke(app, ["screen", "score", str(workdir / "model"), str(workdir / "cells.npz"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 80 and list(table.columns) == ["name", "label", "error", "neg_log_density", "combined", "anomalous", "anomalous_or_rule"]
    t = json.loads((workdir / "model" / "summary.json").read_text())["thresholds"]
    # The default score is the reconstruction error (chosen on validation data, docs/benchmarks/screen.md).
    assert (table["anomalous"] == (table["error"] > t["error"])).all()
    or_flags = (table["error"] > t["or_error"]) | (table["neg_log_density"] > t["or_neg_log_density"])
    assert (table["anomalous_or_rule"] == or_flags).all()
    assert f"{int(table['anomalous'].sum())} flagged" in result.output


def test_evaluate_writes_metrics_and_plots(workdir):
    out = workdir / "eval"
    result = runner.invoke(app, ["screen", "evaluate", str(workdir / "model"), str(workdir / "cells.npz"), "--out", str(out), "--top-k", "6"])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 80 and m["n_anomaly"] == 20
    for name in ("error", "density", "combined"):
        assert 0 <= m[name]["auroc"] <= 1 and 0 <= m[name]["f1"] <= 1
    # The discs with a dark blob are found (a real check: a broken score would sit near 0.5).
    assert m["error"]["auroc"] > 0.85
    table = pd.read_csv(out / "scores.csv")
    assert m["main_score"] == "error" and m["error"]["n_flagged"] == int(table["anomalous"].sum())
    for png in ("histograms.png", "roc.png", "top_anomalies.png"):
        img = cv2.imread(str(out / png))
        assert img is not None and img.shape[0] > 100, png


def test_folder_with_corrupt_and_mixed_images(tmp_path, workdir):
    (tmp_path / "normal").mkdir()
    for i, img in enumerate(make_cells(12, 5)):
        cv2.imwrite(str(tmp_path / "normal" / f"{i}.png"), img)
    cv2.imwrite(str(tmp_path / "normal" / "big.png"), cv2.resize(make_cells(1, 6)[0], (40, 40)))
    (tmp_path / "normal" / "broken.png").write_bytes(b"\x89PNG not really")
    result = runner.invoke(app, ["screen", "score", str(workdir / "model"), str(tmp_path), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable file(s)" in result.output and "broken.png" in result.output
    assert result.output.count("2 different sizes (20x20: 12, 40x40: 1) resized to 16x16") == 1
    assert "first of each other size: 40x40: normal/big.png" in result.output  # names the odd file
    assert len(pd.read_csv(tmp_path / "s.csv")) == 13
    result = runner.invoke(app, ["screen", "score", str(workdir / "model"), str(tmp_path), "--out", str(tmp_path / "s.csv"), "--strict"])
    assert isinstance(result.exception, InputError) and "broken.png" in str(result.exception)
    # Fitting on mixed sizes says so once.
    result = runner.invoke(app, ["screen", "fit", str(tmp_path), "--out", str(tmp_path / "m"), "-c", str(workdir / "tiny.yaml"),
                                 "--normal-label", "normal", "--epochs", "1", "--far", "0.2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("different sizes") == 1


def test_bad_inputs_name_the_file(tmp_path, workdir):
    result = runner.invoke(app, ["screen", "fit", str(workdir / "cells.npz"), "--out", str(tmp_path / "m"), "--normal-label", "7"])
    assert isinstance(result.exception, InputError)
    assert "cells.npz" in str(result.exception) and "no normal images" in str(result.exception)
    state = torch.load(workdir / "model" / "model.pt", weights_only=False)
    state["format_version"] = 99
    torch.save(state, tmp_path / "future.pt")
    result = runner.invoke(app, ["screen", "score", str(tmp_path / "future.pt"), str(workdir / "cells.npz"), "--out", str(tmp_path / "s.csv")])
    assert isinstance(result.exception, InputError) and "future.pt" in str(result.exception) and "version 99" in str(result.exception)
    (tmp_path / "bad.yaml").write_text("train: {epochs: -1}\n")
    result = runner.invoke(app, ["screen", "fit", str(workdir / "cells.npz"), "-c", str(tmp_path / "bad.yaml")])
    assert isinstance(result.exception, InputError) and "bad.yaml" in str(result.exception)
    result = runner.invoke(app, ["screen", "fit", str(workdir / "cells.npz"), "--size", "50"])
    assert result.exit_code == 2 and "multiple of 8" in result.output
    np.savez(tmp_path / "nolabels.npz", images=make_cells(5, 0))
    result = runner.invoke(app, ["screen", "evaluate", str(workdir / "model"), str(tmp_path / "nolabels.npz"), "--out", str(tmp_path / "e")])
    assert isinstance(result.exception, InputError) and "nolabels.npz" in str(result.exception) and "needs labels" in str(result.exception)


def test_root_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rarespot", "screen", "score", str(tmp_path / "missing.pt"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "missing.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_constant_images_are_named_and_left_out(tmp_path, workdir):
    images = make_cells(60, 0)
    images[3] = 0  # all black
    images[7] = 200  # constant grey
    np.savez(tmp_path / "with_blank.npz", images=images, labels=np.zeros(60, np.uint8), names=np.array([f"cell_{i}.png" for i in range(60)]))
    result = runner.invoke(app, ["screen", "fit", str(tmp_path / "with_blank.npz"), "--out", str(tmp_path / "m"), "-c", str(workdir / "tiny.yaml"),
                                 "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "left out 2 constant image(s)" in result.output and "cell_3.png, cell_7.png" in result.output
    assert "training on 58 normal images" in result.output
    result = runner.invoke(app, ["screen", "score", str(workdir / "model"), str(tmp_path / "with_blank.npz"), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0 and "2 constant image(s)" in result.output and "cell_3.png" in result.output


def test_too_few_normals_for_the_far_fails_before_writing(tmp_path, workdir):
    np.savez(tmp_path / "few.npz", images=make_cells(30, 0), labels=np.zeros(30, np.uint8))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes(b"an earlier model")
    result = runner.invoke(app, ["screen", "fit", str(tmp_path / "few.npz"), "--out", str(tmp_path / "m"), "-c", str(workdir / "tiny.yaml")])
    assert isinstance(result.exception, InputError), result.output
    msg = str(result.exception)
    # 30 normals, 6 held out; FAR 0.05 needs 10 held-out normals (about 50 images).
    assert "few.npz" in msg and "too few normal images" in msg and "needs at least 10" in msg and "normal class '0'" in msg
    assert (tmp_path / "m" / "model.pt").read_bytes() == b"an earlier model"  # nothing already written lost
    result = runner.invoke(app, ["screen", "fit", str(tmp_path / "few.npz"), "--out", str(tmp_path / "m2"), "-c", str(workdir / "tiny.yaml"),
                                 "--epochs", "1", "--far", "0.1"])
    assert result.exit_code == 0, result.output  # a looser false-alarm rate needs only 5


def test_label_file_without_the_normal_class_names_it(tmp_path, workdir):
    for name in ("sick_a", "sick_b"):
        (tmp_path / "cells" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "cells" / name / "0.png"), make_cells(1, 0)[0])
    result = runner.invoke(app, ["screen", "fit", str(tmp_path / "cells"), "--out", str(tmp_path / "m"), "--normal-label", "normal"])
    assert isinstance(result.exception, InputError)
    assert "cells" in str(result.exception) and "'normal' is not a class here" in str(result.exception) and "sick_a" in str(result.exception)


def test_mixed_channel_counts_name_a_file(tmp_path, workdir):
    (tmp_path / "normal").mkdir()
    for i, img in enumerate(make_cells(12, 5)):
        cv2.imwrite(str(tmp_path / "normal" / f"{i:02d}.png"), img)
    cv2.imwrite(str(tmp_path / "normal" / "colour.png"), np.dstack([make_cells(1, 6)[0]] * 3) + np.array([0, 0, 30], np.uint8))
    result = runner.invoke(app, ["screen", "score", str(workdir / "model"), str(tmp_path), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert result.output.count("mixed channel counts (1 ch: 12, 3 ch: 1) converted to gray") == 1
    assert "3 ch: normal/colour.png" in result.output


def test_fit_patch_detector_and_evaluate(tmp_path, workdir):
    pytest.importorskip("efficientnet_lite_pytorch", reason="rarespot[pretrained] not installed")
    cfg = {"detector": "patch", "patch": {"size": 32, "method": "patchcore", "coreset_size": 100}, "train": {"threads": 1}}
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["screen", "fit", str(workdir / "cells.npz"), "--out", str(tmp_path / "pm"), "-c", str(tmp_path / "patch.yaml")])
    assert result.exit_code == 0, result.output
    assert "patch features, patchcore" in result.output
    summary = json.loads((tmp_path / "pm" / "summary.json").read_text())
    assert summary["detector"] == "patch (patchcore)" and summary["n_calibration"] == 12
    result = runner.invoke(app, ["screen", "evaluate", str(tmp_path / "pm"), str(workdir / "cells.npz"), "--out", str(tmp_path / "ev"), "--top-k", "6"])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["main_score"] == "patch" and m["patch"]["auroc"] > 0.85 and "or_rule" not in m
    table = pd.read_csv(tmp_path / "ev" / "scores.csv")
    assert list(table.columns) == ["name", "label", "patch", "anomalous"]
    assert (table["anomalous"] == (table["patch"] > summary["thresholds"]["patch"])).all()
    for png in ("histograms.png", "roc.png", "top_anomalies.png"):
        assert cv2.imread(str(tmp_path / "ev" / png)) is not None, png


def test_epoch_log_lines_with_time_left(monkeypatch):
    """In a log: the progress bar's line a minute (rarespot.progress) and screen's line per epoch, with the fit's time left."""
    import io

    import rarespot.progress as progress
    from rarespot.screen.train import _epoch_line

    now = [0.0]
    monkeypatch.setattr(progress, "monotonic", lambda: now[0])
    out, lines = io.StringIO(), []
    with progress.ProgressBar(10, "CAE epoch 1/4", unit="batches", rounds=4, stream=out) as bar:
        now[0] = 30.0
        bar.status("train MSE 0.50000")
        bar.advance(5)  # under a minute since the last line: quiet
        now[0] = 61.0
        bar.update(completed=5)  # a minute: a line; half an epoch in 61 s -> ~61 s to finish it + 3 x 122 s
        lines.append(out.getvalue().splitlines()[-1])
        for epoch, (t, train, val, best, stopped) in enumerate([(120.0, 0.4, 0.3, 0, False), (240.0, 0.3, 0.2, 1, False),
                                                               (360.0, 0.3, 0.25, 1, True)]):
            if epoch:
                bar.next_round(f"CAE epoch {epoch + 1}/4")
            now[0] = t
            bar.update(completed=10)
            lines.append(_epoch_line(epoch, 4, train, val, best, 120.0, stopped, bar.seconds_left()))
    assert lines[0].startswith("CAE epoch 1/4: 5/10 batches") and "~7 min 07 s left" in lines[0]
    assert lines[1] == "CAE epoch 1/4: train MSE 0.40000, val MSE 0.30000 (best: epoch 1), 120.0 s, ~6 min 00 s left"
    assert lines[2].endswith("~4 min 00 s left") and lines[3].endswith("stopping early")


def test_cae_training_in_a_log_writes_a_line_per_epoch(capsys):
    from rarespot.screen.config import AutoencoderConfig, ScreenTrainConfig
    from rarespot.screen.train import train_autoencoder

    x = np.random.default_rng(0).random((12, 1, 16, 16), dtype=np.float32)
    train_autoencoder(x[:8], x[8:], AutoencoderConfig(channels=(4, 8), latent_channels=2),
                      ScreenTrainConfig(epochs=2, batch_size=4, threads=1, patience=5))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "CAE epoch 1/2: 0/2 batches"
    assert re.fullmatch(r"CAE epoch 1/2: train MSE \d\.\d{5}, val MSE \d\.\d{5} \(best: epoch 1\), \d+\.\d s, ~\d+ s left", out[1])
    assert re.fullmatch(r"CAE epoch 2/2: train MSE .*, done", out[2])
    assert re.fullmatch(r"CAE epoch 2/2: 2/2 batches in \d+ s, .*, train MSE \d\.\d{5}, val MSE \d\.\d{5}", out[3])
    assert len(out) == 4


def test_patch_detector_without_the_wheels_says_how_to_install(tmp_path, workdir, monkeypatch):
    import rarespot.pretrained as pretrained

    def missing():
        raise pretrained.PretrainedWeightsMissing(f"EfficientNet-Lite0 ImageNet weights are not installed: {pretrained.INSTALL_HINT}")

    monkeypatch.setattr(pretrained, "weights_path", missing)
    monkeypatch.setattr(pretrained, "_ENCODER_CLASS", None)
    result = runner.invoke(app, ["screen", "fit", str(workdir / "cells.npz"), "--out", str(tmp_path / "pm"), "--detector", "patch"])
    assert result.exit_code == 2 and "rarespot[pretrained]" in result.output and "Traceback" not in result.output
