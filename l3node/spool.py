"""The spool: received instances as files, written atomically, and recorded in the state.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .state import instances as rows
from .state import open_db

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"


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
    """Files under ``root/<study>/<series>/<sop>.dcm``, their rows in the state database
    (:mod:`l3node.state.instances`) on a connection of the spool's own."""

    def __init__(self, root: Path, db_path: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer; SQLite serialises anyway
        self.db = open_db(db_path)
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
            known = rows.spooled_path(self.db, sop_instance_uid)
            if known is not None and known.is_file():
                return StoredInstance(StoreOutcome.DUPLICATE, known)
            _write_atomic(path, data, sync_dir=False)
            dir_synced = self._dir_syncer.submit(_fsync_dir, path.parent)
            try:
                rows.record_instance(
                    self.db, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series_instance_uid, path=path, size=len(data),
                    calling_ae_title=calling_ae_title)
            except sqlite3.Error:
                with contextlib.suppress(OSError):
                    dir_synced.result()
                path.unlink(missing_ok=True)
                raise
            try:
                dir_synced.result()
            except OSError:
                # the name may not be durable: no ack, and no row saying it is spooled
                rows.forget_instance(self.db, sop_instance_uid)
                raise
        return StoredInstance(StoreOutcome.STORED, path)

    def purge(self, study_uid: str) -> int:
        """Delete a study's spooled input (after export); the study row stays, marked."""
        with self._lock:
            n = rows.forget_study_instances(self.db, study_uid)
            shutil.rmtree(self.root / safe_name(study_uid), ignore_errors=True)
        return n

    def released(self, study_uids: list[str], now: float) -> None:
        """Their sender released the association that delivered them (the settle period
        starts; :func:`l3node.state.instances.mark_released`)."""
        with self._lock:
            rows.mark_released(self.db, study_uids, now)

    def study_folder(self, study_uid: str) -> Path:
        return self.root / safe_name(study_uid)

    def instances(self, study_uid: str) -> list[tuple[str, Path]]:
        return rows.study_instances(self.db, study_uid)

    def studies(self) -> list[dict]:
        return rows.studies(self.db)


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
