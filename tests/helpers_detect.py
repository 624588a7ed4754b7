"""Test helpers for detection: untrained YOLO checkpoints and fake back-ends.

``make_untrained_yolo`` builds a nano model from its yaml (random init, nothing
downloaded) and saves it the way Ultralytics saves checkpoints, so
``YOLO(path)`` and rarespot's loaders open it. Untrained models score every
box below ~1e-3: tests that want boxes from them use conf <= 1e-4.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np


def make_untrained_yolo(
    path: str | Path,
    names: list[str],
    cfg: str = "yolo11n.yaml",
    seed: int = 0,
    lively: bool = False,
    score_bias: float = -2.5,
) -> Path:
    """Save a random-init ``cfg`` detection model with ``len(names)`` classes to ``path`` (.pt).

    ``lively``: re-draw the class-score layer so scores spread over (0, 1)
    instead of all sitting near 1e-3 with many exact ties (tie order makes
    NMS results implementation-dependent, which exact comparisons cannot use).
    ``score_bias``: the lively logits' mean; lower gives fewer boxes above a conf.
    """
    import torch
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=len(names), verbose=False)
    if lively:
        _spread_class_scores(model, score_bias)
    model.names = {i: n for i, n in enumerate(names)}
    model.args = vars(get_cfg())
    model.task = "detect"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model": model,  # fp32 (Ultralytics itself saves fp16; loading casts to fp32 either way)
        "train_args": {"model": cfg, "task": "detect"},
        "date": datetime.now().isoformat(),
        "version": __version__,
    }
    torch.save(ckpt, path)
    return path


def _spread_class_scores(model, bias: float = -2.5) -> None:
    """Re-draw each class-score conv so logits vary ~N(bias, 1.5) across locations.

    A random-init YOLO's head sees features of tiny variance (~1e-3 to 1e-6),
    so its scores are flat; the weights are scaled to the measured variance.
    """
    import torch
    import torch.nn as nn

    head = model.model[-1]
    feats: dict[int, torch.Tensor] = {}
    hooks = [
        branch[-1].register_forward_hook(lambda mod, inp, out, k=k: feats.__setitem__(k, inp[0]))
        for k, branch in enumerate(head.cv3)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.rand(2, 3, 128, 128))
    for h in hooks:
        h.remove()
    for k, branch in enumerate(head.cv3):
        x = feats[k]
        std = 1.5 / (float(x.std()) * x.shape[1] ** 0.5 + 1e-12)
        nn.init.normal_(branch[-1].weight, 0.0, std)
        nn.init.constant_(branch[-1].bias, bias)


class FakeBackend:
    """Returns fixed boxes per tile origin, so tiling/shift/merge give exact, known answers.

    ``boxes_at``: {(x0, y0): [(x1, y1, x2, y2, score, label), ...]} in tile pixels.
    Records the tiles it saw (their shape and dtype) in ``calls``.
    """

    def __init__(self, class_names: list[str], boxes_at: dict, tile: int):
        self.class_names = list(class_names)
        self.boxes_at = boxes_at
        self.tile = tile
        self.calls: list[tuple] = []
        self.tiles: list[np.ndarray] = []
        self._queue: list[tuple[int, int]] = []

    def expect(self, origins: list[tuple[int, int]]) -> None:
        """The tile origins in the order the predictor will send them (grid order)."""
        self._queue = list(origins)

    def predict_tiles(self, tiles, conf, iou, class_agnostic, max_det):
        self.calls.append((tiles.shape, tiles.dtype, conf))
        self.tiles.extend(np.asarray(tiles))
        out = []
        for _ in range(len(tiles)):
            origin = self._queue.pop(0) if self._queue else None
            rows = [r for r in self.boxes_at.get(origin, []) if r[4] >= conf]
            arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
            out.append((arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64)))
        return out
