"""The export queue's policy: deliver each pending result set, retry with backoff, give up.

A failed attempt waits ``retry.backoff_s`` × 2^(attempt − 1), at most ``backoff_max_s``;
after ``max_attempts`` the export is failed and stays so until ``l3node retry``.  Each
destination is sent the objects of the kinds it wants (its ``objects``); one that wants none
of a result's objects (``objects = ["kos"]`` and L3 not found) is marked sent at once, with
no association.  The rows are :mod:`l3node.state.exports`'; the transports are
:mod:`l3node.dispatch`'s.

A delivery that went out but could not be recorded because the disk is full (SQLite:
"database or disk is full") is remembered here and recorded at the next pass that finds
room, without sending it again; only a restart in between sends it once more (same UIDs:
the PACS replaces, it does not add).
"""

from __future__ import annotations

import logging
import sqlite3
import time

from .config import Config, RetryConfig
from .dispatch import DispatchError, send
from .logs import event
from .metrics import Metrics
from .state import exports as queue
from .state import storage_full

log = logging.getLogger(__name__)


def backoff_s(attempts: int, rc: RetryConfig) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    return min(rc.backoff_s * 2 ** (attempts - 1), rc.backoff_max_s)


class Exporter:
    """Runs the due deliveries of the queue (from the scheduler's thread)."""

    def __init__(self, cfg: Config, db: sqlite3.Connection, metrics: Metrics) -> None:
        self.cfg = cfg
        self.db = db
        self.metrics = metrics
        self.destinations = {d.name: d for d in cfg.destinations}
        # sent, not yet recorded (the disk was full): (study, version, destination) → when
        self._unrecorded: dict[tuple[str, int, str], float] = {}

    def run_due(self) -> None:
        due_now = queue.due(self.db, time.time())
        # an unrecorded delivery stays due until recorded; one no longer due was superseded
        keys = {(d.study_uid, d.version, d.destination) for d in due_now}
        self._unrecorded = {k: t for k, t in self._unrecorded.items() if k in keys}
        for due in due_now:
            dest = self.destinations.get(due.destination)
            if dest is None:  # removed from the configuration since: left pending
                continue
            files = due.files_for({str(k) for k in dest.objects})
            key = (due.study_uid, due.version, due.destination)
            sent_at = self._unrecorded.get(key)
            if sent_at is None:
                if files:
                    try:
                        send(dest, files, self.cfg.node.ae_title, tls=self.cfg.tls)
                    except (DispatchError, OSError) as exc:
                        self._failed_attempt(due, str(exc))
                        continue
                sent_at = time.time()
            try:
                latency = queue.mark_sent(self.db, due, sent_at)
            except sqlite3.Error as exc:
                if (full := storage_full(exc)) is None:
                    raise
                if key not in self._unrecorded:
                    event(log, "export.unrecorded", logging.WARNING, study=due.study_uid,
                          version=due.version, destination=due.destination,
                          reason=f"sent; not recorded yet: {full}")
                self._unrecorded[key] = sent_at
                continue
            self._unrecorded.pop(key, None)
            self.metrics.exports.labels(due.destination, "sent").inc()
            event(log, "export.sent", study=due.study_uid, version=due.version,
                  destination=due.destination, objects=len(files))
            if latency is not None:
                self.metrics.latency_seconds.observe(latency)
                event(log, "study.exported", study=due.study_uid, version=due.version,
                      latency_s=round(latency, 2))

    def _failed_attempt(self, due: queue.Due, error: str) -> None:
        attempts = due.attempts + 1
        rc = self.cfg.retry
        self.metrics.failures.labels("export").inc()
        common = {"study": due.study_uid, "version": due.version,
                  "destination": due.destination, "attempts": attempts, "reason": error}
        if attempts >= rc.max_attempts:
            queue.mark_failed(self.db, due, attempts, error)
            self.metrics.exports.labels(due.destination, "failed").inc()
            event(log, "export.failed", logging.ERROR, **common)
            return
        delay = backoff_s(attempts, rc)
        queue.mark_retry(self.db, due, attempts, time.time() + delay, error)
        self.metrics.exports.labels(due.destination, "retry").inc()
        event(log, "export.retry", logging.WARNING, retry_in_s=delay, **common)
