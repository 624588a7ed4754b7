"""`rarespot experiment PLAN.yaml`: run a study plan, resumably, then write its report."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import typer

from rarespot.ray_backend import RAY_HELP  # help text only: Ray itself is imported with --ray


def plan_path(plan: str) -> Path:
    """A plan file, or the name of a packaged plan (synthetic, synthetic-cpu, opixray, opixray-longtail, opixray-screening)."""
    path = Path(plan)
    if path.exists() or path.suffix in {".yaml", ".yml"}:
        return path
    packaged = resources.files("rarespot.experiment") / "plans" / f"{plan}.yaml"
    return Path(str(packaged))


def experiment(
    plan: str = typer.Argument(..., help="plan YAML, or a packaged plan: synthetic | synthetic-cpu | opixray | opixray-longtail | opixray-screening"),
    out: Optional[Path] = typer.Option(None, help="study folder (default: studies/<plan name>)"),
    images: Optional[int] = typer.Option(None, help="budget: training images"),
    epochs: Optional[int] = typer.Option(None, help="budget: epochs per run"),
    imgsz: Optional[int] = typer.Option(None, help="budget: network input size"),
    model: Optional[str] = typer.Option(None, help="budget: model, e.g. yolo11n, yolo11s"),
    device: Optional[str] = typer.Option(None, help="budget: cpu, 0, cuda:0"),
    threads: Optional[int] = typer.Option(None, help="torch threads per run on the CPU (default: timed each epoch, every core vs one fewer)"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
    study: Optional[list[str]] = typer.Option(None, help="run only these studies (repeatable)"),
    retry_failed: bool = typer.Option(False, help="run failed cells again"),
    report_only: bool = typer.Option(False, help="only (re)write the report from results.csv"),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="[ADDRESS]",
        help=RAY_HELP + " Each run is a Ray task with the plan's `resources` (default: its threads CPUs, a GPU per device).",
    ),
) -> None:
    """Run a study plan (base config x axes x seeds): resumable, one results CSV, a report in the seed's form."""
    from rarespot.detect.config import DetectTrainConfig
    from rarespot.experiment.detection import run_detection_cell
    from rarespot.experiment.plan import load_plan
    from rarespot.experiment.report import write_report
    from rarespot.experiment.runner import run_plan

    overrides = {f"budget.{k}": v for k, v in
                 dict(images=images, epochs=epochs, imgsz=imgsz, model=model, device=device, threads=threads).items() if v is not None}
    if seeds:
        overrides["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
    loaded = load_plan(plan_path(plan), overrides, training_settings=DetectTrainConfig)
    if study:
        unknown = set(study) - {s.name for s in loaded.studies}
        if unknown:
            raise typer.BadParameter(f"no such studies in the plan: {sorted(unknown)}")
    out_dir = out or Path("studies") / loaded.name
    if not report_only:
        from rarespot.ray_backend import run_plan_on_ray, settings_from_cli

        on_ray = settings_from_cli(ray)
        if on_ray is None:
            run_plan(loaded, out_dir, run_detection_cell, retry_failed=retry_failed, studies=study or None)
        else:
            run_plan_on_ray(loaded, out_dir, run_detection_cell, on_ray, retry_failed=retry_failed, studies=study or None)
    report = write_report(loaded, out_dir)
    typer.echo(f"results: {out_dir / 'results.csv'}\nreport:  {report}")
