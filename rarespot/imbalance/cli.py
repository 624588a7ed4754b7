"""`rarespot imbalance` commands: thin wrappers over rarespot.imbalance.

Heavy imports (matplotlib, OpenCV) happen inside the commands so that
``rarespot --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

def report_splits(dataset: Path, split_seed: int = 0, no_split: bool = False, fmt: str = "auto") -> dict:
    """The datasets a report puts side by side: DATASET's train/ val/ (test/) subfolders
    (``rarespot data split``'s layout) if it has them; otherwise DATASET split 60/20/20
    with ``split_seed``, or kept whole as "all" with ``no_split``."""
    from rarespot.errors import InputError
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import load_split_folders, split_dataset

    dataset = Path(dataset)  # a missing path: load_dataset below raises InputError "dataset not found"
    folders = load_split_folders(dataset, fmt)
    if folders is not None:
        return folders
    ds = load_dataset(dataset, fmt)
    if len(ds) == 0:
        raise InputError(dataset, "the dataset has no images")
    if no_split:
        return {"all": ds}
    return split_dataset(ds, (0.6, 0.2, 0.2), seed=split_seed)


@app.command("report")
def report(
    dataset: Path = typer.Argument(..., help="dataset (VOC/YOLO/COCO), or a folder with train/ val/ test/ subfolders"),
    out: Path = typer.Option(Path("imbalance_report"), "--out", "-o", help="folder for report.md, report.json, PNGs"),
    split_seed: int = typer.Option(0, help="seed of the 60/20/20 split when DATASET is a single set"),
    no_split: bool = typer.Option(False, "--no-split", help="report the whole set as one"),
    fmt: str = typer.Option("auto", "--format", help="annotation format: auto, voc, yolo, coco"),
) -> None:
    """Class, scale, location and foreground/background imbalance, splits side by side."""
    from rich.console import Console

    from rarespot.imbalance.report import imbalance_report

    splits = report_splits(dataset, split_seed, no_split, fmt)
    rep = imbalance_report(splits, out)
    console = Console()
    for name, st in rep.splits.items():
        ratio = "n/a" if st.imbalance_ratio is None else f"{st.imbalance_ratio:.2f}"
        console.print(
            f"{name}: {st.images} images, {st.objects} objects, imbalance ratio {ratio}, "
            f"normalised entropy {st.normalised_entropy:.3f}, Gini {st.gini:.3f}"
        )
    console.print(f"wrote {rep.markdown}")


@app.command("weights")
def weights(
    dataset: Path = typer.Argument(..., help="training set (VOC/YOLO/COCO)"),
    beta: float = typer.Option(0.999, help="class-balanced beta (0: no weighting, -> 1: inverse frequency)"),
    fmt: str = typer.Option("auto", "--format", help="annotation format: auto, voc, yolo, coco"),
) -> None:
    """Objects per class and the class weights each method would give them."""
    from rich.console import Console
    from rich.table import Table

    from rarespot.imbalance.weights import (
        class_balanced_weights,
        inverse_frequency_weights,
        sqrt_inverse_frequency_weights,
    )
    from rarespot.io.annotations import load_dataset

    ds = load_dataset(dataset, fmt)
    counts = ds.class_counts()
    cols = {
        f"class-balanced (beta={beta})": class_balanced_weights(counts, beta),
        "inverse frequency": inverse_frequency_weights(counts),
        "sqrt inverse frequency": sqrt_inverse_frequency_weights(counts),
    }
    table = Table(title=f"{dataset}: class weights (each column sums to {len(counts)})")
    table.add_column("class")
    table.add_column("objects", justify="right")
    for name in cols:
        table.add_column(name, justify="right")
    for i, cname in enumerate(ds.class_names):
        table.add_row(cname, str(int(counts[i])), *(f"{w[i]:.3f}" for w in cols.values()))
    Console().print(table)


@app.command("paste-preview")
def paste_preview(
    dataset: Path = typer.Argument(..., help="dataset to take donors and target images from"),
    out: Path = typer.Option(Path("copy_paste_preview.png"), "--out", "-o", help="PNG to write"),
    images: int = typer.Option(6, min=1, max=48, help="target images to show"),
    classes: list[int] = typer.Option(None, "--class", help="class index to paste (repeatable; default: all)"),
    max_objects: int = typer.Option(3, min=1),
    blend: str = typer.Option("auto", help="auto, transmission or alpha"),
    seed: int = typer.Option(0),
    fmt: str = typer.Option("auto", "--format", help="annotation format: auto, voc, yolo, coco"),
) -> None:
    """Write a PNG of copy-paste results (original | pasted, new boxes in red) to check the blending by eye."""
    from rarespot.imbalance.copy_paste import preview_grid
    from rarespot.io.annotations import load_dataset

    ds = load_dataset(dataset, fmt)
    path = preview_grid(ds, out, images=images, classes=classes or None, max_objects=max_objects, blend=blend, seed=seed)
    typer.echo(f"wrote {path}")
