"""SAHI's sliced prediction behind rarespot's predictor interface.

The peer arm of the study and of the latency benchmark: the same trained
model, the same tiles and thresholds, but SAHI's own slicing, per-slice
Ultralytics calls and merging. Scans go through ``to_model_input`` first, as in
rarespot's own path, so both see identical pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rarespot.detect.predict import Detections
from rarespot.detect.preprocess import read_input_mapping, to_model_input
from rarespot.errors import InputError


class SahiPredictor:
    """``predict(image, conf=None) -> Detections`` through ``sahi.predict.get_sliced_prediction``."""

    def __init__(
        self,
        model: str | Path,
        tile: int = 512,
        overlap: float = 0.2,
        conf: float = 0.25,
        iou: float = 0.5,
        class_agnostic: bool = False,
        imgsz: int | None = None,
        device: str = "cpu",
        postprocess: str = "NMS",
        match_metric: str = "IOU",
    ):
        from sahi import AutoDetectionModel

        self.model_path = Path(model)
        if not self.model_path.is_file():
            raise InputError(self.model_path, "model file not found")
        self.tile, self.overlap, self.conf, self.iou = tile, overlap, conf, iou
        self.class_agnostic = class_agnostic
        self.postprocess, self.match_metric = postprocess, match_metric
        self._model = AutoDetectionModel.from_pretrained(
            model_type="ultralytics",
            model_path=str(self.model_path),
            confidence_threshold=conf,
            device=device,
            image_size=imgsz or tile,
        )
        self.input_mapping = read_input_mapping(self.model_path)  # the scans' mapping the model was trained with
        names = self._model.category_mapping or {}
        self.class_names = [names[k] for k in sorted(names, key=int)]

    def predict(self, image: np.ndarray, conf: float | None = None) -> Detections:
        from sahi.predict import get_sliced_prediction

        threshold = self.conf if conf is None else float(conf)
        self._model.confidence_threshold = threshold
        rgb = np.ascontiguousarray(to_model_input(image, self.input_mapping)[:, :, ::-1])  # SAHI wants RGB
        result = get_sliced_prediction(
            rgb,
            self._model,
            slice_height=self.tile,
            slice_width=self.tile,
            overlap_height_ratio=self.overlap,
            overlap_width_ratio=self.overlap,
            perform_standard_pred=False,
            postprocess_type=self.postprocess,
            postprocess_match_metric=self.match_metric,
            postprocess_match_threshold=self.iou,
            postprocess_class_agnostic=self.class_agnostic,
            verbose=0,
        )
        preds = [p for p in result.object_prediction_list if p.score.value >= threshold]
        boxes = np.array([[p.bbox.minx, p.bbox.miny, p.bbox.maxx, p.bbox.maxy] for p in preds], dtype=np.float64)
        return Detections(
            boxes=boxes.reshape(-1, 4),
            scores=np.array([p.score.value for p in preds], dtype=np.float64),
            labels=np.array([p.category.id for p in preds], dtype=np.int64),
            class_names=list(self.class_names),
        )
