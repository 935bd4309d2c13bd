"""The receive path's rows: which instances are spooled, and the study each one opens.

Called by :class:`l3node.spool.Spool` under its lock, on its own connection: an instance is
acknowledged only after :func:`record_instance` committed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .db import StudyState, rollback


def spooled_path(db: sqlite3.Connection, sop_instance_uid: str) -> Path | None:
    """Where an instance was spooled, if it was."""
    row = db.execute("SELECT path FROM instance WHERE sop_instance_uid = ?",
                     (sop_instance_uid,)).fetchone()
    return Path(row[0]) if row is not None else None


def record_instance(db: sqlite3.Connection, *, sop_class_uid: str, sop_instance_uid: str,
                    study_instance_uid: str, series_instance_uid: str, path: Path, size: int,
                    calling_ae_title: str) -> None:
    """One transaction: the instance's row, and its study (re)opened as receiving — an
    instance for a study in any later state sends it back to receiving (a re-run).  Inside
    a transaction already open (:func:`record_instances`) it joins it."""
    now = time.time()
    own = not db.in_transaction
    if own:
        db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT OR REPLACE INTO instance VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid,
                    str(path), size, calling_ae_title, now))
        db.execute(
            "INSERT INTO study (study_instance_uid, state, first_instance_at, "
            "last_instance_at, instances) VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT(study_instance_uid) DO UPDATE SET last_instance_at = "
            "excluded.last_instance_at, instances = instances + 1, state = ?",
            (study_instance_uid, StudyState.RECEIVING, now, now, StudyState.RECEIVING))
        if own:
            db.execute("COMMIT")
    except sqlite3.Error:
        if own:
            rollback(db)
        raise


def record_instances(db: sqlite3.Connection, batch: list[dict]) -> None:
    """One transaction for a batch of :func:`record_instance` rows (the spool's group
    commit: one flush for every association waiting); all or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for row in batch:
            record_instance(db, **row)
        db.execute("COMMIT")
    except sqlite3.Error:
        rollback(db)
        raise


def mark_released(db: sqlite3.Connection, study_uids: list[str], now: float) -> None:
    """The association that delivered these studies was released and no other is
    delivering them: their settle period starts now (see :func:`.studies.mark_complete`)."""
    db.executemany("UPDATE study SET released_at = ? WHERE study_instance_uid = ? AND state = ?",
                   [(now, uid, StudyState.RECEIVING) for uid in study_uids])


def forget_instance(db: sqlite3.Connection, sop_instance_uid: str) -> None:
    """Drop an instance's row (its file's name may not be durable: it was not acknowledged)."""
    db.execute("DELETE FROM instance WHERE sop_instance_uid = ?", (sop_instance_uid,))


def forget_study_instances(db: sqlite3.Connection, study_uid: str) -> int:
    """Drop a purged study's instance rows; the study row stays, marked purged."""
    n = db.execute("DELETE FROM instance WHERE study_instance_uid = ?", (study_uid,)).rowcount
    db.execute("UPDATE study SET purged_at = ? WHERE study_instance_uid = ?",
               (time.time(), study_uid))
    return n


def study_instances(db: sqlite3.Connection, study_uid: str) -> list[tuple[str, Path]]:
    """(SOP Instance UID, path) of a study's spooled instances, in order of arrival."""
    rows = db.execute("SELECT sop_instance_uid, path FROM instance WHERE study_instance_uid = ? "
                      "ORDER BY received_at", (study_uid,)).fetchall()
    return [(r[0], Path(r[1])) for r in rows]


def studies(db: sqlite3.Connection) -> list[dict]:
    """Every study's row, most recently received first."""
    cur = db.execute("SELECT study_instance_uid, state, instances, last_instance_at, version "
                     "FROM study ORDER BY last_instance_at DESC")
    return [dict(zip(("study_instance_uid", "state", "instances", "last_instance_at",
                      "version"), r, strict=True)) for r in cur.fetchall()]
