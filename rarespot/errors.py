"""Errors rarespot raises for bad input. Each names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class RarespotError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback."""


class InputError(RarespotError, ValueError):
    """A bad input file. ``str(err)`` starts with the file's path."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)

    def __reduce__(self):
        # Picklable, so errors raised in joblib/multiprocessing workers reach the caller intact.
        return (type(self), (self.path, self.problem))
