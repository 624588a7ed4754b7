"""Train the autoencoder on normal images: Adam, MSE, early stopping, resumable.

Early stopping watches the MSE on a held-out split of *normal* images (the only
kind there is at training time). After every epoch the full state (weights,
optimiser, best weights so far, history) is written atomically to a checkpoint;
calling :func:`train_autoencoder` again with the same checkpoint path, data size
and settings carries on from the last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rarespot.cpu import channels_last_helps
from rarespot.screen.config import AutoencoderConfig, ScreenTrainConfig
from rarespot.screen.torch_model import ConvAutoencoder
from rarespot.io.checkpoint import atomic_torch_save
from rarespot.progress import ProgressBar, duration


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0
    resumed_from_epoch: int | None = None


def _epoch_line(epoch: int, epochs: int, train_loss: float, val_loss: float, best_epoch: int, seconds: float,
                stopped: bool, seconds_left: float | None) -> str:
    """The plain line a log gets after each epoch (on a terminal the live bar shows the same)."""
    left = ("done" if epoch + 1 >= epochs else "stopping early" if stopped
            else f"~{duration(seconds_left) if seconds_left is not None else '?'} left")
    return (f"CAE epoch {epoch + 1}/{epochs}: train MSE {train_loss:.5f}, val MSE {val_loss:.5f} "
            f"(best: epoch {best_epoch + 1}), {seconds:.1f} s, {left}")


def _run_key(model_cfg: AutoencoderConfig, train_cfg: ScreenTrainConfig, train_x: np.ndarray, val_x: np.ndarray) -> str:
    """Identifies a training run, so a checkpoint is only resumed for the same run."""
    settings = {"model": model_cfg.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json", exclude={"threads", "epochs"})}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for arr in (train_x, val_x):
        digest.update(str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr[:: max(1, len(arr) // 64)]).tobytes())  # a sample of the data
    return digest.hexdigest()


def _mean_loss(model: ConvAutoencoder, x: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            total += float(((model(batch)[0] - batch) ** 2).mean()) * len(batch)
    return total / max(1, len(x))


def train_autoencoder(
    train_x: np.ndarray,
    val_x: np.ndarray,
    model_cfg: AutoencoderConfig,
    train_cfg: ScreenTrainConfig,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> tuple[ConvAutoencoder, TrainHistory]:
    """Fit a :class:`ConvAutoencoder` to ``train_x`` (float32 N,C,S,S in [0, 1]).

    Returns the weights of the epoch with the lowest validation MSE.
    """
    if len(train_x) == 0:
        raise ValueError("no training images")
    if len(val_x) == 0:
        raise ValueError("no validation images")
    torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    model = ConvAutoencoder(train_x.shape[1], model_cfg.channels, model_cfg.latent_channels)
    if train_x.shape[2] % model.downsample or train_x.shape[3] % model.downsample:
        raise ValueError(f"image size {train_x.shape[2:]} must be a multiple of {model.downsample} for {len(model_cfg.channels)} stages")
    # NHWC halves the CPU time of these small convolutions on x86 (oneDNN; ~22 vs 49 ms per batch of 64).
    layout = torch.channels_last if channels_last_helps() else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    history = TrainHistory()
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_val, bad_epochs, start_epoch = float("inf"), 0, 0
    run_key = _run_key(model_cfg, train_cfg, train_x, val_x)

    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("run_key") == run_key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            best_state, best_val, bad_epochs = state["best_state"], state["best_val"], state["bad_epochs"]
            history = TrainHistory(**state["history"])
            start_epoch = state["epoch"] + 1
            history.resumed_from_epoch = start_epoch
        # A checkpoint of a different run is simply overwritten below.

    xt, xv = torch.from_numpy(train_x).contiguous(memory_format=layout), torch.from_numpy(val_x).contiguous(memory_format=layout)
    started = time.perf_counter() - history.seconds
    n_batches = (len(xt) + train_cfg.batch_size - 1) // train_cfg.batch_size
    # On a terminal a live bar per epoch; in a log (nohup, CI) plain lines: one per epoch, and one a minute
    # inside an epoch that takes longer, with the time left of the whole fit (at most: early stopping may end sooner).
    to_run = progress and start_epoch < train_cfg.epochs and not history.stopped_early  # else: resumed a finished fit
    with ProgressBar(n_batches, f"CAE epoch {start_epoch + 1}/{train_cfg.epochs}", to_run, unit="batches",
                     rounds=train_cfg.epochs - start_epoch) as bar:
        for epoch in range(start_epoch, train_cfg.epochs):
            if history.stopped_early:
                break
            model.train()
            epoch_started = time.perf_counter()
            # Seeded per epoch, so a resumed run shuffles exactly as an uninterrupted one.
            order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(train_cfg.seed * 100_003 + epoch))
            if epoch > start_epoch:
                bar.next_round(f"CAE epoch {epoch + 1}/{train_cfg.epochs}")
            running = 0.0
            for i in range(0, len(xt), train_cfg.batch_size):
                batch = xt[order[i : i + train_cfg.batch_size]]
                recon, _ = model(batch)
                loss = torch.nn.functional.mse_loss(recon, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.item() * len(batch)
                bar.status(f"train MSE {running / min(len(xt), i + len(batch)):.5f}")
                bar.advance()
            history.train_loss.append(running / len(xt))
            val = _mean_loss(model, xv, 512)
            history.val_loss.append(val)
            bar.status(f"train MSE {history.train_loss[-1]:.5f}, val MSE {val:.5f}")
            if val < best_val:
                best_val, bad_epochs, history.best_epoch = val, 0, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
                history.stopped_early = bad_epochs >= train_cfg.patience
            history.seconds = time.perf_counter() - started
            if bar.logging:
                bar.print(_epoch_line(epoch, train_cfg.epochs, history.train_loss[-1], val, history.best_epoch,
                                      time.perf_counter() - epoch_started, history.stopped_early, bar.seconds_left()))
            if checkpoint is not None:
                atomic_torch_save(
                    {"run_key": run_key, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "best_state": best_state, "best_val": best_val, "bad_epochs": bad_epochs, "history": history.__dict__},
                    checkpoint,
                )
    model.load_state_dict(best_state)
    model.eval()
    return model, history
