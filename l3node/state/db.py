"""Schema, migrations and connections of the state database.

One file holds every table: ``instance`` (one row per spooled instance), ``study`` (its
life-cycle state), ``result`` (one row per processing run: a study's versions) and ``export``
(one row per result and destination).  WAL mode lets the status page read while the listener
and the scheduler write, each on a connection of its own; ``synchronous=FULL`` because an
acknowledged instance's row must survive a power cut.
"""

from __future__ import annotations

import errno
import sqlite3
from enum import StrEnum
from pathlib import Path


class StudyState(StrEnum):
    """receiving → complete → processing → done | not_found | failed → exported.

    An instance arriving in any later state sends the study back to receiving; the re-run
    gets a new version."""

    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSING = "processing"
    DONE = "done"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    EXPORTED = "exported"


class ExportState(StrEnum):
    """pending → sent | failed (after ``retry.max_attempts``); superseded when a newer
    version of the study's results replaces an undelivered one."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


SCHEMA = """
CREATE TABLE IF NOT EXISTS instance (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae_title TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instance_study ON instance(study_instance_uid);
CREATE TABLE IF NOT EXISTS study (
    study_instance_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    first_instance_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    exported_at REAL,
    purged_at REAL,
    released_at REAL
);
CREATE TABLE IF NOT EXISTS result (
    study_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    series_instance_uid TEXT,
    status TEXT NOT NULL,
    l3_index INTEGER,
    l3_sop_instance_uid TEXT,
    l3_frame_number INTEGER,
    z_mm REAL,
    confidence REAL,
    reason TEXT,
    skipped_series TEXT,
    files TEXT NOT NULL,
    created_at REAL NOT NULL,
    processing_s REAL,
    objects TEXT,
    PRIMARY KEY (study_instance_uid, version)
);
CREATE TABLE IF NOT EXISTS export (
    study_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL,
    PRIMARY KEY (study_instance_uid, version, destination)
);
"""
# Columns added after the first release: (table, column, type) — added to older databases.
ADDED_COLUMNS = (("result", "processing_s", "REAL"), ("export", "sent_at", "REAL"),
                 ("result", "objects", "TEXT"), ("study", "released_at", "REAL"),
                 ("result", "l3_frame_number", "INTEGER"))


# SQLite's codes for "no room": FULL is ENOSPC; EDQUOT comes as IOERR_WRITE (as does any
# other failed write: the disk's trouble too, not the study's); SHMSIZE: the WAL index
# could not grow.
_SQLITE_NO_ROOM = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_WRITE,
                   sqlite3.SQLITE_IOERR_SHMSIZE)


def storage_full(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain (``__cause__``/``__context__``) that says the node's
    disk has no room — ENOSPC, EDQUOT, SQLite's "database or disk is full" — or None.

    Why: such an error is the node's, not the study's — the work is to be tried again once
    there is room, never recorded as the study's failure.  The chain is followed because
    libraries re-raise: pydicom turns a write's ENOSPC into a new OSError without errno,
    "With tag (7FE0,0010) got exception: …" and a whole traceback, raised from the
    original; that original is returned (its message is the short one)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        if isinstance(e, sqlite3.Error) and (
                getattr(e, "sqlite_errorcode", None) in _SQLITE_NO_ROOM
                or "database or disk is full" in str(e)):
            return e
        e = e.__cause__ or e.__context__
    return None


def rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so.

    Why: after SQLITE_FULL (or IOERR) SQLite may roll the whole transaction back by itself;
    a plain ROLLBACK then raises "cannot rollback - no transaction is active", which would
    replace the error that says why ("database or disk is full")."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the tables, or add the columns an older database lacks."""
    db.executescript(SCHEMA)
    for table, column, kind in ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def open_db(path: Path) -> sqlite3.Connection:
    """A writing connection (autocommit; callers open their transactions), schema ensured.

    ``timeout``: a writer waits for the other's transaction instead of failing (for the
    listener that would be a refused instance)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    ensure_schema(db)
    return db


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection, for another thread (the status page) or process (the CLI)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                           check_same_thread=False)
