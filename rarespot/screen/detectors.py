"""Anomaly detectors with scikit-learn's outlier-detector contract.

All of them: ``fit(X)`` on normal data only, ``score_samples`` (higher = more
normal, as in sklearn), ``decision_function`` (= score_samples - offset_,
negative = anomalous), ``predict`` (+1 normal, -1 anomaly), get/set_params,
clone-able, no work in ``__init__``. ``offset_`` comes from a quantile of
normal scores at the false-alarm rate ``far``, never a literal.

* :class:`CAEDetector` -- convolutional autoencoder + latent KDE (the seed's
  Project 2), with data-derived thresholds for the error, the density, their
  combination and the seed's two-threshold OR rule. Saved/loaded as one file.
* :class:`FeatureDetector` -- classical baselines on any feature rows (raw or
  PCA pixels, or CAE latents): Gaussian mixture, One-Class SVM, Isolation
  Forest, KDE, and PCA reconstruction error.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from rarespot.errors import InputError
from rarespot.io.checkpoint import load_tagged_checkpoint

MODEL_FORMAT = "rarespot.screen.CAEDetector"
MODEL_FORMAT_VERSION = 1
MODEL_FILE = "model.pt"


# ---------------------------------------------------------------- classical baselines

FEATURE_KINDS = ("gmm", "ocsvm", "iforest", "kde", "pca_recon")


class FeatureDetector(OutlierMixin, BaseEstimator):
    """A classical detector on feature rows, optionally after PCA.

    Parameters
    ----------
    kind : "gmm" | "ocsvm" | "iforest" | "kde" | "pca_recon"
        ``pca_recon`` scores by the PCA reconstruction error (needs n_components).
    n_components : int or None
        PCA first (fitted on the normal training rows); None = use features as given.
        Clipped to what the data allow.
    far : float
        False-alarm rate that sets ``offset_`` on the training scores; call
        :meth:`calibrate` with held-out normal rows for an unbiased threshold.
    estimator_params : dict or None
        Passed to the sklearn estimator (GaussianMixture, OneClassSVM,
        IsolationForest, KernelDensity).
    """

    def __init__(self, kind: str = "gmm", n_components: int | None = 64, far: float = 0.05,
                 estimator_params: dict | None = None, random_state: int | None = None):
        self.kind = kind
        self.n_components = n_components
        self.far = far
        self.estimator_params = estimator_params
        self.random_state = random_state

    def _make_estimator(self):
        from sklearn.ensemble import IsolationForest
        from sklearn.mixture import GaussianMixture
        from sklearn.neighbors import KernelDensity
        from sklearn.svm import OneClassSVM

        params = dict(self.estimator_params or {})
        if self.kind == "gmm":
            params.setdefault("n_components", 4)
            params.setdefault("covariance_type", "full")
            params.setdefault("reg_covar", 1e-4)
            return GaussianMixture(random_state=self.random_state, **params)
        if self.kind == "ocsvm":
            params.setdefault("nu", 0.1)
            return OneClassSVM(**params)
        if self.kind == "iforest":
            params.setdefault("n_estimators", 200)
            return IsolationForest(random_state=self.random_state, **params)
        if self.kind == "kde":
            params.setdefault("bandwidth", "scott")
            return KernelDensity(**params)
        if self.kind == "pca_recon":
            return None
        raise ValueError(f"kind must be one of {FEATURE_KINDS}, not {self.kind!r}")

    def fit(self, X, y=None):
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        X = validate_data(self, _flatten(X), dtype=np.float64)
        if not 0 < self.far < 1:
            raise ValueError(f"far must be in (0, 1), got {self.far}")
        estimator = self._make_estimator()
        n_comp = self.n_components
        if self.kind == "pca_recon" and n_comp is None:
            raise ValueError("pca_recon needs n_components")
        if n_comp is not None:
            n_comp = max(1, min(n_comp, X.shape[1], X.shape[0]))
            self.pca_ = PCA(n_comp, random_state=self.random_state).fit(X)
            feats = self.pca_.transform(X)
        else:
            self.pca_ = None
            feats = X
        # Per-dimension scale matters to RBF kernels, KDE bandwidths and GMM regularisation.
        self.scaler_ = StandardScaler().fit(feats)
        if estimator is not None:
            estimator.fit(self.scaler_.transform(feats))
        self.estimator_ = estimator
        self.offset_ = 0.0
        self.offset_ = float(np.quantile(self.score_samples(X), self.far))
        return self

    def score_samples(self, X):
        check_is_fitted(self, "offset_")
        X = validate_data(self, _flatten(X), dtype=np.float64, reset=False)
        if self.kind == "pca_recon":
            recon = self.pca_.inverse_transform(self.pca_.transform(X))
            return -np.mean((X - recon) ** 2, axis=1)
        feats = self.pca_.transform(X) if self.pca_ is not None else X
        return np.asarray(self.estimator_.score_samples(self.scaler_.transform(feats)), dtype=np.float64)

    def decision_function(self, X):
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)

    def calibrate(self, X_normal, far: float | None = None) -> "FeatureDetector":
        """Re-set ``offset_`` on held-out normal rows at false-alarm rate ``far`` (default: self.far)."""
        self.offset_ = float(np.quantile(self.score_samples(X_normal), self.far if far is None else far))
        return self


def load_detector(path: str | Path):
    """A saved screening detector of either kind (CAEDetector or PatchDetector), by the format in its file."""
    from rarespot.screen.patch import PATCH_MODEL_FORMAT, PatchDetector

    path = Path(path)
    resolved = path / MODEL_FILE if path.is_dir() else path
    if resolved.is_file():
        import torch

        try:
            fmt = torch.load(resolved, map_location="cpu", weights_only=False).get("format")
        except Exception:
            fmt = None  # CAEDetector.load names the file and the problem
        if fmt == PATCH_MODEL_FORMAT:
            return PatchDetector.load(resolved)
    return CAEDetector.load(path)


def _onnx_runner(model, size: int, threads: int, required: bool):
    """Run ``model`` (input (N, C, size, size) -> (recon, latent)) on onnxruntime; None if it cannot be had
    and not ``required``. The export happens in memory (nothing written)."""
    import io
    import warnings

    try:
        import onnxruntime as ort
        import torch
    except ImportError:
        if required:
            raise ImportError("backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime") from None
        return None
    try:
        buf = io.BytesIO()
        dummy = torch.zeros(1, model.in_channels, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.to(memory_format=torch.contiguous_format), dummy, buf, input_names=["x"], output_names=["recon", "latent"],
                              dynamic_axes={"x": {0: "n"}, "recon": {0: "n"}, "latent": {0: "n"}}, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    except Exception:
        if required:
            raise
        return None

    def runner(xb):
        recon, latent = session.run(None, {"x": np.ascontiguousarray(xb, dtype=np.float32)})
        return recon, latent

    runner.onnx = True
    return runner


def _flatten(X):
    """Images (N, H, W[, C]) become rows; 2-D input is left for validate_data to check."""
    if hasattr(X, "ndim") and X.ndim > 2:
        return np.asarray(X).reshape(len(X), -1)
    return X


# ---------------------------------------------------------------- CAE + KDE


@dataclass
class ScreenScores:
    """All per-image scores of a :class:`CAEDetector` (higher = more anomalous)."""

    error: np.ndarray
    neg_log_density: np.ndarray
    combined: np.ndarray
    or_rule: np.ndarray  # bool, the seed's two-threshold rule
    error_maps: np.ndarray | None = None  # (N, S, S) per-pixel error, when asked for
    inputs: np.ndarray | None = None  # (N, C, S, S) model input, when asked for

    def get(self, name: str) -> np.ndarray:
        return {"error": self.error, "density": self.neg_log_density, "combined": self.combined}[name]


def resolve_config(config, random_state: int | None, **defaults):
    """The ScreenConfig an image detector runs with: ``config`` as given (a ScreenConfig, a dict, or
    None for ``ScreenConfig(**defaults)``), with ``random_state``, when set, as ``train.seed``.
    Shared by :class:`CAEDetector` and :class:`~rarespot.screen.patch.PatchDetector`."""
    from rarespot.screen.config import ScreenConfig

    cfg = config
    if cfg is None:
        cfg = ScreenConfig(**defaults)
    elif isinstance(cfg, dict):
        cfg = ScreenConfig.model_validate(cfg)
    if random_state is not None:
        cfg = cfg.model_copy(deep=True)
        cfg.train.seed = int(random_state)
    return cfg


def prepare_input(estimator, X, size: int, color: str, reset: bool) -> np.ndarray:
    """Images (or scikit-learn's flat rows of ``size`` x ``size`` pixels) -> the stack the network reads.

    Checks and records ``n_features_in_`` on ``estimator`` the scikit-learn way (``reset`` when
    fitting). Shared by :class:`CAEDetector` and :class:`~rarespot.screen.patch.PatchDetector`.
    """
    from rarespot.screen.data import prepare

    channels = 1 if color == "gray" else 3
    if isinstance(X, np.ndarray) and X.ndim == 2:
        X = validate_data(estimator, X, reset=reset, ensure_min_samples=1)
        if X.shape[1] != size * size * channels:
            raise ValueError(f"flat rows must have size*size*channels = {size * size * channels} features, got {X.shape[1]}")
        X = X.reshape(len(X), size, size, channels)
    elif isinstance(X, np.ndarray) and X.ndim == 1:
        raise ValueError("Expected 2D array (rows of pixels) or a stack of images, got a 1D array; reshape your data")
    elif reset:
        estimator.n_features_in_ = int(np.prod(np.asarray(X[0]).shape)) if len(X) else 0
    if len(X) == 0:
        raise ValueError("no images given")
    return prepare(X, size, color)


class CAEDetector(OutlierMixin, BaseEstimator):
    """Convolutional autoencoder + KDE of its latent, trained on normal images only.

    Parameters
    ----------
    config : ScreenConfig, dict or None
        Image size/colour, network, training, scoring and ``far`` (see
        :mod:`rarespot.screen.config`); None = defaults.
    random_state : int or None
        Overrides ``config.train.seed`` (split, initialisation, shuffling, k-means).
    checkpoint : path or None
        Training checkpoint file; an interrupted fit with the same data and
        settings resumes from it.
    progress : bool
        Show a progress bar while training.

    ``X`` is a list/array of images (N, H, W[, C]) of any size and dtype, or
    rows of N x (S*S*C) pixels in channel-last order for images already at the
    model size (so the estimator also works on flat arrays).
    """

    def __init__(self, config=None, random_state: int | None = None, checkpoint: str | Path | None = None, progress: bool = False):
        self.config = config
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.progress = progress

    # -- helpers
    def _config(self):
        return resolve_config(self.config, self.random_state)

    def _prepare(self, X, cfg, reset: bool) -> np.ndarray:
        return prepare_input(self, X, cfg.data.size, cfg.data.color, reset)

    # -- sklearn API
    def fit(self, X, y=None):
        """Train on normal images ``X`` (``y`` is ignored: everything given is taken as normal)."""
        from rarespot.screen.train import train_autoencoder

        cfg = self._config()
        x = self._prepare(X, cfg, reset=True)
        train_idx, val_idx = self._split(len(x), cfg)
        self.model_, self.history_ = train_autoencoder(
            x[train_idx], x[val_idx], cfg.model, cfg.train, checkpoint=self.checkpoint, progress=self.progress
        )
        self._fit_scoring(x, train_idx, val_idx, cfg)
        return self

    def refit_scores(self, X, score=None, far: float | None = None) -> "CAEDetector":
        """Change how images are scored (ScoreConfig) or the FAR without retraining the network.

        ``X`` must be the images the detector was fitted on: the same seeded split
        gives the KDE its training latents and the thresholds their held-out normals.
        """
        check_is_fitted(self, "offset_")
        from rarespot.screen.config import ScoreConfig

        cfg = self.config_.model_copy(deep=True)
        if score is not None:
            cfg.score = score if isinstance(score, ScoreConfig) else ScoreConfig.model_validate(score)
        if far is not None:
            cfg.far = far
        cfg = type(cfg).model_validate(cfg.model_dump())  # re-validate the edited settings
        x = self._prepare(X, cfg, reset=False)
        train_idx, val_idx = self._split(len(x), cfg)
        self._fit_scoring(x, train_idx, val_idx, cfg)
        return self

    @staticmethod
    def _split(n: int, cfg) -> tuple[np.ndarray, np.ndarray]:
        """Seeded split of the normal images into training and held-out (early stopping + thresholds)."""
        n_val = max(1, int(round(cfg.train.val_fraction * n)))
        if n - n_val < 2:
            raise ValueError(f"need at least 3 normal images (got {n}): {n_val} are held out for validation/calibration")
        order = np.random.default_rng(cfg.train.seed).permutation(n)
        val_idx, train_idx = order[:n_val], order[n_val:]
        if cfg.train.max_train_images is not None:
            train_idx = train_idx[: cfg.train.max_train_images]
        return train_idx, val_idx

    def _fit_scoring(self, x: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, cfg) -> None:
        """KDE on training latents, then every threshold on the held-out normals."""
        import torch

        from rarespot.screen.scores import LatentDensity, calibrate

        torch.set_num_threads(cfg.train.threads)
        sc = cfg.score
        train_lat = self._forward(x[train_idx], cfg)["latent"]
        self.density_ = LatentDensity(sc.density_pca, sc.bandwidth, sc.kde_max_points, cfg.train.seed).fit(train_lat)
        cal = self._forward(x[val_idx], cfg)
        self.thresholds_ = calibrate(cal["error"], -self.density_.score_samples(cal["latent"]), cfg.far)
        self.config_ = cfg
        self.n_train_ = len(train_idx)
        self.offset_ = -self._threshold_of(cfg.score.combine)

    def _threshold_of(self, name: str) -> float:
        t = self.thresholds_
        return {"error": t.error, "density": t.neg_log_density, "combined": t.combined}[name]

    # -- the interface the screen pipeline uses for every detector (PatchDetector has the same)
    score_names = ("error", "density", "combined")

    @property
    def main_score(self) -> str:
        """The score ``predict`` thresholds (``config.score.combine``)."""
        return self.config_.score.combine

    def threshold_of(self, name: str) -> float:
        """Stored threshold of score ``name`` (anomalous above it)."""
        return self._threshold_of(name)

    @property
    def far_(self) -> float:
        return self.thresholds_.far

    def summary(self) -> dict:
        h = self.history_
        return {"detector": "cae", "n_train": self.n_train_, "n_calibration": self.thresholds_.n_calibration,
                "epochs_run": len(h.val_loss), "best_epoch": h.best_epoch + 1, "stopped_early": h.stopped_early,
                "train_seconds": round(h.seconds, 1), "best_val_mse": min(h.val_loss) if h.val_loss else None,
                "thresholds": self.thresholds_.to_dict(), "config": self.config_.model_dump(mode="json")}

    def _forward(self, x: np.ndarray, cfg, keep_maps: bool = False, batch_size: int = 256) -> dict:
        """Latents, pooled errors (and error maps) for prepared input, in batches."""
        import torch

        from rarespot.screen.scores import error_map, foreground_mask, pool_error

        sc = cfg.score
        workers = max(1, min(int(cfg.train.threads), (len(x) + batch_size - 1) // batch_size))
        run = self._network_runner(cfg, parallel_batches=workers > 1)

        def one_batch(i: int):
            xb = x[i : i + batch_size]
            with torch.inference_mode():
                recon, z = run(xb)
            emap = error_map(xb, recon, sc.error_sign, sc.error_smooth_sigma)
            mask = foreground_mask(xb, sc.foreground_threshold, erode_px=sc.erode_px)
            return pool_error(emap, mask, sc), z.reshape(len(z), -1), (emap * mask if keep_maps else None)

        starts = range(0, len(x), batch_size)
        if workers > 1:
            # One batch per thread end to end (network, error map, pooling): onnxruntime, torch, OpenCV and most
            # numpy release the GIL, so the serial post-processing no longer leaves a core idle.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(one_batch, starts))
        else:
            parts = [one_batch(i) for i in starts]
        out = {"latent": np.concatenate([p[1] for p in parts]), "error": np.concatenate([p[0] for p in parts]).astype(np.float64)}
        if keep_maps:
            out["error_maps"] = np.concatenate([p[2] for p in parts])
        return out

    def _network_runner(self, cfg, parallel_batches: bool = False):
        """A function (N, C, S, S) float32 numpy -> (reconstruction, latent) numpy, on the configured back-end.

        ``backend: onnxruntime`` (or ``auto`` when onnxruntime is installed) exports the network to ONNX in
        memory once per fitted/loaded model and runs it there: about 1.8x less CPU time per image than torch
        for these small convolutions (docs/benchmarks/screen.md). ``torch`` (or no onnxruntime) runs torch
        with channels-last tensors.
        """
        import torch

        # Batches in parallel threads: each network call then uses one thread.
        net_threads = 1 if parallel_batches else cfg.train.threads
        key = (cfg.backend, net_threads, id(self.model_))
        if getattr(self, "_runner_key", None) == key:
            torch.set_num_threads(net_threads)
            return self._runner
        self.model_.eval()
        runner = None
        if cfg.backend in ("auto", "onnxruntime"):
            runner = _onnx_runner(self.model_, cfg.data.size, net_threads, required=cfg.backend == "onnxruntime")
        if runner is None:
            # channels_last: ~2x less CPU time for these small convolutions (measured).
            model = self.model_.to(memory_format=torch.channels_last)
            torch.set_num_threads(net_threads)

            def runner(xb):
                with torch.inference_mode():
                    recon, z = model(torch.from_numpy(xb).contiguous(memory_format=torch.channels_last))
                return recon.numpy(), z.numpy()

        self._runner, self._runner_key = runner, key
        self.backend_ = "onnxruntime" if getattr(runner, "onnx", False) else "torch"
        return runner

    def analyze(self, X, keep_maps: bool = False, batch_size: int = 256, density: bool = True) -> ScreenScores:
        """Every score for each image (higher = more anomalous), plus error maps if asked.

        ``density=False`` skips the latent KDE when only the error is needed (``score_samples`` /
        ``predict`` with ``combine: error``, the default): then ``neg_log_density``, ``combined``
        and ``or_rule`` are None.
        """
        import torch

        check_is_fitted(self, "offset_")
        cfg = self.config_
        torch.set_num_threads(cfg.train.threads)
        x = self._prepare(X, cfg, reset=False)
        out = self._forward(x, cfg, keep_maps=keep_maps, batch_size=batch_size)
        maps, inputs = out.get("error_maps"), (x if keep_maps else None)
        if not density:
            return ScreenScores(error=out["error"], neg_log_density=None, combined=None, or_rule=None, error_maps=maps, inputs=inputs)
        nld = -self.density_.score_samples(out["latent"])
        t = self.thresholds_
        return ScreenScores(
            error=out["error"], neg_log_density=nld, combined=t.combined_score(out["error"], nld),
            or_rule=t.or_rule(out["error"], nld), error_maps=maps, inputs=inputs,
        )

    def transform(self, X) -> np.ndarray:
        """Bottleneck latent vectors (N, latent_dim): features for other detectors."""
        check_is_fitted(self, "offset_")
        return self._forward(self._prepare(X, self.config_, reset=False), self.config_)["latent"]

    def score_samples(self, X):
        check_is_fitted(self, "offset_")
        main = self.config_.score.combine
        return -self.analyze(X, density=main != "error").get(main)

    def decision_function(self, X):
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """One file (``model.pt`` when ``path`` is a folder), written atomically."""
        from rarespot import __version__
        from rarespot.io.checkpoint import atomic_torch_save

        check_is_fitted(self, "offset_")
        path = Path(path)
        if path.suffix != ".pt":
            path = path / MODEL_FILE
        atomic_torch_save(
            {
                "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "rarespot_version": __version__,
                "config": self.config_.model_dump(mode="json"), "random_state": self.random_state,
                "in_channels": self.model_.in_channels, "state_dict": self.model_.state_dict(),
                "density": pickle.dumps(self.density_), "thresholds": self.thresholds_.to_dict(),
                "history": self.history_.__dict__, "n_train": self.n_train_, "n_features_in": getattr(self, "n_features_in_", None),
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CAEDetector":
        """Load a saved detector; a file of another format version raises InputError naming it."""
        from rarespot.screen.config import ScreenConfig
        from rarespot.screen.scores import Thresholds
        from rarespot.screen.torch_model import ConvAutoencoder
        from rarespot.screen.train import TrainHistory

        path, state = load_tagged_checkpoint(path, MODEL_FILE, MODEL_FORMAT, "rarespot screen model", "rarespot screen fit")
        version = state.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise InputError(
                path,
                f"screen model format version {version} (written by rarespot {state.get('rarespot_version', '?')}); "
                f"this rarespot reads version {MODEL_FORMAT_VERSION}: re-fit it with `rarespot screen fit`",
            )
        raw = state["config"]
        # Settings added later keep the behaviour the model was calibrated with when absent from its file.
        raw.get("score", {}).setdefault("error_smooth_sigma", None)
        cfg = ScreenConfig.model_validate(raw)
        det = cls(config=cfg, random_state=state["random_state"])
        det.config_ = cfg
        det.model_ = ConvAutoencoder(state["in_channels"], cfg.model.channels, cfg.model.latent_channels)
        det.model_.load_state_dict(state["state_dict"])
        det.model_.eval()
        det.density_ = pickle.loads(state["density"])
        det.thresholds_ = Thresholds(**state["thresholds"])
        det.history_ = TrainHistory(**state["history"])
        det.n_train_ = state["n_train"]
        if state.get("n_features_in") is not None:
            det.n_features_in_ = state["n_features_in"]
        det.offset_ = -det._threshold_of(cfg.score.combine)
        return det
