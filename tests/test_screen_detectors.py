"""Detectors follow scikit-learn's outlier-detector contract; CAE save/load/resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from helpers_screen import TINY, make_cells

from rarespot.errors import InputError
from rarespot.screen.config import ScreenConfig
from rarespot.screen.detectors import MODEL_FORMAT_VERSION, CAEDetector, FeatureDetector


@pytest.fixture(scope="module")
def normals() -> np.ndarray:
    return make_cells(60, 0)


@pytest.fixture(scope="module")
def fitted(normals) -> CAEDetector:
    torch.set_num_threads(1)
    return CAEDetector(TINY, random_state=0).fit(normals)


# ---------------------------------------------------------------- classical baselines: sklearn's own checks


@parametrize_with_checks([FeatureDetector(kind, n_components=2, random_state=0) for kind in ("gmm", "kde", "pca_recon")]
                         + [FeatureDetector("iforest", n_components=2, estimator_params={"n_estimators": 20}, random_state=0)]
                         + [FeatureDetector("ocsvm", n_components=None)])
def test_feature_detectors_pass_sklearn_checks(estimator, check):
    check(estimator)


def test_feature_detector_calibrate_sets_far_on_heldout():
    rng = np.random.default_rng(0)
    train, held = rng.normal(size=(400, 5)), rng.normal(size=(1000, 5))
    det = FeatureDetector("gmm", n_components=None, far=0.1, random_state=0).fit(train)
    det.calibrate(held)
    assert np.mean(det.predict(held) == -1) == pytest.approx(0.1, abs=0.002)
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureDetector("svm").fit(train)
    with pytest.raises(ValueError, match="needs n_components"):
        FeatureDetector("pca_recon", n_components=None).fit(train)


def test_feature_detector_pca_recon_finds_off_subspace_points():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 10))
    train = rng.normal(size=(300, 2)) @ basis
    det = FeatureDetector("pca_recon", n_components=2).fit(train)
    on = rng.normal(size=(5, 2)) @ basis
    off = on + rng.normal(size=(5, 10))
    assert np.allclose(det.score_samples(on), 0.0, atol=1e-10)
    assert (det.predict(off) == -1).all()


# ---------------------------------------------------------------- CAE detector: the key checks by hand


def test_cae_init_does_no_work_and_params_round_trip():
    det = CAEDetector(TINY, random_state=3)
    assert det.get_params() == {"config": TINY, "random_state": 3, "checkpoint": None, "progress": False}
    assert not hasattr(det, "model_")
    det.set_params(random_state=5)
    assert det.random_state == 5
    twin = clone(det)
    assert twin is not det and twin.get_params()["random_state"] == 5 and twin.config == TINY


def test_cae_not_fitted_error(normals):
    with pytest.raises(NotFittedError):
        CAEDetector(TINY).score_samples(normals)
    with pytest.raises(NotFittedError):
        CAEDetector(TINY).save("x.pt")


def test_cae_fit_returns_self_and_contract(fitted, normals):
    det = fitted
    assert det.n_features_in_ == 20 * 20
    assert det.n_train_ == 48 and det.thresholds_.n_calibration == 12
    s = det.score_samples(normals)
    assert s.shape == (60,) and np.isfinite(s).all()
    assert np.allclose(det.decision_function(normals), s - det.offset_)
    pred = det.predict(normals)
    assert set(np.unique(pred)) <= {-1, 1}
    assert np.array_equal(pred == -1, det.decision_function(normals) < 0)
    # offset_ is the stored threshold of the chosen score (the error, by default), not a literal.
    assert det.config_.score.combine == "error" and det.offset_ == -det.thresholds_.error
    assert det.transform(normals[:3]).shape == (3, 2 * 4 * 4)


def test_cae_finds_spots_better_than_chance(fitted):
    from sklearn.metrics import roc_auc_score

    test = np.concatenate([make_cells(40, 1), make_cells(40, 2, spots=True)])
    y = np.r_[np.zeros(40), np.ones(40)]
    scores = fitted.analyze(test)
    # An 8-epoch CAE on 48 discs already tells discs with a dark blob apart.
    assert roc_auc_score(y, scores.error) > 0.85
    assert roc_auc_score(y, scores.combined) > 0.85


def test_cae_deterministic_with_random_state(normals, fitted):
    again = CAEDetector(TINY, random_state=0).fit(normals)
    assert np.array_equal(again.score_samples(normals), fitted.score_samples(normals))
    other = CAEDetector(TINY, random_state=1).fit(normals)
    assert not np.array_equal(other.score_samples(normals), fitted.score_samples(normals))


def test_cae_accepts_flat_rows_and_checks_feature_count():
    flat = make_cells(30, 4, size=16).reshape(30, -1)
    det = CAEDetector(TINY, random_state=0).fit(flat)
    assert det.n_features_in_ == 256
    assert det.predict(flat).shape == (30,)
    with pytest.raises(ValueError, match="features"):
        det.score_samples(flat[:, :100])
    with pytest.raises(ValueError, match="1D"):
        det.score_samples(flat[0])


def test_cae_too_few_images():
    with pytest.raises(ValueError, match="at least 3 normal images"):
        CAEDetector(TINY).fit(make_cells(2, 0))
    with pytest.raises(ValueError, match="no images"):
        CAEDetector(TINY).fit([])


def test_cae_refit_scores_changes_scoring_without_retraining(normals):
    det = CAEDetector(TINY, random_state=0).fit(normals)
    weights = {k: v.clone() for k, v in det.model_.state_dict().items()}
    before = det.thresholds_.error
    det.refit_scores(normals, score={"error_pooling": "mean_squared", "foreground_threshold": None, "combine": "error"}, far=0.2)
    assert all(torch.equal(weights[k], v) for k, v in det.model_.state_dict().items())
    assert det.thresholds_.error != before and det.thresholds_.far == 0.2
    assert det.offset_ == -det.thresholds_.error


def test_cae_save_load_round_trip(fitted, normals, tmp_path):
    path = fitted.save(tmp_path / "m")
    assert path.name == "model.pt"
    loaded = CAEDetector.load(tmp_path / "m")
    assert np.array_equal(loaded.score_samples(normals), fitted.score_samples(normals))
    assert loaded.thresholds_ == fitted.thresholds_
    assert loaded.config_ == fitted.config_


def test_cae_load_other_version_or_bad_file_names_it(fitted, tmp_path):
    path = fitted.save(tmp_path / "old.pt")
    state = torch.load(path, weights_only=False)
    state["format_version"] = MODEL_FORMAT_VERSION + 1
    torch.save(state, path)
    with pytest.raises(InputError, match=r"old\.pt.*format version 2.*re-fit"):
        CAEDetector.load(path)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"junk\.pt.*not a readable"):
        CAEDetector.load(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other\.pt.*not a rarespot screen model"):
        CAEDetector.load(tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"nope.*not found"):
        CAEDetector.load(tmp_path / "nope")


def test_training_resumes_from_checkpoint(normals, tmp_path):
    from rarespot.screen.train import train_autoencoder

    cfg = ScreenConfig.model_validate(TINY)
    x = np.random.default_rng(0).random((40, 1, 16, 16), dtype=np.float32)
    ckpt = tmp_path / "ckpt.pt"
    full, h_full = train_autoencoder(x[:30], x[30:], cfg.model, cfg.train.model_copy(update={"epochs": 3, "patience": 10}), progress=False)
    # Interrupted after 2 epochs, then resumed to 3: same weights as the uninterrupted run.
    train_autoencoder(x[:30], x[30:], cfg.model, cfg.train.model_copy(update={"epochs": 2, "patience": 10}), checkpoint=ckpt, progress=False)
    resumed, h_res = train_autoencoder(x[:30], x[30:], cfg.model, cfg.train.model_copy(update={"epochs": 3, "patience": 10}), checkpoint=ckpt, progress=False)
    assert h_res.resumed_from_epoch == 2 and len(h_res.val_loss) == 3
    assert h_res.val_loss == pytest.approx(h_full.val_loss, rel=1e-5)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6)


def test_early_stopping_stops(tmp_path):
    from rarespot.screen.train import train_autoencoder

    cfg = ScreenConfig.model_validate(TINY)
    x = np.random.default_rng(0).random((20, 1, 16, 16), dtype=np.float32)
    # lr so large the validation loss cannot keep improving: stops after `patience` bad epochs.
    _, h = train_autoencoder(x[:15], x[15:], cfg.model, cfg.train.model_copy(update={"epochs": 30, "patience": 1, "lr": 5.0}), progress=False)
    assert h.stopped_early and len(h.val_loss) < 30
    assert h.best_epoch == int(np.argmin(h.val_loss))


# ---------------------------------------------------------------- pretrained patch features: the same contract by hand

PATCH_TINY = {"detector": "patch", "patch": {"size": 32, "coreset_size": 200}, "train": {"threads": 1}}


@pytest.fixture(scope="module")
def patch_fitted(normals):
    pytest.importorskip("efficientnet_lite_pytorch", reason="rarespot[pretrained] not installed")
    from rarespot.screen.patch import PatchDetector

    torch.set_num_threads(1)
    return PatchDetector(PATCH_TINY, random_state=0).fit(normals)


def test_patch_init_does_no_work_and_params_round_trip():
    from rarespot.screen.patch import PatchDetector

    det = PatchDetector(PATCH_TINY, random_state=3)
    assert det.get_params() == {"config": PATCH_TINY, "random_state": 3}
    assert not hasattr(det, "offset_")
    twin = clone(det.set_params(random_state=5))
    assert twin is not det and twin.random_state == 5 and twin.config == PATCH_TINY
    with pytest.raises(NotFittedError):
        PatchDetector(PATCH_TINY).score_samples(make_cells(3, 0))


def test_patch_fit_returns_self_and_contract(patch_fitted, normals):
    det = patch_fitted
    assert det.n_features_in_ == 20 * 20 and det.n_train_ == 48 and det.n_calibration_ == 12
    s = det.score_samples(normals)
    assert s.shape == (60,) and np.isfinite(s).all()
    assert np.allclose(det.decision_function(normals), s - det.offset_)
    pred = det.predict(normals)
    assert set(np.unique(pred)) <= {-1, 1} and np.array_equal(pred == -1, det.decision_function(normals) < 0)
    # The threshold is the (1 - far) quantile of the held-out normals' scores, not a literal.
    assert det.threshold_ == pytest.approx(np.quantile(det.calibration_scores_, 0.95)) and det.offset_ == -det.threshold_
    flat = normals[:4].reshape(4, -1)  # rows of 400 pixels: the feature count it was fitted with, but not the model size
    with pytest.raises(ValueError, match="features"):
        det.score_samples(flat)
    with pytest.raises(ValueError, match="1D"):
        det.score_samples(flat[0])


@pytest.mark.parametrize("method", ["gaussian", "padim", "patchcore"])
def test_patch_methods_find_spots(normals, method):
    pytest.importorskip("efficientnet_lite_pytorch", reason="rarespot[pretrained] not installed")
    from sklearn.metrics import roc_auc_score

    from rarespot.screen.patch import PatchDetector

    torch.set_num_threads(1)
    cfg = {**PATCH_TINY, "patch": {**PATCH_TINY["patch"], "method": method}}
    det = PatchDetector(cfg, random_state=0).fit(normals)
    test = np.concatenate([make_cells(30, 1), make_cells(30, 2, spots=True)])
    s = det.analyze(test, keep_maps=True)
    assert roc_auc_score(np.r_[np.zeros(30), np.ones(30)], s.patch) > 0.9
    # The anomaly map lights up where the dark blob is (the middle of the cell) on spotted cells only.
    assert s.error_maps.shape == (60, 32, 32)
    centre = s.error_maps[:, 12:21, 12:21].mean(axis=(1, 2))
    assert np.median(centre[30:]) > 1.5 * np.median(centre[:30])


def test_greedy_coreset_spreads_out():
    from rarespot.screen.patch import greedy_coreset

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.01, (500, 2)), [[5.0, 5.0]], [[-5.0, 5.0]]])
    idx = greedy_coreset(pts, 3, seed=0)
    assert {500, 501} <= set(idx.tolist())  # both far points are chosen, however rare
    assert len(greedy_coreset(pts, 1000)) == len(pts)


def test_patch_save_load_round_trip_and_load_detector(patch_fitted, fitted, normals, tmp_path):
    from rarespot.screen.detectors import load_detector
    from rarespot.screen.patch import PatchDetector

    path = patch_fitted.save(tmp_path / "p")
    loaded = load_detector(tmp_path / "p")
    assert isinstance(loaded, PatchDetector)
    assert np.array_equal(loaded.score_samples(normals), patch_fitted.score_samples(normals))
    assert loaded.threshold_ == patch_fitted.threshold_ and loaded.config_ == patch_fitted.config_
    assert isinstance(load_detector(fitted.save(tmp_path / "c")), CAEDetector)
    state = torch.load(path, weights_only=False)
    state["format_version"] = 99
    torch.save(state, path)
    with pytest.raises(InputError, match=r"model\.pt.*version 99"):
        load_detector(path)


def test_cae_onnxruntime_and_torch_backends_agree(fitted, normals):
    pytest.importorskip("onnxruntime")
    ort_scores = fitted.analyze(normals)
    assert fitted.backend_ == "onnxruntime"  # the default back-end when onnxruntime is installed
    twin = clone(fitted)
    twin.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_") and not k.startswith("_")})
    twin.config_ = fitted.config_.model_copy(update={"backend": "torch"})
    torch_scores = twin.analyze(normals)
    assert twin.backend_ == "torch"
    np.testing.assert_allclose(ort_scores.error, torch_scores.error, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(ort_scores.neg_log_density, torch_scores.neg_log_density, rtol=1e-3, atol=1e-3)


def test_cae_parallel_batches_give_the_same_scores(fitted):
    images = make_cells(70, 11)
    one = fitted.analyze(images, batch_size=16)
    twin = clone(fitted)
    twin.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_") and not k.startswith("_")})
    twin.config_ = fitted.config_.model_copy(deep=True)
    twin.config_.train.threads = 2  # 5 batches of 16 over 2 threads, each batch end to end
    two = twin.analyze(images, batch_size=16)
    np.testing.assert_allclose(two.error, one.error, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(two.neg_log_density, one.neg_log_density, rtol=1e-6, atol=1e-6)
    # score_samples with the default combine ("error") skips the KDE and gives the same numbers.
    assert np.array_equal(fitted.score_samples(images), -fitted.analyze(images).error)


def test_both_image_detectors_share_config_input_and_threshold_rules(patch_fitted, fitted, normals):
    """One home (screen/detectors.py: resolve_config, prepare_input; scores.upper_threshold) for what
    the autoencoder and the patch detector each wrote: the same values as before."""
    from rarespot.screen.config import ScreenConfig
    from rarespot.screen.patch import PatchDetector

    assert CAEDetector()._config() == ScreenConfig()
    assert PatchDetector()._config() == ScreenConfig(detector="patch")
    seeded = PatchDetector(PATCH_TINY, random_state=7)._config()
    assert seeded.train.seed == 7 and seeded == ScreenConfig.model_validate({**PATCH_TINY, "train": {"threads": 1, "seed": 7}})
    assert patch_fitted.threshold_ == float(np.quantile(patch_fitted.calibration_scores_, 1.0 - patch_fitted.config_.far))
    for det in (fitted, patch_fitted):
        with pytest.raises(ValueError, match="no images given"):
            det._prepare(normals[:0], det.config_, reset=False)
