"""The default lung-sound model (pooled statistics + logistic head), strict configs, the timeline PNG, bad cycles."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")
pytest.importorskip("librosa")

from rarespot.errors import InputError  # noqa: E402
from rarespot.io.audio import AudioQualityWarning  # noqa: E402
from rarespot.sounds.data import Cycle  # noqa: E402
from rarespot.sounds.features import FeatureConfig, extract_features  # noqa: E402
from rarespot.sounds.torch_model import ModelConfig  # noqa: E402
from rarespot.sounds.train import SoundsTrainConfig, train  # noqa: E402
from helpers_sounds import RATE, make_recordings  # noqa: E402  (tests/ is on sys.path under pytest)

FEATURES = dict(sample_rate=RATE, cycle_seconds=1.0, n_bins=32, n_fft=256, hop_length=64, image_size=(32, 64))


def pooled_config(pretrained: bool = False, **kw) -> SoundsTrainConfig:
    kw.setdefault("select", "fixed")  # the options as given (the default chooses them by inner CV: test_sounds_augment.py)
    return SoundsTrainConfig(features=FeatureConfig(**FEATURES), model=ModelConfig(variant="pooled", pretrained_embedding=pretrained),
                       threads=1, device="cpu", **kw)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    return make_recordings(tmp_path_factory.mktemp("icbhi") / "recordings", n_patients=8)


@pytest.fixture(scope="module")
def pooled_run(recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("pooled")
    result = train(recordings, out, pooled_config(normal_bias=0.0), split=None, cache_dir=out / "cache", progress=False, log=lambda m: None)
    return out, result


def test_default_config_is_the_pooled_model_at_4khz():
    cfg = SoundsTrainConfig()
    assert cfg.model.variant == "pooled" and cfg.model.pretrained_embedding and cfg.model.pooled_channels == ("mfcc",)
    assert (cfg.features.sample_rate, cfg.features.n_bins, cfg.features.n_fft, cfg.features.hop_length) == (4000, 64, 512, 128)
    assert cfg.features.image_size == (64, 128) and cfg.head_c == 0.01 and cfg.normal_bias == 0.5
    assert cfg.select == "inner_cv" and cfg.select_grid == "levers" and cfg.concat_augment == 0 and cfg.mix_augment == 0


@pytest.mark.parametrize("data, where", [
    ({"epochz": 3}, "epochz"),
    ({"features": {"sample_rte": 4000}}, "features.sample_rte"),
    ({"model": {"varient": "cnn"}}, "model.varient"),
])
def test_configs_refuse_unknown_keys(tmp_path, data, where):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SoundsTrainConfig.model_validate(data)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=rf"c\.yaml: invalid training config: {where}: unknown key$"):
        SoundsTrainConfig.from_yaml(path)


def test_pooled_head_is_sklearns_logistic_regression(pooled_run, recordings):
    """The torch model's probabilities are exactly those of the scikit-learn fit it was copied from."""
    from sklearn.linear_model import LogisticRegression

    from rarespot.sounds.data import load_cycles, patient_split
    from rarespot.sounds.features import normalise
    from rarespot.sounds.predict import SoundClassifier

    out, result = pooled_run
    assert result.epochs_run == 1 and (out / "best.pt").is_file() and (out / "val_confusion.png").is_file()
    json.loads((out / "history.json").read_text())  # strict JSON: no NaN
    clf = SoundClassifier.load(out / "best.pt", device="cpu")
    cfg = clf.config
    cycles = load_cycles(recordings)
    tr, va = patient_split(cycles, cfg.val_fraction, cfg.seed)
    x = extract_features(cycles, cfg.features, cache_dir=out / "cache", progress=False)
    y = np.array([c.label for c in cycles])
    z = clf.model.embed(torch.from_numpy(normalise(x, clf.norm))).numpy().astype(np.float64)
    assert z.shape[1] == 2 * 32  # mean and std over time of 32 MFCC coefficients
    mean, std = z[tr].mean(0), np.maximum(z[tr].std(0), 1e-6)
    ref = LogisticRegression(C=cfg.head_c, class_weight="balanced", max_iter=5000).fit((z[tr] - mean) / std, y[tr])
    np.testing.assert_allclose(clf.predict_features(x[va]), ref.predict_proba((z[va] - mean) / std), atol=2e-4)
    assert result.best_score > 0.75  # clicks and a tone are easy to tell apart


def test_normal_bias_shifts_only_the_normal_logit(pooled_run, recordings, tmp_path):
    from rarespot.sounds.predict import SoundClassifier

    out, _ = pooled_run
    biased = tmp_path / "biased"
    train(recordings, biased, pooled_config(normal_bias=1.5), split=None, cache_dir=out / "cache", progress=False, log=lambda m: None)
    a, b = SoundClassifier.load(out / "best.pt", device="cpu"), SoundClassifier.load(biased / "best.pt", device="cpu")
    torch.testing.assert_close(b.model.offset, torch.tensor([1.5, 0.0, 0.0, 0.0]))
    x = torch.randn(5, 3, 32, 64)
    torch.testing.assert_close(b.model(x) - a.model(x), torch.tensor([[1.5, 0.0, 0.0, 0.0]]).expand(5, 4), atol=1e-5, rtol=0)


def test_pooled_with_the_pretrained_embedding(recordings, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from rarespot.sounds.predict import SoundClassifier

    result = train(recordings, tmp_path / "run", pooled_config(pretrained=True), split=None, cache_dir=tmp_path / "cache",
                   progress=False, log=lambda m: None)
    clf = SoundClassifier.load(result.checkpoint, device="cpu")
    assert clf.model.dim == 2 * 32 + 2 * 320  # MFCC statistics + mean/max over time of EfficientNet-Lite0 stage 6
    assert not any(p.requires_grad for p in clf.model.encoder.parameters())
    assert result.best_score > 0.6


def test_timeline_png_annotated_and_windowed(pooled_run, recordings, tmp_path):
    from PIL import Image

    from rarespot.sounds.predict import plot_timeline, predict_file

    out, _ = pooled_run
    audio = sorted(recordings.glob("*.wav"))[0]
    rows = predict_file(out / "best.pt", audio)
    assert all(r.true_label is not None for r in rows)
    annotated = plot_timeline(audio, rows, tmp_path / "a.png")
    windowed_audio = tmp_path / "plain.wav"  # no annotation beside it: fixed windows, no annotated row
    windowed_audio.write_bytes(audio.read_bytes())
    rows2 = predict_file(out / "best.pt", windowed_audio, window=2.0)
    assert [(r.start, r.end) for r in rows2] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0)] and rows2[0].true_label is None
    plain = plot_timeline(windowed_audio, rows2, tmp_path / "w.png")
    ha, hw = Image.open(annotated).size[1], Image.open(plain).size[1]
    assert ha > hw  # the annotated row is drawn only when there are annotations


def test_timeline_failure_keeps_the_old_file(pooled_run, recordings, tmp_path):
    from rarespot.sounds.predict import CyclePrediction, plot_timeline

    target = tmp_path / "t.png"
    target.write_bytes(b"old")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(InputError, match="bad.wav"):
        plot_timeline(bad, [CyclePrediction(0.0, 1.0, "normal", {"normal": 1.0})], target)
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".t.*"))


def test_cli_predict_writes_the_timeline(pooled_run, recordings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rarespot.cli import app

    out, _ = pooled_run
    audio = sorted(recordings.glob("*.wav"))[1]
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["sounds", "predict", str(out / "best.pt"), str(audio)])
    assert res.exit_code == 0, res.output
    png = tmp_path / f"{audio.stem}_timeline.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(app, ["sounds", "predict", str(out / "best.pt"), str(audio), "--timeline", str(tmp_path / "x" / "t.png")])
    assert res.exit_code == 0 and (tmp_path / "x" / "t.png").is_file()


# --------------------------------------------------------------------------- bad cycles


def _clip(tmp_path, name, samples, rate=RATE):
    path = tmp_path / name
    sf.write(path, np.asarray(samples, np.float32), rate)
    return path


def test_cycle_shorter_than_a_window_warns_naming_file_and_cycle(tmp_path):
    rng = np.random.default_rng(0)
    path = _clip(tmp_path, "rec.wav", 0.1 * rng.standard_normal(2 * RATE))
    cycles = [Cycle(path, "rec", 0, 0, 0.0, 1.0), Cycle(path, "rec", 1, 0, 1.0, 1.02)]  # the second is 80 samples
    with pytest.warns(AudioQualityWarning, match=r"rec\.wav: cycle 1 \(1\.000-1\.020 s\) is 80 samples at 4000 Hz, shorter than one 256"):
        x = extract_features(cycles, FeatureConfig(**FEATURES), cache_dir=False, progress=False)
    assert np.isfinite(x).all()


def test_silent_cycle_in_a_loud_file_warns_once_for_that_cycle(tmp_path):
    rng = np.random.default_rng(0)
    audio = 0.1 * rng.standard_normal(2 * RATE)
    audio[RATE:] = 0.0
    path = _clip(tmp_path, "half.wav", audio)
    cycles = [Cycle(path, "half", 0, 0, 0.0, 1.0), Cycle(path, "half", 1, 0, 1.0, 2.0)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extract_features(cycles, FeatureConfig(**FEATURES), cache_dir=False, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, AudioQualityWarning)]
    assert messages == [f"{path}: cycle 1 (1.000-2.000 s) is silent (peak below 0.0001 of full scale); scored anyway"]


def test_cycle_with_no_samples_is_an_error_naming_the_file(tmp_path):
    path = _clip(tmp_path, "short.wav", np.zeros(RATE) + 0.1)
    with pytest.raises(InputError, match=r"short\.wav: cycle 3 \(5\.000-6\.000 s\) holds no audio samples"):
        extract_features([Cycle(path, "short", 3, 0, 5.0, 6.0)], FeatureConfig(**FEATURES), cache_dir=False, progress=False)


@pytest.mark.slow
@pytest.mark.realdata
def test_timeline_of_a_real_recording(icbhi_dir, pooled_run, tmp_path):
    """A whole official recording (44.1 kHz, annotated): every annotated cycle is predicted and drawn."""
    from rarespot.sounds.data import parse_annotation
    from rarespot.sounds.predict import plot_timeline, predict_file

    rec = icbhi_dir / "recordings" / "105_1b1_Tc_sc_Meditron.flac"
    if not rec.is_file():
        pytest.skip(f"{rec} not found")
    out, _ = pooled_run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resampling notice
        rows = predict_file(out / "best.pt", rec)
    assert len(rows) == len(parse_annotation(rec.with_suffix(".txt")))
    assert all(r.true_label is not None and abs(sum(r.probabilities.values()) - 1) < 1e-3 for r in rows)
    png = plot_timeline(rec, rows, tmp_path / "t.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
