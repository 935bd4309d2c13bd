"""The delivery queue: one row per (study, version, destination), pending until sent.

The retry policy (how many attempts, how long between them) is :mod:`l3node.export`'s; here
are only the rows it reads and moves.  Each destination gets the objects of the kinds it wants
(``objects`` in its configuration), read from the result row's recorded kinds; a rejection
note (IHE IOCM, withdrawing an older delivered result) goes, whatever the kinds, to the
destinations that were sent the result it withdraws — after the new objects.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .db import ExportState, StudyState, rollback


@dataclass(frozen=True)
class Due:
    """One delivery whose time has come."""

    study_uid: str
    version: int
    destination: str
    attempts: int
    files: list[Path]
    kinds: list[str | None] = field(default_factory=list)  # per file; None: not recorded
    # per file: the only destinations it goes to (rejection notes); None: every one
    only: list[list[str] | None] = field(default_factory=list)

    def files_for(self, wanted: Collection[str]) -> list[Path]:
        """The files whose kind's group (:func:`object_group`) is in ``wanted`` ("kos",
        "sc", "sr"); a file without a recorded kind (a result from before kinds were
        recorded) goes to every destination; a rejection note to those it names."""
        kinds = self.kinds or [None] * len(self.files)
        only = self.only or [None] * len(self.files)
        return [f for f, k, o in zip(self.files, kinds, only, strict=True)
                if (o is None or self.destination in o)
                and (k is None or k == "rejection" or object_group(k) in wanted)]


def object_group(kind: str) -> str:
    """A result object's kind as a destination names it: every Secondary Capture
    (``sc-axial``, ``sc-sagittal``, ``sc-not-found``) is ``sc``."""
    return "sc" if kind.startswith("sc-") else kind


def due(db: sqlite3.Connection, now: float) -> list[Due]:
    rows = db.execute(
        "SELECT e.study_instance_uid, e.version, e.destination, e.attempts, r.files, "
        "r.objects FROM export e JOIN result r USING (study_instance_uid, version) "
        "WHERE e.state = ? AND e.next_attempt_at <= ?", (ExportState.PENDING, now)).fetchall()
    out = []
    for s, v, d, a, files, objects in rows:
        objs = json.loads(objects) if objects else []
        if objs:
            out.append(Due(s, v, d, a, [Path(o["path"]) for o in objs],
                           [o.get("kind") for o in objs],
                           [o.get("destinations") for o in objs]))
        else:
            out.append(Due(s, v, d, a, [Path(f) for f in json.loads(files)]))
    return out


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
    latency from its last instance is returned (else None).  One transaction: an export
    marked sent whose study's update failed (a full disk) would never be due again, and
    the study would stay ``done`` for good."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("UPDATE export SET state = ?, attempts = ?, sent_at = ? WHERE "
                   "study_instance_uid = ? AND version = ? AND destination = ?",
                   (ExportState.SENT, d.attempts + 1, sent_at, *_key(d)))
        left = db.execute("SELECT COUNT(*) FROM export WHERE study_instance_uid = ? AND "
                          "version = ? AND state != ?",
                          (d.study_uid, d.version, ExportState.SENT)).fetchone()[0]
        done = None if left else db.execute(
            "UPDATE study SET state = ?, exported_at = ? WHERE study_instance_uid = ? "
            "AND state IN (?, ?) AND version = ? RETURNING last_instance_at",
            (StudyState.EXPORTED, sent_at, d.study_uid, StudyState.DONE,
             StudyState.NOT_FOUND, d.version)).fetchone()
        db.execute("COMMIT")
    except sqlite3.Error:
        rollback(db)
        raise
    return None if done is None else sent_at - done[0]


def retry_failed(db: sqlite3.Connection, study_uid: str) -> int:
    """Make a study's failed exports pending again (attempts reset); returns how many."""
    return db.execute("UPDATE export SET state = ?, attempts = 0, next_attempt_at = 0 "
                      "WHERE study_instance_uid = ? AND state = ?",
                      (ExportState.PENDING, study_uid, ExportState.FAILED)).rowcount
