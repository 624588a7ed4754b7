"""The ``rarespot`` command: a thin typer layer over the library.

Each pipeline keeps its commands in its own ``<package>/cli.py``; those modules
import heavy libraries (torch, ultralytics, librosa) inside the commands, so
``rarespot --help`` stays fast and works on a plain install.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from typer.core import TyperGroup

from rarespot.errors import RarespotError
from rarespot.data_cli import app as data_app
from rarespot.data_cli import synth as synth_command
from rarespot.detect.cli import app as detect_app
from rarespot.detect.cli import demo as demo_command
from rarespot.experiment.cli import experiment as experiment_command
from rarespot.imbalance.cli import app as imbalance_app
from rarespot.screen.cli import app as screen_app
from rarespot.serve.cli import serve as serve_command
from rarespot.sounds.cli import app as sounds_app



class _Commands(TyperGroup):
    """``--ray [ADDRESS]``: typer has no option with an optional value, so a bare ``--ray`` is made
    ``--ray=`` (an empty address: RAY_ADDRESS, else a local Ray) before the arguments are parsed."""

    def parse_args(self, ctx, args):
        from rarespot.ray_backend import expand_bare_ray_option

        return super().parse_args(ctx, expand_bare_ray_option(list(args)))


app = typer.Typer(
    cls=_Commands,
    name="rarespot",
    help="Find the rare thing in screening data (X-ray detection, imbalance tools, anomaly screening, lung sounds).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data", help="Check, convert, split and view detection datasets.")
app.add_typer(detect_app, name="detect", help="Train, predict, evaluate and export YOLO X-ray detectors.")
app.add_typer(imbalance_app, name="imbalance", help="Measure and counter class imbalance.")
app.add_typer(screen_app, name="screen", help="Unsupervised anomaly screening trained on normal data.")
app.add_typer(sounds_app, name="sounds", help="Lung sound classification (ICBHI 2017).")
app.command("synth")(synth_command)
app.command("demo")(demo_command)
app.command("experiment")(experiment_command)
app.command("serve")(serve_command)

_err = Console(stderr=True, soft_wrap=True)  # one error stays one line


def main() -> None:
    """Entry point: user-fixable problems print one clear line, not a traceback."""
    try:
        app()
    except RarespotError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
