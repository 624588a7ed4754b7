"""rarespot.screen.scores and rarespot.metrics.anomaly: exact values where possible."""

from __future__ import annotations

import numpy as np
import pytest

from rarespot.metrics.anomaly import anomaly_metrics, flagged_metrics
from rarespot.screen.config import ScoreConfig
from rarespot.screen.scores import LatentDensity, calibrate, error_map, foreground_mask, pool_error, upper_threshold


def test_error_map_signs():
    x = np.array([[[[0.2, 0.8]]]])
    recon = np.array([[[[0.5, 0.5]]]])
    assert error_map(x, recon, "both").ravel() == pytest.approx([0.3, 0.3])
    assert error_map(x, recon, "darker").ravel() == pytest.approx([0.3, 0.0])  # pixel 0 is darker than expected
    assert error_map(x, recon, "brighter").ravel() == pytest.approx([0.0, 0.3])
    with pytest.raises(ValueError, match="sign"):
        error_map(x, recon, "up")


def test_foreground_mask_threshold_and_erosion():
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 1:8, 1:8] = 0.5  # a 7x7 object on black
    assert foreground_mask(x, 0.1, erode_px=0).sum() == 49
    assert foreground_mask(x, 0.1, erode_px=2).sum() == 9  # 7 - 2*2 = 3 -> 3x3
    assert foreground_mask(x, None).sum() == 81


def test_pool_error_mean_squared_and_smoothed_max():
    err = np.zeros((2, 15, 15), np.float32)
    err[0, 7, 7] = 1.0
    mask = np.ones((2, 15, 15), np.float32)
    mse = pool_error(err, mask, ScoreConfig(error_pooling="mean_squared"))
    assert mse == pytest.approx([1 / 225, 0.0])
    sm = pool_error(err, mask, ScoreConfig(error_pooling="smoothed_max", smooth_sigma=1.0))
    # Peak of a normalised separable Gaussian, sigma 1 (OpenCV: radius 4) = (1 / sum(exp(-t^2/2)))^2.
    t = np.arange(-4, 5)
    assert sm[0] == pytest.approx((1 / np.exp(-0.5 * t**2).sum()) ** 2, rel=1e-5)
    assert sm[1] == 0.0
    # A mask excluding the spot silences it.
    mask[0, 5:10, 5:10] = 0
    assert pool_error(err, mask, ScoreConfig(error_pooling="mean_squared"))[0] == 0.0


def test_pool_error_top_fraction_by_hand():
    err = np.zeros((3, 10, 10), np.float32)
    err[0].flat[:4] = [4.0, 3.0, 2.0, 1.0]  # 100 mask pixels x 5% -> the top 5: 4, 3, 2, 1, 0
    err[1].flat[:2] = [1.0, 1.0]
    mask = np.ones((3, 10, 10), np.float32)
    mask[1] = 0
    mask[1].flat[:10] = 1  # 10 mask pixels x 5% -> floor 0.5 -> at least 1 pixel: the largest
    mask[2] = 0  # no mask at all: nothing to pool
    got = pool_error(err, mask, ScoreConfig(error_pooling="top_fraction", top_fraction=0.05))
    assert got == pytest.approx([(16 + 9 + 4 + 1 + 0) / 5, 1.0, 0.0])
    # The whole mask = the plain mean squared error inside it.
    full = pool_error(err, mask, ScoreConfig(error_pooling="top_fraction", top_fraction=1.0))
    assert full[:2] == pytest.approx(pool_error(err, mask, ScoreConfig(error_pooling="mean_squared"))[:2])
    # Errors outside the mask never count, however large.
    err[0, 9, 9] = 100.0
    mask[0, 9, 9] = 0
    # (99 mask pixels now: floor(4.95) = the top 4.)
    assert pool_error(err, mask, ScoreConfig(error_pooling="top_fraction", top_fraction=0.05))[0] == pytest.approx(30 / 4)


def test_upper_threshold_and_calibrate_rates():
    rng = np.random.default_rng(0)
    err, nld = rng.normal(size=2000), rng.normal(size=2000)
    assert upper_threshold(np.arange(101.0), 0.1) == pytest.approx(90.0)
    t = calibrate(err, nld, far=0.1)
    assert np.mean(err > t.error) == pytest.approx(0.1, abs=0.001)
    assert np.mean(nld > t.neg_log_density) == pytest.approx(0.1, abs=0.001)
    assert np.mean(t.combined_score(err, nld) > t.combined) == pytest.approx(0.1, abs=0.001)
    # The OR rule's union flags `far` of the calibration normals, each half between far/2 and far.
    assert np.mean(t.or_rule(err, nld)) == pytest.approx(0.1, abs=0.002)
    assert 0.05 <= t.or_split_alpha <= 0.1
    # Independent scores: the union of two alpha-rules flags ~ 2*alpha - alpha^2.
    assert t.or_split_alpha == pytest.approx(1 - np.sqrt(0.9), abs=0.005)
    assert t.n_calibration == 2000
    with pytest.raises(ValueError, match="no normal images"):
        calibrate(np.array([]), np.array([]), 0.1)


def test_combined_score_is_mean_of_robust_z():
    err = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    t = calibrate(err, err * 10, far=0.2)
    assert t.error_center == 2.0 and t.density_center == 20.0
    assert t.error_scale == pytest.approx(2.0 / 1.349)
    assert t.combined_score(np.array([2.0]), np.array([20.0]))[0] == pytest.approx(0.0)


def test_latent_density_bandwidth_rules_and_gaussian_logdensity():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 2))
    dens = LatentDensity(n_components=None, bandwidth="scott", max_points=None).fit(z)
    assert dens.bandwidth_ == pytest.approx(3000 ** (-1 / 6))
    sil = LatentDensity(n_components=None, bandwidth="silverman", max_points=None).fit(z)
    assert sil.bandwidth_ == pytest.approx((3000 * 4 / 4) ** (-1 / 6))
    # Exact: mean of Gaussian kernels N(z_i, h^2 I) in the standardised space, by hand.
    h = dens.bandwidth_
    zs = (z - z.mean(0)) / z.std(0)
    q = np.array([[0.3, -0.2]])
    qs = (q - z.mean(0)) / z.std(0)
    d2 = ((zs - qs) ** 2).sum(1)
    by_hand = np.log(np.mean(np.exp(-0.5 * d2 / h**2))) - np.log(2 * np.pi * h**2)
    assert dens.score_samples(q)[0] == pytest.approx(by_hand, rel=1e-6)
    assert dens.score_samples(np.array([[4.0, 4.0]]))[0] < dens.score_samples(np.zeros((1, 2)))[0] - 10


def test_latent_density_fast_path_tracks_exact():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(size=(2500, 6)), rng.normal(3, 0.5, size=(500, 6))])
    query = rng.normal(1, 2, size=(400, 6))
    exact = LatentDensity(n_components=4, max_points=None).fit(z)
    fast = LatentDensity(n_components=4, max_points=256).fit(z)
    assert fast.n_fit_points_ <= 256 and exact.n_fit_points_ == 3000
    assert fast.bandwidth_ == exact.bandwidth_  # bandwidth from the full n, not the centres
    assert spearmanr(exact.score_samples(query), fast.score_samples(query))[0] > 0.97


def test_latent_density_brute_force_equals_sklearn_kde_weighted_and_far_away():
    """The hand-written log-sum-exp path gives sklearn KernelDensity's numbers, k-means weights
    included, across chunk boundaries, and stays finite far from every point (no exp underflow)."""
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(size=(1500, 5)), rng.normal(4, 0.3, size=(300, 5))])
    dens = LatentDensity(n_components=3, max_points=64).fit(z)  # weighted centres
    query = np.concatenate([rng.normal(1, 2, size=(250, 5)), np.full((1, 5), 40.0)])
    ours = dens.score_samples(query, chunk=100)
    from sklearn.neighbors import KernelDensity

    sklearn_kde = KernelDensity(bandwidth=dens.bandwidth_).fit(dens.points_, sample_weight=np.exp(dens.log_weights_))
    ref = sklearn_kde.score_samples(dens._project(query))
    np.testing.assert_allclose(ours[:-1], ref[:-1], rtol=1e-9, atol=1e-9)
    assert np.isfinite(ours[-1]) and ours[-1] < ours[:-1].min()


def test_latent_density_cv_bandwidth_is_from_grid():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 3))
    dens = LatentDensity(n_components=None, bandwidth="cv", max_points=None).fit(z)
    scott = 300 ** (-1 / 7)
    grid = scott * np.logspace(-1, 0.5, 10)
    assert np.isclose(grid, dens.bandwidth_).any()


def test_anomaly_metrics_exact():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.9])
    m = anomaly_metrics(y, s, threshold=0.4)
    # ranks: anomalies 0.5, 0.9 vs normals 0.1 0.2 0.6 -> 5 of 6 pairs ordered
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), 1.0)
    assert m["f1"] == pytest.approx(0.8) and m["false_alarm_rate"] == pytest.approx(1 / 3)
    assert m["n_flagged"] == 3 and m["n_normal"] == 3 and m["n_anomaly"] == 2
    one_class = anomaly_metrics(np.zeros(3), np.arange(3.0))
    assert np.isnan(one_class["auroc"])
    with pytest.raises(ValueError, match="shape"):
        anomaly_metrics(y, s[:3])
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        anomaly_metrics(np.array([0, 2]), np.array([0.0, 1.0]))
    assert flagged_metrics(y, np.zeros(5, bool))["f1"] == 0.0
