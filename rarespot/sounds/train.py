"""Training lung-sound classifiers: class-balanced loss, patient-wise early stopping, resumable.

``train(data, out_dir, config)`` is the whole pipeline (read cycles, patient-wise
validation split, features, fit); ``fit(...)`` is the loop on feature arrays,
which cross-validation (bench/bench_sounds.py) calls per fold.

The output folder holds ``last.pt`` (everything needed to resume, written
atomically after every epoch), ``best.pt`` (the weights of the epoch ``select_by``
keeps: by default the best validation ICBHI score; what predict/evaluate load), ``history.json``, ``curves.png`` and
``val_confusion.png``. Running again into the same folder resumes.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from rarespot.config import StrictModel, load_config_file
from rarespot.device import torch_device
from rarespot.errors import InputError
from rarespot.metrics.icbhi import ICBHI_CLASSES, icbhi_scores, plot_confusion
from rarespot.sounds.data import class_counts
from rarespot.sounds.features import FeatureConfig, fit_norm_stats, normalise
from rarespot.sounds.torch_model import ModelConfig
from rarespot.io.atomic import atomic_write_text
from rarespot.io.checkpoint import atomic_torch_save
from rarespot.progress import ProgressBar

CHECKPOINT_FORMAT = "rarespot-sounds/1"


class SoundsTrainConfig(StrictModel):
    """Everything that decides a lung-sound training run; loadable from YAML (``SoundsTrainConfig.from_yaml``).

    Unknown keys are refused (a misspelt option would otherwise be silently ignored). The defaults are the
    best measured on unseen patients (docs/benchmarks/sounds.md): the ``pooled`` model, fitted in seconds.
    """

    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (the seed used Adam at a fixed 1e-4 with pretrained DeiT)")
    weight_decay: float = 0.05
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 2
    loss: Literal["cb_ce", "cb_focal", "ce", "focal"] = Field("cb_ce", description="cb_* = class-balanced (seed eq. 13)")
    beta: float = Field(0.999, ge=0, lt=1, description="class-balanced loss: effective-number beta")
    gamma: float = Field(2.0, ge=0, description="focal loss gamma")
    normalisation: Literal["dataset", "per_sample"] = "dataset"
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of patients held out for early stopping")
    patience: int = Field(10, ge=1, description="epochs without a better validation metric (select_by) before stopping")
    augment: bool = Field(True, description="random circular time shift + time/frequency masking")
    mixup_alpha: float = Field(0.0, ge=0, description="mixup (Zhang et al. 2018) Beta(alpha, alpha) mixing of batch pairs; 0 = off")
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="'balanced' draws each epoch's cycles with probability ~ 1 / class count (use with loss 'ce')")
    select_by: Literal["score", "loss", "last"] = Field(
        "score", description="which epoch's weights become best.pt (and what patience watches): validation ICBHI score, "
        "validation loss, or simply the last epoch (no early stopping)")
    head_c: float = Field(0.01, gt=0, description="pooled model: inverse L2 strength of the logistic-regression head (sklearn's C)")
    normal_bias: float = Field(0.5, description="pooled model: log-odds added to 'normal' at prediction (with select 'inner_cv' "
                               "chosen by inner CV instead; "
                               "higher = fewer false alarms, lower sensitivity)")
    concat_augment: float = Field(0.0, ge=0, description="pooled model: RespireNet's concatenation augmentation, synthetic cycles "
                                  "per real cycle of each abnormal class (each two training cycles of that class joined in time; "
                                  "rarespot.sounds.augment); 0 = off")
    concat_pairs: Literal["other_patient", "same_patient"] = Field(
        "other_patient", description="pooled model: the two cycles joined by concat_augment come from two different patients, "
                                     "or from one patient (as RespireNet did)")
    concat_both: bool = Field(False, description="pooled model: with concat_augment, also make 'both' cycles from a crackle and a "
                                                 "wheeze cycle (concat_augment x the real 'both' cycles)")
    mix_augment: float = Field(0.0, ge=0, description="pooled model: patch-mix across patients (in time), synthetic cycles per "
                               "training cycle, each counted as both source classes in proportion to their time; 0 = off")
    select: Literal["inner_cv", "fixed"] = Field(
        "inner_cv", description="pooled model: 'inner_cv' chooses the lever (POOLED_LEVERS), test-time shifts and normal_bias by "
        "patient-grouped cross-validation on the training patients (select_pooled: best Score with Se >= 35), then fits on "
        "all of them; 'fixed' uses concat_*, mix_augment, model.tta_shifts and normal_bias as given")
    select_grid: Literal["levers", "bias"] = Field(
        "levers", description="select inner_cv: every lever x TTA x bias ('levers'), or only normal_bias with no lever ('bias')")
    select_folds: int = Field(4, ge=2, description="select inner_cv: patient-grouped folds")
    select_seed: int | None = Field(None, description="select inner_cv: seed of the patient folds (None: seed)")
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default; 1 is fastest on a busy shared machine)")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda'")

    @model_validator(mode="after")
    def _same_image_size(self):
        # The model's input is the feature image: one size, set by the features.
        self.model.image_size = tuple(self.features.image_size)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SoundsTrainConfig":
        return load_config_file(path, cls, "training config")


def __getattr__(name: str):
    # The README documented `from rarespot.sounds.train import TrainConfig` before the three
    # pipelines' TrainConfig classes got distinct names (issue #19): the old name still works.
    if name == "TrainConfig":
        warnings.warn("rarespot.sounds.train.TrainConfig is now SoundsTrainConfig", DeprecationWarning, stacklevel=2)
        return SoundsTrainConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class FitResult:
    best_score: float
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    checkpoint: Path
    history: list[dict]


# --------------------------------------------------------------------------- helpers


def make_loss(config: SoundsTrainConfig, counts: np.ndarray):
    """The training criterion, from the imbalance toolkit (one implementation of eq. 13 in rarespot)."""
    from rarespot.imbalance.losses import ClassBalancedLoss

    beta = config.beta if config.loss.startswith("cb_") else 0.0  # beta = 0: every class weight 1
    loss_type = "ce" if config.loss.endswith("ce") else "softmax_focal"
    # A class absent from training would get an infinite weight; give it count 1.
    return ClassBalancedLoss(np.maximum(counts, 1), beta=beta, loss_type=loss_type, gamma=config.gamma)


def augment_batch(x, generator):
    """Circular time shift (cycles are repeat-padded, so a shift is another phase of breathing)
    plus one time mask and one frequency mask per sample (SpecAugment-style, set to 0 = the normalised mean)."""
    import torch

    n, _, h, w = x.shape
    shifts = torch.randint(0, w, (n,), generator=generator)
    idx = (torch.arange(w).unsqueeze(0) + shifts.unsqueeze(1)) % w
    x = torch.gather(x, 3, idx.view(n, 1, 1, w).expand_as(x))
    t_len = torch.randint(0, max(1, w // 8) + 1, (n,), generator=generator)
    t_0 = (torch.rand(n, generator=generator) * (w - t_len)).long()
    f_len = torch.randint(0, max(1, h // 8) + 1, (n,), generator=generator)
    f_0 = (torch.rand(n, generator=generator) * (h - f_len)).long()
    cols, rows = torch.arange(w), torch.arange(h)
    tmask = (cols >= t_0[:, None]) & (cols < (t_0 + t_len)[:, None])
    fmask = (rows >= f_0[:, None]) & (rows < (f_0 + f_len)[:, None])
    keep = ~(tmask[:, None, None, :] | fmask[:, None, :, None])
    return x * keep


def predict_logits(model, x: np.ndarray, batch_size: int = 64, device=None) -> np.ndarray:
    import torch

    device = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(ICBHI_CLASSES)), dtype=np.float32)


def epoch_order(labels, sampler: str, generator):
    """The training cycles of one epoch, in order: a permutation ("shuffle"), or as many draws with replacement
    as there are cycles, each class equally likely ("balanced")."""
    import torch

    if sampler == "shuffle":
        return torch.randperm(len(labels), generator=generator)
    counts = torch.bincount(labels).double()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def _lr_factor(config: SoundsTrainConfig, epoch: int) -> float:
    if epoch < config.warmup_epochs:
        return (epoch + 1) / (config.warmup_epochs + 1)
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.epochs - config.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * (epoch - config.warmup_epochs) / span))


def _fingerprint(y_train: np.ndarray, y_val: np.ndarray, shape) -> str:
    import hashlib

    return hashlib.sha1(y_train.tobytes() + b"|" + y_val.tobytes() + b"|" + str(tuple(shape)).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the loop


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: SoundsTrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    weights: str | Path | None = None,
    groups_train: np.ndarray | None = None,
    progress: bool = True,
    log=print,
) -> FitResult:
    """Train on raw (un-normalised) feature arrays, early-stop on the validation ICBHI score.

    x_*: (N, 3, H, W) float32 from ``extract_features``; y_*: class indices.
    weights: optional local ViT/DeiT weights for the transformer (see ``load_encoder_weights``).
    groups_train: the patient of each training cycle (pooled model: which cycles the augmentations may pair);
    None counts every cycle as its own patient. The pooled model accepts an empty validation set (it chooses
    nothing on it).
    """
    import torch

    from rarespot.sounds.torch_model import build_model, count_parameters, load_encoder_weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch_device(config.device)
    y_train = np.asarray(y_train, dtype=np.int64)
    y_val = np.asarray(y_val, dtype=np.int64)
    if config.model.variant == "pooled" and len(x_train):
        return fit_pooled(x_train, y_train, x_val, y_val, config, out_dir, groups_train=groups_train, log=log)
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"need training and validation cycles, got {len(x_train)} and {len(x_val)}")

    norm = fit_norm_stats(x_train, config.normalisation)
    xt = torch.from_numpy(normalise(x_train, norm))
    xv = normalise(x_val, norm)
    yt = torch.from_numpy(y_train)
    counts = class_counts(y_train)

    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    if weights is not None:
        info = load_encoder_weights(model, weights)
        log(f"loaded {info['loaded']} tensors from {weights}" + (" (classification head re-initialised)" if info["skipped_head"] else ""))
    criterion = make_loss(config, counts).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: _lr_factor(config, e))

    fingerprint = _fingerprint(y_train, y_val, x_train.shape)
    history: list[dict] = []
    start_epoch, best_score, best_epoch, stale = 0, -1.0, -1, 0
    best_metric = -math.inf  # what select_by compares (higher is better); best_score is the ICBHI score at that epoch
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        if state.get("config") != config.model_dump(mode="json") or state.get("fingerprint") != fingerprint:
            raise InputError(last_path, "was written by a run with another config or other data; use a new output folder or --no-resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        best_metric = state.get("best_metric", best_score)
        stale, history = state["stale"], state["history"]
        log(f"resuming from {last_path} at epoch {start_epoch + 1}")
    if start_epoch == 0:
        log(f"{config.model.variant}: {count_parameters(model) / 1e6:.2f}M parameters, "
            f"{len(y_train)} training / {len(y_val)} validation cycles, class counts {counts.tolist()}")

    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": config.model_dump(mode="json"),
        "norm": norm.model_dump(),
        "class_names": list(ICBHI_CLASSES),
        "fingerprint": fingerprint,
    }
    generator = torch.Generator().manual_seed(config.seed)
    epoch_times = [h["seconds"] for h in history]
    with ProgressBar(config.epochs - start_epoch, config.model.variant, progress, unit="epochs", transient=True) as bar:
        for epoch in range(start_epoch, config.epochs):
            if stale >= config.patience:
                break
            # Same batches, augmentations and dropout masks after a resume: both the batch generator and torch's
            # global RNG (dropout, drop-path) restart from a seed of the epoch.
            generator.manual_seed(config.seed * 100003 + epoch)
            torch.manual_seed(config.seed * 100003 + epoch)
            t0 = time.perf_counter()
            model.train()
            order = epoch_order(yt, config.sampler, generator)
            mix_rng = np.random.default_rng(config.seed * 100003 + epoch)
            total, seen = 0.0, 0
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                if len(idx) < 2 and config.model.variant != "vit":
                    continue  # BatchNorm cannot train on a batch of one
                xb, yb = xt[idx], yt[idx]
                if config.augment:
                    xb = augment_batch(xb, generator)
                if config.mixup_alpha > 0:
                    lam = float(mix_rng.beta(config.mixup_alpha, config.mixup_alpha))
                    partner = torch.randperm(len(idx), generator=generator)
                    xb = lam * xb + (1 - lam) * xb[partner]
                    out = model(xb.to(device))
                    loss = lam * criterion(out, yb.to(device)) + (1 - lam) * criterion(out, yb[partner].to(device))
                else:
                    loss = criterion(model(xb.to(device)), yb.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                total += loss.item() * len(idx)
                seen += len(idx)
            scheduler.step()
            seconds = time.perf_counter() - t0
            epoch_times.append(seconds)
            val_logits = predict_logits(model, xv, device=device)
            scores = icbhi_scores(y_val, val_logits.argmax(1))
            with torch.no_grad():
                val_loss = float(criterion(torch.from_numpy(val_logits).to(device), torch.from_numpy(y_val).to(device)))
            record = {"epoch": epoch + 1, "loss": total / max(seen, 1), "val_loss": val_loss, "se": scores.se, "sp": scores.sp,
                      "score": scores.score, "seconds": seconds, "lr": optimizer.param_groups[0]["lr"]}
            history.append(record)
            metric = {"score": scores.score, "loss": -val_loss, "last": float(epoch)}[config.select_by]
            improved = metric > best_metric
            if improved:
                best_metric, best_score, best_epoch, stale = metric, scores.score, epoch + 1, 0
                atomic_torch_save({**meta, "model": model.state_dict(), "epoch": epoch, "val": scores.as_dict()}, best_path)
            else:
                stale += 1
            atomic_torch_save({**meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "epoch": epoch, "best_score": best_score,
                               "best_epoch": best_epoch, "best_metric": best_metric, "stale": stale, "history": history}, last_path)
            bar.status(loss=f"{record['loss']:.3f}", score=f"{100 * scores.score:.1f}", best=f"{100 * best_score:.1f}")
            bar.advance()
            log(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  val loss {val_loss:.4f}  {scores.summary()}{'  *' if improved else ''}  {seconds:.1f}s")

    atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    _plot_curves(history, out_dir / "curves.png")
    if best_path.is_file():
        best = torch.load(best_path, map_location=device, weights_only=False)
        model.load_state_dict(best["model"])
        scores = icbhi_scores(y_val, predict_logits(model, xv, device=device).argmax(1))
        plot_confusion(scores, out_dir / "val_confusion.png", title=f"{config.model.variant}, validation, epoch {best_epoch}")
    return FitResult(best_score, best_epoch, len(history), float(np.mean(epoch_times)) if epoch_times else float("nan"), best_path, history)


def synthetic_rows(x_train, y_train, groups_train, config: SoundsTrainConfig):
    """The pooled model's synthetic training cycles (``concat_augment``, ``mix_augment``) as (x, y, weight):
    a patch-mixed cycle is two rows, one per source class, weighted by its share of the time."""
    from rarespot.sounds.augment import concat_cycles, mix_cycles

    xs, ys, ws = [], [], []
    if config.concat_augment > 0:
        xc, yc = concat_cycles(x_train, y_train, groups_train, config.concat_augment, pairing=config.concat_pairs,
                               both_from_parts=config.concat_both, seed=config.seed)
        xs.append(xc)
        ys.append(yc)
        ws.append(np.ones(len(yc)))
    if config.mix_augment > 0:
        xm, y1, y2, lam = mix_cycles(x_train, y_train, groups_train, config.mix_augment, seed=config.seed + 1)
        xs += [xm, xm]
        ys += [y1, y2]
        ws += [lam, 1 - lam]
    if not xs:
        return np.zeros((0, *x_train.shape[1:]), np.float32), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def _embed(model, x: np.ndarray, norm, shift: int = 0) -> np.ndarray:
    """The pooled model's embedding of raw feature images (optionally circularly shifted in time), float64."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            xb = torch.from_numpy(normalise(x[i : i + 64], norm))
            if shift:
                xb = torch.roll(xb, shifts=shift, dims=3)
            out.append(model.embed(xb).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, model.dim))


def fit_pooled_head(z_real, y_real, z_syn, y_syn, w_syn, config: SoundsTrainConfig) -> dict:
    """Class-balanced logistic regression on standardised embeddings (statistics of the real cycles only).

    Without weighted rows this is scikit-learn's ``class_weight="balanced"``; with them (patch-mix) the same
    balance is computed from the summed weights per class. Returns weight (K, D), bias (K), mean, scale (D).
    """
    from sklearn.linear_model import LogisticRegression

    mean, scale = z_real.mean(0), np.maximum(z_real.std(0), 1e-6)
    z = (np.concatenate([z_real, z_syn]) - mean) / scale
    y = np.concatenate([y_real, y_syn]).astype(np.int64)
    w = np.concatenate([np.ones(len(y_real)), w_syn])
    clf = LogisticRegression(C=config.head_c, max_iter=5000, random_state=config.seed,
                             class_weight="balanced" if np.all(w == 1) else None)
    if np.all(w == 1):
        clf.fit(z, y)
    else:
        totals = np.bincount(y, weights=w, minlength=config.model.num_classes)
        present = totals > 0
        balance = np.where(present, w.sum() / (present.sum() * np.maximum(totals, 1e-12)), 0.0)
        clf.fit(z, y, sample_weight=w * balance[y])
    k = config.model.num_classes
    weight, bias = np.zeros((k, z.shape[1])), np.full(k, -1e4)  # a class never seen in training is never predicted
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # sklearn's binary form: one row for the second class
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight[clf.classes_], bias[clf.classes_] = coef, intercept
    return {"weight": weight, "bias": bias, "mean": mean, "scale": scale}


def fit_pooled(x_train, y_train, x_val, y_val, config: SoundsTrainConfig, out_dir: str | Path, *, groups_train=None, log=print) -> FitResult:
    """The ``pooled`` model: scikit-learn's class-balanced logistic regression on the time-pooled embedding,
    copied into the torch head (so predict / evaluate / the checkpoint work as for every variant).

    No epochs: one fit, seconds on a CPU. ``normal_bias`` is added to the "normal" logit; the validation split
    is only scored (it chooses nothing here; it may be empty). The synthetic cycles of ``concat_augment`` and
    ``mix_augment`` are made from the training cycles (``groups_train``: their patients).
    """
    import torch

    from rarespot.sounds.torch_model import build_model, count_parameters

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    norm = fit_norm_stats(x_train, config.normalisation)
    torch.manual_seed(config.seed)
    model = build_model(config.model).eval()
    counts = class_counts(y_train)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise ValueError(f"the training cycles hold only class {[ICBHI_CLASSES[i] for i in present]}; need at least two classes")
    selection = None
    if config.select == "inner_cv":
        patients = None if groups_train is None else len(set(np.asarray(groups_train).tolist()))
        if patients is None or patients < config.select_folds:
            warnings.warn(f"pooled model: select 'inner_cv' needs the patients of the training cycles and at least "
                          f"{config.select_folds} of them ({patients or 'none'} given); using the config's own settings",
                          UserWarning, stacklevel=2)
            config = config.model_copy(update={"select": "fixed"})
        else:
            config, selection = select_by_inner_cv(x_train, y_train, np.asarray(groups_train), config, log=log)
            model = build_model(config.model).eval()  # the chosen test-time shifts
    x_syn, y_syn, w_syn = synthetic_rows(x_train, y_train, groups_train, config)
    log(f"pooled: {model.dim}-dim embedding, {len(y_train)} training / {len(y_val)} validation cycles, class counts {counts.tolist()}"
        + (f", {len(x_syn)} synthetic rows (classes {class_counts(y_syn).tolist()})" if len(x_syn) else ""))
    head = fit_pooled_head(_embed(model, x_train, norm), y_train, _embed(model, x_syn, norm), y_syn, w_syn, config)
    offset = np.zeros(config.model.num_classes)
    offset[0] = config.normal_bias
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(head["weight"], dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(head["bias"], dtype=torch.float32))
        model.mean.copy_(torch.as_tensor(head["mean"], dtype=torch.float32))
        model.scale.copy_(torch.as_tensor(head["scale"], dtype=torch.float32))
        model.offset.copy_(torch.as_tensor(offset, dtype=torch.float32))
    seconds = time.perf_counter() - t0
    if len(y_val):
        val_logits = predict_logits(model, normalise(x_val, norm))
        scores = icbhi_scores(y_val, val_logits.argmax(1))
        log(f"pooled: fitted in {seconds:.1f}s ({count_parameters(model.head)} head parameters); validation {scores.summary()}")
        val, score = scores.as_dict(), scores.score
    else:
        log(f"pooled: fitted in {seconds:.1f}s ({count_parameters(model.head)} head parameters); no validation cycles")
        scores, val, score = None, None, float("nan")
    meta = {"format": CHECKPOINT_FORMAT, "config": config.model_dump(mode="json"), "norm": norm.model_dump(),
            "class_names": list(ICBHI_CLASSES), "fingerprint": _fingerprint(y_train, np.asarray(y_val, np.int64), x_train.shape)}
    history = [{"epoch": 1, "loss": None, "val_loss": None, "se": val and val["se"], "sp": val and val["sp"],
                "score": None if scores is None else score, "seconds": seconds, "lr": None,
                "selection": None if selection is None else {k: v for k, v in selection.items() if k != "records"}}]
    if selection is not None:
        atomic_write_text(out_dir / "selection.json", json.dumps(selection, indent=1))
    best_path = out_dir / "best.pt"
    blob = {**meta, "model": model.state_dict(), "epoch": 0, "val": val}
    atomic_torch_save(blob, best_path)
    atomic_torch_save({**blob, "best_score": score, "best_epoch": 1, "best_metric": score, "stale": 0,
                       "history": history}, out_dir / "last.pt")
    atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    if scores is not None:
        plot_confusion(scores, out_dir / "val_confusion.png", title="pooled, validation")
    return FitResult(score, 1, 1, seconds, best_path, history)


# --------------------------------------------------------------------------- choosing by inner cross-validation

DEFAULT_BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
# The levers select="inner_cv" compares (issue #15), as SoundsTrainConfig options; the first is "no lever".
POOLED_LEVERS = (
    ("none", {"concat_augment": 0.0, "mix_augment": 0.0}),
    ("concat other-patient x0.5", {"concat_augment": 0.5, "concat_pairs": "other_patient", "concat_both": False, "mix_augment": 0.0}),
    ("concat other-patient x1", {"concat_augment": 1.0, "concat_pairs": "other_patient", "concat_both": False, "mix_augment": 0.0}),
    ("concat same-patient x1", {"concat_augment": 1.0, "concat_pairs": "same_patient", "concat_both": False, "mix_augment": 0.0}),
    ("concat other-patient x1 + both from crackle+wheeze",
     {"concat_augment": 1.0, "concat_pairs": "other_patient", "concat_both": True, "mix_augment": 0.0}),
    ("patch-mix across patients x0.5", {"concat_augment": 0.0, "mix_augment": 0.5}),
)
POOLED_TTA = (1, 4)


def select_by_inner_cv(x_train, y_train, groups_train, config: SoundsTrainConfig, *, log=print) -> tuple[SoundsTrainConfig, dict]:
    """``select="inner_cv"``: score every lever (``POOLED_LEVERS``; only "none" with ``select_grid="bias"``) x TTA
    (``POOLED_TTA``; only 1 with "bias") x normal bias (``DEFAULT_BIASES``) by ``inner_cv_pooled`` on the training
    patients, pick by ``select_pooled``. Returns the chosen config (``select="fixed"``) and the selection record."""
    levers = POOLED_LEVERS if config.select_grid == "levers" else POOLED_LEVERS[:1]
    tta = POOLED_TTA if config.select_grid == "levers" else (1,)
    candidates = [config.model_copy(update=opts) for _, opts in levers]
    seed = config.seed if config.select_seed is None else config.select_seed
    t0 = time.perf_counter()
    records = inner_cv_pooled(x_train, y_train, groups_train, candidates, tta=tta, n_splits=config.select_folds, seed=seed)
    choice = select_pooled(records)
    name, opts = levers[choice["candidate"]]
    chosen = config.model_copy(update={**opts, "select": "fixed", "normal_bias": choice["bias"],
                                       "model": config.model.model_copy(update={"tta_shifts": choice["tta"]})})
    log(f"pooled: inner {config.select_folds}-fold CV over {len(set(groups_train))} patients chose {name}, TTA {choice['tta']}, "
        f"normal bias {choice['bias']:g} (inner Se {100 * choice['se']:.1f}, Score {100 * choice['score']:.1f}; "
        f"{len(records)} settings, {time.perf_counter() - t0:.0f}s)")
    return chosen, {"lever": name, **choice, "levers": [n for n, _ in levers], "seed": seed, "records": records}


def inner_cv_pooled(x, y, groups, candidates: list[SoundsTrainConfig], *, biases=DEFAULT_BIASES, tta=(1,), n_splits: int = 4,
                    seed: int = 0, log=None) -> list[dict]:
    """Patient-grouped ``n_splits``-fold cross-validation of pooled-model candidates inside (x, y), e.g. the
    training part of an outer fold: each candidate is fitted on the other folds' patients and scores the held-out
    ones; the out-of-fold predictions are pooled, and the ICBHI scores computed once over all cycles.

    candidates: SoundsTrainConfigs that differ only in the head's options (head_c, concat_*, mix_augment); their
    normal_bias and model.tta_shifts are ignored: every bias in ``biases`` and every shift count in ``tta`` is
    scored from the same fits. Returns one record per (candidate, tta, bias):
    {"candidate": index, "tta": k, "bias": b, "se", "sp", "score"}.
    """
    import torch
    from scipy.special import softmax
    from sklearn.model_selection import StratifiedGroupKFold

    from rarespot.sounds.torch_model import build_model

    x, y, groups = np.asarray(x), np.asarray(y, dtype=np.int64), np.asarray(groups)
    base = candidates[0].model.model_copy(update={"tta_shifts": 1})
    for c in candidates:
        if c.model.model_copy(update={"tta_shifts": 1}) != base or c.features != candidates[0].features or c.model.variant != "pooled":
            raise ValueError("inner_cv_pooled: the candidates must be pooled models with the same features and model")
    torch.manual_seed(candidates[0].seed)
    model = build_model(base).eval()
    w = x.shape[-1]
    logits = {(ci, k): np.zeros((k, len(y), base.num_classes)) for ci in range(len(candidates)) for k in tta}
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer members than folds
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    for a, b in splits:
        norm = fit_norm_stats(x[a], candidates[0].normalisation)
        z_a = _embed(model, x[a], norm)
        shifts = sorted({s * w // k for k in tta for s in range(k)})
        z_b = {s: _embed(model, x[b], norm, shift=s) for s in shifts}
        for ci, cfg in enumerate(candidates):
            x_syn, y_syn, w_syn = synthetic_rows(x[a], y[a], groups[a], cfg)
            head = fit_pooled_head(z_a, y[a], _embed(model, x_syn, norm), y_syn, w_syn, cfg)
            for k in tta:
                for j, s in enumerate(s * w // k for s in range(k)):
                    logits[ci, k][j, b] = ((z_b[s] - head["mean"]) / head["scale"]) @ head["weight"].T + head["bias"]
        if log:
            log(f"inner fold done: {len(a)} training / {len(b)} held-out cycles")
    records = []
    for (ci, k), lg in logits.items():
        for bias in biases:
            shift = np.zeros(base.num_classes)
            shift[0] = bias
            probs = softmax(lg + shift, axis=2).mean(0)
            s = icbhi_scores(y, probs.argmax(1))
            records.append({"candidate": ci, "tta": k, "bias": float(bias), "se": s.se, "sp": s.sp, "score": s.score})
    return records


def select_pooled(records: list[dict], min_se: float = 0.35) -> dict:
    """The inner-CV record to adopt: the highest Score among those with sensitivity >= ``min_se`` (the issue's floor:
    a model that calls almost everything normal does not count); if none reaches it, the highest Score. Ties go to
    the earlier record (list the simpler candidates, fewer TTA shifts and smaller biases first)."""
    ok = [r for r in records if r["se"] >= min_se] or records
    return max(ok, key=lambda r: r["score"])  # max keeps the first of equal scores


def _plot_curves(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3), dpi=110)
    a.plot(epochs, [h["loss"] for h in history])
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    for key in ("se", "sp", "score"):
        b.plot(epochs, [100 * h[key] for h in history], label=key)
    b.set_xlabel("epoch")
    b.set_ylabel("validation %")
    b.legend()
    fig.tight_layout()
    save_figure(fig, path, format="png")


# --------------------------------------------------------------------------- whole pipeline


def train(
    data: str | Path,
    out_dir: str | Path,
    config: SoundsTrainConfig | None = None,
    *,
    split: str | None = "train",
    val_data: str | Path | None = None,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    n_jobs: int = 1,
    resume: bool = True,
    progress: bool = True,
    log=print,
) -> FitResult:
    """Read cycles from ``data`` (manifest CSV or official-layout folder), split patient-wise, extract features, fit.

    split: which official split to train on when the data says (rows/recordings of
    the other split are left out); None uses everything.
    val_data: a separate validation set; otherwise ``config.val_fraction`` of the patients.
    """
    from rarespot.sounds.data import describe, patient_split
    from rarespot.sounds.features import extract_features

    config = config or SoundsTrainConfig()
    cycles = _load_with_optional_split(data, split)
    if val_data is not None:
        train_cycles, val_cycles = cycles, _load_with_optional_split(val_data, None)
        shared = {c.patient for c in train_cycles} & {c.patient for c in val_cycles}
        if shared:
            warnings.warn(f"{val_data}: patients {sorted(shared)[:5]} are in both training and validation data", UserWarning, stacklevel=2)
    else:
        tr, va = patient_split(cycles, config.val_fraction, config.seed)
        train_cycles, val_cycles = [cycles[i] for i in tr], [cycles[i] for i in va]
    log(f"training: {describe(train_cycles)}")
    log(f"validation: {describe(val_cycles)}")
    x_train = extract_features(train_cycles, config.features, cache_dir=cache_dir, n_jobs=n_jobs, progress=progress)
    x_val = extract_features(val_cycles, config.features, cache_dir=cache_dir, n_jobs=n_jobs, progress=progress)
    y_train = np.array([c.label for c in train_cycles])
    y_val = np.array([c.label for c in val_cycles])
    groups = np.array([c.patient for c in train_cycles])
    return fit(x_train, y_train, x_val, y_val, config, out_dir, resume=resume, weights=weights, groups_train=groups,
               progress=progress, log=log)


def _load_with_optional_split(data, split):
    from rarespot.sounds.data import load_cycles

    path = Path(data)
    if split is None:
        return load_cycles(path)
    try:
        return load_cycles(path, split=split)
    except InputError as exc:
        # Data without any split information: use all of it rather than fail.
        if "needs the official split file" in exc.problem:
            return load_cycles(path)
        raise
