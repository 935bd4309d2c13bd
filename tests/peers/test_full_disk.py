"""Issue #19: the node on a really full disk.

The node runs as a real process (``python -m l3node serve``, as in test_reliability.py) with
a filesystem of its own: a size-limited tmpfs that the test mounts (root only; skipped,
saying why, where mounting is not permitted).  The spool, the state database and the node's
stderr (its log, as when an administrator sends it to a file beside the spool) all live on
it.  A filler file of random bytes is grown until the kernel answers ENOSPC, and shrunk to
leave chosen room: while a study arrives, while it is processed, while its results are
composed.  Nothing is simulated: the high-water mark (the node's own "disk above N %" check)
is set to 100 %, so that after one check that a full disk is refused by the mark, the real
ENOSPC paths run — a write cut short, a SQLite commit with no room for its pages, a result
file that does not fit.

The promises checked: every C-STORE the node cannot make durable is answered 0xA700, never
0x0000; C-ECHO, the status page and ``/metrics`` answer while the disk is full; every
acknowledged instance is in the database and on disk byte for byte as sent; the database
passes ``PRAGMA integrity_check``; once the filler is deleted the node carries on by itself
(no restart): the sender's refused instances are accepted, the study is processed and its
one result set is in Orthanc (counted by SOP Instance UID).  Figures are printed with the
prefix ``RELIABILITY`` (``pytest -s``) and kept in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from l3node.logs import EventFormatter, LineHandler, event

from ..support import free_port, wait_for
from .test_reliability import (
    NodeProcess,
    _Orthanc,
    db_rows,
    figure,
    result_sops,
    spooled_result_sops,
    write_config,
)

FS_MIB = 24  # the node's whole disk: a 10 mm study, its results, the database, the log
PAGE = 4096  # tmpfs allocates in pages
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700


# -- the small filesystem and its filler ------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A tmpfs of FS_MIB MiB of its own, unmounted in a finalizer (lazily if the node that
    used it is somehow still holding a file)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk of its own needs `mount -t tmpfs`, which needs root "
                    "(the test suite runs as root in CI)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_MIB}m,mode=0755", "tmpfs",
                          str(mnt)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {res.stderr.strip()}")

    def unmount() -> None:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    request.addfinalizer(unmount)
    return mnt


class Filler:
    """A file of random bytes grown until the filesystem answers ENOSPC, then cut back to
    leave ``room`` bytes — real data, so the kernel really allocates every page."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._block = os.urandom(1 << 20)

    def fill(self, room: int = 0) -> int:
        """Grow to ENOSPC, then free ``room`` bytes (whole pages); the free bytes left."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, PAGE, 1):
                while True:
                    try:
                        os.write(fd, self._block[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            if room:
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - room))
        finally:
            os.close(fd)
        return shutil.disk_usage(self.path.parent).free

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# -- a sender that keeps every status ------------------------------------------------------------
@dataclass
class Sent:
    sop: str
    status: int
    data: bytes  # the data set as it went over the wire


@dataclass
class Scu:
    """One association of a storage SCU that records the status of every C-STORE and goes
    on after a refusal (a PACS keeps what was refused and sends it again later)."""

    port: int
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        ae = AE(ae_title="PACS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        self.assoc = ae.associate("127.0.0.1", self.port, ae_title="L3NODE")
        assert self.assoc.is_established, "no association with the node"

    def store(self, f: Path) -> int:
        ds = pydicom.dcmread(f)
        data = encode(ds, False, True)
        assert data is not None
        rsp = self.assoc.send_c_store(ds)
        status = int(rsp.Status) if rsp and "Status" in rsp else -1  # -1: no response
        self.sent.append(Sent(str(ds.SOPInstanceUID), status, data))
        return status

    def release(self) -> None:
        self.assoc.release()


def echo(port: int) -> int:
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="L3NODE")
    assert assoc.is_established, "the node refused a C-ECHO association"
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if rsp and "Status" in rsp else -1
    finally:
        assoc.release()


def http(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection of the test's own."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


def processing_failures(web_port: int) -> float:
    """``l3node_failures_total{stage="processing"}`` from /metrics (0 before the first)."""
    code, body = http(web_port, "/metrics")
    assert code == 200, code
    m = re.search(rb'^l3node_failures_total\{stage="processing"\} ([0-9.e+]+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


def _state(db: Path, study_uid: str) -> tuple[str, int]:
    rows = db_rows(db, "SELECT state, version FROM study WHERE study_instance_uid = ?",
                   (study_uid,))
    return (rows[0][0], rows[0][1]) if rows else ("", 0)


def _spooled(db: Path, study_uid: str) -> dict[str, Path]:
    return {r[0]: Path(r[1]) for r in db_rows(
        db, "SELECT sop_instance_uid, path FROM instance WHERE study_instance_uid = ?",
        (study_uid,))}


def check_while_full(filler: Filler, port: int, web_port: int, db: Path,
                     study_uid: str) -> None:
    """On a disk full to the last page: C-ECHO, the status page and the health check
    answer (the health check says the disk is the trouble); the database is whole."""
    assert filler.fill(0) == 0
    assert echo(port) == SUCCESS
    code, page = http(web_port, "/")
    assert code == 200 and study_uid.encode() in page, code
    code, body = http(web_port, "/healthz")
    health = json.loads(body)
    assert code == 503 and health["checks"] == {"listener": True, "scheduler": True,
                                                "state_db": True, "spool_disk": False}, health
    assert integrity(db) == "ok"


def check_acknowledged(sent: list[Sent], db: Path, study_uid: str) -> None:
    """Every instance answered 0x0000 is a row and a file holding exactly what was sent;
    no refused instance left a row or a file (a temp file included)."""
    spooled = _spooled(db, study_uid)
    for s in sent:
        if s.status == SUCCESS:
            assert s.sop in spooled, f"acknowledged instance {s.sop} is not in the database"
            raw = spooled[s.sop].read_bytes()
            assert raw.endswith(s.data), f"{s.sop}: the file is not what was sent"
            ds = pydicom.dcmread(spooled[s.sop])
            assert ds.SOPInstanceUID == s.sop and len(ds.PixelData) == ds.Rows * ds.Columns * 2
    acked = {s.sop for s in sent if s.status == SUCCESS}
    refused_only = {s.sop for s in sent} - acked
    assert not refused_only & set(spooled), "a refused instance has a row"
    root = db.parent / "spool"
    on_disk = {p for p in root.rglob("*") if p.is_file() and "_results" not in p.parts}
    assert on_disk == set(spooled.values()), "files in the spool without a row, or rows " \
        f"without a file: {sorted(str(p) for p in on_disk ^ set(spooled.values()))[:5]}"


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[_Orthanc]:
    o = _Orthanc(tmp_path / "pacs")
    yield o
    o.stop()


@pytest.mark.slow
def test_a_really_full_disk_refuses_what_it_cannot_keep_and_recovers_by_itself(
        tmp_path: Path, small_fs: Path, pacs: _Orthanc, small_abdomen_study: Path) -> None:
    """One 10 mm study (37 instances) through a node whose disk fills four times: while
    the study arrives (full; half an instance of room; a sweep from "the file does not
    fit" to "the file and its row fit"), while it is processed (no room), while its
    results are composed (room for part of them), while they are delivered (the PACS
    answers after the disk filled).  Every status at the sender is 0x0000 or 0xA700 and
    every 0x0000 is on disk as sent; after each filler is deleted the node goes on by
    itself, and the study ends with one result set in Orthanc, delivered once."""
    files = sorted(small_abdomen_study.glob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    size = max(f.stat().st_size for f in files)
    port, web_port = free_port(), free_port()
    # quiet period long: the study completes only when a sender releases an association
    # in which every instance was stored — never from what arrived before the disk filled
    cfg = write_config(small_fs, port=port, pacs_port=pacs.dicom_port, quiet_s=600,
                       settle_s=1.0, poll_s=0.3,
                       extra="[housekeeping]\ndisk_high_water_pct = 100\n"
                             f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {web_port}\n')
    db = small_fs / "state.db"
    log = small_fs / "node.log"  # stderr on the same full disk
    node = NodeProcess(cfg, log)
    filler = Filler(small_fs / "filler")
    t_start = time.perf_counter()
    node.start(timeout=300)
    sent: list[Sent] = []
    sweep: list[tuple[int, int]] = []
    figures: dict[str, object] = {"instances": len(files), "instance_bytes": size,
                                  "fs_mib": FS_MIB}
    try:
        # -- 1. while the study arrives ---------------------------------------------------
        third = len(files) // 3
        a = Scu(port)
        for f in files[:third]:
            assert a.store(f) == SUCCESS
        filler.fill(0)  # completely full: the high-water mark (100 %) refuses
        for f in files[third:third + 3]:
            assert a.store(f) == OUT_OF_RESOURCES
        check_while_full(filler, port, web_port, db, study_uid)
        # room for half an instance: the mark passes, the write itself runs out of space
        for f in files[third + 3:third + 6]:
            free = filler.fill(size // 2)
            assert 0 < free < size
            assert a.store(f) == OUT_OF_RESOURCES
        # from no room for the file to room for the file and the database's pages: each
        # instance is stored or refused, nothing in between
        rest = files[third + 6:]
        for k, f in enumerate(rest[:len(rest) // 2]):
            pages = (size // PAGE) - 2 + k
            filler.fill(pages * PAGE)
            status = a.store(f)
            sweep.append((pages, status))
            assert status in (SUCCESS, OUT_OF_RESOURCES), hex(status)
        assert {s for _, s in sweep} == {SUCCESS, OUT_OF_RESOURCES}, sweep  # both sides
        filler.fill(0)
        for f in rest[len(rest) // 2:]:
            assert a.store(f) == OUT_OF_RESOURCES
        check_while_full(filler, port, web_port, db, study_uid)
        a.release()
        sent += a.sent
        assert node.alive()
        check_acknowledged(sent, db, study_uid)
        assert _state(db, study_uid)[0] == "receiving"
        refused = [f for f, s in zip(files, a.sent, strict=True) if s.status != SUCCESS]
        assert refused, "nothing was refused: the disk was not full"
        figures |= {"acked_while_filling": len(files) - len(refused),
                    "refused_0xA700": len(refused),
                    "sweep_room_pages_status": [(p, hex(s)) for p, s in sweep]}

        # -- space back: the sender's refused instances are accepted, no restart ----------
        filler.remove()
        t_free = time.perf_counter()
        b = Scu(port)
        for k, f in enumerate(refused):
            assert b.store(f) == SUCCESS, f"re-sent instance {k} refused after space came back"
            if k == 0:
                figures["first_ack_after_free_s"] = round(time.perf_counter() - t_free, 3)
        b.release()
        sent += b.sent
        check_acknowledged(sent, db, study_uid)
        assert set(_spooled(db, study_uid)) == set(sops)

        # -- 2. while the study is processed: no room at all ------------------------------
        wait_for(lambda: _state(db, study_uid)[0] == "processing", 120, "processing",
                 every=0.01)
        filler.fill(0)
        t_full = time.perf_counter()
        check_while_full(filler, port, web_port, db, study_uid)
        wait_for(lambda: processing_failures(web_port) >= 1 or
                 _state(db, study_uid)[0] not in ("processing", "complete"), 180,
                 "the run on a full disk ended")
        assert _state(db, study_uid)[0] in ("processing", "complete"), _state(db, study_uid)
        figures["processing_deferred_after_s"] = round(time.perf_counter() - t_full, 1)
        check_while_full(filler, port, web_port, db, study_uid)

        # -- 3. while the results are composed: room for some of them ---------------------
        # (two instances' worth: less than the four objects, so one of them is cut short)
        filler.fill(2 * size)
        before = processing_failures(web_port)
        results = small_fs / "spool" / "_results"
        wait_for(lambda: processing_failures(web_port) > before or
                 _state(db, study_uid)[0] not in ("processing", "complete"), 180,
                 "the run with room for part of its results ended", every=0.05)
        assert _state(db, study_uid)[0] in ("processing", "complete"), _state(db, study_uid)
        # its partial results are gone (the retry composes them again, after its backoff
        # and a localization: seconds)
        assert not [p for p in results.rglob("*") if p.is_file()]
        assert integrity(db) == "ok"
        assert node.alive()

        # -- 4. while the results are delivered: sent, but no room to record that --------
        os.kill(pacs.proc.pid, signal.SIGSTOP)  # the PACS holds the delivery up ...
        try:
            filler.remove()  # ... the deferred run composes and records its results ...
            t_free = time.perf_counter()
            wait_for(lambda: db_rows(db, "SELECT 1 FROM export WHERE study_instance_uid = ?",
                                     (study_uid,)), 240, "results recorded, export queued")
            figures["recorded_after_free_s"] = round(time.perf_counter() - t_free, 1)
            filler.fill(0)  # ... and the disk is full again when the PACS answers
        finally:
            os.kill(pacs.proc.pid, signal.SIGCONT)
        wait_for(lambda: len(result_sops(pacs, study_uid)) == 4, 120, "results delivered")
        changes = pacs.get("/changes?last")["Last"]  # type: ignore[index]
        time.sleep(10 * 0.3)  # ten ticks of the scheduler
        check_while_full(filler, port, web_port, db, study_uid)
        assert pacs.get("/changes?last")["Last"] == changes, (  # type: ignore[index]
            "the results were sent again while the disk was full")
        figures["delivery_recorded_while_full"] = _state(db, study_uid)[0] == "exported"

        # -- space back: recorded as delivered, by itself ----------------------------------
        filler.remove()
        t_free = time.perf_counter()
        wait_for(lambda: _state(db, study_uid)[0] in ("exported", "failed"), 240,
                 "exported after space came back")
        figures["exported_after_free_s"] = round(time.perf_counter() - t_free, 1)
        assert node.alive()
    finally:
        node.stop()
        with contextlib.suppress(OSError):
            shutil.copy(log, tmp_path / "node.log")  # kept for reading after the unmount
    text = (tmp_path / "node.log").read_text(errors="replace")
    state, version = _state(db, study_uid)
    assert state == "exported", text[-3000:]
    assert integrity(db) == "ok"
    check_acknowledged(sent, db, study_uid)
    in_pacs, expected = result_sops(pacs, study_uid), spooled_result_sops(db, study_uid)
    assert sorted(expected.values()) == ["KO", "OT", "OT", "SR"], expected
    assert in_pacs == expected, (in_pacs, expected)  # one result set, nothing partial
    sent_rows = db_rows(db, "SELECT version, attempts FROM export WHERE study_instance_uid = ? "
                            "AND state = 'sent'", (study_uid,))
    assert sent_rows == [(version, 1)], sent_rows  # delivered once
    results = small_fs / "spool" / "_results"
    left = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    assert left == sorted(str(Path(p).relative_to(results))
                          for p in json.loads(db_rows(
                              db, "SELECT files FROM result WHERE study_instance_uid = ? AND "
                                  "version = ?", (study_uid, version))[0][0])), left
    assert "study.exported" in text  # the log resumed once there was room again
    assert "log.lost" in text  # ... saying how many lines the full disk cost
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ ")
    glued = [line for line in text.splitlines() if len(stamp.findall(line)) > 1]
    assert not glued, glued[:3]  # one event per line, even where the disk cut one short
    figures |= {"acked_total": len({s.sop for s in sent if s.status == SUCCESS}), "lost": 0,
                "log_lines_lost": sum(int(n) for n in re.findall(r"log\.lost lines=(\d+)", text)),
                "versions": version, "total_s": round(time.perf_counter() - t_start, 1),
                "tracebacks_in_log": text.count("Traceback"),
                "deferred_reasons_logged": re.findall(r"study\.deferred .* reason=(.*)$", text,
                                                      re.M)}
    figure("full-disk", **figures)


def test_a_log_line_cut_short_by_a_full_disk_ends_there_and_the_loss_is_logged(
        small_fs: Path) -> None:
    """The node's log handler with its stream on a full disk: the line the disk cuts short
    ends where it was cut, the lines that fail are dropped without an exception, and the
    first line written once there is room again is ``log.lost`` with their number — the
    events after it are whole (logging's own handler glued the next event to the cut one)."""
    path = small_fs / "node.log"
    stream = path.open("a", encoding="utf-8")
    handler = LineHandler(stream)
    handler.setFormatter(EventFormatter("json"))
    log = logging.getLogger("l3node.test.full_disk")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(handler)
    filler = Filler(small_fs / "filler")
    try:
        event(log, "before", pad="x" * 99)  # the log's last page keeps some room
        filler.fill(0)
        for k in range(20):
            event(log, "during", k=k, pad="y" * 5000)  # longer than that room: cut
        filler.remove()
        event(log, "after", k=1)
        event(log, "after", k=2)
    finally:
        log.removeHandler(handler)
        stream.close()
    whole, cut = [], []
    for line in path.read_text().splitlines():
        try:
            whole.append(json.loads(line))
        except ValueError:
            cut.append(line)
    assert [d["event"] for d in whole] == ["before", "log.lost", "after", "after"], whole
    assert whole[1]["lines"] == 20 and whole[1]["level"] == "WARNING"
    assert len(cut) == 1 and cut[0].startswith('{"ts"') and '"event": "during"' in cut[0]
    assert '"after"' not in cut[0]


def test_the_spool_on_a_full_disk_refuses_cleanly_and_carries_on_once_there_is_room(
        small_fs: Path) -> None:
    """In process, the two ways an instance meets a full disk: its file does not fit
    (ENOSPC in the write), or the file fits and its row does not (SQLite: "database or
    disk is full").  Each raises the error that says so — not the "cannot rollback" of a
    transaction SQLite had already rolled back — and leaves no file; the same connection
    stores the next instance once there is room (it is not wedged)."""
    from l3node.spool import Spool, StoreOutcome

    spool = Spool(small_fs / "spool", small_fs / "state.db")
    filler = Filler(small_fs / "filler")
    data = os.urandom(2 * PAGE)  # the spool stores bytes as given

    def store(k: int) -> None:
        spool.store(data, sop_class_uid=CTImageStorage, sop_instance_uid=f"1.2.3.{k}",
                    study_instance_uid="1.2.3", series_instance_uid="1.2.3.0")

    try:
        store(0)
        filler.fill(PAGE)  # less than the file
        with pytest.raises(OSError, match="No space left on device"):
            store(1)
        # a re-sent instance already stored is known without writing: Success, disk full
        again = spool.store(os.urandom(2 * PAGE), sop_class_uid=CTImageStorage,
                            sop_instance_uid="1.2.3.0", study_instance_uid="1.2.3",
                            series_instance_uid="1.2.3.0")
        assert again.outcome is StoreOutcome.DUPLICATE and again.path.read_bytes() == data
        filler.fill(3 * PAGE)  # the file, not the database's pages for its row
        with pytest.raises(sqlite3.Error, match="database or disk is full"):
            store(2)
        assert {p.name for p in (small_fs / "spool").rglob("*") if p.is_file()} == \
            {"1.2.3.0.dcm"}
        filler.remove()
        store(1)
        store(2)
        assert [sop for sop, _ in spool.instances("1.2.3")] == ["1.2.3.0", "1.2.3.1",
                                                               "1.2.3.2"]
        assert integrity(small_fs / "state.db") == "ok"
    finally:
        spool.close()
