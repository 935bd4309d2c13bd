"""The node's lifecycle: wires the stages and starts and stops them in order.

receive (:mod:`.receive`) → spool (:mod:`.spool`) → state (:mod:`.state`) → schedule
(:mod:`.schedule`) → select → localize → compose (:mod:`.pipeline`) → export
(:mod:`.export`, transports in :mod:`.dispatch`).  Every state is in SQLite, so a restart
resumes unfinished work.  Start: the model loads before the DICOM port accepts an instance.
Stop: the listener first (no new instance is accepted), then the scheduler drains (the study
being processed finishes and is recorded), then the database closes.  The status page is the
caller's (``l3node serve`` builds it over :meth:`Node.reader` and :meth:`Node.health`).
"""

from __future__ import annotations

import shutil
import sqlite3
from typing import TYPE_CHECKING

from .config import Config
from .export import Exporter
from .metrics import Metrics
from .pipeline import Pipeline
from .receive import Receiver
from .schedule import Scheduler
from .spool import Spool
from .state import open_db, open_reader
from .state.views import readable, study_status
from .warmup import warm_up

if TYPE_CHECKING:
    from .localize.localizer import Localizer


class Node:
    """Owns the listener, the scheduler and the pipeline; ``start()``/``stop()``."""

    def __init__(self, cfg: Config, localizer: Localizer | None = None) -> None:
        self.cfg = cfg
        self.spool = Spool(cfg.paths.spool, cfg.paths.state_db)
        self.db = open_db(cfg.paths.state_db)  # the scheduler thread's connection
        self.metrics = Metrics()
        self.metrics.watch_queue(self.reader)
        self.receiver = Receiver(cfg.node, self.spool,
                                 disk_high_water_pct=cfg.housekeeping.disk_high_water_pct,
                                 metrics=self.metrics, tls=cfg.tls)
        self._localizer = localizer
        self.pipeline = Pipeline(cfg, self.db, self.metrics, lambda: self.localizer,
                                 cfg.paths.spool)
        self.exporter = Exporter(cfg, self.db, self.metrics)
        self.scheduler = Scheduler(cfg.scheduler, cfg.housekeeping, self.db, self.spool,
                                   self.pipeline.run, self.exporter.run_due)
        self.receiver.on_released = lambda _studies: self.scheduler.wake_in(
            cfg.scheduler.study_settle_s)

    def reader(self) -> sqlite3.Connection:
        """A read-only connection of its own, for another thread (the status page)."""
        return open_reader(self.cfg.paths.state_db)

    def start(self) -> None:
        """Resume, load the model and warm it up (:mod:`.warmup`), then listen and
        schedule; anything that cannot start raises before the DICOM port accepts an
        instance."""
        self.scheduler.resume()
        loc = self.localizer  # load the model before accepting work
        warm_up(loc, loc.model.spec.version)  # so the first study pays no one-time costs
        self.receiver.start()
        self.scheduler.start()

    def stop(self) -> None:
        self.receiver.stop()
        self.scheduler.stop()
        self.db.close()
        self.spool.close()

    @property
    def localizer(self) -> Localizer:
        """Loaded once, at start (torch is imported only here)."""
        if self._localizer is None:
            from .localize.localizer import Localizer

            self._localizer = Localizer.open(self.cfg.model)
        return self._localizer

    def health(self) -> dict:
        """Listener up, scheduler running, state database readable, spool below high water."""
        checks: dict[str, bool] = {"listener": self.receiver.running,
                                   "scheduler": self.scheduler.running}
        try:
            db = self.reader()
            try:
                checks["state_db"] = readable(db)
            finally:
                db.close()
        except sqlite3.Error:
            checks["state_db"] = False
        usage = shutil.disk_usage(self.spool.root)
        pct = 100.0 * usage.used / usage.total
        checks["spool_disk"] = pct < self.cfg.housekeeping.disk_high_water_pct
        return {"ok": all(checks.values()), "checks": checks, "spool_disk_pct": round(pct, 1)}

    def status(self) -> list[dict]:
        """Every study with its current result and deliveries (as ``l3node status``)."""
        return study_status(self.db)
