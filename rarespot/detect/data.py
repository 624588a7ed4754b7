"""Training and validation data for Ultralytics, straight from a DetectionDataset.

:class:`ScanTileDataset` is an Ultralytics ``YOLODataset`` that skips its label
files and cache: labels come from rarespot's in-memory dataset, images are read
by :func:`rarespot.io.images.read_image` (16-bit safe, PNG/TIFF/DICOM/JPEG) and
converted by :func:`~rarespot.detect.preprocess.to_model_input` on the WHOLE
scan, then cut, so training tiles get exactly the mapping the tiled predictor
applies at test time.

Training (seed 000, 3.5, random positive tiling): every epoch each image
yields ``tiles`` items; each draw is a fresh ``tile_size`` crop that contains
a chosen object at a uniformly random position (``rarespot.tiling``). Boxes are
clipped to the tile and dropped when less than ``min_visible`` of them shows.
A share ``negative_tiles`` of draws is a random tile touching no object, and
images without objects (empty label files) always give such negative tiles.

Validation: a fixed grid of tiles over each validation image (deterministic,
at the training scale, no augmentation), or whole images in full-image mode.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from ultralytics.data.augment import Compose, LetterBox, v8_transforms
from ultralytics.data.dataset import YOLODataset

from rarespot.detect.augment import apply_augmentation
from rarespot.detect.preprocess import CURRENT_INPUT_MAPPING, to_model_input
from rarespot.errors import InputError
from rarespot.io.dataset import DetectionDataset
from rarespot.tiling import boxes_in_tile, crop_tile, grid_tiles, random_negative_tile, random_positive_tile


def read_checked_image(dataset: DetectionDataset, index: int) -> np.ndarray:
    """Read one training image and check it is one the pipeline can use; errors name the file."""
    from rarespot.detect.predict import check_image
    from rarespot.io.images import read_image

    record = dataset.records[index]
    path = dataset.image_path(record)
    if not path.exists():
        raise InputError(path, "image file not found (it is listed in the annotations)")
    image = read_image(path)
    check_image(image, path)
    height, width = image.shape[:2]
    if (width, height) != (record.width, record.height):
        raise InputError(
            path, f"image is {width}x{height} but its annotation says {record.width}x{record.height}; boxes would be misplaced"
        )
    return image


class ScanTileDataset(YOLODataset):
    """Ultralytics detection dataset over a :class:`DetectionDataset`, tiled as seed 000 trains.

    source: the (already remapped) split. mode: "train" draws random positive
      tiles (or whole images when full_image), "val" a fixed grid of tiles.
    tiles, tile_size, min_visible, negative_tiles, full_image, val_overlap: as in DetectTrainConfig.
    augmentation: albumentations Compose from rarespot.detect.augment (train only).
    repeat_factors: per-image repeat factor (LVIS); an image yields tiles * r items per epoch, rounded
        stochastically (floor + Bernoulli of the fraction, as LVIS does).
    object_weights: per-class weights for choosing which object a positive tile is centred on.
    copy_paste: callable(image, boxes, labels, rng) -> (image, boxes, labels), e.g. XrayCopyPaste.
    ultralytics_augment: run Ultralytics' own v8 transforms (mosaic, HSV, flips, affine) after ours.
    cache_images: keep each image's model input (8-bit) in RAM after the first read.
    """

    def __init__(
        self,
        source: DetectionDataset,
        *,
        mode: str,
        imgsz: int,
        hyp: Any,
        batch_size: int = 8,
        stride: int = 32,
        tiles: int = 4,
        tile_size: int = 512,
        min_visible: float = 0.3,
        negative_tiles: float = 0.0,
        full_image: bool = False,
        val_overlap: float = 0.0,
        augmentation=None,
        repeat_factors: np.ndarray | None = None,
        object_weights: np.ndarray | None = None,
        copy_paste=None,
        ultralytics_augment: bool = False,
        cache_images: bool = True,
        check_images: bool = True,
    ):
        if mode not in {"train", "val"}:
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        if len(source) == 0:
            raise InputError(source.root, f"the {mode} split has no images")
        self.source = source
        self.mode = mode
        self.tiles, self.tile_size = int(tiles), int(tile_size)
        self.min_visible, self.negative_tiles = float(min_visible), float(negative_tiles)
        self.full_image, self.val_overlap = bool(full_image), float(val_overlap)
        self.augmentation = augmentation if mode == "train" else None
        self.copy_paste = copy_paste if mode == "train" else None
        self.object_weights = object_weights
        self.ultralytics_augment = bool(ultralytics_augment) and mode == "train"
        self.cache_images = bool(cache_images)
        self._model_inputs: dict[int, np.ndarray] = {}
        self.repeat_factors = repeat_factors
        data = {"names": dict(enumerate(source.class_names)), "nc": source.num_classes, "channels": 3}
        super().__init__(
            img_path=[],
            imgsz=imgsz,
            cache=False,
            augment=mode == "train",
            hyp=hyp,
            prefix=f"{mode}: ",
            rect=False,
            batch_size=batch_size,
            stride=stride,
            pad=0.0 if mode == "train" else 0.5,
            single_cls=False,
            classes=None,
            fraction=1.0,
            data=data,
            task="detect",
        )
        if check_images:
            self.check_all_images()
        self.items = self._plan_items()

    # --- what Ultralytics asks of a dataset ------------------------------------------------
    def get_img_files(self, img_path) -> list[str]:
        """The images come from the DetectionDataset, not from a folder scan."""
        return [str(self.source.image_path(r)) for r in self.source.records]

    def get_labels(self) -> list[dict]:
        """Whole-image labels in Ultralytics' format (normalised xywh); used for stats and max_det."""
        labels = []
        for rec in self.source.records:
            w, h = float(rec.width), float(rec.height)
            b = rec.boxes
            xywh = np.stack(
                [(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h],
                axis=1,
            ) if len(b) else np.zeros((0, 4))
            labels.append(
                {
                    "im_file": str(self.source.image_path(rec)),
                    "shape": (rec.height, rec.width),
                    "cls": rec.labels.reshape(-1, 1).astype(np.float32),
                    "bboxes": xywh.astype(np.float32),
                    "segments": [],
                    "keypoints": None,
                    "normalized": True,
                    "bbox_format": "xywh",
                }
            )
        return labels

    def __len__(self) -> int:
        return len(self.items)

    def build_transforms(self, hyp=None):
        """Letterbox to the network size and format; Ultralytics' v8 augmentations only when asked for."""
        v8 = self.augment and self.ultralytics_augment  # set before YOLODataset.__init__ calls this
        if v8:
            transforms = v8_transforms(self, self.imgsz, hyp)
        else:
            transforms = Compose([LetterBox(new_shape=(self.imgsz, self.imgsz), scaleup=False)])
        transforms.append(
            self.format_class(
                bbox_format="xywh",
                normalize=True,
                return_mask=False,
                return_keypoint=False,
                return_obb=False,
                batch_idx=True,
                mask_ratio=hyp.mask_ratio,
                mask_overlap=hyp.overlap_mask,
                bgr=hyp.bgr if v8 else 0.0,
            )
        )
        return transforms

    def close_mosaic(self, hyp) -> None:
        hyp.mosaic = hyp.copy_paste = hyp.mixup = hyp.cutmix = 0.0
        self.transforms = self.build_transforms(hyp)

    def get_image_and_label(self, index: int) -> dict[str, Any]:
        image_index, origin = self.items[index]
        rec = self.source.records[image_index]
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))  # follows Ultralytics' per-worker seeding
        full = self.model_input(image_index)
        if self.full_image:
            image, boxes, labels = full, rec.boxes.copy(), rec.labels.copy()
        else:
            x0, y0 = origin if origin is not None else self.draw_tile(image_index, rng)
            image = crop_tile(full, x0, y0, self.tile_size, pad_value=0)
            boxes, labels, _ = boxes_in_tile(rec.boxes, rec.labels, x0, y0, self.tile_size, self.min_visible)
        if self.copy_paste is not None:
            if image.ndim == 2:  # donors come as 3-channel model input
                image = np.repeat(image[:, :, None], 3, axis=2)
            image, boxes, labels = self.copy_paste(image, boxes, labels, rng)
        if self.augmentation is not None:
            image, boxes, labels = apply_augmentation(self.augmentation, image, boxes, labels)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image, boxes, ratio = self._resize(image, boxes)
        h0, w0 = (int(round(image.shape[0] / ratio)), int(round(image.shape[1] / ratio)))
        if self.augment:  # Ultralytics' mosaic/mixup pick partners from this buffer
            self.buffer.append(index)
            if len(self.buffer) > max(self.max_buffer_length, 1):
                self.buffer.pop(0)
        label = {
            "im_file": str(self.source.image_path(rec)),
            "ori_shape": (h0, w0),
            "resized_shape": image.shape[:2],
            "ratio_pad": (image.shape[0] / h0, image.shape[1] / w0),
            "img": np.ascontiguousarray(image),
            "cls": np.asarray(labels, dtype=np.float32).reshape(-1, 1),
            "bboxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "segments": [],
            "keypoints": None,
            "normalized": False,
            "bbox_format": "xyxy",
        }
        return self.update_labels_info(label)

    # --- tiling -----------------------------------------------------------------------------
    def _plan_items(self) -> list[tuple[int, tuple[int, int] | None]]:
        """(image index, fixed tile origin or None for a fresh random draw) for one epoch."""
        n = len(self.source)
        if self.mode == "val":
            if self.full_image:
                return [(i, None) for i in range(n)]
            items = []
            for i, rec in enumerate(self.source.records):
                for x0, y0, _, _ in grid_tiles(rec.height, rec.width, self.tile_size, self.val_overlap):
                    items.append((i, (int(x0), int(y0))))
            return items
        per_image = np.full(n, 1 if self.full_image else self.tiles, dtype=np.float64)
        if self.repeat_factors is not None:
            per_image = per_image * np.asarray(self.repeat_factors, dtype=np.float64)
        counts = np.floor(per_image)
        fraction = per_image - counts
        if fraction.any():
            # LVIS (and detectron2's sampler) round stochastically: floor + Bernoulli(fraction), so a
            # factor of 1.2 on 2 tiles gives 2.4 items on average, where round() would give 2 and no
            # effect. Drawn from numpy's global state (seeded by Ultralytics, as the tile draws are),
            # and only when needed, so runs without fractional factors draw exactly as before.
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            counts += rng.random(n) < fraction
        counts = np.maximum(1, counts).astype(int)
        return [(i, None) for i in range(n) for _ in range(counts[i])]

    def draw_tile(self, image_index: int, rng: np.random.Generator) -> tuple[int, int]:
        """Origin of a random training tile of image ``image_index`` (positive unless drawn negative)."""
        rec = self.source.records[image_index]
        if len(rec.labels) and (self.negative_tiles <= 0 or rng.random() >= self.negative_tiles):
            obj = self.choose_object(rec.labels, rng)
            return random_positive_tile(rec.height, rec.width, rec.boxes, self.tile_size, rng, index=obj)
        origin = random_negative_tile(rec.height, rec.width, rec.boxes, self.tile_size, rng)
        if origin is None:  # crowded image: no object-free tile exists, fall back to a positive one
            return random_positive_tile(rec.height, rec.width, rec.boxes, self.tile_size, rng)
        return origin

    def choose_object(self, labels: np.ndarray, rng: np.random.Generator) -> int:
        if self.object_weights is None:
            return int(rng.integers(len(labels)))
        from rarespot.imbalance.sampling import choose_object

        return int(choose_object(labels, self.object_weights, rng))

    # --- images -----------------------------------------------------------------------------
    def model_input(self, image_index: int) -> np.ndarray:
        """The whole scan as the network's 8-bit BGR input (cached; gray kept single-channel)."""
        cached = self._model_inputs.get(image_index)
        if cached is not None:
            return cached
        raw = read_checked_image(self.source, image_index)
        converted = to_model_input(raw, CURRENT_INPUT_MAPPING)  # the mapping train.py stores with the model
        if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 1):
            converted = np.ascontiguousarray(converted[:, :, 0])  # 3 equal channels: keep one, expand per tile
        if self.cache_images:
            self._model_inputs[image_index] = converted
        return converted

    def check_all_images(self) -> None:
        """Read every image once before training, so a bad file stops the run at once, named."""
        from rarespot.progress import ProgressBar

        with ProgressBar(len(self.source), f"checking {self.mode} images", unit="images", transient=True) as bar:
            for i in range(len(self.source)):
                if self.cache_images:
                    self.model_input(i)
                else:
                    read_checked_image(self.source, i)
                bar.advance()

    def _resize(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Scale so the long side is imgsz (tiles: tile_size -> imgsz); boxes follow."""
        h, w = image.shape[:2]
        ratio = self.imgsz / max(h, w)
        if ratio != 1.0:
            size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
            interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interp)
            boxes = np.asarray(boxes, dtype=np.float64) * ratio
        return image, boxes, ratio

    def tile_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (tile pixels, before resizing) and labels of a fixed validation item; for checks and tests."""
        image_index, origin = self.items[index]
        rec = self.source.records[image_index]
        if origin is None:
            return rec.boxes.copy(), rec.labels.copy()
        boxes, labels, _ = boxes_in_tile(rec.boxes, rec.labels, origin[0], origin[1], self.tile_size, self.min_visible)
        return boxes, labels
