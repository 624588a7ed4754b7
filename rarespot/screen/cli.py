"""`rarespot screen` commands (filled in by the screen pipeline)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
