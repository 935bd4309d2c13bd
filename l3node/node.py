"""The node: receive → spool → (APScheduler) complete → select series → localize → compose
→ dispatch, with every state in SQLite so a restart resumes unfinished work.

Study states: receiving → complete → processing → done | not_found | failed → exported.
An instance arriving for a study in any later state sends it back to receiving; the re-run
gets a new version, and its results reuse the UIDs derived from (study, series, model
version), so the PACS sees replacements, never duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

from .compose import compose
from .config import Config, SelectionConfig
from .dispatch import DispatchError, send
from .localize.series import CTSeries, SeriesError, build_series, scan_folder
from .logs import event
from .metrics import Metrics
from .receive import Receiver
from .spool import Spool, StudyState, safe_name

if TYPE_CHECKING:
    from .localize.localizer import Localizer
    from .web import StatusServer

log = logging.getLogger(__name__)

STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS result (
    study_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    series_instance_uid TEXT,
    status TEXT NOT NULL,
    l3_index INTEGER,
    l3_sop_instance_uid TEXT,
    z_mm REAL,
    confidence REAL,
    reason TEXT,
    skipped_series TEXT,
    files TEXT NOT NULL,
    created_at REAL NOT NULL,
    processing_s REAL,
    PRIMARY KEY (study_instance_uid, version)
);
CREATE TABLE IF NOT EXISTS export (
    study_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,  -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL,
    PRIMARY KEY (study_instance_uid, version, destination)
);
"""
# Columns added after the first release: (table, column, type) — added to older databases.
ADDED_COLUMNS = (("result", "processing_s", "REAL"), ("export", "sent_at", "REAL"))


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the result/export tables, or add the columns an older database lacks."""
    db.executescript(STATE_SCHEMA)
    for table, column, kind in ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


@dataclass
class Selection:
    series: CTSeries | None
    skipped: dict[str, str]


def select_series(folder: Path, rules: SelectionConfig | None = None) -> Selection:
    """The best candidate CT series of a study, and why each other one was skipped.

    Candidates must load as an axial CT series (see :mod:`l3node.localize.series`) with at
    least ``min_slices``; then ORIGINAL/PRIMARY beats derived (``prefer_primary``), the widest
    z coverage (to 1 cm) wins, and the thinnest (or thickest) slices break ties.  Files the
    loader could not use are summarised by reason.
    """
    rules = rules or SelectionConfig()
    groups, bad_files = scan_folder(folder)
    skipped: dict[str, str] = {}
    reasons: dict[str, int] = {}
    for _, why in bad_files:
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        skipped[f"({count} file(s))"] = why
    ok: list[CTSeries] = []
    for key, cand in groups.items():
        if cand.localizer:
            skipped[key] = "localizer/scout images"
            continue
        try:
            s = build_series(key, cand, [])
        except SeriesError as exc:
            skipped[key] = str(exc)
            continue
        if len(s) < rules.min_slices:
            skipped[key] = f"{len(s)} slices (fewer than selection.min_slices)"
            continue
        ok.append(s)
    if not ok:
        return Selection(None, skipped)
    sign = -1.0 if rules.prefer == "thinnest" else 1.0

    def rank(s: CTSeries) -> tuple:
        primary = ("ORIGINAL" in s.image_type or not s.image_type) if rules.prefer_primary \
            else True
        cover = round(float(s.z_mm.max() - s.z_mm.min()) / 10.0)
        return (primary, cover, sign * s.slice_thickness_mm)

    ok.sort(key=rank, reverse=True)
    for s in ok[1:]:
        skipped[s.series_instance_uid] = (
            f"not the best candidate ({len(s)} slices, {s.slice_thickness_mm:g} mm, "
            f"{s.z_mm.max() - s.z_mm.min():.0f} mm coverage)")
    return Selection(ok[0], skipped)


class Node:
    """Owns the listener, the scheduler and the worker; ``start()``/``stop()``."""

    def __init__(self, cfg: Config, localizer: Localizer | None = None) -> None:
        self.cfg = cfg
        self.spool = Spool(cfg.paths.spool, cfg.paths.state_db)
        self.db = sqlite3.connect(str(cfg.paths.state_db), check_same_thread=False,
                                  isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        ensure_schema(self.db)
        self.metrics = Metrics()
        self.metrics.watch_queue(self.reader)
        self.receiver = Receiver(cfg.node, self.spool,
                                 disk_high_water_pct=cfg.housekeeping.disk_high_water_pct,
                                 metrics=self.metrics, tls=cfg.tls)
        self.results_root = Path(cfg.paths.spool) / "_results"
        self._localizer = localizer
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.destinations = list(cfg.destinations)
        self.web: StatusServer | None = None

    def reader(self) -> sqlite3.Connection:
        """A read-only connection of its own, for other threads (the status page): the
        node's connection is busy in the scheduler's transactions."""
        return sqlite3.connect(f"file:{self.cfg.paths.state_db}?mode=ro", uri=True,
                               timeout=30, check_same_thread=False)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model, open the status page (if enabled), then listen and schedule;
        anything that cannot start raises before the DICOM port accepts an instance."""
        n = self.db.execute("UPDATE study SET state = ? WHERE state = ?",
                            (StudyState.COMPLETE, StudyState.PROCESSING)).rowcount
        if n:
            event(log, "node.resuming", studies=n, reason="interrupted while processing")
        self.localizer  # load the model before accepting work  # noqa: B018
        if self.cfg.web.enabled:
            self.web = self._start_web()
        self.receiver.start()
        # A sender whose association died with the last process sends again: a study still
        # receiving gets a fresh quiet period from now, when it can, instead of being
        # processed half-received (the downtime was no sender's silence).
        self.db.execute("UPDATE study SET last_instance_at = ? WHERE state = ?",
                        (time.time(), StudyState.RECEIVING))
        self.scheduler.add_job(self.tick, "interval", seconds=self.cfg.scheduler.poll_s,
                               max_instances=1, coalesce=True, id="tick")
        self.scheduler.start()

    def _start_web(self) -> StatusServer:
        from .web import StatusServer

        w = self.cfg.web
        token = None
        if w.token_env:
            token = os.environ.get(w.token_env)
            if not token:
                raise RuntimeError(f"web.token_env: environment variable {w.token_env} is "
                                   "not set (the status page would be open without a token)")
        try:
            server = StatusServer(self, w.host, w.port, token)
        except OSError as exc:
            raise OSError(f"web: cannot listen on {w.host}:{w.port}: {exc}") from exc
        server.start()
        return server

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.receiver.stop()
        self.db.close()
        self.spool.close()

    @property
    def localizer(self) -> Localizer:
        """Loaded once, at start (torch is imported only here)."""
        if self._localizer is None:
            from .localize.localizer import Localizer, pick_device
            from .localize.model import load_artifact

            device = pick_device(self.cfg.model.device)
            model = load_artifact(self.cfg.model.path, device=device)
            self._localizer = Localizer(model, batch_size=self.cfg.model.batch_size,
                                        precision=self.cfg.model.precision, device=device,
                                        runtime=self.cfg.model.runtime)
        return self._localizer

    # -- the scheduler's job ---------------------------------------------------------------
    def tick(self) -> None:
        with self._lock:
            now = time.time()
            sc = self.cfg.scheduler
            self.db.execute(
                "UPDATE study SET state = ? WHERE state = ? AND (last_instance_at < ? OR "
                "first_instance_at < ?)", (StudyState.COMPLETE, StudyState.RECEIVING,
                                           now - sc.study_quiet_s, now - sc.study_max_wait_s))
            batch = [r[0] for r in self.db.execute(
                "SELECT study_instance_uid FROM study WHERE state = ? ORDER BY "
                "last_instance_at LIMIT ?", (StudyState.COMPLETE, sc.batch_size))]
            for uid in batch:
                self.process(uid)
            self.dispatch_pending()
            self.housekeeping()

    def housekeeping(self) -> None:
        """Delete spooled input of studies exported more than ``retention_h`` ago."""
        cutoff = time.time() - 3600.0 * self.cfg.housekeeping.retention_h
        old = [r[0] for r in self.db.execute(
            "SELECT study_instance_uid FROM study WHERE state = ? AND exported_at < ? AND "
            "purged_at IS NULL", (StudyState.EXPORTED, cutoff))]
        for uid in old:
            n = self.spool.purge(uid)
            event(log, "study.purged", study=uid, instances=n, reason="retention")

    def process(self, study_uid: str) -> None:
        claimed = self.db.execute(
            "UPDATE study SET state = ?, version = version + 1 WHERE study_instance_uid = ? "
            "AND state = ?", (StudyState.PROCESSING, study_uid, StudyState.COMPLETE)).rowcount
        if not claimed:
            return
        version = self.db.execute("SELECT version FROM study WHERE study_instance_uid = ?",
                                  (study_uid,)).fetchone()[0]
        t0 = time.perf_counter()
        try:
            sel = select_series(self.spool.root / safe_name(study_uid), self.cfg.selection)
            if sel.series is None:
                why = "; ".join(f"{k}: {v}" for k, v in sel.skipped.items())
                self._finish(study_uid, version, StudyState.FAILED, None, "no_series", None,
                             None, f"no usable CT series ({why})"[:2000], sel.skipped, [], t0)
                return
            res = self.localizer.run(sel.series)
            d = res.decision
            out = self.results_root / safe_name(study_uid) / f"v{version}"
            found = res.status == "found" and d is not None and d.index is not None
            composed = compose(sel.series, d.index if found else None,
                               d.confidence if found else 0.0,
                               self.localizer.model.spec.version, out, reason=res.reason,
                               not_found_sc_enabled=self.cfg.results.not_found_sc,
                               anatomy=res.opinion.banner() if res.opinion else "")
            self._finish(study_uid, version,
                         StudyState.DONE if found else StudyState.NOT_FOUND, sel.series,
                         res.status, d.index if found else None,
                         d.confidence if found else None, res.reason, sel.skipped,
                         composed.files, t0)
            event(log, "study.processed", study=study_uid, version=version, status=res.status,
                  series=sel.series.series_instance_uid, l3_index=d.index if found else None,
                  seconds=round(time.perf_counter() - t0, 2), evaluated=res.evaluated,
                  slices=res.slice_count,
                  anatomy=res.opinion.agreement if res.opinion else None)
        except Exception as exc:
            event(log, "study.failed", logging.ERROR, exc_info=True, study=study_uid,
                  version=version, reason=str(exc))
            self._finish(study_uid, version, StudyState.FAILED, None, "error", None, None,
                         str(exc), {}, [], t0)

    def _finish(self, study_uid: str, version: int, state: StudyState,
                series: CTSeries | None, status: str, index: int | None,
                conf: float | None, reason: str, skipped: dict[str, str],
                files: list[Path], started: float) -> None:
        sl = series.slices[index] if series is not None and index is not None else None
        seconds = time.perf_counter() - started
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT OR REPLACE INTO result (study_instance_uid, version, series_instance_uid, "
            "status, l3_index, l3_sop_instance_uid, z_mm, confidence, reason, skipped_series, "
            "files, created_at, processing_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (study_uid, version, series.series_instance_uid if series else None, status, index,
             sl.sop_instance_uid if sl else None, sl.z_mm if sl else None, conf, reason,
             json.dumps(skipped), json.dumps([str(f) for f in files]), time.time(), seconds))
        # only if nothing new arrived meanwhile (else the study is receiving again)
        self.db.execute("UPDATE study SET state = ? WHERE study_instance_uid = ? AND state = ?",
                        (state, study_uid, StudyState.PROCESSING))
        if files:
            # An older run's undelivered results must not follow this one: they carry the same
            # SOP Instance UIDs, so a late retry would put the superseded content in the PACS.
            self.db.execute("UPDATE export SET state = 'superseded' WHERE study_instance_uid = ? "
                            "AND version < ? AND state IN ('pending', 'failed')",
                            (study_uid, version))
            for dest in self.destinations:
                self.db.execute(
                    "INSERT OR REPLACE INTO export (study_instance_uid, version, destination, "
                    "state, attempts, next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?)",
                    (study_uid, version, dest.name, time.time()))
        self.db.execute("COMMIT")
        result = {StudyState.DONE: "found", StudyState.NOT_FOUND: "not_found"}.get(state,
                                                                                  "failed")
        self.metrics.studies.labels(result).inc()
        self.metrics.processing_seconds.observe(seconds)
        if result == "failed":
            self.metrics.failures.labels("processing").inc()

    def dispatch_pending(self) -> None:
        now = time.time()
        rows = self.db.execute(
            "SELECT e.study_instance_uid, e.version, e.destination, e.attempts, r.files FROM "
            "export e JOIN result r USING (study_instance_uid, version) WHERE e.state = "
            "'pending' AND e.next_attempt_at <= ?", (now,)).fetchall()
        by_name = {d.name: d for d in self.destinations}
        for study_uid, version, name, attempts, files in rows:
            dest = by_name.get(name)
            if dest is None:
                continue
            try:
                send(dest, [Path(f) for f in json.loads(files)], self.cfg.node.ae_title,
                     tls=self.cfg.tls)
            except (DispatchError, OSError) as exc:
                attempts += 1
                rc = self.cfg.retry
                self.metrics.failures.labels("export").inc()
                if attempts >= rc.max_attempts:
                    self.db.execute("UPDATE export SET state = 'failed', attempts = ?, "
                                    "last_error = ? WHERE study_instance_uid = ? AND version = ? "
                                    "AND destination = ?",
                                    (attempts, str(exc), study_uid, version, name))
                    self.metrics.exports.labels(name, "failed").inc()
                    event(log, "export.failed", logging.ERROR, study=study_uid, version=version,
                          destination=name, attempts=attempts, reason=str(exc))
                else:
                    delay = min(rc.backoff_s * 2 ** (attempts - 1), rc.backoff_max_s)
                    self.db.execute("UPDATE export SET attempts = ?, next_attempt_at = ?, "
                                    "last_error = ? WHERE study_instance_uid = ? AND version = ? "
                                    "AND destination = ?",
                                    (attempts, now + delay, str(exc), study_uid, version, name))
                    self.metrics.exports.labels(name, "retry").inc()
                    event(log, "export.retry", logging.WARNING, study=study_uid,
                          version=version, destination=name, attempts=attempts,
                          retry_in_s=delay, reason=str(exc))
                continue
            sent_at = time.time()
            self.db.execute("UPDATE export SET state = 'sent', attempts = ?, sent_at = ? WHERE "
                            "study_instance_uid = ? AND version = ? AND destination = ?",
                            (attempts + 1, sent_at, study_uid, version, name))
            self.metrics.exports.labels(name, "sent").inc()
            event(log, "export.sent", study=study_uid, version=version, destination=name)
            left = self.db.execute("SELECT COUNT(*) FROM export WHERE study_instance_uid = ? "
                                   "AND version = ? AND state != 'sent'",
                                   (study_uid, version)).fetchone()[0]
            if not left:
                done = self.db.execute(
                    "UPDATE study SET state = ?, exported_at = ? WHERE study_instance_uid = ? "
                    "AND state IN (?, ?) AND version = ? RETURNING last_instance_at",
                    (StudyState.EXPORTED, sent_at, study_uid, StudyState.DONE,
                     StudyState.NOT_FOUND, version)).fetchone()
                if done is not None:
                    self.metrics.latency_seconds.observe(sent_at - done[0])
                    event(log, "study.exported", study=study_uid, version=version,
                          latency_s=round(sent_at - done[0], 2))

    # -- admin views ------------------------------------------------------------------------
    def status(self) -> list[dict]:
        return study_status(self.db)

    def retry(self, study_uid: str) -> int:
        return retry_exports(self.db, study_uid)


def study_status(db: sqlite3.Connection, limit: int | None = None,
                 study_uid: str | None = None) -> list[dict]:
    """Every study (most recent first, at most ``limit``; or only ``study_uid``) with its
    current result, timings and delivery per destination — what ``l3node status`` and the
    status page show."""
    rows = db.execute(
        "SELECT s.study_instance_uid, s.state, s.instances, s.version, s.first_instance_at, "
        "s.last_instance_at, s.exported_at, r.status, r.l3_index, r.l3_sop_instance_uid, "
        "r.z_mm, r.confidence, r.reason, r.processing_s, r.created_at, r.files FROM study s "
        "LEFT JOIN result r ON r.study_instance_uid = s.study_instance_uid AND r.version = "
        "s.version WHERE ? IS NULL OR s.study_instance_uid = ? "
        "ORDER BY s.last_instance_at DESC LIMIT ?",
        (study_uid, study_uid, limit or -1)).fetchall()
    keys = ("study_instance_uid", "state", "instances", "version", "first_instance_at",
            "last_instance_at", "exported_at", "result", "l3_index", "l3_sop_instance_uid",
            "z_mm", "confidence", "reason", "processing_s", "result_at", "files")
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for o in out:
        o["files"] = json.loads(o["files"]) if o["files"] else []
        o["exports"] = {d: {"state": st, "attempts": a, "last_error": e, "sent_at": t}
                        for d, st, a, e, t in db.execute(
                            "SELECT destination, state, attempts, last_error, sent_at FROM "
                            "export WHERE study_instance_uid = ? AND version = ?",
                            (o["study_instance_uid"], o["version"]))}
    return out


def retry_exports(db: sqlite3.Connection, study_uid: str) -> int:
    """Make a study's failed exports pending again (attempts reset); returns how many."""
    return db.execute("UPDATE export SET state = 'pending', attempts = 0, next_attempt_at = 0 "
                      "WHERE study_instance_uid = ? AND state = 'failed'",
                      (study_uid,)).rowcount
