"""Issue #7, bad input: a corpus of malformed and hostile DICOM (tests/badinput.py) sent to
the node as a real process over C-STORE (pynetdicom sending the raw bytes, DCMTK storescu
where it can read them) and given to ``l3node predict``; then a fuzzer over data set bytes
on the receive path and the series loader.

What must hold: each instance gets its intended DICOM status, each kept study ends in a
stated state with a reason naming the problem, ``predict`` answers with a status or a
message (never a traceback), the node keeps answering C-ECHO, and nothing is written
outside the spool (the file tree is checked, and the paths the UIDs aim at never appear).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE, _config

from l3node.cli import main as l3node_main
from l3node.config import NodeConfig
from l3node.phantom import StudyRequest, generate_study
from l3node.receive import Receiver, StoreStatus
from l3node.select import load_series
from l3node.series import SeriesError
from l3node.spool import Spool

from ..support import free_port, wait_for
from .badinput import CT, EXPLICIT_LE, Case, Instance, encode, make_corpus
from .test_reliability import ROOT, NodeProcess, db_rows, figure, write_config

ECHOSCU, STORESCU = "/usr/bin/echoscu", "/usr/bin/storescu"  # DCMTK, by Debian path
FINAL = ("failed", "exported", "not_found", "done")
# The fuzzing campaign's size in examples, over its four targets (this file's data sets over
# C-STORE; raw PDUs, the series loader and the configuration loader in
# test_reliability_fuzz.py).  The default keeps the suite's time in check; set
# L3NODE_FUZZ_EXAMPLES=5000 (or more) for the full campaign.
FUZZ_EXAMPLES = int(os.environ.get("L3NODE_FUZZ_EXAMPLES", "1000"))
_FUZZ_SHARES = {"dataset": 0.40, "pdu": 0.30, "loader": 0.15, "config": 0.15}


def fuzz_share(target: str) -> int:
    """How many of the campaign's examples go to ``target`` (at least 10)."""
    return max(10, round(FUZZ_EXAMPLES * _FUZZ_SHARES[target]))


@pytest.fixture(scope="module")
def c64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5 mm chest phantom of 64 × 64 pixels (76 slices, ~9 KiB each): valid material."""
    folder = tmp_path_factory.mktemp("c64")
    generate_study(folder, StudyRequest(seed=4, preset="chest", slice_mm=5.0, matrix=64),
                   workers=1)
    return folder


@contextlib.contextmanager
def raw_sending() -> Iterator[None]:
    """pynetdicom sends a file's data set bytes as they are (no decoding, no re-encoding)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def send_raw(port: int, instances: Sequence[Instance], scratch: Path,
             calling: str = "PACS") -> list[int | None]:
    """One association; each instance's bytes as they are; the statuses answered."""
    scratch.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for cx in dict.fromkeys((i.sop_class_uid, i.transfer_syntax) for i in instances):
        ae.add_requested_context(*cx)
    assoc = ae.associate("127.0.0.1", port, ae_title="L3NODE")
    assert assoc.is_established
    out: list[int | None] = []
    try:
        with raw_sending():
            for k, inst in enumerate(instances):
                f = scratch / f"{k:03d}.dcm"
                f.write_bytes(inst.part10())
                status = assoc.send_c_store(f)
                out.append(int(status.Status) if status else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def echo_ok(port: int) -> bool:
    r = subprocess.run([ECHOSCU, "-aet", "PACS", "-aec", "L3NODE", "127.0.0.1", str(port)],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_corpus_over_c_store_gets_its_status_and_a_reason(tmp_path, c64):
    """Every corpus case, sent raw by pynetdicom (and by DCMTK where it can read the files):
    the exact status per instance, C-ECHO after each case, each kept study's end state and
    reason in ``l3node status``, and a file tree with nothing outside the spool."""
    token = tmp_path.name[-12:]
    corpus = make_corpus(c64, token)
    port = free_port()
    root = tmp_path / "node"
    cfg = write_config(root, port=port, quiet_s=1.0, poll_s=0.3, destinations=(
        f'[[destinations]]\nname = "results"\nkind = "folder"\npath = "{root / "results"}"\n'))
    node = NodeProcess(cfg, tmp_path / "node.log")
    node.start()
    try:
        got, echoed = {}, {}
        for case in corpus:
            got[case.name] = send_raw(port, case.instances, tmp_path / "sent" / case.name)
            echoed[case.name] = echo_ok(port)
        assert got == {c.name: [i.status for i in c.instances] for c in corpus}
        assert all(echoed.values()), echoed
        dcmtk = {}
        for case in (c for c in corpus if c.storescu):  # the same files again, from DCMTK
            folder = tmp_path / "storescu" / case.name
            folder.mkdir(parents=True)
            for k, inst in enumerate(case.instances):
                (folder / f"{k:03d}.dcm").write_bytes(inst.part10())
            r = subprocess.run([STORESCU, "-v", "-aet", "PACS", "-aec", "L3NODE", "+sd",
                                "127.0.0.1", str(port), str(folder)], capture_output=True,
                               text=True, timeout=120)
            dcmtk[case.name] = r.returncode
            assert r.returncode == 0, (case.name, r.stdout + r.stderr)
            assert r.stdout.count("Received Store Response (Success)") + r.stderr.count(
                "Received Store Response (Success)") == len(case.instances), case.name
        kept = [c for c in corpus if c.outcome]
        wait_for(lambda: all(st in FINAL for st in _states(root, kept)), 180,
                 "every kept study processed")
        status = json.loads(_cli_status(cfg))
        assert node.alive() and echo_ok(port)
    finally:
        node.stop()
    by_uid = {s["study_instance_uid"]: s for s in status}
    for case in kept:
        row = by_uid[case.study_uid]
        skipped = db_rows(root / "state.db", "SELECT skipped_series FROM result WHERE "
                          "study_instance_uid = ? AND version = ?",
                          (case.study_uid, row["version"]))[0][0]
        assert row["state"] == case.outcome, (case.name, row)
        assert case.reason in f"{row['reason']} {skipped}", (case.name, row, skipped)
    # nothing outside the spool: the node's folder holds only what it should
    assert {p.split("/")[0] for p in tree(root)} <= {
        "spool", "results", "state.db", "state.db-wal", "state.db-shm", "node.toml"}
    spooled = list((root / "spool").rglob("*.dcm"))
    assert all(p.resolve().is_relative_to((root / "spool").resolve()) for p in spooled)
    n_kept = sum(i.stored for c in corpus for i in c.instances)
    assert len([p for p in spooled if "_results" not in p.parts]) == n_kept
    assert db_rows(root / "state.db", "SELECT COUNT(*) FROM instance")[0][0] == n_kept
    for case in corpus:
        for target in case.escape_paths:
            assert not Path(target).exists(), (case.name, target)
    figure("bad-input", cases=len(corpus), instances=sum(len(c.instances) for c in corpus),
           kept=n_kept, storescu_cases=len(dcmtk),
           statuses=sorted({hex(i.status) for c in corpus for i in c.instances}))


def _states(root: Path, cases: Sequence[Case]) -> list[str]:
    rows = dict(db_rows(root / "state.db", "SELECT study_instance_uid, state FROM study"))
    return [rows.get(c.study_uid, "") for c in cases]


def _cli_status(cfg: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "l3node", "status", "--json", "--config",
                        str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_hostile_corpus_given_to_predict_gets_a_status_or_a_message(tmp_path, c64, capsys,
                                                                    monkeypatch):
    """``l3node predict`` on each case's files: a JSON status or a one-line message naming
    the problem, never a traceback (in-process for every case, the model artifact loaded
    once for all of them; and as ``python -m l3node predict`` for one, whose exit code and
    message must match)."""
    import functools

    import l3node.localize.model as model_module

    monkeypatch.setattr(model_module, "load_artifact",
                        functools.lru_cache(maxsize=2)(model_module.load_artifact))
    corpus = make_corpus(c64, tmp_path.name[-12:])
    outputs = {}
    for case in corpus:
        folder = tmp_path / case.name
        folder.mkdir()
        for k, inst in enumerate(case.instances):
            (folder / f"{k:03d}.dcm").write_bytes(inst.part10())
        rc = l3node_main(["predict", str(folder), "--json"])
        out = capsys.readouterr()
        text = out.out + out.err
        outputs[case.name] = (rc, text)
        assert rc in (0, 1, 2, 3), (case.name, rc, text)
        assert case.predict in text, (case.name, text)
    for name in ("truncated-pixels",):
        r = subprocess.run([sys.executable, "-m", "l3node", "predict", str(tmp_path / name),
                            "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in r.stderr, r.stderr
        assert (r.returncode, next(c.predict for c in corpus if c.name == name) in
                r.stdout + r.stderr) == (outputs[name][0], True), (name, r.stdout, r.stderr)


# -- fuzzing the receive path and the series loader -----------------------------------------
def _element_offsets(body: bytes) -> list[int]:
    """Offsets of the top-level element headers of an Explicit VR LE data set."""
    out, pos = [], 0
    while pos + 8 <= len(body):
        out.append(pos)
        vr = body[pos + 4: pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = int.from_bytes(body[pos + 8: pos + 12], "little")
            pos += 12 + length
        else:
            pos += 8 + int.from_bytes(body[pos + 6: pos + 8], "little")
    return out


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory, c64: Path):
    """A Receiver (the node's C-STORE handler and spool) on loopback, one association to
    it, a template slice and eight valid neighbours for the series loader."""
    root = tmp_path_factory.mktemp("fuzz")
    spool = Spool(root / "spool", root / "state.db")
    rx = Receiver(NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=free_port()), spool)
    rx.start()
    files = sorted(c64.glob("*.dcm"))
    neighbours = root / "neighbours"
    neighbours.mkdir()
    for f in files[30:38]:
        shutil.copy(f, neighbours / f.name)
    template = pydicom.dcmread(files[38])
    template.SOPInstanceUID = "1.2.826.0.1.3680043.10.1177.7.0000000000"
    ae = AE(ae_title="FUZZ")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CT, EXPLICIT_LE)
    env = {"root": root, "spool": spool, "rx": rx, "neighbours": neighbours,
           "body": encode(template), "ae": ae, "assoc": None, "count": 0, "outcomes": {}}
    yield env
    if env["assoc"] is not None and env["assoc"].is_established:
        env["assoc"].release()
    rx.stop()
    spool.close()


_ABSURD = [0, 1, 3, 0xFF, 0xFFFE, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF]
_VRS = [b"UI", b"US", b"UL", b"SQ", b"OB", b"UN", b"DS", b"IS", b"XX", b"\0\0"]


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """The template's bytes under 1-4 mutations, most of them in the header elements:
    byte flips, cuts, inserts, deletes, absurd length fields, wrong or invalid VRs."""
    data = bytearray(body)
    heads = _element_offsets(body)
    header_end = heads[-1] + 12
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "length", "vr"]))
        n = len(data)
        if n == 0:
            break
        at = draw(st.integers(0, min(header_end, n - 1)))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at: at + draw(st.integers(1, 64))]
        else:
            h = draw(st.sampled_from([h for h in heads if h + 12 <= n] or [0]))
            if h + 12 > n:
                continue
            if kind == "vr":
                data[h + 4: h + 6] = draw(st.sampled_from(_VRS))
            elif data[h + 4: h + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
                data[h + 8: h + 12] = draw(st.sampled_from(_ABSURD)).to_bytes(4, "little")
            else:
                data[h + 6: h + 8] = (draw(st.sampled_from(_ABSURD)) & 0xFFFF).to_bytes(
                    2, "little")
    return bytes(data)


_TEMPLATE_SOP = b"1.2.826.0.1.3680043.10.1177.7.0000000000"
_ALLOWED = {StoreStatus.SUCCESS, StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            StoreStatus.CANNOT_UNDERSTAND}


@settings(max_examples=fuzz_share("dataset"), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_data_sets_get_an_intended_status_and_the_loader_only_says_why(fuzz_env, data):
    """Mutated data sets (derandomized: the same ones each run; 400 by default, see
    FUZZ_EXAMPLES) over one association:
    each is answered 0x0000, 0xA900 or 0xC000 (never 0xC211, the handler's crash status, nor
    a dropped association); whatever is kept stays in the spool and, beside eight valid
    slices, loads and decodes, or is refused with a SeriesError (never another exception)."""
    env = fuzz_env
    env["count"] += 1
    sop = f"1.2.826.0.1.3680043.10.1177.7.1{env['count']:09d}"
    body = data.draw(mutated(fuzz_env["body"])).replace(_TEMPLATE_SOP, sop.encode())
    if env["assoc"] is None or not env["assoc"].is_established:
        env["assoc"] = env["ae"].associate("127.0.0.1", env["rx"].port, ae_title="L3NODE")
        assert env["assoc"].is_established
    f = env["root"] / "fuzz.dcm"
    f.write_bytes(Instance(body, sop, 0, True).part10())
    with raw_sending():
        status = env["assoc"].send_c_store(f)
    assert status, "no C-STORE response: the association died"
    code = int(status.Status)
    assert code in _ALLOWED, f"status 0x{code:04X}"
    env["outcomes"][code] = env["outcomes"].get(code, 0) + 1
    rows = env["spool"].db.execute("SELECT path FROM instance WHERE sop_instance_uid = ?",
                                   (sop,)).fetchall()
    assert bool(rows) == (code == 0)
    if not rows:
        return
    stored = Path(rows[0][0])
    assert stored.resolve().is_relative_to((env["root"] / "spool").resolve())
    probe = env["neighbours"] / "fuzzed.dcm"
    shutil.copy(stored, probe)
    try:
        series = load_series(env["neighbours"])
        series.hu(range(len(series)))
    except SeriesError:
        pass
    finally:
        probe.unlink()


def test_after_fuzzing_the_listener_answers_and_nothing_left_the_spool(fuzz_env):
    """Runs after the fuzzer (file order): the same listener still associates and answers
    C-ECHO, and every file written lies under the fuzzing root's spool."""
    env = fuzz_env
    assert env["count"] >= fuzz_share("dataset"), "the fuzzer did not run first"
    ae = AE(ae_title="FUZZ")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", env["rx"].port, ae_title="L3NODE")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0
    assoc.release()
    outside = [p for p in env["root"].rglob("*") if p.is_file() and not p.resolve()
               .is_relative_to((env["root"] / "spool").resolve())
               and p.parent.name != "neighbours" and p.name not in (
                   "fuzz.dcm", "state.db", "state.db-wal", "state.db-shm")]
    assert not outside, outside
    kept = env["spool"].db.execute("SELECT COUNT(*) FROM instance").fetchone()[0]
    figure("fuzz", examples=sum(env["outcomes"].values()), kept=kept,
           statuses={f"0x{k:04X}": v for k, v in sorted(env["outcomes"].items())})
