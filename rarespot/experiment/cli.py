"""`rarespot experiment PLAN.yaml`."""

from __future__ import annotations

import typer


def experiment() -> None:
    """Run a study plan (base config x axes x seeds), resumable."""
    raise typer.Exit(1)
