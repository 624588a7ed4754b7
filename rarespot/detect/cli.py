"""`rarespot detect` commands (filled in by the detect pipeline)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def demo() -> None:
    """Run the main job: synthetic scans -> positive-tiling training -> tiled evaluation -> demo/report.html."""
    raise typer.Exit(1)
