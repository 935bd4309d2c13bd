"""When work happens: the APScheduler job that completes studies, claims and runs them,
delivers results and purges old input.

A study is complete ``scheduler.study_settle_s`` (a few seconds) after its sender released
the association that delivered it, when no other association is delivering it — the sender's
own signal that it is done, so the radiologist does not wait a minute for nothing; the
listener then wakes the scheduler for that moment (:meth:`Scheduler.wake_in`).  Senders that
keep associations open, abort them, or split a study over time fall back to
``study_quiet_s`` without a new instance, or ``study_max_wait_s`` after the first.  An
instance arriving after completion re-opens the study; the re-run replaces the result.  Each
tick runs up to ``batch_size`` complete studies, one at a time (the model uses every core),
then the due exports, then retention.  ``max_instances=1``: a tick never overlaps the next.

A run put off for want of disk space (:class:`~l3node.pipeline.Deferred`) keeps its claim —
the study stays ``processing``, no write needed on a full disk — and is run again after
``poll_s`` × 2^(n − 1) (at most :data:`DEFER_MAX_S`) for its n-th deferral in a row, if no
new instance re-opened it meanwhile; until then no other study is claimed (it would meet
the same full disk).  A restart re-runs it too (``resume``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from .config import HousekeepingConfig, SchedulerConfig
from .logs import event
from .pipeline import Deferred
from .spool import Spool
from .state import studies

log = logging.getLogger(__name__)
DEFER_MAX_S = 60.0  # the longest wait before a deferred run is tried again


class Scheduler:
    """Owns the background job; ``run_study(uid, version)`` processes one claimed study and
    ``deliver()`` runs the due exports."""

    def __init__(self, cfg: SchedulerConfig, housekeeping: HousekeepingConfig,
                 db: sqlite3.Connection, spool: Spool,
                 run_study: Callable[[str, int], object], deliver: Callable[[], None]) -> None:
        self.cfg = cfg
        self.housekeeping_cfg = housekeeping
        self.db = db
        self.spool = spool
        self.run_study = run_study
        self.deliver = deliver
        self._lock = threading.Lock()
        self._jobs = BackgroundScheduler(timezone="UTC")
        self._deferred: tuple[str, int] | None = None  # (study, version) put off, claim kept
        self._deferrals = 0  # in a row
        self._retry_at = 0.0

    @property
    def running(self) -> bool:
        return bool(self._jobs.running)

    def resume(self) -> None:
        """Before anything starts: re-run what a killed process left processing."""
        n = studies.resume_interrupted(self.db)
        if n:
            event(log, "node.resuming", studies=n, reason="interrupted while processing")

    def start(self) -> None:
        """Once the listener is up: studies still receiving get a fresh quiet period from
        now (their senders' associations died with the last process; they send again —
        the downtime and the model's loading were no sender's silence), then tick."""
        studies.restart_quiet_periods(self.db, time.time())
        self._jobs.add_job(self.tick, "interval", seconds=self.cfg.poll_s, max_instances=1,
                           coalesce=True, id="tick")
        self._jobs.start()

    def wake_in(self, delay_s: float) -> None:
        """Run a tick ``delay_s`` from now (a released study's settle period ends then),
        rather than at the next poll."""
        if not self._jobs.running:
            return
        at = datetime.now(UTC) + timedelta(seconds=delay_s + 0.05)
        self._jobs.add_job(self.tick, "date", run_date=at, misfire_grace_time=None)

    def stop(self) -> None:
        """Wait for the running tick (its study finishes and is recorded), then stop."""
        if self._jobs.running:
            self._jobs.shutdown(wait=True)

    def tick(self) -> None:
        with self._lock:
            self._process()
            self.deliver()
            self.purge_expired()

    def _process(self) -> None:
        """The deferred run first, when its time has come; then complete and claim."""
        if self._deferred is not None:
            if time.time() < self._retry_at:
                return
            uid, version = self._deferred
            claimed = studies.still_claimed(self.db, uid, version)  # kept if this raises
            self._deferred = None
            if claimed and not self._run(uid, version):
                return
        studies.mark_complete(self.db, time.time(), self.cfg.study_quiet_s,
                              self.cfg.study_max_wait_s, self.cfg.study_settle_s)
        for uid in studies.complete_batch(self.db, self.cfg.batch_size):
            version = studies.claim(self.db, uid)
            if version is not None and not self._run(uid, version):
                return

    def _run(self, uid: str, version: int) -> bool:
        """Run one claimed study; False when it was deferred (kept, to be run again)."""
        try:
            self.run_study(uid, version)
        except Deferred as exc:
            self._deferrals += 1
            delay = min(self.cfg.poll_s * 2 ** (self._deferrals - 1), DEFER_MAX_S)
            self._deferred, self._retry_at = (uid, version), time.time() + delay
            event(log, "study.deferred", logging.WARNING, study=uid, version=version,
                  deferrals=self._deferrals, retry_in_s=round(delay, 2), reason=str(exc))
            return False
        self._deferrals = 0
        return True

    def purge_expired(self) -> None:
        """Delete spooled input of studies exported more than ``retention_h`` ago."""
        cutoff = time.time() - 3600.0 * self.housekeeping_cfg.retention_h
        for uid in studies.expired(self.db, cutoff):
            n = self.spool.purge(uid)
            event(log, "study.purged", study=uid, instances=n, reason="retention")
