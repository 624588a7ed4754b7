"""How imbalanced is a detection dataset? (seed 002's taxonomy: class, scale,
spatial and foreground/background imbalance; §9.2 on measuring it.)

``imbalance_report`` writes ``report.md``, ``report.json`` and PNG plots for
train/val/test side by side. Pure numpy + matplotlib (no torch).

Definitions (all over *objects*, not images, unless said otherwise):

* imbalance ratio: max count / min count over the classes present (absent
  classes would make it infinite; they are listed separately instead).
* normalised entropy: H(p) / log(C) with p the class shares and C the number
  of classes (absent classes included, so a missing class lowers it); 1 is
  perfectly balanced. C = 1 gives 1.
* Gini: the Gini *inequality* coefficient of the per-class counts,
  sum_i sum_j |n_i - n_j| / (2 C^2 mean(n)); 0 balanced, (C-1)/C when one
  class has every object.
* effective number of samples E_n = (1 - beta^n) / (1 - beta) (Cui et al.).
* COCO scale: small area < 32^2, medium < 96^2, large >= 96^2 image pixels.
* relative size: sqrt(box area / image area).
* foreground fraction: area of the union of an image's boxes / image area;
  fg/bg ratio: summed union area / summed remaining area over the split.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rarespot.imbalance.weights import class_balanced_weights, effective_number
from rarespot.io.dataset import DetectionDataset
from rarespot.io.atomic import atomic_write_bytes

COCO_SMALL, COCO_MEDIUM = 32**2, 96**2
SCALES = ("small", "medium", "large")
BETAS = (0.99, 0.999)
LOCATION_BINS = 8


def imbalance_ratio(counts) -> float | None:
    """max / min over present classes; None when no class is present."""
    n = np.asarray(counts, dtype=np.float64)
    present = n[n > 0]
    return float(present.max() / present.min()) if present.size else None


def normalised_entropy(counts) -> float:
    n = np.asarray(counts, dtype=np.float64)
    if n.size <= 1:
        return 1.0
    total = n.sum()
    if total <= 0:
        return 0.0
    p = n[n > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(n.size))


def gini(counts) -> float:
    n = np.asarray(counts, dtype=np.float64)
    if n.size == 0 or n.sum() <= 0:
        return 0.0
    diff = np.abs(n[:, None] - n[None, :]).sum()
    return float(diff / (2 * n.size**2 * n.mean()))


def union_area(boxes: np.ndarray) -> float:
    """Exact area of the union of xyxy boxes (coordinate compression; fine for
    the tens of boxes an image has)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if len(boxes) == 0:
        return 0.0
    xs = np.unique(boxes[:, [0, 2]])
    ys = np.unique(boxes[:, [1, 3]])
    cx = (xs[:-1] + xs[1:]) / 2
    cy = (ys[:-1] + ys[1:]) / 2
    covered = np.zeros((len(cy), len(cx)), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        covered[np.ix_((cy > y1) & (cy < y2), (cx > x1) & (cx < x2))] = True
    cell = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return float(cell[covered].sum())


@dataclass
class SplitStats:
    """The statistics of one split (all lists are per class unless named otherwise)."""

    images: int
    objects: int
    negative_images: int
    class_counts: list[int]
    images_with_class: list[int]
    absent_classes: list[int]
    imbalance_ratio: float | None
    normalised_entropy: float
    gini: float
    effective_number: dict[str, list[float]]
    class_balanced_weights: dict[str, list[float]]
    coco_scale: dict[str, int]
    coco_scale_per_class: dict[str, list[int]]
    relative_size_quantiles: dict[str, float]
    relative_size_median_per_class: list[float | None]
    objects_per_image: dict[str, int]
    mean_objects_per_image: float
    mean_foreground_fraction: float
    foreground_background_ratio: float | None
    location_histogram: list[list[int]]
    images_without_size: int = 0
    relative_sizes: list[float] = field(default_factory=list, repr=False)


def split_stats(ds: DetectionDataset, bins: int = LOCATION_BINS) -> SplitStats:
    """Every statistic of the report for one dataset (exact, no sampling)."""
    c = ds.num_classes
    counts = ds.class_counts()
    images_with = np.zeros(c, dtype=np.int64)
    coco = np.zeros((3, c), dtype=np.int64)
    rel_sizes: list[float] = []
    rel_by_class: list[list[float]] = [[] for _ in range(c)]
    per_image = []
    fg_fracs = []
    fg_total = bg_total = 0.0
    loc = np.zeros((bins, bins), dtype=np.int64)
    no_size = 0
    for rec in ds.records:
        n = len(rec.labels)
        per_image.append(n)
        if n:
            images_with[np.unique(rec.labels)] += 1
        area = (rec.boxes[:, 2] - rec.boxes[:, 0]) * (rec.boxes[:, 3] - rec.boxes[:, 1])
        scale_idx = np.where(area < COCO_SMALL, 0, np.where(area < COCO_MEDIUM, 1, 2))
        np.add.at(coco, (scale_idx, rec.labels), 1)
        if rec.width <= 0 or rec.height <= 0:
            no_size += 1
            continue
        img_area = float(rec.width * rec.height)
        rel = np.sqrt(np.clip(area, 0, None) / img_area)
        rel_sizes.extend(rel.tolist())
        for lab, r in zip(rec.labels, rel):
            rel_by_class[int(lab)].append(float(r))
        fg = min(union_area(rec.boxes), img_area)
        fg_fracs.append(fg / img_area)
        fg_total += fg
        bg_total += img_area - fg
        if n:
            cx = (rec.boxes[:, 0] + rec.boxes[:, 2]) / 2 / rec.width
            cy = (rec.boxes[:, 1] + rec.boxes[:, 3]) / 2 / rec.height
            # Row = vertical position (top first), column = horizontal, as the heatmap is drawn.
            ix = np.clip((cx * bins).astype(int), 0, bins - 1)
            iy = np.clip((cy * bins).astype(int), 0, bins - 1)
            np.add.at(loc, (iy, ix), 1)

    per_image_arr = np.asarray(per_image, dtype=np.int64)
    hist = np.bincount(per_image_arr, minlength=1) if len(per_image_arr) else np.zeros(1, dtype=np.int64)
    rel_arr = np.asarray(rel_sizes)
    quant = (
        {f"p{q}": float(np.percentile(rel_arr, q)) for q in (10, 50, 90)} if rel_arr.size else {}
    )
    return SplitStats(
        images=len(ds),
        objects=int(counts.sum()),
        negative_images=int((per_image_arr == 0).sum()),
        class_counts=counts.tolist(),
        images_with_class=images_with.tolist(),
        absent_classes=[i for i in range(c) if counts[i] == 0],
        imbalance_ratio=imbalance_ratio(counts),
        normalised_entropy=normalised_entropy(counts),
        gini=gini(counts),
        effective_number={str(b): effective_number(counts, b).tolist() for b in BETAS},
        class_balanced_weights={str(b): class_balanced_weights(counts, b).tolist() for b in BETAS},
        coco_scale={name: int(coco[i].sum()) for i, name in enumerate(SCALES)},
        coco_scale_per_class={name: coco[i].tolist() for i, name in enumerate(SCALES)},
        relative_size_quantiles=quant,
        relative_size_median_per_class=[float(np.median(v)) if v else None for v in rel_by_class],
        objects_per_image={str(k): int(v) for k, v in enumerate(hist) if v},
        mean_objects_per_image=float(per_image_arr.mean()) if len(per_image_arr) else 0.0,
        mean_foreground_fraction=float(np.mean(fg_fracs)) if fg_fracs else 0.0,
        foreground_background_ratio=float(fg_total / bg_total) if bg_total > 0 else None,
        location_histogram=loc.tolist(),
        images_without_size=no_size,
        relative_sizes=rel_sizes,
    )


@dataclass
class ImbalanceReport:
    class_names: list[str]
    splits: dict[str, SplitStats]
    markdown: Path
    json: Path
    plots: list[Path]

    def to_dict(self) -> dict:
        return {
            "class_names": self.class_names,
            "splits": {name: {k: v for k, v in asdict(s).items() if k != "relative_sizes"} for name, s in self.splits.items()},
        }


# --- writing ---------------------------------------------------------------------------
def _save_figure(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _markdown(class_names: list[str], splits: dict[str, SplitStats], plots: list[Path]) -> str:
    names = list(splits)
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"

    def row(label, values):
        return f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |\n"

    s = splits
    md = ["# Class-imbalance report\n\n"]
    md.append("## Summary\n\n" + head)
    md.append(row("images", [s[n].images for n in names]))
    md.append(row("objects", [s[n].objects for n in names]))
    md.append(row("negative images (no object)", [s[n].negative_images for n in names]))
    md.append(row("imbalance ratio (max/min, present classes)", [s[n].imbalance_ratio for n in names]))
    md.append(row("normalised entropy (1 = balanced)", [s[n].normalised_entropy for n in names]))
    md.append(row("Gini of class counts (0 = balanced)", [s[n].gini for n in names]))
    md.append(row("mean objects per image", [s[n].mean_objects_per_image for n in names]))
    md.append(row("mean foreground fraction of an image", [s[n].mean_foreground_fraction for n in names]))
    md.append(row("foreground / background area", [s[n].foreground_background_ratio for n in names]))
    for n in names:
        if s[n].absent_classes:
            md.append(f"\n**{n}** has no objects of: {', '.join(class_names[i] for i in s[n].absent_classes)}.\n")
        if s[n].images_without_size:
            md.append(f"\n**{n}**: {s[n].images_without_size} images of unknown size left out of size/location statistics.\n")

    md.append("\n## Objects per class\n\n| class | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n")
    for i, cname in enumerate(class_names):
        cells = []
        for n in names:
            tot = max(1, s[n].objects)
            cells.append(f"{s[n].class_counts[i]} ({100 * s[n].class_counts[i] / tot:.1f}%)")
        md.append(f"| {cname} | " + " | ".join(cells) + " |\n")

    first = names[0]
    md.append(f"\n## Effective numbers and class-balanced weights ({first})\n\n")
    md.append("| class | images with it | " + " | ".join(f"E_n (beta={b})" for b in BETAS)
              + " | " + " | ".join(f"CB weight (beta={b})" for b in BETAS) + " |\n")
    md.append("|---|---|" + "---|" * (2 * len(BETAS)) + "\n")
    for i, cname in enumerate(class_names):
        en = [s[first].effective_number[str(b)][i] for b in BETAS]
        cw = [s[first].class_balanced_weights[str(b)][i] for b in BETAS]
        md.append(f"| {cname} | {s[first].images_with_class[i]} | " + " | ".join(_fmt(v) for v in en + cw) + " |\n")

    md.append("\n## Object scale\n\nCOCO area classes (image pixels): small < 32², medium < 96², large ≥ 96².\n\n" + head)
    for k in SCALES:
        md.append(row(k, [s[n].coco_scale[k] for n in names]))
    for q in ("p10", "p50", "p90"):
        md.append(row(f"relative size sqrt(box/image) {q}", [s[n].relative_size_quantiles.get(q) for n in names]))
    md.append("\nMedian relative size per class:\n\n| class | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n")
    for i, cname in enumerate(class_names):
        md.append(f"| {cname} | " + " | ".join(_fmt(s[n].relative_size_median_per_class[i]) for n in names) + " |\n")

    md.append("\n## Objects per image\n\n| objects | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n")
    keys = sorted({int(k) for n in names for k in s[n].objects_per_image}, key=int)
    for k in keys:
        md.append(f"| {k} | " + " | ".join(str(s[n].objects_per_image.get(str(k), 0)) for n in names) + " |\n")

    md.append("\n## Plots\n\n")
    for p in plots:
        md.append(f"![{p.stem}]({p.name})\n\n")
    return "".join(md)


def _plots(class_names: list[str], splits: dict[str, SplitStats], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(splits)
    paths = []
    x = np.arange(len(class_names))
    width = 0.8 / max(1, len(names))

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(class_names)), 4))
    for k, n in enumerate(names):
        ax.bar(x + k * width, splits[n].class_counts, width, label=n)
    ax.set_xticks(x + width * (len(names) - 1) / 2, class_names, rotation=30, ha="right")
    ax.set_ylabel("objects")
    ax.set_title("Objects per class")
    ax.legend()
    paths.append(_save_figure(fig, out_dir / "class_counts.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    largest = max([max(splits[n].relative_sizes, default=0.0) for n in names] + [1e-3])
    for k, n in enumerate(names):
        axes[0].bar(np.arange(3) + k * width, [splits[n].coco_scale[s] for s in SCALES], width, label=n)
        if splits[n].relative_sizes:
            axes[1].hist(splits[n].relative_sizes, bins=30, range=(0, min(1.0, 1.05 * largest)), histtype="step", label=n, density=True)
    axes[0].set_xticks(np.arange(3) + width * (len(names) - 1) / 2, ["small <32²", "medium <96²", "large"])
    axes[0].set_ylabel("objects")
    axes[0].set_title("COCO scale")
    axes[1].set_xlabel("sqrt(box area / image area)")
    axes[1].set_title("Relative object size")
    axes[0].legend()
    axes[1].legend()
    paths.append(_save_figure(fig, out_dir / "scale.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.8), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], names):
        im = ax.imshow(np.asarray(splits[n].location_histogram), extent=(0, 1, 1, 0), cmap="magma")
        ax.set_title(f"{n}: box centres")
        ax.set_xlabel("x / width")
        ax.set_ylabel("y / height")
        fig.colorbar(im, ax=ax, fraction=0.046)
    paths.append(_save_figure(fig, out_dir / "locations.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({int(k) for n in names for k in splits[n].objects_per_image})
    for k, n in enumerate(names):
        vals = [splits[n].objects_per_image.get(str(v), 0) for v in keys]
        ax.bar(np.arange(len(keys)) + k * width, vals, width, label=n)
    ax.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, [str(v) for v in keys])
    ax.set_xlabel("objects in the image")
    ax.set_ylabel("images")
    ax.set_title("Objects per image")
    ax.legend()
    paths.append(_save_figure(fig, out_dir / "objects_per_image.png"))
    plt.close(fig)
    return paths


def imbalance_report(splits: dict[str, DetectionDataset], out_dir: str | Path) -> ImbalanceReport:
    """Compute the statistics of every split and write report.md, report.json and PNGs to out_dir."""
    if not splits:
        raise ValueError("imbalance_report needs at least one split")
    class_names = list(next(iter(splits.values())).class_names)
    for name, ds in splits.items():
        if list(ds.class_names) != class_names:
            raise ValueError(f"split {name!r} has classes {ds.class_names}, expected {class_names}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {name: split_stats(ds) for name, ds in splits.items()}
    plots = _plots(class_names, stats, out_dir)
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    report = ImbalanceReport(class_names, stats, md_path, json_path, plots)
    atomic_write_bytes(json_path, json.dumps(report.to_dict(), indent=2).encode())
    atomic_write_bytes(md_path, _markdown(class_names, stats, plots).encode())
    return report
