"""Training, resume, predict, evaluate and the `rarespot sounds` CLI on a tiny generated data set."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("librosa")

from rarespot.errors import InputError  # noqa: E402
from rarespot.sounds.features import FeatureConfig  # noqa: E402
from rarespot.sounds.torch_model import ModelConfig  # noqa: E402
from rarespot.sounds.train import SoundsTrainConfig, train  # noqa: E402
from helpers_sounds import RATE, make_recordings  # noqa: E402  (tests/ is on sys.path under pytest)

TINY_FEATURES = dict(sample_rate=RATE, cycle_seconds=1.0, n_bins=16, n_fft=256, hop_length=64, image_size=(16, 32))
TINY_MODEL = dict(patch_size=8, depth=1, embed_dim=32, num_heads=2, cnn_width=4)


def tiny_config(variant="conv_cbam_vit", **kw) -> SoundsTrainConfig:
    return SoundsTrainConfig(features=FeatureConfig(**TINY_FEATURES), model=ModelConfig(variant=variant, **TINY_MODEL),
                       epochs=kw.pop("epochs", 2), batch_size=8, threads=1, device="cpu", **kw)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    return make_recordings(tmp_path_factory.mktemp("icbhi") / "recordings")


@pytest.fixture(scope="module")
def trained(recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train(recordings, out, tiny_config(), split=None, cache_dir=out / "cache", progress=False, log=lambda m: None)
    return out, result


def test_train_writes_checkpoints_history_and_plots(trained):
    out, result = trained
    for name in ("best.pt", "last.pt", "history.json", "curves.png", "val_confusion.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    assert result.best_score == max(h["score"] for h in history)
    assert not list(out.glob(".*.tmp"))


def test_resume_from_last_checkpoint(recordings, trained, tmp_path):
    cfg = tiny_config(epochs=3)
    cache = trained[0] / "cache"  # features already extracted by the module's run
    run = tmp_path / "run"
    train(recordings, run, cfg, split=None, cache_dir=cache, progress=False, log=lambda m: None)
    first = json.loads((run / "history.json").read_text())
    # Pretend the run stopped after epoch 2: rewind last.pt's counters, then run again.
    state = torch.load(run / "last.pt", weights_only=False)
    state["epoch"], state["history"] = 1, state["history"][:2]
    torch.save(state, run / "last.pt")
    logs = []
    train(recordings, run, cfg, split=None, cache_dir=cache, progress=False, log=logs.append)
    assert any("resuming from" in m and "at epoch 3" in m for m in logs)
    second = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in second] == [1, 2, 3]
    assert second[:2] == first[:2]
    with pytest.raises(InputError, match=r"last.pt: was written by a run with another config"):
        train(recordings, run, tiny_config(epochs=4), split=None, cache_dir=cache, progress=False, log=lambda m: None)


def test_epoch_order_shuffle_is_a_permutation_and_balanced_evens_out_classes():
    from rarespot.sounds.train import epoch_order

    labels = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)
    gen = torch.Generator().manual_seed(0)
    assert sorted(epoch_order(labels, "shuffle", gen).tolist()) == list(range(100))
    drawn = torch.cat([labels[epoch_order(labels, "balanced", gen)] for _ in range(50)])
    share = torch.bincount(drawn, minlength=3).double() / len(drawn)
    torch.testing.assert_close(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03, rtol=0)


@pytest.mark.parametrize("select_by", ["loss", "last"])
def test_select_by_loss_or_last_epoch(recordings, trained, tmp_path, select_by):
    cfg = tiny_config("cnn", epochs=3, patience=1, select_by=select_by, mixup_alpha=0.4, sampler="balanced", loss="ce")
    result = train(recordings, tmp_path / "run", cfg, split=None, cache_dir=trained[0] / "cache", progress=False, log=lambda m: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    if select_by == "last":
        assert result.epochs_run == 3 and result.best_epoch == 3  # patience 1 never stops it
    else:
        best = int(np.argmin([h["val_loss"] for h in history]))
        assert result.best_epoch == best + 1
    assert result.best_score == history[result.best_epoch - 1]["score"]
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert saved["epoch"] == result.best_epoch - 1


@pytest.mark.parametrize("options", [dict(variant="conv_cbam_vit"),  # dropout and drop-path draw from torch's global RNG
                                     dict(variant="cnn", mixup_alpha=0.4, sampler="balanced", loss="ce")])
def test_resume_repeats_the_interrupted_epoch_exactly(recordings, trained, tmp_path, options):
    import shutil

    cfg = tiny_config(epochs=3, **options)
    cache, straight, resumed = trained[0] / "cache", tmp_path / "straight", tmp_path / "resumed"
    resumed.mkdir()

    def keep_epoch_2(message):  # log runs after the epoch's last.pt is written: keep the state an interruption would leave
        if message.startswith("epoch 2/3"):
            shutil.copy(straight / "last.pt", resumed / "last.pt")

    train(recordings, straight, cfg, split=None, cache_dir=cache, progress=False, log=keep_epoch_2)
    train(recordings, resumed, cfg, split=None, cache_dir=cache, progress=False, log=lambda m: None)
    a = json.loads((straight / "history.json").read_text())
    b = json.loads((resumed / "history.json").read_text())
    assert len(a) == len(b) == 3
    for key in ("loss", "val_loss", "score"):
        assert b[2][key] == pytest.approx(a[2][key], rel=1e-5), key


def test_loss_comes_from_the_imbalance_toolkit():
    from rarespot.imbalance.losses import ClassBalancedLoss
    from rarespot.imbalance.weights import class_balanced_weights
    from rarespot.sounds.train import make_loss

    counts = np.array([500, 100, 80, 20])
    crit = make_loss(tiny_config(loss="cb_ce", beta=0.99), counts)
    assert isinstance(crit, ClassBalancedLoss)
    np.testing.assert_allclose(crit.class_weights.numpy(), class_balanced_weights(counts, 0.99), rtol=1e-6)
    plain = make_loss(tiny_config(loss="ce"), counts)
    np.testing.assert_allclose(plain.class_weights.numpy(), 1.0)
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(plain(logits, target), torch.nn.functional.cross_entropy(logits, target))


def test_config_yaml_roundtrip_and_errors(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("epochs: 3\nloss: cb_focal\nfeatures: {sample_rate: 4000, image_size: [32, 64]}\nmodel: {variant: cnn}\n")
    cfg = SoundsTrainConfig.from_yaml(good)
    assert (cfg.epochs, cfg.loss, cfg.model.variant) == (3, "cb_focal", "cnn")
    assert tuple(cfg.model.image_size) == (32, 64)  # the model follows the feature size
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: hinge\n")
    with pytest.raises(InputError, match="bad.yaml: invalid training config"):
        SoundsTrainConfig.from_yaml(bad)


def test_predict_with_annotation_and_with_windows(trained, recordings, tmp_path):
    from rarespot.sounds.predict import SoundClassifier, predict_file

    out, _ = trained
    clf = SoundClassifier.load(out)  # the folder finds best.pt
    annotated = predict_file(clf, recordings / "101_1b1_Al_sc_Test.wav")
    assert len(annotated) == 8
    assert [p.true_label for p in annotated][:2] == ["normal", "crackle"]
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-3 for p in annotated)
    lone = tmp_path / "lone.flac"
    sf.write(lone, np.zeros(int(2.6 * RATE), np.float32) + 0.01 * np.random.default_rng(0).standard_normal(int(2.6 * RATE)).astype(np.float32), RATE)
    windows = predict_file(clf, lone)
    assert [(p.start, p.end) for p in windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.6)]
    assert all(p.true_label is None for p in windows)


def test_evaluate_writes_scores_predictions_and_png(trained, recordings, tmp_path):
    from rarespot.sounds.evaluate import evaluate

    out, _ = trained
    scores = evaluate(out / "best.pt", recordings, out_dir=tmp_path / "ev", cache_dir=out / "cache", progress=False)
    assert scores.confusion.sum() == 48
    saved = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert saved["score"] == scores.score and saved["confusion"] == scores.confusion.tolist()
    lines = (tmp_path / "ev" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 49 and lines[0].startswith("file,recording,cycle,start,end,true,predicted,p_normal")
    assert (tmp_path / "ev" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_load_bad_checkpoints(tmp_path):
    from rarespot.sounds.predict import SoundClassifier

    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(InputError, match="junk.pt: not a readable rarespot lung-sound model"):
        SoundClassifier.load(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: not a rarespot lung-sound model"):
        SoundClassifier.load(tmp_path / "other.pt")
    with pytest.raises(InputError, match="best.pt: model file not found"):
        SoundClassifier.load(tmp_path)


def run_cli(*args):
    """The real entry point in a subprocess: exit status and the one-line error as users see them."""
    return subprocess.run([sys.executable, "-m", "rarespot", "sounds", *args], capture_output=True, text=True, timeout=600)


def invoke(*args):
    """The typer app in-process (no interpreter start-up, so fast)."""
    from typer.testing import CliRunner

    from rarespot.cli import app

    return CliRunner().invoke(app, ["sounds", *args])


def test_cli_predict_and_evaluate(trained, recordings, tmp_path):
    out, _ = trained
    res = invoke("predict", str(out / "best.pt"), str(recordings / "102_1b1_Al_sc_Test.wav"), "--json", str(tmp_path / "p.json"),
                 "--timeline", str(tmp_path / "t.png"))
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "p.json").read_text())) == 8
    assert (tmp_path / "t.png").is_file()
    res = invoke("evaluate", str(out), str(recordings), "--out", str(tmp_path / "ev"), "--cache-dir", str(out / "cache"))
    assert res.exit_code == 0, res.output
    assert "Se " in res.output and "per-class recall" in res.output
    assert (tmp_path / "ev" / "confusion.png").is_file()


def test_cli_bad_input_is_one_line_naming_the_file(trained, tmp_path):
    out, _ = trained
    notaudio = tmp_path / "scan.wav"
    notaudio.write_text("hello")
    res = run_cli("predict", str(out / "best.pt"), str(notaudio))
    assert res.returncode == 2
    err = "".join(res.stderr.split())  # rich wraps long lines at the terminal width, even inside the path
    assert "scan.wav:notareadableaudiofile(Formatnotrecognised)" in err and "Traceback" not in err
    rec = tmp_path / "105_1b1_Al_sc_X.wav"
    sf.write(rec, np.zeros(RATE, np.float32) + 0.1, RATE)
    (tmp_path / "105_1b1_Al_sc_X.txt").write_text("0 1 0\n")
    res = invoke("predict", str(out / "best.pt"), str(rec), "--no-timeline")
    assert isinstance(res.exception, InputError)
    assert str(res.exception).endswith("105_1b1_Al_sc_X.txt: line 1: expected 4 fields 'start end crackle wheeze', found 3")


def test_cli_train_smoke(recordings, trained, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny_config(epochs=1).model_dump(mode="json")))  # JSON is YAML
    res = invoke("train", str(recordings), "--out", str(tmp_path / "run"), "--config", str(cfg), "--variant", "cnn",
                 "--split", "all", "--cache-dir", str(trained[0] / "cache"))
    assert res.exit_code == 0, res.output
    assert "best validation ICBHI score" in res.output
    assert (tmp_path / "run" / "best.pt").is_file()
    res = invoke("train", str(recordings), "--out", str(tmp_path / "run2"), "--variant", "transformer")
    assert res.exit_code == 2 and "model.variant: Input should be 'vit', 'conv_vit', 'conv_cbam_vit', 'cnn', 'pooled', 'effnet' or 'effnet_cbam_vit'" in " ".join(res.output.replace("│", " ").split())


@pytest.mark.slow
def test_cnn_learns_the_synthetic_classes(tmp_path):
    rec = make_recordings(tmp_path / "rec", n_patients=10, cycles_per=12, seed=1)
    cfg = tiny_config("cnn", epochs=15, lr=3e-3, patience=15)
    result = train(rec, tmp_path / "run", cfg, split=None, cache_dir=tmp_path / "cache", progress=False, log=lambda m: None)
    assert result.best_score > 0.75  # clicks and a tone are easy; chance is far lower
