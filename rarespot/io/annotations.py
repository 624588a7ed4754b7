"""PASCAL VOC XML, YOLO txt and COCO JSON into and out of one DetectionDataset.

Folder layouts (``load_dataset`` detects which one it is given):

* **VOC**: ``images/`` (or ``JPEGImages/``) + ``annotations/`` (or
  ``Annotations/``) with one ``<stem>.xml`` per image, optional
  ``classes.txt``. A folder with the XML files next to the images (labelImg's
  default) also works. Coordinates are read and written as the same
  continuous pixel ``xyxy`` rarespot uses everywhere (no 1-based shift, as
  labelImg and CVAT write them); integral values are written as integers and
  others as the shortest exact float, so a round trip is lossless. The subject
  (person) id is an optional ``<subject>`` element under ``<annotation>``.
* **YOLO**: ``images/`` + ``labels/`` (one ``<stem>.txt`` per image, lines
  ``class cx cy w h`` normalised; polygon lines are reduced to their box) +
  ``classes.txt`` or ``data.yaml`` (Ultralytics layout with ``train/val/test``
  folders; all splits are read into one dataset). Subject ids come from an
  optional ``subjects.csv`` (``image,subject``; image = file name). A stale
  ``labels.cache`` is ignored and never written.
* **COCO**: ``images/`` + ``annotations.json``; ``file_name`` is relative to
  ``images/``; categories keep their id order; an image's subject is its
  ``"subject"`` attribute.

Class order: an explicit ``class_names`` argument wins; then ``classes.txt``
(VOC/YOLO), ``data.yaml`` names (YOLO) or the categories (COCO). A VOC folder
without either gets its names sorted alphabetically, so the order does not
depend on which file was read first. ``save_dataset`` always writes
``classes.txt`` (and YOLO a ``data.yaml``), so a saved dataset reloads in the
same order.

Images without annotations (no XML, an empty label file, no COCO
annotations) are pure negatives: records with zero boxes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np

from rarespot.errors import InputError
from rarespot.io.atomic import atomic_write_text
from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.io.images import IMAGE_SUFFIXES, image_size, is_image_file
from rarespot.io.validate import ValidationReport, validate_dataset

Format = Literal["voc", "yolo", "coco"]
FORMATS: tuple[str, ...] = ("voc", "yolo", "coco")


# ----------------------------------------------------------------------------- helpers


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def read_class_names(path: Path) -> list[str]:
    """One class name a line; blank lines ignored; duplicates are an error."""
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read class list: {getattr(exc, 'strerror', None) or exc}") from None
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(path, f"class name(s) listed twice: {dupes}")
    if not names:
        raise InputError(path, "class list is empty")
    return names


def _size_or_zero(path: Path, strict: bool) -> tuple[int, int]:
    """Header size; in non-strict mode a missing/broken image gives (0, 0) and
    validation reports it together with every other problem."""
    try:
        return image_size(path)
    except InputError:
        if strict:
            raise
        return 0, 0


def _num(value: float) -> str:
    """Integral coordinates as integers, others as the shortest exact float."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _read_subjects_csv(path: Path) -> dict[str, str]:
    """``image,subject`` rows -> {image file name or stem: subject}."""
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"image", "subject"} <= set(reader.fieldnames):
                raise InputError(path, "expected a header line 'image,subject'")
            for row in reader:
                if row["image"] is None or row["subject"] is None:  # a line with fewer fields than the header
                    raise InputError(path, f"line {reader.line_num}: expected 'image,subject'")
                name = Path(row["image"].strip()).name
                out[name] = row["subject"].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return out


def _subject_for(subjects: dict[str, str], image: Path) -> str | None:
    return subjects.get(image.name) or subjects.get(image.stem)


# ----------------------------------------------------------------------------- format detection


def detect_format(path: str | Path) -> str:
    """'voc', 'yolo' or 'coco' for a dataset folder (or a COCO json / YOLO yaml file)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset not found")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in {".yaml", ".yml"}:
            return "yolo"
        raise InputError(path, "expected a dataset folder, a COCO .json or a YOLO data.yaml")
    if (path / "annotations.json").is_file():
        return "coco"
    for sub in ("annotations", "Annotations"):
        if (path / sub).is_dir() and any((path / sub).glob("*.xml")):
            return "voc"
    if (path / "labels").is_dir() or (path / "data.yaml").is_file() or (path / "dataset.yaml").is_file():
        return "yolo"
    if any(path.glob("*.xml")):
        return "voc"
    raise InputError(
        path,
        "cannot tell the annotation format: expected annotations.json (COCO), annotations/*.xml (VOC), "
        "or labels/ + classes.txt or data.yaml (YOLO)",
    )


# ----------------------------------------------------------------------------- VOC


def _voc_dirs(root: Path) -> tuple[Path, Path]:
    ann = next((root / s for s in ("annotations", "Annotations") if (root / s).is_dir()), root)
    img = next((root / s for s in ("images", "JPEGImages") if (root / s).is_dir()), root)
    return img, ann


def parse_voc_xml(xml_path: str | Path) -> dict:
    """One VOC file -> {filename, width, height, subject, names, boxes}. Raises InputError naming the file."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise InputError(xml_path, f"not valid XML ({exc})") from None
    except OSError as exc:
        raise InputError(xml_path, f"cannot read: {exc.strerror or exc}") from None
    if root.tag != "annotation":
        raise InputError(xml_path, f"not a PASCAL VOC file (root element <{root.tag}>, expected <annotation>)")

    def number(elem, tag: str, where: str) -> float:
        node = elem.find(tag)
        if node is None or node.text is None or not node.text.strip():
            raise InputError(xml_path, f"{where}: missing <{tag}>")
        try:
            return float(node.text)
        except ValueError:
            raise InputError(xml_path, f"{where}: <{tag}> is not a number: {node.text.strip()!r}") from None

    size = root.find("size")
    width = int(number(size, "width", "<size>")) if size is not None and size.find("width") is not None else 0
    height = int(number(size, "height", "<size>")) if size is not None and size.find("height") is not None else 0
    names, boxes = [], []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise InputError(xml_path, f"object {k + 1}: missing <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InputError(xml_path, f"object {k + 1} ({name}): missing <bndbox>")
        where = f"object {k + 1} ({name})"
        boxes.append([number(bnd, t, where) for t in ("xmin", "ymin", "xmax", "ymax")])
        names.append(name)
    return {
        "filename": (root.findtext("filename") or "").strip(),
        "path": (root.findtext("path") or "").strip(),
        "width": width,
        "height": height,
        "subject": (root.findtext("subject") or "").strip() or None,
        "names": names,
        "boxes": boxes,
    }


def _find_image(img_dir: Path, xml_path: Path, info: dict) -> Path:
    if info["filename"]:
        candidate = img_dir / info["filename"]
        if candidate.is_file():
            return candidate
    for suffix in sorted(IMAGE_SUFFIXES):
        for cand in (img_dir / (xml_path.stem + suffix), img_dir / (xml_path.stem + suffix.upper())):
            if cand.is_file():
                return cand
    if info["path"] and Path(info["path"]).is_file():
        return Path(info["path"])
    missing = img_dir / (info["filename"] or xml_path.stem)
    raise InputError(missing, f"image file not found (referenced by {xml_path})")


def read_voc(root: Path, class_names: list[str] | None = None, strict: bool = True) -> DetectionDataset:
    root = Path(root)
    img_dir, ann_dir = _voc_dirs(root)
    if class_names is None and (root / "classes.txt").is_file():
        class_names = read_class_names(root / "classes.txt")
    parsed = []
    for xml_path in sorted(ann_dir.glob("*.xml")):
        info = parse_voc_xml(xml_path)
        try:
            image = _find_image(img_dir, xml_path, info)
        except InputError:
            if strict:
                raise
            image = img_dir / (info["filename"] or xml_path.stem)
        parsed.append((xml_path, image, info))

    if class_names is None:
        class_names = sorted({n for _, _, info in parsed for n in info["names"]})
    index = {name: i for i, name in enumerate(class_names)}

    records: list[ImageRecord] = []
    annotated: set[Path] = set()
    for xml_path, image, info in parsed:
        unknown = sorted({n for n in info["names"] if n not in index})
        if unknown:
            raise InputError(xml_path, f"unknown class name(s) {unknown}; known classes: {class_names}")
        w, h = _size_or_zero(image, strict)
        if (w, h) == (0, 0):
            w, h = info["width"], info["height"]
        labels = [index[n] for n in info["names"]]
        records.append(ImageRecord(_rel(image, root), w, h, info["boxes"], labels, info["subject"]))
        annotated.add(image.resolve())
    # Images with no XML at all are pure negatives. (A flat labelImg folder is
    # listed without recursion: its subfolders are not part of the dataset.)
    if img_dir != root:
        candidates = _list_images(img_dir)
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))
    for image in candidates:
        if image.resolve() not in annotated:
            w, h = _size_or_zero(image, strict)
            records.append(ImageRecord(_rel(image, root), w, h))
    records.sort(key=lambda r: str(r.path))
    return DetectionDataset(list(class_names), records, root)


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path.resolve()


def voc_xml(record: ImageRecord, image_name: str, class_names: list[str], depth: int = 1) -> str:
    """The VOC XML text of one record."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "images"
    ET.SubElement(ann, "filename").text = image_name
    src = ET.SubElement(ann, "source")
    ET.SubElement(src, "database").text = "rarespot"
    size = ET.SubElement(ann, "size")
    ET.SubElement(size, "width").text = str(record.width)
    ET.SubElement(size, "height").text = str(record.height)
    ET.SubElement(size, "depth").text = str(depth)
    ET.SubElement(ann, "segmented").text = "0"
    if record.subject is not None:
        ET.SubElement(ann, "subject").text = str(record.subject)
    for box, label in zip(record.boxes, record.labels):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = class_names[int(label)]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bnd, tag).text = _num(value)
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode") + "\n"


# ----------------------------------------------------------------------------- YOLO


def _read_yaml(yaml_path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8-sig")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(yaml_path, f"cannot read YAML ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(yaml_path, "expected a mapping with 'names' and image folders (Ultralytics data.yaml)")
    return data


def _yolo_names_from_yaml(yaml_path: Path) -> list[str]:
    data = _read_yaml(yaml_path)
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except ValueError:
            raise InputError(yaml_path, "'names' keys must be class ids 0..n-1") from None
        if keys != list(range(len(keys))):
            raise InputError(yaml_path, f"'names' ids must be 0..{len(keys) - 1} without gaps, got {keys}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise InputError(yaml_path, "no 'names' list or mapping of class names")


def _yolo_image_dirs(root: Path, yaml_path: Path | None) -> list[Path]:
    """Where the images are: ``images/`` or the train/val/test entries of a data.yaml."""
    if yaml_path is None:
        return [root / "images"]
    data = _read_yaml(yaml_path)
    base = Path(data.get("path") or ".")
    if not base.is_absolute():
        base = yaml_path.parent / base
    dirs = []
    for key in ("train", "val", "test"):
        entries = data.get(key)
        for entry in entries if isinstance(entries, list) else [entries]:
            if entry:
                d = Path(os.path.normpath(base / entry))
                if d.suffix == ".txt":
                    raise InputError(yaml_path, f"{key}: image list files ({entry}) are not supported; use folders")
                if d not in dirs:
                    dirs.append(d)
    if not dirs and (root / "images").is_dir():
        dirs = [root / "images"]
    if not dirs:
        raise InputError(yaml_path, "no train/val/test image folders and no images/ folder")
    return dirs


def _label_path_for(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_yolo_label_file(label_path: Path, width: int, height: int, num_classes: int) -> tuple[list, list]:
    """Lines ``class cx cy w h`` (normalised) -> pixel xyxy boxes and labels."""
    boxes, labels = [], []
    try:
        lines = label_path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(label_path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise InputError(label_path, f"line {n}: not numbers: {line.strip()!r}") from None
        cls = values[0]
        if not cls.is_integer():
            raise InputError(label_path, f"line {n}: class id {fields[0]!r} is not an integer")
        cls = int(cls)
        if not 0 <= cls < num_classes:
            raise InputError(label_path, f"line {n}: class id {cls} out of range 0..{num_classes - 1}")
        coords = values[1:]
        if len(coords) == 4:
            cx, cy, bw, bh = coords
            box = [(cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width, (cy + bh / 2) * height]
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # segmentation polygon: keep its box
            xs, ys = np.asarray(coords[0::2]), np.asarray(coords[1::2])
            box = [xs.min() * width, ys.min() * height, xs.max() * width, ys.max() * height]
        else:
            raise InputError(label_path, f"line {n}: expected 'class cx cy w h', got {len(fields)} values")
        boxes.append(box)
        labels.append(cls)
    return boxes, labels


def read_yolo(path: Path, class_names: list[str] | None = None, strict: bool = True) -> DetectionDataset:
    path = Path(path)
    yaml_path = None
    if path.is_file():
        yaml_path, root = path, path.parent
    else:
        root = path
        yaml_path = next((root / n for n in ("data.yaml", "dataset.yaml") if (root / n).is_file()), None)
    if class_names is None:
        if (root / "classes.txt").is_file():
            class_names = read_class_names(root / "classes.txt")
        elif yaml_path is not None:
            class_names = _yolo_names_from_yaml(yaml_path)
        else:
            raise InputError(root, "YOLO dataset without classes.txt or data.yaml: pass the class names")
    subjects = _read_subjects_csv(root / "subjects.csv") if (root / "subjects.csv").is_file() else {}

    records = []
    for img_dir in _yolo_image_dirs(root, yaml_path):
        if not img_dir.is_dir():
            raise InputError(img_dir, "image folder not found")
        for image in _list_images(img_dir):
            w, h = _size_or_zero(image, strict)
            label_path = _label_path_for(image)
            boxes, labels = [], []
            if label_path.is_file():
                if (w, h) == (0, 0) and label_path.stat().st_size > 0:
                    # Normalised boxes need the size; the broken image is reported by validation.
                    records.append(ImageRecord(_rel(image, root), 0, 0, subject=_subject_for(subjects, image)))
                    continue
                boxes, labels = parse_yolo_label_file(label_path, w, h, len(class_names))
            records.append(ImageRecord(_rel(image, root), w, h, boxes, labels, _subject_for(subjects, image)))
    return DetectionDataset(list(class_names), records, root)


def yolo_label_text(record: ImageRecord) -> str:
    lines = []
    for (x1, y1, x2, y2), label in zip(record.boxes, record.labels):
        cx = (x1 + x2) / 2 / record.width
        cy = (y1 + y2) / 2 / record.height
        bw = (x2 - x1) / record.width
        bh = (y2 - y1) / record.height
        lines.append(" ".join([str(int(label))] + [repr(float(v)) for v in (cx, cy, bw, bh)]))
    return "\n".join(lines) + ("\n" if lines else "")


# ----------------------------------------------------------------------------- COCO


def read_coco(path: Path, class_names: list[str] | None = None, strict: bool = True) -> DetectionDataset:
    path = Path(path)
    json_path = path if path.is_file() else path / "annotations.json"
    root = json_path.parent
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise InputError(json_path, f"not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(json_path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(json_path, f"not a COCO file: no '{key}' list")

    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise InputError(json_path, f"category {k + 1}: needs 'id' and 'name'")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_name = {c["id"]: str(c["name"]) for c in cats}
    if class_names is None:
        class_names = [cat_name[c["id"]] for c in cats]
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({n for n in cat_name.values() if n not in index})
    if unknown:
        raise InputError(json_path, f"unknown class name(s) {unknown}; known classes: {class_names}")

    img_dir = root / "images"
    by_id: dict = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise InputError(json_path, f"image {k + 1}: needs 'id' and 'file_name'")
        name = Path(str(im["file_name"]))
        if name.is_absolute():
            image = name
        elif (img_dir / name).is_file() or not (root / name).is_file():
            image = img_dir / name
        else:
            image = root / name
        if strict and not image.is_file():
            raise InputError(image, f"image file not found (referenced by {json_path})")
        w, h = int(im.get("width") or 0), int(im.get("height") or 0)
        if (w, h) == (0, 0):
            w, h = _size_or_zero(image, strict)
        subject = im.get("subject")
        by_id[im["id"]] = {"image": image, "w": w, "h": h, "subject": None if subject is None else str(subject),
                           "boxes": [], "labels": []}
    for k, ann in enumerate(data["annotations"]):
        entry = by_id.get(ann.get("image_id"))
        if entry is None:
            raise InputError(json_path, f"annotation {ann.get('id', k)}: unknown image_id {ann.get('image_id')}")
        if ann.get("category_id") not in cat_name:
            raise InputError(json_path, f"annotation {ann.get('id', k)}: unknown category_id {ann.get('category_id')}")
        bbox = ann.get("bbox")
        try:
            x, y, bw, bh = (float(v) for v in bbox) if isinstance(bbox, list) else ()
        except (TypeError, ValueError):  # not a list of four numbers
            raise InputError(json_path, f"annotation {ann.get('id', k)}: bbox must be [x, y, width, height]") from None
        entry["boxes"].append([x, y, x + bw, y + bh])
        entry["labels"].append(index[cat_name[ann["category_id"]]])
    records = [
        ImageRecord(_rel(e["image"], root), e["w"], e["h"], e["boxes"], e["labels"], e["subject"])
        for e in by_id.values()
    ]
    return DetectionDataset(list(class_names), records, root)


def coco_json(ds: DetectionDataset, image_names: list[str]) -> dict:
    images, annotations = [], []
    for img_id, (rec, name) in enumerate(zip(ds.records, image_names), start=1):
        entry = {"id": img_id, "file_name": name, "width": rec.width, "height": rec.height}
        if rec.subject is not None:
            entry["subject"] = rec.subject
        images.append(entry)
        for (x1, y1, x2, y2), label in zip(rec.boxes, rec.labels):
            w, h = float(x2 - x1), float(y2 - y1)
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": int(label) + 1,
                "bbox": [_json_num(x1), _json_num(y1), _json_num(w), _json_num(h)],
                "area": _json_num(w * h), "iscrowd": 0,
            })
    categories = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(ds.class_names)]
    return {"info": {"description": "written by rarespot"}, "images": images,
            "annotations": annotations, "categories": categories}


def _json_num(v: float):
    v = float(v)
    return int(v) if v.is_integer() and math.isfinite(v) else v


# ----------------------------------------------------------------------------- public API


_READERS = {"voc": read_voc, "yolo": read_yolo, "coco": read_coco}


def load_dataset_with_report(
    path: str | Path,
    fmt: str = "auto",
    class_names: list[str] | None = None,
    strict: bool = True,
    decode: bool = False,
    progress: bool = False,
) -> tuple[DetectionDataset, ValidationReport]:
    """Load and validate; also return the :class:`ValidationReport`.

    strict=False collects missing/corrupt images in the report instead of
    raising (``rarespot data check``); annotation-file errors (bad XML, unknown
    class) always raise, naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset not found")
    fmt = detect_format(path) if fmt == "auto" else fmt.lower()
    if fmt not in _READERS:
        raise InputError(path, f"unknown annotation format {fmt!r}; use one of {list(FORMATS)}")
    if class_names is not None:
        class_names = list(class_names)
    ds = _READERS[fmt](path, class_names=class_names, strict=strict)
    report = validate_dataset(ds, decode=decode, strict=strict, progress=progress)
    return ds, report


def load_dataset(path: str | Path, fmt: str = "auto", class_names: list[str] | None = None) -> DetectionDataset:
    """Read a VOC / YOLO / COCO dataset (format detected from the folder), validated.

    Boxes partly outside their image are clipped and zero-area boxes dropped,
    each with a :class:`~rarespot.io.validate.DatasetWarning`; an unknown class,
    a bad annotation file or a missing image raises :class:`InputError` naming
    the file. Images are not decoded (``rarespot data check`` does that).
    """
    return load_dataset_with_report(path, fmt, class_names)[0]


def _output_names(ds: DetectionDataset) -> list[str]:
    """File names under ``images/``: the original names, made unique if two
    collide (annotation files are named by stem, so stems must differ too)."""
    names, stems = [], set()
    for rec in ds.records:
        stem, suffix = rec.path.stem, rec.path.suffix
        candidate, k = stem, 1
        while candidate.lower() in stems:
            candidate = f"{stem}_{k}"
            k += 1
        stems.add(candidate.lower())
        names.append(candidate + suffix)
    return names


def _channels(path: Path) -> int:
    """Bands in the image, from its header (VOC's <depth>); 1 when the header does not say."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return len(im.getbands())
    except Exception:
        return 1


def _place_image(src: Path, dst: Path, copy_images: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        if dst.resolve() == src.resolve():
            return  # already there (saving a dataset into its own folder)
        dst.unlink()
    if copy_images:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def save_dataset(ds: DetectionDataset, out_dir: str | Path, fmt: str, copy_images: bool = True) -> Path:
    """Write ``ds`` to ``out_dir`` in ``fmt`` ('voc' | 'yolo' | 'coco').

    Images go to ``out_dir/images/`` (copied, or symlinked with
    ``copy_images=False``); annotation files are written atomically.
    Returns ``out_dir``.
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}; use one of {list(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _output_names(ds)
    for rec, name in zip(ds.records, names):
        src = ds.image_path(rec)
        if not src.is_file():
            raise InputError(src, "image file not found")
        _place_image(src, out / "images" / name, copy_images)
        if rec.width <= 0 or rec.height <= 0:
            rec.width, rec.height = image_size(src)

    classes_text = "\n".join(ds.class_names) + "\n"
    if fmt == "voc":
        atomic_write_text(out / "classes.txt", classes_text)
        for rec, name in zip(ds.records, names):
            depth = _channels(ds.image_path(rec))
            atomic_write_text(out / "annotations" / (Path(name).stem + ".xml"),
                              voc_xml(rec, name, ds.class_names, depth))
    elif fmt == "yolo":
        atomic_write_text(out / "classes.txt", classes_text)
        names_yaml = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(ds.class_names))
        atomic_write_text(out / "data.yaml", f"path: .\ntrain: images\nval: images\nnames:\n{names_yaml}\n")
        for rec, name in zip(ds.records, names):
            atomic_write_text(out / "labels" / (Path(name).stem + ".txt"), yolo_label_text(rec))
        rows = [(name, rec.subject) for rec, name in zip(ds.records, names) if rec.subject is not None]
        if rows:
            # csv quoting: a comma in a file name or subject id must not shift the columns.
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([("image", "subject"), *rows])
            atomic_write_text(out / "subjects.csv", buf.getvalue())
    else:
        atomic_write_text(out / "annotations.json", json.dumps(coco_json(ds, names), indent=1) + "\n")
    return out
