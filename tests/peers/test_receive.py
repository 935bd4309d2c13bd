"""The Storage SCP against DCMTK's storescu/echoscu and a pynetdicom SCU (loopback)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from l3node.config import NodeConfig
from l3node.receive import Receiver, StoreStatus
from l3node.spool import Spool, safe_name

from ..support import wait_for

STORESCU, ECHOSCU = "/usr/bin/storescu", "/usr/bin/echoscu"  # DCMTK, not pynetdicom's scripts


@pytest.fixture
def node(tmp_path):
    assert Path(STORESCU).is_file(), "DCMTK is required: run `make peers`"
    spool = Spool(tmp_path / "spool", tmp_path / "state.db")
    cfg = NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0,  # bound, read back
                     allowed_calling_ae_titles=("STORESCU", "ECHOSCU", "TESTSCU"))
    rx = Receiver(cfg, spool)
    rx.start()
    yield rx
    rx.stop()
    spool.close()


def _storescu(rx: Receiver, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([STORESCU, "-aet", "STORESCU", "-aec", rx.cfg.ae_title, *extra,
                           "+sd", "+r", "+sp", "*.dcm", "127.0.0.1", str(rx.port), str(folder)],
                          capture_output=True, text=True, timeout=300)


def test_storescu_study_is_spooled_byte_for_byte_and_resending_is_idempotent(node, chest_study):
    files = sorted(chest_study.glob("*.dcm"))
    res = _storescu(node, chest_study)
    assert res.returncode == 0, res.stdout + res.stderr
    studies = node.spool.studies()
    assert len(studies) == 1 and studies[0]["instances"] == len(files)
    assert studies[0]["state"] == "receiving"
    stored = dict(node.spool.instances(studies[0]["study_instance_uid"]))
    assert len(stored) == len(files)
    for f in files[::5]:
        orig = pydicom.dcmread(f)
        copy = pydicom.dcmread(stored[orig.SOPInstanceUID])
        assert copy.PixelData == orig.PixelData
        assert copy.ImagePositionPatient == orig.ImagePositionPatient
    assert not list(node.spool.root.rglob("*.part"))
    again = _storescu(node, chest_study)
    assert again.returncode == 0
    assert node.spool.studies()[0]["instances"] == len(files)  # nothing counted twice
    assert len(list(node.spool.root.rglob("*.dcm"))) == len(files)


def test_compressed_transfer_syntax_is_stored_as_received(node, tmp_path):
    from l3node.phantom import StudyRequest, generate_study

    generate_study(tmp_path / "j2k", StudyRequest(seed=9, preset="head-neck", slice_mm=5.0,
                                                  transfer_syntax="jpeg2000-lossless"))
    # -xv: propose JPEG 2000 lossless, so the files travel as they are
    res = subprocess.run([STORESCU, "-aet", "STORESCU", "-aec", "L3NODE", "-xv", "+sd",
                          "+sp", "*.dcm", "127.0.0.1", str(node.port), str(tmp_path / "j2k")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    one = next(node.spool.root.rglob("*.dcm"))
    ds = pydicom.dcmread(one)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    assert ds.pixel_array.shape == (512, 512)


def test_echo_and_association_rules(node):
    ok = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "L3NODE", "127.0.0.1",
                         str(node.port)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    wrong_called = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "OTHER", "127.0.0.1",
                                   str(node.port)], capture_output=True, text=True, timeout=60)
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    stranger = subprocess.run([ECHOSCU, "-aet", "INTRUDER", "-aec", "L3NODE", "127.0.0.1",
                               str(node.port)], capture_output=True, text=True, timeout=60)
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stdout + stranger.stderr


def _send(rx: Receiver, ds: pydicom.Dataset, sop_class: str = CTImageStorage) -> int:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", rx.port, ae_title="L3NODE")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_hostile_uids_cannot_escape_the_spool(node, chest_study, tmp_path):
    ds = pydicom.dcmread(sorted(chest_study.glob("*.dcm"))[0])
    ds.StudyInstanceUID = "../../../../../../tmp/l3node-escape"
    ds.SeriesInstanceUID = "/etc/passwd"
    assert _send(node, ds) == StoreStatus.SUCCESS
    written = list(node.spool.root.rglob("*.dcm"))
    assert len(written) == 1
    assert written[0].resolve().is_relative_to(node.spool.root.resolve())
    assert written[0].parent.name == safe_name("/etc/passwd")
    assert written[0].parent.parent.name == safe_name("../../../../../../tmp/l3node-escape")
    assert written[0].parent.name.startswith("x-")
    assert not Path("/tmp/l3node-escape").exists()


def test_missing_study_uid_and_non_ct_instances(node, chest_study):
    ds = pydicom.dcmread(sorted(chest_study.glob("*.dcm"))[1])
    del ds.StudyInstanceUID
    assert _send(node, ds) == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
    mr = pydicom.dcmread(sorted(chest_study.glob("*.dcm"))[2])
    mr.SOPClassUID = MRImageStorage
    assert _send(node, mr, MRImageStorage) == StoreStatus.SUCCESS  # accepted, ignored
    assert node.spool.studies() == []


def test_ip_allow_list_refuses_other_hosts(tmp_path):
    spool = Spool(tmp_path / "spool", tmp_path / "state.db")
    for allowed, ok in ((("127.0.0.2",), False), (("127.0.0.1",), True)):
        rx = Receiver(NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0,
                                 allowed_hosts=allowed), spool)
        rx.start()
        try:
            res = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "L3NODE", "127.0.0.1",
                                  str(rx.port)], capture_output=True, text=True, timeout=60)
        finally:
            rx.stop()
        assert (res.returncode == 0) is ok, (allowed, res.stdout + res.stderr)
    spool.close()


def test_above_the_disk_high_water_mark_instances_are_refused(tmp_path, chest_study):
    spool = Spool(tmp_path / "spool", tmp_path / "state.db")
    rx = Receiver(NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0), spool,
                  disk_high_water_pct=0.001)  # any real disk is fuller than this
    rx.start()
    try:
        res = _storescu(rx, chest_study, "-v")
        echo = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "L3NODE", "127.0.0.1",
                               str(rx.port)], capture_output=True, text=True, timeout=60)
    finally:
        rx.stop()
    out = res.stdout + res.stderr
    assert "Refused: OutOfResources" in out, out  # DCMTK names status 0xA700 so
    assert spool.studies() == [] and not list(spool.root.rglob("*.dcm"))
    assert echo.returncode == 0  # the node stays up and answers
    spool.close()




# -- the sender's signal that a study is complete (scheduler.study_settle_s) ---------------
def _released_at(rx: Receiver) -> dict[str, tuple[float | None, float]]:
    rows = rx.spool.db.execute("SELECT study_instance_uid, released_at, last_instance_at "
                               "FROM study").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _released(rx: Receiver) -> tuple[float, float]:
    """(released_at, last_instance_at) of the one study, once its release is recorded."""
    def marked():
        (released, last), = _released_at(rx).values()
        return (released, last) if released is not None else None
    return wait_for(marked, 10, "release recorded")


def _ended(rx: Receiver, still_open: int = 0) -> None:
    """Wait until the node has handled the end of the associations the test closed."""
    wait_for(lambda: rx.deliveries.open_count() == still_open, 10, "association end handled")


def _open(rx: Receiver):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", rx.port, ae_title="L3NODE")
    assert assoc.is_established
    return assoc


def test_a_released_association_marks_its_study_released_after_its_last_instance(node,
                                                                                  chest_study):
    calls: list[list[str]] = []
    node.on_released = calls.append
    assert _storescu(node, chest_study).returncode == 0
    released, last = _released(node)
    assert released >= last
    assert wait_for(lambda: calls, 10, "woken") == [list(_released_at(node))]  # once, for it


def test_no_release_mark_while_another_association_still_delivers_the_study(node,
                                                                            chest_study):
    files = sorted(chest_study.glob("*.dcm"))
    a, b = _open(node), _open(node)
    assert a.send_c_store(pydicom.dcmread(files[0])).Status == 0
    assert b.send_c_store(pydicom.dcmread(files[1])).Status == 0
    a.release()
    _ended(node, still_open=1)
    (released, _), = _released_at(node).values()
    assert released is None  # b is still open and delivering this study
    assert b.send_c_store(pydicom.dcmread(files[2])).Status == 0
    b.release()
    released, last = _released(node)
    assert released >= last


def test_an_aborted_association_or_a_refused_instance_leaves_the_quiet_period(node,
                                                                              chest_study):
    files = sorted(chest_study.glob("*.dcm"))
    a = _open(node)
    assert a.send_c_store(pydicom.dcmread(files[0])).Status == 0
    a.abort()  # tells nothing about the study: the sender may come back
    b = _open(node)
    assert b.send_c_store(pydicom.dcmread(files[1])).Status == 0
    node.high_water = 0.001  # the next instance is refused (0xA700): it will be sent again
    assert b.send_c_store(pydicom.dcmread(files[2])).Status == StoreStatus.OUT_OF_RESOURCES
    b.release()
    _ended(node)
    (released, _), = _released_at(node).values()
    assert released is None
    node.high_water = 100.0
    c = _open(node)
    assert c.send_c_store(pydicom.dcmread(files[2])).Status == 0
    c.release()  # the re-sent instance stored: now the sender is done
    released, last = _released(node)
    assert released >= last


# -- concurrent senders share flushes; the listener waits on its sockets -----------------------
def test_concurrent_stores_commit_together_and_each_gets_its_own_answer(tmp_path, chest_study,
                                                                        monkeypatch):
    """Eight threads store at once: their rows go in fewer transactions than instances, every
    file is under its final name with its bytes, a duplicate inside a group is answered as a
    duplicate, and an instance whose folder cannot be written fails alone."""
    import threading

    from l3node.spool import StoreOutcome
    from l3node.state import instances as rows

    spool = Spool(tmp_path / "spool", tmp_path / "state.db")
    commits = []
    real_record = rows.record_instance

    def slow_record(db, **kw):  # widen the window in which the others queue up
        commits.append(db.in_transaction)
        real_record(db, **kw)
    monkeypatch.setattr(rows, "record_instance", slow_record)
    files = sorted(chest_study.glob("*.dcm"))[:6]
    data = [f.read_bytes() for f in files]
    uids = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    jobs = [(i, d, u) for i, (d, u) in enumerate(zip(data, uids, strict=True))]
    jobs.append((6, data[0], uids[0]))  # the same instance again, at the same moment
    blocked = spool.path_for("9.9", "9.9.2", "9.9.1")  # a folder where its file should go:
    blocked.mkdir(parents=True)  # written under its temp name, then its rename fails
    (blocked / "keep").write_text("")
    start = threading.Barrier(len(jobs) + 1)
    answers: dict[int, object] = {}

    def send(i: int, payload: bytes, ds) -> None:
        start.wait()
        try:
            answers[i] = spool.store(payload, sop_class_uid=ds.SOPClassUID,
                                     sop_instance_uid=ds.SOPInstanceUID,
                                     study_instance_uid=ds.StudyInstanceUID,
                                     series_instance_uid=ds.SeriesInstanceUID)
        except OSError as exc:
            answers[i] = exc

    def send_blocked() -> None:
        start.wait()
        try:
            spool.store(data[1], sop_class_uid=str(uids[1].SOPClassUID),
                        sop_instance_uid="9.9.1", study_instance_uid="9.9",
                        series_instance_uid="9.9.2")
            answers[99] = "stored"
        except OSError as exc:
            answers[99] = exc

    threads = [threading.Thread(target=send, args=j) for j in jobs]
    threads.append(threading.Thread(target=send_blocked))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert isinstance(answers[99], OSError)  # its rename failed: refused, alone
        outcomes = [answers[i].outcome for i in range(7)]  # type: ignore[union-attr]
        assert sorted(outcomes).count(StoreOutcome.DUPLICATE) == 1  # one of the two twins
        for i in range(6):
            path = spool.path_for(uids[i].StudyInstanceUID, uids[i].SeriesInstanceUID,
                                  uids[i].SOPInstanceUID)
            assert path.read_bytes() == data[i]
        n = spool.db.execute("SELECT COUNT(*) FROM instance").fetchone()[0]
        assert n == 6 and all(commits)  # every row inside a group's transaction
        assert not list((tmp_path / "spool").rglob(".*.part"))  # no temp file left behind
    finally:
        spool.close()


def test_the_listener_waits_on_its_sockets_and_still_times_out_idle_peers(tmp_path, chest_study):
    """The node's associations use the waking DUL (l3node.reactor); a peer that goes silent
    is still dropped after network_timeout, and release and abort still end associations."""
    import time

    from l3node import reactor

    assert reactor.AVAILABLE, "pynetdicom changed: l3node.reactor's hooks are missing"
    spool = Spool(tmp_path / "spool", tmp_path / "state.db")
    rx = Receiver(NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0), spool)
    rx.ae.network_timeout = 1.0  # pynetdicom's idle timer, which lives on the DUL
    rx.start()
    try:
        files = sorted(chest_study.glob("*.dcm"))
        a = _open(rx)
        server_side = rx._server.active_associations
        assert server_side and all(isinstance(s.dul, reactor.WakingDUL) for s in server_side)
        t = time.perf_counter()
        for f in files[:20]:
            assert a.send_c_store(pydicom.dcmread(f)).Status == 0
        per_instance = (time.perf_counter() - t) / 20
        a.release()
        b = _open(rx)
        b.abort()
        c = _open(rx)  # says nothing: the node gives up on it after network_timeout_s
        assert wait_for(lambda: not c.is_established, 10, "idle association dropped")
        assert wait_for(lambda: not rx._server.active_associations, 10, "all ended")
        print(f"{per_instance * 1e3:.1f} ms per instance")
    finally:
        rx.stop()
        spool.close()
