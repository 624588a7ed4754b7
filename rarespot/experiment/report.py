"""Tables and plots of a finished (or partly finished) plan, in the seed's form:
one table per study (P / R / F1, mean +- std over seeds, with mAP50 beside),
a line plot for the tiling sweep (seed Fig. 6) and grouped bars for the
others (Figs. 8, 10, 12)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rarespot.experiment.plan import Plan, Study
from rarespot.experiment.runner import read_results
from rarespot.io.atomic import atomic_write_text

SHOWN = [("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"), ("map50", "mAP50")]


def _done_rows(results_csv: Path) -> list[dict[str, str]]:
    """The finished rows in a fixed order (study, cell, seed), whatever order they finished in (runs
    on a Ray cluster finish in any order): the same rows give the same report, to the last digit."""
    rows = [r for r in read_results(results_csv) if r.get("status") == "done"]
    return sorted(rows, key=lambda r: (r["study"], r["cell"], int(r["seed"]) if str(r["seed"]).lstrip("-").isdigit() else 0, r["seed"]))


def aggregate(plan: Plan, results_csv: Path) -> dict[tuple[str, str], dict[str, object]]:
    """(study, cell slug) -> {metric: (mean, std, n)} over the seeds that finished."""
    rows = _done_rows(results_csv)
    out: dict[tuple[str, str], dict[str, object]] = {}
    for study in plan.studies:
        for cell in study.cells:
            mine = [r for r in rows if r["study"] == study.name and r["cell"] == cell.slug]
            stats: dict[str, object] = {"n": len(mine)}
            for key, _ in SHOWN:
                vals = np.array([float(r[key]) for r in mine if r.get(key) not in (None, "")], dtype=float)
                if len(vals):
                    stats[key] = _stat(vals)
            out[(study.name, cell.slug)] = stats
    return out


def _stat(vals: np.ndarray) -> tuple[float, float, int]:
    """(mean, std, n) over seeds; the std of one seed is 0 for the plots' error bars."""
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def _fmt(stat) -> str:
    if stat is None:
        return "—"
    mean, std, n = stat
    # One seed has no spread: "± 0.000" would read as a measured one.
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {std:.3f}"


def study_table(study: Study, agg: dict, plan: Plan) -> str:
    tiling = study.form == "tiling"
    head = ["num tiles", "tile size"] if tiling else [study.name]
    lines = ["| " + " | ".join(head + [name for _, name in SHOWN] + ["seeds"]) + " |"]
    lines.append("|" + "---|" * (len(head) + len(SHOWN) + 1))
    for cell in study.cells:
        stats = agg.get((study.name, cell.slug), {"n": 0})
        if tiling:  # the resolved config: a cell may take its tiles from the base
            cfg = plan.config_for(cell, plan.seeds[0])
            full = cfg.get("full_image", False)
            first = ["no tile" if full else str(cfg.get("tiles", "")),
                     "full image" if full else str(cfg.get("tile_size", ""))]
        else:
            first = [cell.label]
        metrics = [_fmt(stats.get(key)) for key, _ in SHOWN]
        lines.append("| " + " | ".join(first + metrics + [str(stats["n"])]) + " |")
    return "\n".join(lines)


def class_recall_table(study: Study, results_csv: Path, prefix: str = "") -> str:
    """Recall per class (mean ± std over seeds) and the mean-over-classes F1, when the runs recorded them.

    The main table's F1 is pooled over objects; a class stuck at 0 hides there, so it shows here.
    Classes absent from the scored split are left blank. ``prefix="floor_"``: the same at the screening
    point (``evaluation.class_recall_floor``), with its pooled F1 beside.
    """
    import json

    rows = [r for r in _done_rows(results_csv) if r["study"] == study.name and r.get(f"{prefix}class_recall")]
    if not rows:
        return ""
    names = list(json.loads(rows[0][f"{prefix}class_recall"]))
    f1_cols = ["F1 (pooled)"] if prefix else []
    lines = ["| " + " | ".join([study.name, *f1_cols, "F1 (mean over classes)"] + [f"recall {n}" for n in names] + ["seeds"])
             + " |", "|" + "---|" * (len(names) + 3 + len(f1_cols))]

    def column(mine, key):
        vals = np.array([float(r[key]) for r in mine if r.get(key) not in (None, "")])
        return _fmt(_stat(vals)) if len(vals) else "—"

    for cell in study.cells:
        mine = [r for r in rows if r["cell"] == cell.slug]
        if not mine:
            continue
        recalls = [json.loads(r[f"{prefix}class_recall"]) for r in mine]
        cells = [column(mine, f"{prefix}f1") for _ in f1_cols] + [column(mine, f"{prefix}f1_mean_class")]
        for name in names:
            vals = np.array([rec[name] for rec in recalls if rec.get(name) is not None], dtype=float)
            cells.append(_fmt(_stat(vals)) if len(vals) else "")
        lines.append("| " + " | ".join([cell.label] + cells + [str(len(mine))]) + " |")
    return "\n".join(lines)


def plot_study(study: Study, agg: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rarespot.viz import save_figure

    labels = [c.label for c in study.cells]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    keys = [("precision", "Precision"), ("recall", "Recall"), ("f1", "F1")]
    for i, (key, name) in enumerate(keys):
        means = np.array([agg[(study.name, c.slug)].get(key, (math.nan, 0.0, 0))[0] for c in study.cells])
        stds = np.array([agg[(study.name, c.slug)].get(key, (math.nan, 0.0, 0))[1] for c in study.cells])
        if study.form == "tiling":
            ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=name)
        else:
            ax.bar(x + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, label=name)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"{study.name} (mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def write_report(plan: Plan, out_dir: str | Path) -> Path:
    """``out_dir/report.md`` + one PNG per study; returns the markdown path."""
    out_dir = Path(out_dir)
    agg = aggregate(plan, out_dir / "results.csv")
    parts = [f"# Study: {plan.name}", "", f"Seeds: {plan.seeds}. Budget: {plan.budget.model_dump(exclude_none=True)}.", ""]
    for study in plan.studies:
        png = plot_study(study, agg, out_dir / f"{study.name}.png")
        parts += [f"## {study.name}", "", study_table(study, agg, plan), ""]
        per_class = class_recall_table(study, out_dir / "results.csv")
        if per_class:
            parts += ["P / R / F1 above are pooled over all objects. Per class:", "", per_class, ""]
        floored = class_recall_table(study, out_dir / "results.csv", prefix="floor_")
        if floored:
            parts += [f"The same models at the screening point (one confidence, the best F1 among those keeping every "
                      f"class's validation recall at {plan.evaluation.class_recall_floor}):", "", floored, ""]
        parts += [f"![{study.name}]({png.name})", ""]
    return atomic_write_text(out_dir / "report.md", "\n".join(parts))
