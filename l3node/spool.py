"""The spool (files, written atomically) and the state database (SQLite): the node's memory.

An instance is acknowledged only after its bytes are on disk under their final name (temp
file, fsync, rename, fsync of the folder) and its row is committed.  The folder's fsync and
the row's commit run at the same time: neither needs the other, and together they cost about
one disk flush instead of two (~40 % of the time per instance on the project machine).  After
a crash between the two, a row may name a file that is not there; receiving the instance
again then writes it again (``store`` checks the file, not only the row).  Names derive from
UIDs only when a UID is a well-formed UID; anything else (``../../etc``) becomes a hash, so no
sender can write outside the spool.  Receiving the same SOP Instance UID again replaces
nothing and counts as stored (idempotent).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class StudyState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSING = "processing"
    DONE = "done"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    EXPORTED = "exported"


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"


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
    purged_at REAL
);
"""


def safe_name(uid: str) -> str:
    """A file or folder name for a UID: the UID itself when well formed, else a hash."""
    if uid and len(uid) <= 64 and _UID_RE.match(uid):
        return uid
    return "x-" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@dataclass(frozen=True)
class StoredInstance:
    outcome: StoreOutcome
    path: Path


class Spool:
    """Files under ``root/<study>/<series>/<sop>.dcm`` and their rows in ``db_path``."""

    def __init__(self, root: Path, db_path: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer; SQLite serialises anyway
        self.db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None,
                                  timeout=30)  # wait for the scheduler's writes, not 0xA700
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        # A kill inside _write_atomic leaves its temp file; that instance was never
        # acknowledged (the sender sends it again), and the series loader would read the
        # debris as a second slice at the same position: sweep it before receiving.
        for part in self.root.rglob(".*.part"):
            part.unlink(missing_ok=True)
        # fsyncs a folder while store() commits the row (see the module docstring)
        self._dir_syncer = ThreadPoolExecutor(1, thread_name_prefix="spool-fsync")

    def close(self) -> None:
        self._dir_syncer.shutdown(wait=True)
        self.db.close()

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        series_dir = self.root / safe_name(study_uid) / safe_name(series_uid)
        return series_dir / f"{safe_name(sop_uid)}.dcm"

    def store(self, data: bytes, *, sop_class_uid: str, sop_instance_uid: str,
              study_instance_uid: str, series_instance_uid: str,
              calling_ae_title: str = "") -> StoredInstance:
        """Write one encoded instance durably and record it; raises OSError/sqlite3.Error
        (the caller answers "out of resources") leaving no partial file behind."""
        path = self.path_for(study_instance_uid, series_instance_uid, sop_instance_uid)
        with self._lock:
            row = self.db.execute("SELECT path FROM instance WHERE sop_instance_uid = ?",
                                  (sop_instance_uid,)).fetchone()
            if row is not None and Path(row[0]).is_file():
                return StoredInstance(StoreOutcome.DUPLICATE, Path(row[0]))
            _write_atomic(path, data, sync_dir=False)
            dir_synced = self._dir_syncer.submit(_fsync_dir, path.parent)
            now = time.time()
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(
                    "INSERT OR REPLACE INTO instance VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid,
                     str(path), len(data), calling_ae_title, now))
                self.db.execute(
                    "INSERT INTO study (study_instance_uid, state, first_instance_at, "
                    "last_instance_at, instances) VALUES (?, ?, ?, ?, 1) "
                    "ON CONFLICT(study_instance_uid) DO UPDATE SET last_instance_at = "
                    "excluded.last_instance_at, instances = instances + 1, state = ?",
                    (study_instance_uid, StudyState.RECEIVING, now, now, StudyState.RECEIVING))
                self.db.execute("COMMIT")
            except sqlite3.Error:
                self.db.execute("ROLLBACK")
                with contextlib.suppress(OSError):
                    dir_synced.result()
                path.unlink(missing_ok=True)
                raise
            try:
                dir_synced.result()
            except OSError:
                # the name may not be durable: no ack, and no row saying it is spooled
                self.db.execute("DELETE FROM instance WHERE sop_instance_uid = ?",
                                (sop_instance_uid,))
                raise
        return StoredInstance(StoreOutcome.STORED, path)

    def purge(self, study_uid: str) -> int:
        """Delete a study's spooled input (after export); the study row stays, marked."""
        with self._lock:
            folder = self.root / safe_name(study_uid)
            n = self.db.execute("DELETE FROM instance WHERE study_instance_uid = ?",
                                (study_uid,)).rowcount
            shutil.rmtree(folder, ignore_errors=True)
            self.db.execute("UPDATE study SET purged_at = ? WHERE study_instance_uid = ?",
                            (time.time(), study_uid))
        return n

    def instances(self, study_uid: str) -> list[tuple[str, Path]]:
        rows = self.db.execute(
            "SELECT sop_instance_uid, path FROM instance WHERE study_instance_uid = ? "
            "ORDER BY received_at", (study_uid,)).fetchall()
        return [(r[0], Path(r[1])) for r in rows]

    def studies(self) -> list[dict]:
        cur = self.db.execute("SELECT study_instance_uid, state, instances, last_instance_at, "
                              "version FROM study ORDER BY last_instance_at DESC")
        return [dict(zip(("study_instance_uid", "state", "instances", "last_instance_at",
                          "version"), r, strict=True)) for r in cur.fetchall()]


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_atomic(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """Temp file, fsync, rename; then fsync of the folder unless the caller does it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_dir:
            _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
