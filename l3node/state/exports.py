"""The delivery queue: one row per (study, version, destination), pending until sent.

The retry policy (how many attempts, how long between them) is :mod:`l3node.export`'s; here
are only the rows it reads and moves.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .db import ExportState, StudyState


@dataclass(frozen=True)
class Due:
    """One delivery whose time has come."""

    study_uid: str
    version: int
    destination: str
    attempts: int
    files: list[Path]


def due(db: sqlite3.Connection, now: float) -> list[Due]:
    rows = db.execute(
        "SELECT e.study_instance_uid, e.version, e.destination, e.attempts, r.files FROM "
        "export e JOIN result r USING (study_instance_uid, version) WHERE e.state = ? "
        "AND e.next_attempt_at <= ?", (ExportState.PENDING, now)).fetchall()
    return [Due(s, v, d, a, [Path(f) for f in json.loads(files)]) for s, v, d, a, files in rows]


def _key(d: Due) -> tuple[str, int, str]:
    return (d.study_uid, d.version, d.destination)


def mark_failed(db: sqlite3.Connection, d: Due, attempts: int, error: str) -> None:
    """No more attempts: the admin retries with ``l3node retry``."""
    db.execute("UPDATE export SET state = ?, attempts = ?, last_error = ? WHERE "
               "study_instance_uid = ? AND version = ? AND destination = ?",
               (ExportState.FAILED, attempts, error, *_key(d)))


def mark_retry(db: sqlite3.Connection, d: Due, attempts: int, next_at: float,
               error: str) -> None:
    db.execute("UPDATE export SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE "
               "study_instance_uid = ? AND version = ? AND destination = ?",
               (attempts, next_at, error, *_key(d)))


def mark_sent(db: sqlite3.Connection, d: Due, sent_at: float) -> float | None:
    """Record the delivery; when it was the study's last one, the study is exported and the
    latency from its last instance is returned (else None)."""
    db.execute("UPDATE export SET state = ?, attempts = ?, sent_at = ? WHERE "
               "study_instance_uid = ? AND version = ? AND destination = ?",
               (ExportState.SENT, d.attempts + 1, sent_at, *_key(d)))
    left = db.execute("SELECT COUNT(*) FROM export WHERE study_instance_uid = ? AND version = ? "
                      "AND state != ?", (d.study_uid, d.version, ExportState.SENT)).fetchone()[0]
    if left:
        return None
    done = db.execute(
        "UPDATE study SET state = ?, exported_at = ? WHERE study_instance_uid = ? "
        "AND state IN (?, ?) AND version = ? RETURNING last_instance_at",
        (StudyState.EXPORTED, sent_at, d.study_uid, StudyState.DONE, StudyState.NOT_FOUND,
         d.version)).fetchone()
    return None if done is None else sent_at - done[0]


def retry_failed(db: sqlite3.Connection, study_uid: str) -> int:
    """Make a study's failed exports pending again (attempts reset); returns how many."""
    return db.execute("UPDATE export SET state = ?, attempts = 0, next_attempt_at = 0 "
                      "WHERE study_instance_uid = ? AND state = ?",
                      (ExportState.PENDING, study_uid, ExportState.FAILED)).rowcount
