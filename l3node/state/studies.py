"""The scheduler's rows: when a study is complete, who processes it, what the run found.

A study is claimed by one atomic UPDATE (complete → processing, version + 1), so a run never
starts twice; its :class:`Outcome` is recorded with the export rows it needs in one
transaction, and the study's state moves on only if nothing new arrived meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .db import ExportState, StudyState, rollback


@dataclass
class Outcome:
    """What one processing run of a study produced — the ``result`` row it becomes."""

    study_uid: str
    version: int
    state: StudyState  # done | not_found | failed
    status: str  # found | not_found | no_series | error
    reason: str = ""
    series_uid: str | None = None
    l3_index: int | None = None
    l3_sop_instance_uid: str | None = None
    l3_frame_number: int | None = None  # the frame, when the L3 slice is one of a multi-frame CT
    z_mm: float | None = None
    confidence: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    # {kind, path, sop_instance_uid, sop_class_uid, series_instance_uid}; a rejection note
    # also names the destinations it goes to (``destinations``)
    objects: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        return [Path(o["path"]) for o in self.objects]


def resume_interrupted(db: sqlite3.Connection) -> int:
    """Studies a killed process left processing are complete again (re-run from scratch)."""
    return db.execute("UPDATE study SET state = ? WHERE state = ?",
                      (StudyState.COMPLETE, StudyState.PROCESSING)).rowcount


def restart_quiet_periods(db: sqlite3.Connection, now: float) -> None:
    """A study still receiving at start gets a fresh quiet period: the downtime was no
    sender's silence (its association died with the last process; it sends again).  A
    study whose sender had released its association before the stop keeps its settle
    period: its sender said it was done."""
    db.execute("UPDATE study SET last_instance_at = ? WHERE state = ? AND "
               "(released_at IS NULL OR released_at < last_instance_at)",
               (now, StudyState.RECEIVING))


def mark_complete(db: sqlite3.Connection, now: float, quiet_s: float,
                  max_wait_s: float, settle_s: float | None = None) -> int:
    """Receiving studies are complete when their sender released the association that
    delivered the last instance ``settle_s`` ago (``released_at`` is set only when no
    other association was delivering the study, and an instance after it is newer), or
    after ``quiet_s`` without an instance, or ``max_wait_s`` after the first."""
    settle_s = quiet_s if settle_s is None else settle_s
    return db.execute(
        "UPDATE study SET state = ? WHERE state = ? AND (last_instance_at < ? OR "
        "first_instance_at < ? OR (released_at >= last_instance_at AND released_at < ?))",
        (StudyState.COMPLETE, StudyState.RECEIVING, now - quiet_s, now - max_wait_s,
         now - settle_s)).rowcount


def complete_batch(db: sqlite3.Connection, limit: int) -> list[str]:
    """Up to ``limit`` complete studies, longest waiting first."""
    return [r[0] for r in db.execute(
        "SELECT study_instance_uid FROM study WHERE state = ? ORDER BY last_instance_at "
        "LIMIT ?", (StudyState.COMPLETE, limit))]


def claim(db: sqlite3.Connection, study_uid: str) -> int | None:
    """Complete → processing with a new version; the version, or None if not complete."""
    row = db.execute(
        "UPDATE study SET state = ?, version = version + 1 WHERE study_instance_uid = ? "
        "AND state = ? RETURNING version",
        (StudyState.PROCESSING, study_uid, StudyState.COMPLETE)).fetchone()
    return None if row is None else int(row[0])


def still_claimed(db: sqlite3.Connection, study_uid: str, version: int) -> bool:
    """Whether the claim ``version`` still stands (processing, nothing new arrived): a run
    put off for want of disk space is retried only then.  A read: it works on a full disk."""
    return db.execute("SELECT 1 FROM study WHERE study_instance_uid = ? AND state = ? AND "
                      "version = ?", (study_uid, StudyState.PROCESSING, version)
                      ).fetchone() is not None


def record_outcome(db: sqlite3.Connection, o: Outcome, destinations: list[str]) -> None:
    """The run's result row, the study's next state, and one pending export per
    destination when there are objects to deliver — one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT OR REPLACE INTO result (study_instance_uid, version, series_instance_uid, "
            "status, l3_index, l3_sop_instance_uid, l3_frame_number, z_mm, confidence, reason, "
            "skipped_series, files, created_at, processing_s, objects) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (o.study_uid, o.version, o.series_uid, o.status, o.l3_index,
             o.l3_sop_instance_uid, o.l3_frame_number, o.z_mm, o.confidence, o.reason,
             json.dumps(o.skipped),
             json.dumps([str(f) for f in o.files]), time.time(), o.seconds,
             json.dumps(o.objects)))
        # only if nothing new arrived meanwhile (else the study is receiving again)
        db.execute("UPDATE study SET state = ? WHERE study_instance_uid = ? AND state = ?",
                   (o.state, o.study_uid, StudyState.PROCESSING))
        if o.objects:
            # An older run's undelivered results must not follow this one: they carry the
            # same SOP Instance UIDs, so a late retry would put superseded content in the PACS.
            db.execute("UPDATE export SET state = ? WHERE study_instance_uid = ? AND version < ? "
                       "AND state IN (?, ?)", (ExportState.SUPERSEDED, o.study_uid, o.version,
                                               ExportState.PENDING, ExportState.FAILED))
            for name in destinations:
                db.execute(
                    "INSERT OR REPLACE INTO export (study_instance_uid, version, destination, "
                    "state, attempts, next_attempt_at) VALUES (?, ?, ?, ?, 0, ?)",
                    (o.study_uid, o.version, name, ExportState.PENDING, time.time()))
        db.execute("COMMIT")
    except sqlite3.Error:
        rollback(db)
        raise


def delivered_before(db: sqlite3.Connection, study_uid: str,
                     version: int) -> dict[int, tuple[list[str], list[dict]]]:
    """The results older than ``version`` that are in a PACS: for each destination the
    latest older version sent to it, grouped as {version: (destinations, its objects)}."""
    out: dict[int, tuple[list[str], list[dict]]] = {}
    for dest, v, objects in db.execute(
            "SELECT e.destination, MAX(e.version), r.objects FROM export e JOIN result r "
            "USING (study_instance_uid, version) WHERE e.study_instance_uid = ? AND "
            "e.version < ? AND e.state = ? GROUP BY e.destination ORDER BY e.destination",
            (study_uid, version, ExportState.SENT)):
        out.setdefault(int(v), ([], json.loads(objects) if objects else []))[0].append(dest)
    return out


def expired(db: sqlite3.Connection, cutoff: float) -> list[str]:
    """Studies exported before ``cutoff`` whose spooled input is still there."""
    return [r[0] for r in db.execute(
        "SELECT study_instance_uid FROM study WHERE state = ? AND exported_at < ? AND "
        "purged_at IS NULL", (StudyState.EXPORTED, cutoff))]


def complete_now(db: sqlite3.Connection, study_uid: str) -> bool:
    """A receiving (or failed) study is complete at once — for a retrieval that has ended
    (a cohort), where no sender's silence needs waiting out and a failed run is worth
    another try; False when it is in any other state."""
    return db.execute(
        "UPDATE study SET state = ? WHERE study_instance_uid = ? AND state IN (?, ?)",
        (StudyState.COMPLETE, study_uid, StudyState.RECEIVING, StudyState.FAILED)
    ).rowcount > 0


RESULT_KEYS = ("state", "instances", "version", "status", "series_instance_uid", "l3_index",
               "l3_sop_instance_uid", "l3_frame_number", "z_mm", "confidence", "reason",
               "processing_s")


def latest_result(db: sqlite3.Connection, study_uid: str) -> dict | None:
    """The study's state and its current version's result row (None: no such study)."""
    row = db.execute(
        "SELECT s.state, s.instances, s.version, r.status, r.series_instance_uid, "
        "r.l3_index, r.l3_sop_instance_uid, r.l3_frame_number, r.z_mm, r.confidence, r.reason, "
        "r.processing_s "
        "FROM study s LEFT JOIN result r ON r.study_instance_uid = s.study_instance_uid "
        "AND r.version = s.version WHERE s.study_instance_uid = ?", (study_uid,)).fetchone()
    return None if row is None else dict(zip(RESULT_KEYS, row, strict=True))
