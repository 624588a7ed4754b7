"""Progress: one home for every pipeline's progress display (rich).

On a terminal, a live bar. In a log (the bar's stream is not a terminal: nohup, CI, a file), plain
lines instead, so a long job reads in its log: one at the start, at most one every ``log_every``
seconds while it runs, and one at the end, each with the label, done/total, the rate and the time left.

    >>> with ProgressBar(120, "extracting features", enabled=True, unit="cycles") as bar:
    ...     bar.advance(8)
    ...     bar.status(loss="0.412")
"""

from __future__ import annotations

from time import monotonic  # looked up at each call, so a test can replace the clock here

LOG_EVERY = 60.0  # seconds between two plain lines of one bar in a log


def duration(seconds: float) -> str:
    """``7 min 07 s``, ``1 h 05 min``, ``42 s``: a time taken or left, as the log lines say it."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def rate_text(per_second: float, unit: str = "") -> str:
    """``1.20 scans/s``; a slow job per minute or per hour (``0.95 runs/h``), so it never reads 0.00/s."""
    unit = f" {unit}" if unit else ""
    for scale, per in ((1, "s"), (60, "min"), (3600, "h")):
        if per_second * scale >= 0.1 or per == "h":
            return f"{per_second * scale:.2f}{unit}/{per}"


class ProgressBar:
    """A rich bar showing the label, the bar, done/total (and ``unit``), the time left and a status line
    (``status(loss=..., score=...)``); shows nothing when not ``enabled``. ``transient`` clears it at the end.
    In a log (``stream`` not a terminal) it writes plain lines instead (:attr:`logging`; see the module).

    Use it as a context manager (or :meth:`start` and :meth:`stop`), so a failed run still stops the display.

    completed: done before this run (a resumed job); the rate and the time left count only what this run does.
    rounds: the job is ``rounds`` passes of ``total`` (epochs): :meth:`next_round` counts the bar from 0
        again, and the time left in the log is the whole job's.
    elapsed, time_left, rate: which times the live bar shows (the rate as ``1.20 scans/s``).
    stream: where the bar and the log lines go (default standard output).
    log_every: seconds between plain lines in a log; None for none (the caller writes its own lines):
        the bar then shows on a terminal only.
    """

    def __init__(
        self, total: int, label: str, enabled: bool = True, *, unit: str = "", transient: bool = False,
        completed: int = 0, rounds: int = 1, elapsed: bool = False, time_left: bool = True, rate: bool = False,
        stream=None, log_every: float | None = LOG_EVERY,
    ):
        from rich import get_console
        from rich.console import Console
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        # rich's shared console by default: a bar started inside another's run (a study's training) nests in it
        console = get_console() if stream is None else Console(file=stream)
        on_terminal = console.is_terminal or console.is_jupyter
        self.logging = enabled and not on_terminal and log_every is not None
        self._live = enabled and on_terminal
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
        if unit:
            columns.append(TextColumn(unit))
        if elapsed:
            columns.append(TimeElapsedColumn())
        if time_left:
            columns.append(TimeRemainingColumn())
        if rate:
            columns.append(TextColumn("{task.fields[rate]}"))
        columns.append(TextColumn("{task.fields[status]}"))
        self._progress = Progress(*columns, console=console, disable=not self._live, transient=transient)
        self._task = self._progress.add_task(label, total=total, completed=completed, status="", rate="-")
        self.label, self.total, self.completed, self.unit = label, total, completed, unit
        self._status = ""
        self._log_every = log_every
        self._rounds, self._round, self._before = max(1, rounds), 0, 0  # _before: done in finished rounds
        self._first = completed
        self._started = self._last_line = None

    # --- the job's pace ------------------------------------------------------------------------
    def _job(self) -> tuple[int, int]:
        """(done, total) over every round."""
        done = self._before + self.completed
        return done, self._before + self.total * max(1, self._rounds - self._round)

    def seconds(self) -> float:
        """Seconds since the start."""
        return 0.0 if self._started is None else monotonic() - self._started

    def rate(self) -> float | None:
        """Done per second so far in this run (None before the first)."""
        done, seconds = self._job()[0] - self._first, self.seconds()
        return done / seconds if done > 0 and seconds > 0 else None

    def seconds_left(self) -> float | None:
        """The time left of the whole job (every round) at the rate so far; None before the first."""
        rate = self.rate()
        if rate is None:
            return None
        done, total = self._job()
        return max(total - done, 0) / rate

    # --- updates -------------------------------------------------------------------------------
    def advance(self, n: int = 1) -> None:
        self.completed += n
        self._show(advance=n)

    def update(self, *, completed: int | None = None, label: str | None = None) -> None:
        """Set how many are done (``completed``) or a new ``label``."""
        if completed is not None:
            self.completed = completed
        if label is not None:
            self.label = label
        self._show(completed=completed, description=label)

    def status(self, text: str | None = None, **fields) -> None:
        """Show ``text``, or ``key=value`` pairs, after the time left (the latest loss, score, ...).

        Set it before :meth:`advance`, so a log line written then has it."""
        self._status = text if text is not None else ", ".join(f"{k}={v}" for k, v in fields.items())
        if self._live:
            self._progress.update(self._task, status=self._status)

    def next_round(self, label: str | None = None, total: int | None = None) -> None:
        """Count from 0 again: the next epoch (``total``: this round's count when it differs, e.g. a
        validation pass). The status is cleared."""
        self._before += self.completed
        self._round += 1
        self.completed, self._status = 0, ""
        self.total = self.total if total is None else total
        self.label = self.label if label is None else label
        if self._live:
            self._progress.reset(self._task, total=self.total, description=self.label, status="")

    def _show(self, **change) -> None:
        if self._live:
            rate = self.rate()
            self._progress.update(self._task, rate="-" if rate is None else rate_text(rate, self.unit), **change)
        if self.logging and self._last_line is not None and monotonic() - self._last_line >= self._log_every:
            done, total = self._job()
            if done < total:  # at the end, the end line says it
                self._log(self._line(running=True))

    # --- lines ---------------------------------------------------------------------------------
    def print(self, line: str) -> None:
        """Print ``line`` (rich markup) above the live bar, or in the log."""
        self._progress.console.print(line, soft_wrap=True)  # a log line stays one line

    def _line(self, running: bool = False, end: bool = False, failed: bool = False) -> str:
        count = f"{self.completed}/{self.total}" + (f" {self.unit}" if self.unit else "")
        rate, left = self.rate(), self.seconds_left()
        parts = [f"{self.label}: " + (f"stopped at {count} after {duration(self.seconds())}" if failed
                                      else f"{count} in {duration(self.seconds())}" if end else count)]
        if rate is not None and (running or end):
            parts.append(rate_text(rate, self.unit))
        if running and left is not None:
            parts.append(f"~{duration(left)} left")
        if self._status:
            parts.append(self._status)
        return ", ".join(parts)

    def _log(self, line: str) -> None:
        self._last_line = monotonic()
        print(line, file=self._progress.console.file, flush=True)

    # --- start and stop ------------------------------------------------------------------------
    def start(self) -> ProgressBar:
        self._started = self._last_line = monotonic()
        if self._live:
            self._progress.start()
        if self.logging:
            self._log(self._line())
        return self

    def stop(self, failed: bool = False) -> None:
        if self._started is None:
            return
        if self._live:
            self._progress.stop()
        if self.logging:
            self._log(self._line(end=not failed, failed=failed))
        self._started = None

    def __enter__(self) -> ProgressBar:
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop(failed=exc_type is not None)


def progress_iter(items, enabled: bool, label: str, *, unit: str = "", transient: bool = False):
    """Yield ``items`` with a progress bar (count and time left) when ``enabled``."""
    if not enabled:
        yield from items
        return
    with ProgressBar(len(items), label, unit=unit, transient=transient) as bar:
        for item in items:
            yield item
            bar.advance()
