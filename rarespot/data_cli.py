"""`rarespot data ...` and `rarespot synth`: thin wrappers over rarespot.io,
rarespot.synth, rarespot.filters and rarespot.viz. Here, not in io/, because
io/ is the bottom of the core and imports nothing above it. Library imports
happen inside the commands so `rarespot --help` stays fast."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

FORMAT_HELP = "Annotation format: auto (detect from the folder), voc, yolo or coco."


def _console():
    from rich.console import Console

    return Console()  # messages print with soft_wrap=True: a long path stays on one line, greppable


def _load(src: Path, fmt: str = "auto", class_names: list[str] | None = None):
    """load_dataset, with its fix-up warnings printed as plain lines (not Python warning records)."""
    import warnings

    from rarespot.io.annotations import load_dataset
    from rarespot.io.validate import DatasetWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        ds = load_dataset(src, fmt, class_names)
    for w in caught:
        if issubclass(w.category, DatasetWarning):
            _console().print(f"[yellow]warning[/] {w.message}", highlight=False, soft_wrap=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return ds


def _class_list(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    from rarespot.io.annotations import read_class_names

    return read_class_names(path)


def synth(
    n: int = typer.Option(200, "--n", help="Number of scans."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (VOC layout: images/, annotations/, classes.txt)."),
    seed: int = typer.Option(0, "--seed", help="Each scan depends only on (seed, index)."),
    workers: int = typer.Option(None, "--workers", "-j", help="Processes (default: all CPU cores)."),
    height: int = typer.Option(1500, "--height", help="Scan height in pixels (seed: 1500)."),
    width: int = typer.Option(1216, "--width", help="Scan width in pixels (seed: 1216)."),
) -> None:
    """Generate synthetic 16-bit full-body X-ray scans with VOC annotations (18 classes, long tail)."""
    import time

    from rarespot.synth import generate

    start = time.perf_counter()
    ds = generate(n, out, seed=seed, size=(height, width), workers=workers)
    took = time.perf_counter() - start
    counts = ds.class_counts()
    subjects = len({r.subject for r in ds})
    _console().print(
        f"wrote {len(ds)} scans ({subjects} subjects, {int(counts.sum())} objects) to {out} in {took:.1f} s",
        highlight=False,
    )


@app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Dataset folder (or COCO .json / YOLO data.yaml)."),
    dst: Path = typer.Argument(..., help="Output folder."),
    to: str = typer.Option(..., "--to", help="Output format: voc, yolo or coco."),
    src_format: str = typer.Option("auto", "--from", help=FORMAT_HELP),
    classes: Path = typer.Option(None, "--classes", help="classes.txt fixing the class order (default: the source's)."),
    symlink: bool = typer.Option(False, "--symlink", help="Symlink images instead of copying them."),
) -> None:
    """Convert between PASCAL VOC, YOLO and COCO without losing boxes, negatives or subject ids."""
    from rarespot.errors import InputError
    from rarespot.io.annotations import FORMATS, save_dataset

    if to.lower() not in FORMATS:
        raise InputError(None, f"--to must be one of {list(FORMATS)}, got {to!r}")
    if dst.resolve() == Path(src).resolve():
        raise InputError(dst, "output folder is the source folder; choose another")
    ds = _load(src, src_format, _class_list(classes))
    save_dataset(ds, dst, to, copy_images=not symlink)
    counts = ds.class_counts()
    _console().print(f"wrote {len(ds)} images, {int(counts.sum())} objects, {ds.num_classes} classes "
                     f"as {to.lower()} to {dst}", highlight=False, soft_wrap=True)


@app.command("split")
def split(
    src: Path = typer.Argument(..., help="Dataset folder."),
    dst: Path = typer.Argument(..., help="Output folder: gets train/, val/, test/ and split.csv."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    fractions: str = typer.Option("0.6,0.2,0.2", "--fractions", help="train,val,test fractions (seed: 0.6,0.2,0.2)."),
    to: str = typer.Option(None, "--to", help="Format of the parts (default: the source's)."),
    src_format: str = typer.Option("auto", "--from", help=FORMAT_HELP),
    symlink: bool = typer.Option(False, "--symlink", help="Symlink images instead of copying them."),
    stratify: bool = typer.Option(True, "--stratify/--no-stratify", help="Spread each class over the sides (rare first)."),
) -> None:
    """Seeded train/val/test split, grouped by subject (one person's scans stay on one side), stratified by class.

    Writes DST/train, DST/val and DST/test as complete datasets, and DST/split.csv
    (image,split,subject) listing where every image went.
    """
    from rarespot.errors import InputError
    from rarespot.io.annotations import FORMATS, detect_format, save_dataset
    from rarespot.io.atomic import atomic_write_text
    from rarespot.io.split import split_dataset

    if to is not None and to.lower() not in FORMATS:  # as in convert: before any reading
        raise InputError(None, f"--to must be one of {list(FORMATS)}, got {to!r}")
    try:
        fr = tuple(float(v) for v in fractions.split(","))
    except ValueError:
        raise InputError(None, f"--fractions must be three numbers like 0.6,0.2,0.2, got {fractions!r}") from None
    fmt = (to or (detect_format(src) if src_format == "auto" else src_format)).lower()
    ds = _load(src, src_format)
    try:
        parts = split_dataset(ds, fr, seed, stratify)
    except ValueError as exc:
        raise InputError(None, f"--fractions {fractions}: {exc}") from None
    rows = ["image,split,subject"]
    for name, part in parts.items():
        save_dataset(part, dst / name, fmt, copy_images=not symlink)
        rows += [f"{ds.image_path(r).name},{name},{r.subject or ''}" for r in part]
    atomic_write_text(dst / "split.csv", "\n".join(rows) + "\n")
    sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
    _console().print(f"split {len(ds)} images ({sizes}) into {dst}", highlight=False, soft_wrap=True)


def check_dataset(src: Path, src_format: str = "auto", class_names: list[str] | None = None):
    """Load without stopping at the first bad image and decode every image; returns (ds, report)."""
    import warnings

    from rarespot.io.annotations import load_dataset_with_report
    from rarespot.io.validate import DatasetWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # the table shows them
        return load_dataset_with_report(src, src_format, class_names, strict=False, decode=True, progress=True)


@app.command("check")
def check(
    src: Path = typer.Argument(..., help="Dataset folder (or COCO .json / YOLO data.yaml)."),
    src_format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    classes: Path = typer.Option(None, "--classes", help="classes.txt with the expected classes."),
) -> None:
    """Decode every image and report classes, negatives, fixed boxes, bit depths and sizes; exit 1 on errors."""
    from rich.table import Table

    ds, report = check_dataset(src, src_format, _class_list(classes))
    console = _console()
    summary = Table(title=f"{src}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("images", str(report.images))
    summary.add_row("objects", str(report.objects))
    summary.add_row("negatives (no boxes)", str(report.negatives))
    summary.add_row("subjects", str(len({r.subject for r in ds if r.subject is not None})) or "none")
    summary.add_row("clipped boxes", str(len(report.clipped)))
    summary.add_row("dropped boxes", str(len(report.dropped)))
    summary.add_row("bit depths", ", ".join(f"{k}: {v}" for k, v in sorted(report.bit_depths.items())) or "-")
    sizes = sorted(report.sizes.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{w}x{h}: {c}" for (w, h), c in sizes[:5]) + (" ..." if len(sizes) > 5 else "")
    summary.add_row("sizes (w x h)", shown or "-")
    console.print(summary)

    classes_table = Table(title="objects per class", title_justify="left")
    classes_table.add_column("id", justify="right")
    classes_table.add_column("class")
    classes_table.add_column("objects", justify="right")
    classes_table.add_column("share", justify="right")
    total = max(1, report.objects)
    for i, name in enumerate(ds.class_names):
        n = report.class_counts.get(name, 0)
        classes_table.add_row(str(i), name, str(n), f"{100 * n / total:.1f}%")
    console.print(classes_table)

    for fix in report.clipped[:20]:
        console.print(f"[yellow]clipped[/] {fix.image}: {fix.class_name} {_box(fix.before)} -> {_box(fix.after)}",
                      highlight=False, soft_wrap=True)
    for fix in report.dropped[:20]:
        console.print(f"[yellow]dropped[/] {fix.image}: {fix.class_name} {_box(fix.before)} (no area)", highlight=False, soft_wrap=True)
    for msg in report.warnings:
        if "clipped" not in msg and "dropped" not in msg:
            console.print(f"[yellow]warning[/] {msg}", highlight=False, soft_wrap=True)
    if report.errors:
        for msg in report.errors:
            console.print(f"[bold red]error[/] {msg}", highlight=False, soft_wrap=True)
        console.print(f"[bold red]{len(report.errors)} error(s)[/]")
        raise typer.Exit(1)
    console.print("[green]ok[/]: every image decoded, every box inside its image")


def _box(b) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


def find_annotations(image: Path, annotations: Path | None, dataset: Path | None, classes: Path | None):
    """(boxes, labels, class_names) for ``image`` from an annotation file or a dataset folder."""
    import numpy as np

    from rarespot.errors import InputError
    from rarespot.io.annotations import parse_voc_xml, parse_yolo_label_file, read_class_names
    from rarespot.io.images import image_size

    if dataset is not None:
        ds = _load(dataset)
        for rec in ds:
            if ds.image_path(rec).name == image.name:
                return rec.boxes, rec.labels, ds.class_names
        raise InputError(dataset, f"no annotations for {image.name} in this dataset")
    if annotations is None:
        return None, None, None
    suffix = annotations.suffix.lower()
    if not annotations.is_file():
        raise InputError(annotations, "annotation file not found")
    if suffix == ".xml":
        info = parse_voc_xml(annotations)
        names = read_class_names(classes) if classes else sorted(set(info["names"]))
        unknown = sorted(set(info["names"]) - set(names))
        if unknown:
            raise InputError(annotations, f"unknown class name(s) {unknown}; known classes: {names}")
        return np.asarray(info["boxes"]).reshape(-1, 4), [names.index(n) for n in info["names"]], names
    if suffix == ".txt":
        classes = classes or next((p / "classes.txt" for p in annotations.parents if (p / "classes.txt").is_file()),
                                  None)
        if classes is None:
            raise InputError(annotations, "YOLO labels need class names: pass --classes classes.txt")
        names = read_class_names(classes)
        w, h = image_size(image)
        boxes, labels = parse_yolo_label_file(annotations, w, h, len(names))
        return np.asarray(boxes).reshape(-1, 4), labels, names
    if suffix == ".json":
        ds = _load(annotations, "coco")
        for rec in ds:
            if ds.image_path(rec).name == image.name:
                return rec.boxes, rec.labels, ds.class_names
        raise InputError(annotations, f"no image named {image.name} in this COCO file")
    raise InputError(annotations, "annotations must be a VOC .xml, a YOLO .txt or a COCO .json")


@app.command("view")
def view(
    image: Path = typer.Argument(..., help="A scan (PNG, TIFF, DICOM, JPEG)."),
    annotations: Path = typer.Option(None, "--annotations", "-a", help="VOC .xml, YOLO .txt or COCO .json."),
    dataset: Path = typer.Option(None, "--dataset", "-d", help="A dataset folder holding this image's boxes."),
    classes: Path = typer.Option(None, "--classes", help="classes.txt (YOLO labels; VOC class order)."),
    filter_spec: str = typer.Option(None, "--filter", "-f", help='View filter, e.g. "clahe:clip=2,gamma:g=0.8".'),
    out: Path = typer.Option(None, "--out", "-o", help="Output PNG (default: <image>_view.png here)."),
) -> None:
    """Render a scan with its ground-truth boxes (red) through any view filter, to PNG.

    Without --filter, a 16-bit scan is shown through a percentile window, or a
    DICOM through its own window centre/width.
    """
    from rarespot.filters import ViewFilter
    from rarespot.io.images import read_image_with_meta
    from rarespot.viz import render_overlay, save_png

    spec = ViewFilter.parse(filter_spec)  # bad spec fails before any reading
    img, meta = read_image_with_meta(image)
    if not spec and "window_center" in meta:  # a DICOM's own window is what its author meant us to see
        spec = ViewFilter.parse(f"window:center={meta['window_center']},width={max(1.0, meta['window_width'])}")
    boxes, labels, names = find_annotations(image, annotations, dataset, classes)
    rgb = render_overlay(img, gt_boxes=boxes, gt_labels=labels, class_names=names, view=spec)
    out = out or Path(f"{image.stem}_view.png")
    save_png(out, rgb)
    n = 0 if boxes is None else len(boxes)
    _console().print(f"wrote {out} ({rgb.shape[1]}x{rgb.shape[0]}, {n} boxes, filter: {spec or 'none'})",
                     highlight=False, soft_wrap=True)
