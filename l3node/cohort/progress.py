"""The cohort's progress on the terminal: one redrawn line on a TTY, a line per study
otherwise (a log file, CI).  It names counts and times only, never a study."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, done_before: int = 0, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.done_before = total, done_before
        self.counts: dict[str, int] = {}
        self.t0 = time.monotonic()

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        todo = max(self.total - self.done_before, 0)
        n = self.finished
        frac = (self.done_before + n) / self.total if self.total else 1.0
        bar = "#" * round(frac * WIDTH) + "." * (WIDTH - round(frac * WIDTH))
        elapsed = time.monotonic() - self.t0
        left = f", ~{_clock(elapsed / n * (todo - n))} left" if 0 < n < todo else ""
        tally = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "starting"
        return (f"cohort [{bar}] {self.done_before + n}/{self.total} ({tally}"
                + (f"; {self.done_before} done before" if self.done_before else "")
                + f"), {_clock(elapsed)} elapsed{left}")

    def update(self, status: str | None = None) -> None:
        if status is not None:
            self.counts[status] = self.counts.get(status, 0) + 1
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line())
        elif status is not None:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
