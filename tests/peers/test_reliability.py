"""Issue #7, crash safety and outages: the node as a real process (``python -m l3node serve``)
killed with SIGKILL at chosen moments and at seeded random ones over a study's whole life,
real senders (a pynetdicom SCU that records each acknowledgement, as a PACS does) and a
real PACS (Orthanc), all on loopback.

The promises checked: an acknowledged instance is never lost (it is in the state database
and readable on disk after any kill), and every study ends with exactly one result set in
the PACS, counted by SOP Instance UID, however often the node was killed on the way.
Figures are printed with the prefix ``RELIABILITY`` (run with ``-s``) and kept in
docs/reliability.md.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from l3node.config import default_model_dir
from l3node.phantom import StudyRequest, generate_study
from l3node.spool import safe_name
from l3node.uids import derived_uid

from ..support import Orthanc, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
# The kill schedule; the seed makes a run reproducible, L3NODE_CRASH_SEED explores others.
CRASH_SEED = int(os.environ.get("L3NODE_CRASH_SEED", "7"))
KILL_PLAN = ("mid-association", "acknowledged", "processing", "export") * 2


def figure(name: str, **values: object) -> None:
    """Print one measured figure (kept in docs/reliability.md); shown with ``pytest -s``."""
    print(f"RELIABILITY {name}: {json.dumps(values, sort_keys=True)}", flush=True)


# -- the node as a process ------------------------------------------------------------------
def write_config(root: Path, *, port: int, pacs_port: int | None = None,
                 quiet_s: float = 2.0, poll_s: float = 0.3, extra: str = "",
                 destinations: str | None = None, settle_s: float | None = None,
                 retry: str = "max_attempts = 5\nbackoff_s = 0.5\nbackoff_max_s = 2\n") -> Path:
    """A node configuration on loopback; ``destinations`` replaces the Orthanc one."""
    root.mkdir(parents=True, exist_ok=True)
    dest = destinations if destinations is not None else (
        f'[[destinations]]\nname = "pacs"\nkind = "dimse"\nae_title = "ORTHANC"\n'
        f'host = "127.0.0.1"\nport = {pacs_port}\n')
    path = root / "node.toml"
    path.write_text(
        f'[node]\nae_title = "L3NODE"\nhost = "127.0.0.1"\nport = {port}\n'
        f'[paths]\nspool = "{root / "spool"}"\nstate_db = "{root / "state.db"}"\n'
        f"[scheduler]\nstudy_quiet_s = {quiet_s}\npoll_s = {poll_s}\n"
        + (f"study_settle_s = {settle_s}\n" if settle_s is not None else "")
        + f'[model]\npath = "{default_model_dir()}"\n'
        f"[retry]\n{retry}"
        f"{extra}\n{dest}")
    return path


class NodeProcess:
    """``python -m l3node serve --config FILE`` as a child: start, wait until it listens,
    SIGKILL (no cleanup of any kind runs), or SIGTERM."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120.0) -> float:
        """Start and return the seconds until the node printed that it serves."""
        t0 = time.perf_counter()
        with self.log.open("a") as fh:
            fh.write(f"---- start {self.starts}\n")
        mark = self.log.stat().st_size
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "l3node", "serve", "--config",
                                      str(self.config)], cwd=ROOT, stdout=out,
                                     stderr=subprocess.STDOUT)
        out.close()
        self.starts += 1
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.log.open("rb") as fh:
                fh.seek(mark)
                if b"l3node serving" in fh.read():
                    return time.perf_counter() - t0
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"node did not start in {timeout} s:\n{self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "node already dead"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def rss_kib(self) -> int:
        """Resident memory of the node process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def cli(config: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """An ``l3node`` admin command, as an administrator runs it."""
    return subprocess.run([sys.executable, "-m", "l3node", *args, "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def db_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), timeout=30)


def db_rows(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """One query on a fresh connection (the node may have just been killed)."""
    db = db_connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# -- studies and senders --------------------------------------------------------------------
@dataclass
class Study:
    uid: str
    series_uid: str
    files: list[Path]
    sops: list[str] = field(default_factory=list)


def derive_study(src: Path, out: Path, tag: str) -> Study:
    """A copy of a phantom study under new Study/Series/SOP Instance UIDs (same pixels)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    study_uid = derived_uid("reliability", tag, first.StudyInstanceUID)
    series_uid = derived_uid("reliability", tag, first.SeriesInstanceUID)
    study = Study(study_uid, series_uid, [])
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = derived_uid("reliability", tag, ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out / f.name, enforce_file_format=True)
        study.files.append(out / f.name)
        study.sops.append(str(ds.SOPInstanceUID))
    return study


class Sender:
    """A storage SCU that records every SOP Instance UID acknowledged with Success, and
    stops at the first failure (the association was aborted: the node was killed)."""

    def __init__(self, port: int, files: list[Path], calling: str = "PACS",
                 called: str = "L3NODE") -> None:
        self.port, self.files, self.calling, self.called = port, files, calling, called
        self.acked: list[str] = []
        self.error = ""
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called)
        if not assoc.is_established:
            self.error = "no association"
            return
        try:
            for f in self.files:
                ds = pydicom.dcmread(f)
                try:
                    status = assoc.send_c_store(ds)
                except RuntimeError as exc:  # the association is gone
                    self.error = str(exc)
                    return
                if not status or int(status.Status) != 0:
                    self.error = f"status {status.get('Status') if status else None}"
                    return
                self.acked.append(str(ds.SOPInstanceUID))
        finally:
            if assoc.is_established:
                assoc.release()

    def start(self) -> Sender:
        self.thread.start()
        return self

    def join(self, timeout: float = 120.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "sender still running"


def result_sops(o: Orthanc, study_uid: str) -> dict[str, str]:
    """SOP Instance UID → modality of every non-CT instance of the study in Orthanc."""
    found = o.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
    out: dict[str, str] = {}
    for sid in found:  # type: ignore[union-attr]
        for series in o.get(f"/studies/{sid}/series"):  # type: ignore[union-attr]
            modality = series["MainDicomTags"].get("Modality", "")
            if modality == "CT":
                continue
            for inst in o.get(f"/series/{series['ID']}/instances"):  # type: ignore[union-attr]
                out[inst["MainDicomTags"]["SOPInstanceUID"]] = modality
    return out


def spooled_result_sops(db: Path, study_uid: str) -> dict[str, str]:
    """The result objects of the study's last version, as the node recorded them."""
    row = db_rows(db, "SELECT r.files FROM result r JOIN study s USING (study_instance_uid) "
                      "WHERE study_instance_uid = ? AND r.version = s.version", (study_uid,))
    out = {}
    for f in json.loads(row[0][0]) if row else []:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = str(ds.Modality)
    return out


# -- fixtures -------------------------------------------------------------------------------
class _Orthanc(Orthanc):
    def post(self, path: str, body: dict) -> object:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory):
    o = _Orthanc(tmp_path_factory.mktemp("pacs"))
    yield o
    o.stop()


@pytest.fixture(scope="module")
def abd5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5 mm abdomen-pelvis phantom (74 slices of 512 × 512; L3 in the field of view)."""
    folder = tmp_path_factory.mktemp("abd5")
    generate_study(folder, StudyRequest(seed=21, preset="abdomen-pelvis", slice_mm=5.0,
                                        transitional_rate=0.0, truncated_rate=0.0), workers=2)
    return folder


# -- 1. crash safety ------------------------------------------------------------------------
def _state(db: Path, study_uid: str) -> str:
    rows = db_rows(db, "SELECT state FROM study WHERE study_instance_uid = ?", (study_uid,))
    return rows[0][0] if rows else ""


def _db_sops(db: Path, study_uid: str) -> dict[str, Path]:
    return {r[0]: Path(r[1]) for r in db_rows(
        db, "SELECT sop_instance_uid, path FROM instance WHERE study_instance_uid = ?",
        (study_uid,))}


def _kill_mid_association(node: NodeProcess, study: Study, rng: random.Random, db: Path,
                          port: int) -> tuple[Sender, str]:
    k = rng.randint(8, len(study.files) - 8)
    sender = Sender(port, study.files).start()
    wait_for(lambda: len(_db_sops(db, study.uid)) >= k, 60, "instances arriving", every=0.01)
    node.kill9()
    sender.join()
    return sender, f"after {len(sender.acked)} of {len(study.files)} acknowledged"


def _kill_acknowledged(node: NodeProcess, study: Study, rng: random.Random, db: Path,
                       port: int) -> tuple[Sender, str]:
    sender = Sender(port, study.files)
    sender.run()
    delay = rng.uniform(0.0, 0.5)
    time.sleep(delay)
    node.kill9()
    return sender, f"{delay:.2f} s after the last acknowledgement"


def _kill_processing(node: NodeProcess, study: Study, rng: random.Random, db: Path,
                     port: int) -> tuple[Sender, str]:
    sender = Sender(port, study.files)
    sender.run()
    wait_for(lambda: _state(db, study.uid) == "processing", 120, "processing", every=0.02)
    delay = rng.uniform(0.0, 1.5)
    time.sleep(delay)
    node.kill9()
    return sender, f"{delay:.2f} s into processing"


def _kill_export(node: NodeProcess, study: Study, rng: random.Random, db: Path,
                 port: int) -> tuple[Sender, str]:
    sender = Sender(port, study.files)
    sender.run()
    wait_for(lambda: db_rows(db, "SELECT 1 FROM export WHERE study_instance_uid = ?",
                             (study.uid,)), 120, "results composed, export queued",
             every=0.01)
    delay = rng.uniform(0.0, 0.3)
    time.sleep(delay)
    node.kill9()
    return sender, f"{delay:.2f} s after the export was queued"


KILLERS: dict[str, Callable[..., tuple[Sender, str]]] = {
    "mid-association": _kill_mid_association, "acknowledged": _kill_acknowledged,
    "processing": _kill_processing, "export": _kill_export}


@pytest.mark.slow
def test_kill_9_at_chosen_points_loses_no_acknowledged_instance_and_gives_one_result_set(
        tmp_path, pacs, abd5):
    """SIGKILL mid-association, after the acknowledgement, during processing and during
    export, twice each at random offsets; after each restart every acknowledged instance is
    in the database and readable on disk; a sender whose association died re-sends the study
    (as a PACS does); in the end every study has exactly its one result set in Orthanc."""
    rng = random.Random(CRASH_SEED)
    studies = [derive_study(abd5, tmp_path / f"study{k}", f"crash{CRASH_SEED}-{k}")
               for k in range(len(KILL_PLAN))]
    port = free_port()
    cfg = write_config(tmp_path / "node", port=port, pacs_port=pacs.dicom_port, quiet_s=3.0)
    db = tmp_path / "node" / "state.db"
    node = NodeProcess(cfg, tmp_path / "node.log")
    restarts: list[float] = [node.start()]
    acked: set[str] = set()
    debris = 0
    t0 = time.perf_counter()
    try:
        for phase, study in zip(KILL_PLAN, studies, strict=True):
            sender, when = KILLERS[phase](node, study, rng, db, port)
            state_at_kill = _state(db, study.uid)
            in_pacs_at_kill = len(result_sops(pacs, study.uid))
            parts = list((tmp_path / "node" / "spool").rglob("*.part"))
            debris += len(parts)
            acked |= set(sender.acked)
            in_db: dict[str, Path] = {}
            for s in studies:
                in_db |= _db_sops(db, s.uid)
            lost = acked - set(in_db)
            assert not lost, f"{len(lost)} acknowledged instance(s) lost after a kill {when}"
            for sop in sender.acked:  # readable, whole, the right instance
                ds = pydicom.dcmread(in_db[sop])
                assert ds.SOPInstanceUID == sop and len(ds.PixelData) == ds.Rows * ds.Columns * 2
            figure("kill", phase=phase, when=when, study_state_at_kill=state_at_kill,
                   results_in_pacs_at_kill=in_pacs_at_kill, partial_files_left=len(parts),
                   acknowledged_total=len(acked))
            restarts.append(node.start())
            if len(sender.acked) < len(study.files):  # the PACS re-sends what failed
                again = Sender(port, study.files)
                again.run()
                assert again.acked == study.sops, again.error
                acked |= set(again.acked)
        wait_for(lambda: all(_state(db, s.uid) == "exported" for s in studies), 300,
                 "every study exported")
        assert node.alive()
    finally:
        node.stop()
    total = time.perf_counter() - t0
    for s in studies:
        in_pacs = result_sops(pacs, s.uid)
        expected = spooled_result_sops(db, s.uid)
        assert sorted(expected.values()) == ["KO", "OT", "OT", "SR"], expected  # L3 found
        assert in_pacs == expected, (s.uid, in_pacs, expected)  # one result set, no stale one
        assert set(s.sops) <= set(_db_sops(db, s.uid))
    versions = [db_rows(db, "SELECT version FROM study WHERE study_instance_uid = ?",
                        (s.uid,))[0][0] for s in studies]  # > 1: processing was killed
    figure("crash-summary", seed=CRASH_SEED, kills=len(KILL_PLAN), studies=len(studies),
           acknowledged=len(acked), lost=0, partial_files_left=debris,
           restart_s_median=round(sorted(restarts)[len(restarts) // 2], 1),
           versions=versions, total_s=round(total, 1))


@pytest.mark.slow
def test_a_partial_file_left_by_a_kill_mid_write_does_not_spoil_the_study(tmp_path, pacs,
                                                                          abd5):
    """A kill between the spool's open() and rename() leaves ``.<name>.<pid>.<tid>.part``
    beside the study's files; the re-sent instance must win, not make two slices at one
    position (which failed the whole study before the spool swept such debris at start)."""
    study = derive_study(abd5, tmp_path / "study", "partial")
    port = free_port()
    cfg = write_config(tmp_path / "node", port=port, pacs_port=pacs.dicom_port, quiet_s=2.0)
    db = tmp_path / "node" / "state.db"
    node = NodeProcess(cfg, tmp_path / "node.log")
    node.start()
    try:
        first = Sender(port, study.files[:40])
        first.run()
        node.kill9()
        # what a kill during _write_atomic leaves: the next instance, half written
        spooled = next(iter(_db_sops(db, study.uid).values()))
        victim = pydicom.dcmread(study.files[40])
        buf = io.BytesIO()
        victim.save_as(buf, enforce_file_format=True)
        part = spooled.parent / f".{victim.SOPInstanceUID}.dcm.99999.12345.part"
        part.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        node.start()
        again = Sender(port, study.files)
        again.run()
        assert again.acked == study.sops
        wait_for(lambda: _state(db, study.uid) in ("exported", "failed"), 120, "processed")
    finally:
        node.stop()
    rows = db_rows(db, "SELECT r.status, r.reason FROM result r JOIN study s USING "
                       "(study_instance_uid) WHERE r.version = s.version")
    assert _state(db, study.uid) == "exported", rows
    assert not part.exists()
    assert result_sops(pacs, study.uid) == spooled_result_sops(db, study.uid)


# -- 1b. kills at random points over the whole life of a study ------------------------------
# L3NODE_KILLS: how many kills one run does: 6 in the default suite (one per phase of LIFE),
# 50 for the campaign.
KILLS = int(os.environ.get("L3NODE_KILLS", "6"))
# The life of a study as the node lives it, in order; each is observed from outside (the
# sender's thread, the study's row, its result folder, its export rows), never from the log.
LIFE = ("ingest", "settle", "processing", "composing", "export", "delivered")
AFTER_DELIVERY_S = 2.0  # how long after delivery a "delivered" kill may still fall


def _phase(db: Path, spool: Path, study_uid: str, sender: Sender) -> str:
    """Where the study is in its life right now (the phase a kill at this moment hits)."""
    if sender.thread.is_alive():
        return "ingest"
    rows = db_rows(db, "SELECT state, version FROM study WHERE study_instance_uid = ?",
                   (study_uid,))
    state, version = rows[0] if rows else ("", 0)
    if state in ("", "receiving", "complete"):
        return "settle"
    if state == "processing":
        return "composing" if (spool / "_results" / safe_name(study_uid)
                               / f"v{version}").is_dir() else "processing"
    return "delivered" if state == "exported" else "export"


def measure_life(study: Study, port: int, db: Path, spool: Path) -> dict[str, tuple[float,
                                                                                 float]]:
    """Send ``study`` to an idle node, never killed, and time each phase of its life from
    the association's start: the windows the kill generator draws from."""
    seen: dict[str, float] = {}
    t0 = time.perf_counter()
    sender = Sender(port, study.files).start()
    while time.perf_counter() - t0 < 300:
        phase = _phase(db, spool, study.uid, sender)
        seen.setdefault(phase, time.perf_counter() - t0)
        if phase == "delivered":
            break
        time.sleep(0.01)
    sender.join()
    assert sender.acked == study.sops, sender.error
    assert "delivered" in seen, f"not delivered in 300 s: {seen}"
    marks = [seen.get(p) for p in LIFE]
    for k in range(len(marks) - 2, -1, -1):  # a phase too short to be seen: zero length
        if marks[k] is None:
            marks[k] = marks[k + 1]
    ends = [*marks[1:], marks[-1] + AFTER_DELIVERY_S]  # type: ignore[operator]
    return {p: (round(a, 3), round(b, 3)) for p, a, b in zip(LIFE, marks, ends, strict=True)}


def kill_times(rng: random.Random, count: int) -> list[tuple[str, float]]:
    """``count`` kills as (phase, fraction of that phase's window): each phase of :data:`LIFE`
    gets an equal share (a shuffled round-robin, so export, a fraction of a second, is hit
    as often as the seconds-long ingest), and the moment within the phase is uniform."""
    phases: list[str] = []
    while len(phases) < count:
        batch = list(LIFE)
        rng.shuffle(batch)
        phases += batch
    return [(phase, rng.random()) for phase in phases[:count]]


def _await_kill_moment(db: Path, spool: Path, study: Study, sender: Sender, phase: str,
                       fraction: float, life: dict[str, tuple[float, float]]) -> None:
    """Wait until ``study`` enters ``phase`` (or a later one), then ``fraction`` of the
    phase's length measured un-killed: the drawn moment, anchored to the phase's real start
    (on a busy machine the phases drift by more than export lasts)."""
    target = LIFE.index(phase)
    wait_for(lambda: LIFE.index(_phase(db, spool, study.uid, sender)) >= target, 300,
             f"the study reaching {phase}", every=0.005)
    a, b = life[phase]
    time.sleep(fraction * (b - a))


def _db_readable(db: Path) -> str:
    """SQLite's own verdict on the file a SIGKILL left: "ok" or the damage it found."""
    return "; ".join(r[0] for r in db_rows(db, "PRAGMA integrity_check"))


@pytest.mark.slow
def test_kill_9_at_random_points_of_a_study_life_loses_nothing_and_gives_one_result_set(
        tmp_path, pacs, abd5):
    """``L3NODE_KILLS`` SIGKILLs (6 by default, 50 for the campaign) at seeded random moments
    over the whole life of a study — ingest, the settle wait, processing, composing, export,
    after delivery: each phase gets an equal share of the kills, the moment within it drawn
    uniformly over its length as measured on an un-killed study first, counted from when the
    study is seen to enter it.  One study per kill; before each, the node is idle, so a kill
    lands in the life of that study.  After every
    kill: each acknowledged instance (of every study so far) is in the database and whole on
    disk, and the database passes ``PRAGMA integrity_check``; a sender whose association
    died re-sends the study.  At the end every study has exactly its one result set in
    Orthanc, counted by SOP Instance UID."""
    rng = random.Random(CRASH_SEED)
    port = free_port()
    cfg = write_config(tmp_path / "node", port=port, pacs_port=pacs.dicom_port, quiet_s=3.0)
    db, spool = tmp_path / "node" / "state.db", tmp_path / "node" / "spool"
    node = NodeProcess(cfg, tmp_path / "node.log")
    restarts: list[float] = [node.start()]
    t0 = time.perf_counter()
    calm = derive_study(abd5, tmp_path / "src" / "life", f"life{CRASH_SEED}")
    studies = [calm]
    acked: set[str] = set(calm.sops)
    hits: dict[str, int] = {}
    debris = resent = 0
    try:
        life = measure_life(calm, port, db, spool)
        plan = kill_times(rng, KILLS)
        figure("kill-life", seed=CRASH_SEED, windows_s=life)
        for k, (aimed, fraction) in enumerate(plan):
            wait_for(lambda: all(_state(db, s.uid) == "exported" for s in studies), 300,
                     "the node idle before the next kill")
            study = derive_study(abd5, tmp_path / "src" / f"k{k}", f"rk{CRASH_SEED}-{k}")
            studies.append(study)
            start = time.perf_counter()
            sender = Sender(port, study.files).start()
            _await_kill_moment(db, spool, study, sender, aimed, fraction, life)
            hit = _phase(db, spool, study.uid, sender)
            at = time.perf_counter() - start
            node.kill9()
            sender.join()
            hits[hit] = hits.get(hit, 0) + 1
            acked |= set(sender.acked)
            parts = list(spool.rglob("*.part"))
            debris += len(parts)
            integrity = _db_readable(db)
            assert integrity == "ok", f"state database damaged after kill {k}: {integrity}"
            in_db: dict[str, Path] = {}
            for s in studies:
                in_db |= _db_sops(db, s.uid)
            lost = acked - set(in_db)
            assert not lost, f"{len(lost)} acknowledged instance(s) lost, kill {k} ({hit})"
            for sop in sender.acked:  # readable, whole, the right instance
                ds = pydicom.dcmread(in_db[sop])
                assert ds.SOPInstanceUID == sop and len(ds.PixelData) == ds.Rows * ds.Columns * 2
            figure("random-kill", k=k, aimed=aimed, hit=hit, at_s=round(at, 2),
                   acknowledged=len(sender.acked), partial_files_left=len(parts),
                   results_in_pacs_at_kill=len(result_sops(pacs, study.uid)))
            restarts.append(node.start())
            if len(sender.acked) < len(study.files):  # the PACS re-sends what failed
                again = Sender(port, study.files)
                again.run()
                assert again.acked == study.sops, again.error
                acked |= set(again.acked)
                resent += 1
        wait_for(lambda: all(_state(db, s.uid) == "exported" for s in studies), 300,
                 "every study exported")
        assert node.alive()
    finally:
        node.stop()
    total = time.perf_counter() - t0
    for s in studies:
        in_pacs = result_sops(pacs, s.uid)
        expected = spooled_result_sops(db, s.uid)
        assert sorted(expected.values()) == ["KO", "OT", "OT", "SR"], expected  # L3 found
        assert in_pacs == expected, (s.uid, in_pacs, expected)  # one result set, no stale one
        assert set(s.sops) <= set(_db_sops(db, s.uid))
    assert _db_readable(db) == "ok"
    versions = [db_rows(db, "SELECT version FROM study WHERE study_instance_uid = ?",
                        (s.uid,))[0][0] for s in studies]
    figure("random-kill-summary", seed=CRASH_SEED, kills=KILLS, studies=len(studies),
           hit=dict(sorted(hits.items())), acknowledged=len(acked), lost=0,
           result_sets=sum(1 for s in studies if result_sops(pacs, s.uid)),
           partial_files_left=debris, studies_resent=resent,
           studies_run_twice=sum(v > 1 for v in versions),
           restart_s_median=round(sorted(restarts)[len(restarts) // 2], 1),
           total_s=round(total, 1))


# -- 2. outage ----------------------------------------------------------------------------------
def test_pacs_outage_backs_off_visibly_and_delivers_by_itself_once_back(tmp_path, abd5):
    """What tests/test_node.py does not cover (there: PACS down until the export fails for
    good, then ``l3node retry``): while the PACS is down the export stays pending, its
    attempts come at doubling intervals and show in ``l3node status``; when the PACS comes
    back the results arrive without anyone acting, exactly once."""
    study = derive_study(abd5, tmp_path / "study", "outage")
    port, pacs_port = free_port(), free_port()
    cfg = write_config(tmp_path / "node", port=port, pacs_port=pacs_port, quiet_s=1.0,
                       retry="max_attempts = 50\nbackoff_s = 0.5\nbackoff_max_s = 4\n")
    db = tmp_path / "node" / "state.db"
    node = NodeProcess(cfg, tmp_path / "node.log")
    node.start()
    pacs: _Orthanc | None = None
    try:
        Sender(port, study.files).run()
        seen: dict[int, float] = {}

        def attempts() -> int:
            rows = db_rows(db, "SELECT attempts FROM export WHERE study_instance_uid = ?",
                           (study.uid,))
            if rows and rows[0][0] not in seen:
                seen[rows[0][0]] = time.perf_counter()
            return rows[0][0] if rows else 0

        wait_for(lambda: attempts() >= 5, 120, "five failed attempts", every=0.02)
        status = json.loads(cli(cfg, "status", "--json").stdout)[0]
        text = cli(cfg, "status").stdout
        pacs = _Orthanc(tmp_path / "pacs", dicom_port=pacs_port)
        back = time.perf_counter()
        wait_for(lambda: _state(db, study.uid) == "exported", 60, "exported once back")
        arrived = time.perf_counter() - back
        final = db_rows(db, "SELECT attempts, state FROM export")[0]
        assert result_sops(pacs, study.uid) == spooled_result_sops(db, study.uid)
    finally:
        node.stop()
        if pacs is not None:
            pacs.stop()
    export = status["exports"]["pacs"]
    assert status["state"] == "done" and export["state"] == "pending", status
    assert export["attempts"] >= 5 and "no association" in export["last_error"], export
    assert "pacs: pending (pacs: no association with ORTHANC@127.0.0.1" in text, text
    gaps = [seen[k + 1] - seen[k] for k in range(1, 5)]  # nominal 0.5, 1, 2, 4 s
    for gap, nominal in zip(gaps, (0.5, 1.0, 2.0, 4.0), strict=True):
        assert 0.9 * nominal <= gap <= nominal + 1.5, gaps
    assert gaps[3] > 3 * gaps[0]
    assert arrived <= 4.0 + 3.0, arrived  # at most one backoff_max_s, plus a tick and a send
    assert final[1] == "sent"
    figure("outage", attempt_gaps_s=[round(g, 2) for g in gaps], attempts_at_return=max(seen),
           arrival_after_return_s=round(arrived, 2), final_attempts=final[0])
