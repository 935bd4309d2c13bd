"""A run's log: every line printed and appended to ``RUN/log.txt``.

Its own module because both the run (:mod:`training.runs`) and the search's worker
processes (:mod:`training.search`) write to it; appending whole flushed lines keeps the
lines of several processes whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def run_log(run: Path, prefix: str = "") -> Callable[[str], None]:
    """Create the run folder; the returned ``log`` prints a line and appends it to
    ``RUN/log.txt`` (flushed: a long run can be followed with ``tail -f``).  ``prefix`` tells
    one worker's lines from another's."""
    run.mkdir(parents=True, exist_ok=True)
    log_f = (run / "log.txt").open("a")

    def log(msg: str) -> None:
        line = prefix + msg
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    return log
