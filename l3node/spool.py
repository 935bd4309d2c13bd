"""The spool: received instances as files, written atomically, and recorded in the state.

An instance is acknowledged only after its bytes are on disk under their final name (temp
file, fsync, rename, fsync of the folder) and its row is committed.  The folder's fsync and
the row's commit run at the same time: neither needs the other, and together they cost about
one disk flush instead of two (~40 % of the time per instance on the project machine).  After
a crash between the two, a row may name a file that is not there; receiving the instance
again then writes it again (``store`` checks the file, not only the row).  Names derive from
UIDs only when a UID is a well-formed UID; anything else (``../../etc``) becomes a hash, so no
sender can write outside the spool.  Receiving the same SOP Instance UID again replaces
nothing and counts as stored (idempotent); an instance already committed is known before
anything is written (a read-only connection: no write, no fsync, no wait for the writers'
lock — a PACS re-sending a study after an outage, or onto a full disk, gets Success at once).

Concurrent associations share flushes (group commit).  Each writes and fsyncs its own temp
file without holding any lock; then it queues the instance and takes the spool's lock.
Whoever holds the lock renames every queued file, fsyncs their folders (each once) and
commits all their rows in one transaction, then marks them done: an association that was
waiting behind it finds its instance already durable and returns.  So each acknowledgement
still follows its own file's fsync, its name's fsync and its row's commit, and four senders
pay about one folder fsync and one commit per group instead of one each.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .state import instances as rows
from .state import open_db, open_reader

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
        self._lock = threading.Lock()  # one writer on self.db; held by a group's commit
        self._queued: list[_Queued] = []  # written, fsync'd, not yet committed
        self._queue_lock = threading.Lock()
        self.db = open_db(db_path)
        # Read-only, for the duplicate check before writing: a re-sent instance is known
        # without a write, an fsync or a wait for the writers' lock (WAL: readers don't wait).
        self._reader = open_reader(db_path)
        self._reader_lock = threading.Lock()
        # A kill inside _write_atomic leaves its temp file; that instance was never
        # acknowledged (the sender sends it again), and the series loader would read the
        # debris as a second slice at the same position: sweep it before receiving.
        for part in self.root.rglob(".*.part"):
            part.unlink(missing_ok=True)
        # fsyncs a folder while store() commits the row (see the module docstring)
        self._dir_syncer = ThreadPoolExecutor(1, thread_name_prefix="spool-fsync")

    def close(self) -> None:
        self._dir_syncer.shutdown(wait=True)
        self._reader.close()
        self.db.close()

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        series_dir = self.root / safe_name(study_uid) / safe_name(series_uid)
        return series_dir / f"{safe_name(sop_uid)}.dcm"

    def store(self, data: bytes | Sequence[bytes], *, sop_class_uid: str,
              sop_instance_uid: str, study_instance_uid: str, series_instance_uid: str,
              calling_ae_title: str = "") -> StoredInstance:
        """Write one encoded instance durably and record it; raises OSError/sqlite3.Error
        (the caller answers "out of resources") leaving no partial file behind.  ``data``
        may come in parts (the file meta, then the data set as received), written one after
        the other: the receiver need not join half a megabyte into a new buffer first."""
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        path = self.path_for(study_instance_uid, series_instance_uid, sop_instance_uid)
        known = self._known(sop_instance_uid, path)
        if known is not None:  # re-sent: nothing to write (the commit checks again, for
            return StoredInstance(StoreOutcome.DUPLICATE, known)  # one still in flight)
        size = sum(len(part) for part in parts)
        tmp = _write_temp(path, parts)  # no lock: concurrent senders flush in parallel
        item = _Queued(tmp, path, dict(
            sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid,
            path=path, size=size, calling_ae_title=calling_ae_title))
        with self._queue_lock:
            self._queued.append(item)
        with self._lock:
            if not item.done:  # nobody committed it while this thread waited for the lock
                with self._queue_lock:
                    group, self._queued = self._queued, []
                try:
                    self._commit(group)
                except Exception as exc:  # e.g. the duplicate check's query failed
                    for it in group:
                        if it.outcome is None and it.error is None:
                            it.tmp.unlink(missing_ok=True)
                            it.error = exc
                finally:
                    for it in group:
                        it.done = True
        if item.error is not None:
            raise _copy(item.error)
        assert item.outcome is not None
        return StoredInstance(item.outcome, item.path)

    def _known(self, sop_instance_uid: str, path: Path) -> Path | None:
        """The spooled file of an instance already committed (and still on disk), else
        None — also when the check itself fails: the commit's check then decides.  A
        re-sent instance is nearly always at ``path`` (its UIDs name it), so the database is
        asked only when that file exists: a new instance costs one stat, not a query.  One
        re-sent under another study or series goes on to the commit, whose check finds it."""
        if not path.is_file():
            return None
        try:
            with self._reader_lock:
                known = rows.spooled_path(self._reader, sop_instance_uid)
        except sqlite3.Error:
            return None
        return known if known is not None and known.is_file() else None

    def _commit(self, group: list[_Queued]) -> None:
        """Rename, fsync the folders, commit the rows: one transaction for the group.  Under
        the lock; gives each item an outcome or an error (``store`` marks them done)."""
        fresh: list[_Queued] = []
        seen: set[str] = set()
        for it in group:
            sop = it.row["sop_instance_uid"]
            known = rows.spooled_path(self.db, sop)
            if sop in seen or (known is not None and known.is_file()):
                it.tmp.unlink(missing_ok=True)
                it.outcome, it.path = StoreOutcome.DUPLICATE, known or it.path
                continue
            try:
                os.replace(it.tmp, it.path)
            except OSError as exc:  # e.g. its study folder was purged meanwhile
                it.tmp.unlink(missing_ok=True)
                it.error = exc
                continue
            seen.add(sop)
            fresh.append(it)
        folders = {it.path.parent for it in fresh}
        synced = {f: self._dir_syncer.submit(_fsync_dir, f) for f in folders}
        try:
            if fresh:
                rows.record_instances(self.db, [it.row for it in fresh])
        except sqlite3.Error as exc:
            for f in synced.values():
                with contextlib.suppress(OSError):
                    f.result()
            for it in fresh:
                it.path.unlink(missing_ok=True)
                it.error = exc
        else:
            failed = {}
            for folder, f in synced.items():
                try:
                    f.result()
                except OSError as exc:
                    failed[folder] = exc
            for it in fresh:
                if it.path.parent in failed:
                    # the name may not be durable: no ack, and no row saying it is spooled
                    with contextlib.suppress(sqlite3.Error):
                        rows.forget_instance(self.db, it.row["sop_instance_uid"])
                    it.error = failed[it.path.parent]
                else:
                    it.outcome = StoreOutcome.STORED

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


def _write_temp(path: Path, parts: list) -> Path:
    """``parts`` one after the other into a temp file beside ``path``, fsync'd; its name
    (one per thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


@dataclass(eq=False)
class _Queued:
    """An instance written and fsync'd under its temp name, waiting for a group commit."""

    tmp: Path
    path: Path
    row: dict
    done: bool = False
    outcome: StoreOutcome | None = None
    error: BaseException | None = field(default=None, repr=False)


def _copy(exc: BaseException) -> BaseException:
    """A group's error, one copy per waiting thread (an exception is raised in one only)."""
    try:
        new = type(exc)(*exc.args)
    except Exception:
        new = OSError(str(exc))
    new.__cause__ = exc
    return new
