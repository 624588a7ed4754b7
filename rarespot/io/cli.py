"""`rarespot data ...` and `rarespot synth`."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def synth() -> None:
    """Generate synthetic 16-bit full-body X-ray scans with VOC annotations."""
    raise typer.Exit(1)
