"""From reconstructions and latents to anomaly scores and data-derived thresholds.

* **Reconstruction error** per image: a per-pixel error map (kept for plots),
  optionally restricted to the object (foreground, eroded so object edges,
  which every autoencoder blurs, do not dominate), then pooled as the mean
  squared error of the worst few percent of object pixels (default: a small
  dark stain is a local event; the seed's mean over the whole image drowns it),
  the seed's plain mean squared error, or the max of the Gaussian-smoothed map.
* **Latent density**: log density of the bottleneck vector under a Gaussian KDE
  fitted on the training latents (standardised, optionally PCA-whitened), with
  Scott/Silverman or cross-validated bandwidth. Fast path: above
  ``kde_max_points`` training latents the KDE is fitted on k-means centres
  weighted by cluster size, so scoring cost no longer grows with the training set.
* **Thresholds** are quantiles of scores of held-out *normal* images at a chosen
  false-alarm rate (FAR): one for the error, one for the density, one for the
  combined score, and a pair for the seed's OR rule that splits the FAR budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from rarespot.screen.config import ScoreConfig

# ---------------------------------------------------------------- reconstruction error
# numpy + OpenCV here rather than torch: per-image cv2 blur/erode on these small
# maps is ~9x cheaper in CPU time than batched torch convolutions (measured).


def error_map(x: np.ndarray, recon: np.ndarray, sign: str = "both", smooth_sigma: float | None = None) -> np.ndarray:
    """Per-pixel error (N, H, W) from (N, C, H, W) input and reconstruction, averaged over channels.

    ``both``: |x - recon|; ``darker``: only where the input is darker than its
    reconstruction (stains, dense objects); ``brighter``: the reverse.

    ``smooth_sigma``: first average the *signed* difference (over channels, then with a
    Gaussian of this sigma in pixels, OpenCV's default reflect-101 border), then apply the sign
    rule. A stain is a blob of several pixels while per-pixel reconstruction noise is not, and
    the small +/- pairs an autoencoder leaves along edges cancel: on the malaria validation split
    this lifted AUROC from 0.956 to 0.976 (docs/benchmarks/screen.md).
    """
    if smooth_sigma:
        diff = (recon - x).mean(axis=1).astype(np.float32)
        diff = np.stack([cv2.GaussianBlur(d, (0, 0), float(smooth_sigma)) for d in diff]) if len(diff) else diff
        if sign == "both":
            return np.abs(diff)
        if sign == "darker":
            return np.clip(diff, 0, None)
        if sign == "brighter":
            return np.clip(-diff, 0, None)
        raise ValueError(f"error sign must be both/darker/brighter, not {sign!r}")
    diff = recon - x  # > 0 where the input is darker than what the model expects
    if sign == "both":
        err = np.abs(diff)
    elif sign == "darker":
        err = np.clip(diff, 0, None)
    elif sign == "brighter":
        err = np.clip(-diff, 0, None)
    else:
        raise ValueError(f"error sign must be both/darker/brighter, not {sign!r}")
    return err.mean(axis=1)


def foreground_mask(x: np.ndarray, threshold: float | None, erode_px: int = 2) -> np.ndarray:
    """(N, H, W) float32 mask of object pixels: input brighter than ``threshold``, eroded by ``erode_px``."""
    n, _, h, w = x.shape
    if threshold is None:
        return np.ones((n, h, w), np.float32)
    mask = (x.mean(axis=1) > threshold).astype(np.uint8)
    if erode_px > 0:
        kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
        # Pixels outside the image count as object, so an object touching the border keeps its edge there.
        mask = np.stack([cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1) for m in mask])
    return mask.astype(np.float32)


def pool_error(err: np.ndarray, mask: np.ndarray, cfg: ScoreConfig) -> np.ndarray:
    """One reconstruction-error number per image from its error map (N, H, W)."""
    if cfg.error_pooling == "mean_squared":
        weight = np.maximum(mask.sum(axis=(1, 2)), 1)
        return (err**2 * mask).sum(axis=(1, 2)) / weight
    if cfg.error_pooling == "top_fraction":
        return top_fraction_mean_squared(err, mask, cfg.top_fraction)
    if cfg.error_pooling == "smoothed_max":
        smooth = np.stack([cv2.GaussianBlur(e, (0, 0), cfg.smooth_sigma, borderType=cv2.BORDER_REPLICATE) for e in err.astype(np.float32)])
        return (smooth * mask).reshape(len(err), -1).max(axis=1)
    raise ValueError(f"unknown error pooling {cfg.error_pooling!r}")


def top_fraction_mean_squared(err: np.ndarray, mask: np.ndarray, fraction: float) -> np.ndarray:
    """Mean squared error of the ``fraction`` largest errors among each image's mask pixels (at least one).

    A partial sort to the largest k needed, not a full sort: this runs on every scored image.
    """
    n = len(err)
    values = np.where(mask > 0, err, -1.0).reshape(n, -1).astype(np.float32)
    k = np.maximum(np.floor(mask.reshape(n, -1).sum(axis=1) * fraction).astype(np.int64), 1)
    k_max = int(min(k.max(), values.shape[1]))
    top = -np.partition(-values, k_max - 1, axis=1)[:, :k_max]
    top = -np.sort(-top, axis=1)
    squares = np.cumsum(np.square(np.clip(top, 0, None), dtype=np.float64), axis=1)
    return squares[np.arange(n), np.minimum(k, k_max) - 1] / k


# ---------------------------------------------------------------- latent density


class LatentDensity:
    """Gaussian KDE of latent vectors: standardise -> optional whitened PCA -> kernel density.

    ``score_samples`` returns the log density (higher = more normal), like sklearn.
    """

    def __init__(self, n_components: int | None = 16, bandwidth: float | str = "scott", max_points: int | None = 1024, random_state: int = 0):
        self.n_components = n_components
        self.bandwidth = bandwidth
        self.max_points = max_points
        self.random_state = random_state

    def _project(self, z: np.ndarray) -> np.ndarray:
        out = self.scaler_.transform(z)
        return self.pca_.transform(out) if self.pca_ is not None else out

    def fit(self, z: np.ndarray) -> "LatentDensity":
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        z = np.asarray(z, dtype=np.float64)
        if len(z) < 2:
            raise ValueError("need at least 2 latent vectors to fit a density")
        self.scaler_ = StandardScaler().fit(z)
        n_comp = None if self.n_components is None else min(self.n_components, z.shape[1], len(z) - 1)
        self.pca_ = PCA(n_comp, whiten=True, random_state=self.random_state).fit(self.scaler_.transform(z)) if n_comp else None
        proj = self._project(z)
        n, d = proj.shape
        self.bandwidth_ = self._choose_bandwidth(proj)
        weights = None
        points = proj
        if self.max_points is not None and n > self.max_points:
            # Fast path: k-means centres weighted by cluster size approximate the full KDE
            # (bandwidth still from the full n); cost per query drops from n to max_points.
            km = MiniBatchKMeans(self.max_points, random_state=self.random_state, n_init=1, batch_size=2048).fit(proj)
            points = km.cluster_centers_
            weights = np.bincount(km.labels_, minlength=self.max_points).astype(np.float64)
            keep = weights > 0
            points, weights = points[keep], weights[keep]
        # No sklearn KernelDensity object: score_samples computes the same Gaussian KDE by brute force.
        self.points_ = np.ascontiguousarray(points, dtype=np.float64)
        self.log_weights_ = np.log(weights / weights.sum()) if weights is not None else np.full(len(points), -np.log(len(points)))
        self.n_fit_points_ = len(points)
        self.n_train_ = n
        return self

    def _choose_bandwidth(self, proj: np.ndarray) -> float:
        n, d = proj.shape
        # The data are unit-variance per dimension here (standardised or whitened), so
        # Scott's and Silverman's factors are the bandwidth itself.
        if self.bandwidth == "scott":
            return float(n ** (-1.0 / (d + 4)))
        if self.bandwidth == "silverman":
            return float((n * (d + 2) / 4.0) ** (-1.0 / (d + 4)))
        if self.bandwidth == "cv":
            from sklearn.model_selection import GridSearchCV
            from sklearn.neighbors import KernelDensity

            rng = np.random.default_rng(self.random_state)
            sample = proj[rng.choice(n, min(n, 2000), replace=False)]
            scott = n ** (-1.0 / (d + 4))
            grid = GridSearchCV(KernelDensity(), {"bandwidth": scott * np.logspace(-1, 0.5, 10)}, cv=3).fit(sample)
            return float(grid.best_params_["bandwidth"])
        return float(self.bandwidth)

    def score_samples(self, z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Log density of each row of ``z`` (the numbers sklearn's ``KernelDensity`` gives for these points and weights).

        Computed by brute force (a distance matrix and a log-sum-exp) rather than sklearn's tree
        walk: with <= a few thousand fitted points in <= 32 dimensions that is ~25x faster (0.8 s vs
        0.03 s for 4,410 queries on 1,024 points), and scoring speed is a target of this module.
        """
        q = self._project(np.asarray(z, dtype=np.float64))
        if not hasattr(self, "points_"):  # a model saved before the brute-force path held a fitted sklearn KDE
            return self.kde_.score_samples(q)
        h2 = self.bandwidth_**2
        norm = -0.5 * q.shape[1] * np.log(2 * np.pi * h2)
        p_sq = np.einsum("ij,ij->i", self.points_, self.points_)
        out = np.empty(len(q))
        for i in range(0, len(q), chunk):
            block = q[i : i + chunk]
            d2 = np.maximum(np.einsum("ij,ij->i", block, block)[:, None] + p_sq[None, :] - 2.0 * block @ self.points_.T, 0.0)
            a = self.log_weights_[None, :] - d2 / (2.0 * h2)
            top = a.max(axis=1, keepdims=True)  # log-sum-exp by hand: 2.5x less CPU than scipy's here
            out[i : i + chunk] = np.log(np.exp(a - top).sum(axis=1)) + top[:, 0] + norm
        return out


# ---------------------------------------------------------------- thresholds


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, IQR-based sigma) of normal scores; the sigma never reaches 0."""
    q25, med, q75 = np.percentile(values, [25, 50, 75])
    return float(med), float(max((q75 - q25) / 1.349, 1e-12))


@dataclass
class Thresholds:
    """Everything learned from held-out normal images; saved with the model."""

    far: float
    error: float  # anomalous if reconstruction error > this
    neg_log_density: float  # anomalous if -log density > this
    combined: float  # anomalous if combined score > this
    error_center: float
    error_scale: float
    density_center: float
    density_scale: float
    or_error: float  # the seed's rule: error > or_error OR -log density > or_neg_log_density
    or_neg_log_density: float
    or_split_alpha: float  # FAR given to each half of the OR rule
    n_calibration: int

    def combined_score(self, error: np.ndarray, neg_log_density: np.ndarray) -> np.ndarray:
        """Mean of the two scores, each as a robust z-score on normal data (median / IQR)."""
        return 0.5 * ((error - self.error_center) / self.error_scale + (neg_log_density - self.density_center) / self.density_scale)

    def or_rule(self, error: np.ndarray, neg_log_density: np.ndarray) -> np.ndarray:
        """True = anomalous under the seed's two-threshold rule."""
        return (error > self.or_error) | (neg_log_density > self.or_neg_log_density)

    def to_dict(self) -> dict:
        return asdict(self)


def upper_threshold(normal_scores: np.ndarray, far: float) -> float:
    """Score above which a fraction ``far`` of normal images lie (higher score = more anomalous)."""
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), 1.0 - far))


def calibrate(error: np.ndarray, neg_log_density: np.ndarray, far: float) -> Thresholds:
    """Set all thresholds on scores of held-out normal images at false-alarm rate ``far``."""
    error = np.asarray(error, dtype=np.float64)
    nld = np.asarray(neg_log_density, dtype=np.float64)
    if len(error) == 0:
        raise ValueError("no normal images to calibrate thresholds on")
    e_c, e_s = _robust_scale(error)
    d_c, d_s = _robust_scale(nld)
    # OR rule: each half gets FAR alpha; the union flags between alpha and 2*alpha of
    # normals, so search alpha in [far/2, far] until the union's FAR on these normals is `far`.
    lo, hi = far / 2, far
    for _ in range(40):
        alpha = 0.5 * (lo + hi)
        union = np.mean((error > upper_threshold(error, alpha)) | (nld > upper_threshold(nld, alpha)))
        lo, hi = (alpha, hi) if union < far else (lo, alpha)
    alpha = lo
    thresholds = Thresholds(
        far=far, error=upper_threshold(error, far), neg_log_density=upper_threshold(nld, far), combined=0.0,
        error_center=e_c, error_scale=e_s, density_center=d_c, density_scale=d_s,
        or_error=upper_threshold(error, alpha), or_neg_log_density=upper_threshold(nld, alpha), or_split_alpha=alpha,
        n_calibration=len(error),
    )
    thresholds.combined = upper_threshold(thresholds.combined_score(error, nld), far)
    return thresholds
