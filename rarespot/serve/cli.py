"""`rarespot serve`."""

from __future__ import annotations

import typer


def serve() -> None:
    """Start the operator review app (FastAPI)."""
    raise typer.Exit(1)
