"""Progress bars: one library (rich) for every pipeline.

    >>> with ProgressBar(120, "extracting features", enabled=True, unit="cycles") as bar:
    ...     bar.advance(8)
    ...     bar.status(loss="0.412")
"""

from __future__ import annotations


class ProgressBar:
    """A rich bar showing the label, the bar, done/total (and ``unit``), the time left and a status line
    (``status(loss=..., score=...)``); shows nothing when not ``enabled``. ``transient`` clears it at the end.

    Use it as a context manager, so a failed run still stops the live display.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, *, unit: str = "", transient: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
        if unit:
            columns.append(TextColumn(unit))
        columns += [TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        self._progress = Progress(*columns, disable=not enabled, transient=transient)
        self._task = self._progress.add_task(label, total=total, status="")

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def status(self, **fields) -> None:
        """Show ``key=value`` pairs after the time left (the latest loss, score, ...)."""
        self._progress.update(self._task, status=", ".join(f"{k}={v}" for k, v in fields.items()))

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()


def progress_iter(items, enabled: bool, label: str):
    """Yield ``items`` with a progress bar (count and time left) when ``enabled``."""
    if not enabled:
        yield from items
        return
    with ProgressBar(len(items), label) as bar:
        for item in items:
            yield item
            bar.advance()
