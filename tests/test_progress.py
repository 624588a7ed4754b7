"""rarespot.progress: the one progress bar; its plain lines in a log, on a fake clock."""

import io

import pytest

import rarespot.progress as progress
from rarespot.progress import ProgressBar, duration, progress_iter, rate_text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress, "monotonic", fake)
    return fake


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_duration_and_rate_text():
    assert [duration(s) for s in (0, 42.4, 427, 3600, 3905)] == ["0 s", "42 s", "7 min 07 s", "1 h 00 min", "1 h 05 min"]
    assert rate_text(1.2, "scans") == "1.20 scans/s"
    assert rate_text(0.05, "scans") == "3.00 scans/min"  # never 0.05 scans/s: a slow job per minute
    assert rate_text(1 / 3600, "runs") == "1.00 runs/h"
    assert rate_text(2.5) == "2.50/s"


def test_a_log_gets_a_line_at_the_start_at_most_one_a_minute_and_one_at_the_end(clock):
    log = io.StringIO()
    with ProgressBar(10, "synthesising scans", unit="scans", stream=log) as bar:
        assert bar.logging
        for i in range(10):
            clock.now += 25
            bar.status(f"{i + 1} flagged")
            bar.advance()
    assert log.getvalue().splitlines() == [
        "synthesising scans: 0/10 scans",
        # 75 s: the first advance a minute after the last line; 3 in 75 s, 7 to go
        "synthesising scans: 3/10 scans, 2.40 scans/min, ~2 min 55 s left, 3 flagged",
        "synthesising scans: 6/10 scans, 2.40 scans/min, ~1 min 40 s left, 6 flagged",
        "synthesising scans: 9/10 scans, 2.40 scans/min, ~25 s left, 9 flagged",
        "synthesising scans: 10/10 scans in 4 min 10 s, 2.40 scans/min, 10 flagged",
    ]


def test_the_time_left_of_rounds_counts_the_whole_job(clock):
    """A bar per epoch (``next_round``); the time left is the fit's, as screen's CAE training logs it."""
    log = io.StringIO()
    with ProgressBar(10, "CAE epoch 1/4", unit="batches", rounds=4, stream=log) as bar:
        for _ in range(5):
            clock.now += 30 / 5
            bar.advance()  # 30 s: under a minute since the start line, quiet
        clock.now += 31
        bar.update(label="CAE epoch 1/4")  # 61 s, half an epoch: ~61 s to end it + 3 x 122 s
        clock.now += 59
        bar.advance(5)  # 120 s: 10 of 40 batches, 30 to go at 12 s each
        assert bar.seconds_left() == pytest.approx(360.0)
        bar.next_round("CAE epoch 2/4")
        assert bar.completed == 0 and bar.seconds_left() == pytest.approx(360.0)
        clock.now += 120
        bar.advance(10)
        assert bar.seconds_left() == pytest.approx(240.0)
    assert log.getvalue().splitlines() == [
        "CAE epoch 1/4: 0/10 batches",
        "CAE epoch 1/4: 5/10 batches, 4.92 batches/min, ~7 min 07 s left",
        "CAE epoch 2/4: 10/10 batches, 5.00 batches/min, ~4 min 00 s left",
        "CAE epoch 2/4: 10/10 batches in 4 min 00 s, 5.00 batches/min",
    ]


def test_a_resumed_job_counts_its_rate_from_this_run_and_a_failure_says_where_it_stopped(clock):
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with ProgressBar(10, "plan p", unit="runs", completed=4, stream=log) as bar:
            clock.now += 7200
            bar.advance()  # one run in 2 h, 5 to go
            bar.print("[red]failed[/] s/c seed 0: boom")  # markup is rich's, also in a log
            raise KeyboardInterrupt
    assert log.getvalue().splitlines() == [
        "plan p: 4/10 runs",
        "plan p: 5/10 runs, 0.50 runs/h, ~10 h 00 min left",
        "failed s/c seed 0: boom",
        "plan p: stopped at 5/10 runs after 2 h 00 min",
    ]


def test_no_lines_when_disabled_or_when_the_caller_writes_its_own(clock):
    for options in ({"enabled": False}, {"log_every": None}):
        log = io.StringIO()
        with ProgressBar(3, "quiet", stream=log, **options) as bar:
            clock.now += 120
            bar.advance(3)
        assert log.getvalue() == "" and not bar.logging


def test_a_terminal_gets_the_live_bar_and_no_plain_lines(clock):
    tty = Terminal()
    with ProgressBar(3, "live", unit="scans", rate=True, transient=True, stream=tty) as bar:
        assert not bar.logging
        clock.now += 120
        bar.advance(3)
    assert "live: " not in tty.getvalue()  # no log line (rich drew the bar and cleared it)


def test_progress_iter_yields_every_item_and_logs(clock, capsys):
    assert list(progress_iter([1, 2, 3], True, "checking images", unit="images", transient=True)) == [1, 2, 3]
    assert capsys.readouterr().out.splitlines() == ["checking images: 0/3 images", "checking images: 3/3 images in 0 s"]
    assert list(progress_iter([1, 2], False, "checking")) == [1, 2]
    assert capsys.readouterr().out == ""
