"""Issue #19, fuzzing beyond data sets: raw PDUs and malformed P-DATA over a socket, storms of
half-open and stalled connections, fuzzed series files for the loader, and fuzzed TOML for
the configuration loader.

The PDU fuzzer and the storms talk to the node as a real process (``python -m l3node serve``
on loopback; its scheduler never fires during the test, so the spool holds exactly what the
listener kept).  What must hold, for every example: the node's answer is a DICOM status, an
A-ASSOCIATE-RJ, an A-ABORT, a release, or — after the peer stopped mid-PDU and half-closed —
a closed connection; never silence, nor a connection dropped without a word; every
instance acknowledged with Success is in the spool, and one not acknowledged is there only
when the association was cut before its response could go (then a re-send is a
duplicate); no thread of the node dies (its log has no "Exception in thread" nor a
handler's crash); the node answers C-ECHO after each batch and at the end, and its memory
and threads stay bounded.  The loader must load or refuse with
``SeriesError``; the configuration loader must give a :class:`Config` with values of the
declared types or a ``ConfigError`` naming the file or the key, never another exception.

``L3NODE_FUZZ_EXAMPLES`` sets the campaign's size (see test_reliability_input.py): the CI
default, or thousands on demand.  Figures print as ``RELIABILITY`` lines (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import select
import socket
import struct
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from types import UnionType

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE

from l3node.config import Config, ConfigError, load_config
from l3node.select import load_series
from l3node.series import SeriesError

from ..support import free_port, wait_for
from .badinput import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    CT,
    CT_CONTEXT,
    ECHO_CONTEXT,
    EXPLICIT_LE,
    P_DATA_TF,
    Instance,
    Reply,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    command_set,
    encode,
    pdu,
    pdv,
    release_rq,
)
from .test_reliability import NodeProcess, db_rows, figure, write_config
from .test_reliability_input import c64, fuzz_share, raw_sending  # noqa: F401  (c64: a fixture)

_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])
PDU_EXAMPLES, LOADER_EXAMPLES, CONFIG_EXAMPLES = (fuzz_share("pdu"), fuzz_share("loader"),
                                                  fuzz_share("config"))
ECHO_EVERY = 50  # a batch: the node must answer a C-ECHO after every this many examples
REPLY_WAIT_S = 2.5  # how long a step that expects an answer waits for it (2 busy cores)
CLOSE_WAIT_S = 15.0  # how long the node may take to close after the peer half-closed
# What in the node's log shows a failure the node did not handle: a thread that died, an
# exception in the state machine, the DUL loop, an association's thread, a service class
# (a C-STORE handler that raised: 0xC211) or one of the node's own handlers; and the node's
# own ERROR events.  pynetdicom's complaints about what it could not decode (loggers .pdu,
# .pdu_items, .utils, .dimse), and its own logging handlers ("standard_...") failing to
# format garbage, are not: the reactor turns those into an A-ABORT.
FAILED = ("Exception in thread", "State Machine received an exception",
          "Exception in DUL.run()", "Exception in the handler")
FAILING_LOGGERS = ("pynetdicom.association", "pynetdicom.acse", "pynetdicom.service_class")
EXPECTED = ("Network timeout reached", "ARTIM timer expired",
            "No supported service class available")  # a command's unknown class: A-ABORT
STORE_STATUSES = {0x0000, 0xA900, 0xC000}  # the node's answers to a C-STORE it could read


# -- the node's listener as a process -------------------------------------------------------
@dataclass
class Listener:
    """The node under the PDU fuzzer, and what the fuzzer saw of it."""

    node: NodeProcess
    port: int
    root: Path
    template: bytes  # a valid 64 × 64 CT slice, Explicit VR LE, its SOP UID _TEMPLATE_SOP
    sent: int = 0
    acked: set[str] = field(default_factory=set)  # CT instances acknowledged with Success
    outcomes: dict[str, int] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)  # SOP UID → how, the mutations
    echoes: int = 0


_TEMPLATE_SOP = "1.2.826.0.1.3680043.10.1177.8.0000000000"


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory, c64: Path):  # noqa: F811
    """``l3node serve`` with a folder destination and a scheduler that never completes a
    study during the test (an hour's quiet and settle periods): the spool is the listener's
    work alone."""
    root = tmp_path_factory.mktemp("pdufuzz")
    port = free_port()
    cfg = write_config(root / "node", port=port, quiet_s=3600.0, settle_s=3600.0, poll_s=1.0,
                       destinations=f'[[destinations]]\nname = "out"\nkind = "folder"\n'
                                    f'path = "{root / "out"}"\n')
    node = NodeProcess(cfg, root / "node.log")
    node.start()
    ds = pydicom.dcmread(sorted(c64.glob("*.dcm"))[38])
    ds.SOPInstanceUID = _TEMPLATE_SOP
    env = Listener(node, port, root / "node", encode(ds))
    yield env
    node.stop()


def echo(port: int, timeout: float = 30.0) -> int | str:
    """A C-ECHO from a well-behaved SCU (pynetdicom): its status, or why there was none."""
    ae = AE(ae_title="ECHO")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="L3NODE")
    if not assoc.is_established:
        return "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "none"
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else "no response"
    finally:
        if assoc.is_established:
            assoc.release()


def resend(port: int, part10: Path) -> int | None:
    """Send a file's data set as it is (pynetdicom, one association): the status."""
    ae = AE(ae_title="RESEND")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CT, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", port, ae_title="L3NODE")
    assert assoc.is_established
    try:
        with raw_sending():
            status = assoc.send_c_store(part10)
        return int(status.Status) if status else None
    finally:
        if assoc.is_established:
            assoc.release()


def log_findings(node: NodeProcess) -> list[str]:
    """Lines of the node's log that show a failure it did not handle (see FAILED)."""
    out = []
    for line in node.log.read_text(errors="replace").splitlines():
        m = re.search(r" ERROR (\S+)(?: logger=(\S+))?", line)
        if any(f in line for f in FAILED):
            out.append(line[:300])
        elif m is None or any(e in line for e in EXPECTED):
            continue
        else:
            own = m.group(1) != "log"  # the node's own event at ERROR
            handler = (m.group(2) == "pynetdicom.events" and "Exception raised in user's"
                       in line and "handler 'standard_" not in line)
            if own or handler or m.group(2) in FAILING_LOGGERS:
                out.append(line[:300])
    return out


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# -- a peer that speaks raw bytes -----------------------------------------------------------
@dataclass
class Step:
    """Bytes to send; ``expect``: what to wait for before the next step — "assoc" (an
    answer to the association request: data sent before the A-ASSOCIATE-AC would be out of
    order), "response" (one per DIMSE message sent: the instance is stored and acknowledged
    before anything else arrives), "release" (the end), or "" (nothing)."""

    data: bytes
    expect: str = ""


def exchange(port: int, steps: list[Step], half_close: bool = False) -> tuple[Reply, str]:
    """Send the steps on one TCP connection, reading whatever comes back; then, unless the
    node already ended it, half-close and wait for the node to close.  Returns the replies
    and how it ended: "released", "aborted", "rejected", "closed" (by the node, after our
    half-close), "dropped" (closed by the node, no PDU saying why), or "silent" (the node
    kept the connection open and quiet)."""
    reply = Reply()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def drain(wait: float, done: Callable[[], bool] = lambda: True) -> None:
        """Read what is pending, and on until ``done()`` or ``wait`` seconds passed."""
        deadline = time.monotonic() + wait
        while not reply.closed:
            left = deadline - time.monotonic()
            if not select.select([sock], [], [], max(0.0, min(left, 0.02)))[0]:
                if ended() or done() or left <= 0:
                    return
                continue
            try:
                data = sock.recv(65536)
            except OSError:  # reset by the node
                reply.closed = True
                return
            if not data:
                reply.closed = True
                return
            reply.feed(data)

    def ended() -> bool:
        return reply.closed or reply.released or reply.aborted is not None or (
            reply.rejected is not None)

    messages = 0  # DIMSE messages sent whole: each should have its response
    half_closed = False
    done: dict[str, Callable[[], bool]] = {
        "": lambda: True, "assoc": lambda: bool(reply.kinds),
        "response": lambda: len(reply.statuses) >= messages, "release": ended}
    try:
        for step in steps:
            if ended():
                break
            messages += step.expect == "response"
            try:
                sock.sendall(step.data)
            except OSError:  # the node closed or reset: what it said is in the socket
                drain(REPLY_WAIT_S, ended)
                break
            drain(REPLY_WAIT_S if step.expect else 0.0, done[step.expect])
        if not ended() or half_close:
            half_closed = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + CLOSE_WAIT_S
            while not reply.closed and time.monotonic() < deadline:
                drain(0.2)
    finally:
        sock.close()
    if reply.rejected is not None:
        how = "rejected"
    elif reply.aborted is not None:
        how = "aborted"
    elif reply.released:
        how = "released"
    else:
        how = ("closed" if half_closed else "dropped") if reply.closed else "silent"
    return reply, how


# -- the PDU fuzzer -------------------------------------------------------------------------
_LENGTHS = [0, 1, 2, 3, 5, 6, 0x7F, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]


def _command_variants(sop: str) -> list[bytes]:
    """C-STORE-RQ command sets that are wrong in one way each."""
    base = {0x00000002: ("UI", CT), 0x00000100: ("US", 0x0001), 0x00000110: ("US", 7),
            0x00000700: ("US", 0), 0x00000800: ("US", 0x0000), 0x00001000: ("UI", sop)}
    out = []
    for drop in (0x00000100, 0x00001000, 0x00000002, 0x00000110, 0x00000800):
        out.append(command_set({k: v for k, v in base.items() if k != drop}))
    for tag, value in ((0x00000100, ("US", 0x0ABC)), (0x00000100, ("US", 0x8001)),
                       (0x00000800, ("US", 0x0101)), (0x00000002, ("UI", "1.2.3")),
                       (0x00000002, ("UI", "1.2.840.10008.5.1.4.1.1.4")),
                       (0x00000110, ("US", 0)), (0x00001000, ("UI", "")),
                       (0x00000700, ("US", 0xFFFF))):
        out.append(command_set({**base, tag: value}))
    good = c_store_rq(CT, sop)
    out.append(good[:12] + b"\xff\xff\xff\x7f" + good[16:])  # command group length absurd
    out.append(good[: len(good) // 2])  # a command set cut in half
    out.append(b"")
    return out


@st.composite
def pdu_plans(draw: st.DrawFn, template: bytes, sop: str) -> tuple[list[Step], bool, list[str]]:
    """A valid exchange (associate, optionally C-ECHO, one C-STORE of the template in
    fragments, release) under 1-3 mutations of its PDUs; returns the steps, whether the
    stream was truncated (the peer then half-closes), and the mutations' names."""
    body = template.replace(_TEMPLATE_SOP.encode(), sop.encode())
    frag = draw(st.sampled_from([256, 1024, 4096, 16000]))
    steps = [Step(associate_rq(), "assoc")]
    if draw(st.booleans()):
        steps.append(Step(pdu(P_DATA_TF, pdv(ECHO_CONTEXT, 0x03, c_echo_rq(1))), "response"))
    steps.append(Step(pdu(P_DATA_TF, pdv(CT_CONTEXT, 0x03, c_store_rq(CT, sop, 2)))))
    chunks = [body[k: k + frag] for k in range(0, len(body), frag)]
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        steps.append(Step(pdu(P_DATA_TF, pdv(CT_CONTEXT, 0x02 if last else 0x00, chunk)),
                          "response" if last else ""))
    steps.append(Step(release_rq(), "release"))
    names: list[str] = []
    truncated = False
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["pdu-length", "pdv-length", "control", "context", "swap",
                                     "duplicate", "drop", "truncate", "garbage", "type", "flip",
                                     "command", "associate", "split", "stall"]))
        names.append(kind)
        data_steps = [k for k, s in enumerate(steps) if s.data[:1] == b"\x04"]
        if kind == "pdu-length":
            k = draw(st.integers(0, len(steps) - 1))
            n = draw(st.sampled_from([*_LENGTHS, len(steps[k].data) - 7, len(steps[k].data)]))
            steps[k].data = steps[k].data[:2] + struct.pack(">L", max(0, n)) + steps[k].data[6:]
        elif kind in ("pdv-length", "control", "context") and data_steps:
            k = draw(st.sampled_from(data_steps))
            d = bytearray(steps[k].data)
            if len(d) < 12:
                continue
            if kind == "pdv-length":
                d[6:10] = struct.pack(">L", draw(st.sampled_from(_LENGTHS)))
            elif kind == "control":
                d[11] = draw(st.integers(0, 255))
            else:
                d[10] = draw(st.sampled_from([0, 2, 5, 7, 255, CT_CONTEXT, ECHO_CONTEXT]))
            steps[k].data = bytes(d)
        elif kind in ("swap", "duplicate", "drop") and len(data_steps) >= 2:
            a = draw(st.sampled_from(data_steps))
            b = draw(st.sampled_from(data_steps))
            if kind == "swap":
                steps[a], steps[b] = steps[b], steps[a]
            elif kind == "duplicate":
                steps.insert(b, Step(steps[a].data, steps[a].expect))
            else:
                del steps[a]
        elif kind == "truncate":
            flat = b"".join(s.data for s in steps)
            cut = draw(st.integers(0, max(0, len(flat) - 1)))
            kept, pos = [], 0
            for s in steps:
                if pos + len(s.data) <= cut:
                    kept.append(s)
                elif pos < cut:
                    kept.append(Step(s.data[: cut - pos]))
                pos += len(s.data)
            steps, truncated = kept or [Step(b"")], True
        elif kind == "garbage":
            k = draw(st.integers(1, len(steps)))
            noise = draw(st.one_of(
                st.binary(min_size=1, max_size=64),
                st.builds(lambda t, b: pdu(t, b), st.sampled_from([0x00, 0x08, 0x09, 0xFF]),
                          st.binary(max_size=32)),
                st.builds(lambda b: pdu(A_ASSOCIATE_RQ, b), st.binary(max_size=32))))
            steps.insert(k, Step(noise))
        elif kind == "type":
            k = draw(st.integers(0, len(steps) - 1))
            steps[k].data = bytes([draw(st.integers(0, 255))]) + steps[k].data[1:]
        elif kind == "flip":
            k = draw(st.integers(0, len(steps) - 1))
            d = bytearray(steps[k].data)
            if d:
                at = draw(st.integers(0, min(len(d), 96) - 1))
                d[at] ^= draw(st.integers(1, 255))
            steps[k].data = bytes(d)
        elif kind == "command":
            k = next((j for j, s in enumerate(steps) if s.data[:1] == b"\x04"
                      and len(s.data) > 11 and s.data[11] & 1 and s.data[10] == CT_CONTEXT),
                     None)
            if k is not None:
                cmd = draw(st.sampled_from(_command_variants(sop)))
                steps[k].data = pdu(P_DATA_TF, pdv(CT_CONTEXT, 0x03, cmd))
        elif kind == "associate":
            d = bytearray(steps[0].data)
            what = draw(st.sampled_from(["version", "called", "item", "cut-items", "max-pdu"]))
            if len(d) < 74:
                continue
            if what == "version":
                d[6:8] = struct.pack(">H", draw(st.sampled_from([0, 2, 0xFFFF])))
            elif what == "called":
                d[10:26] = draw(st.sampled_from([b"NOTME".ljust(16), bytes(16),
                                                 b"\\\\\\\\".ljust(16)]))
            elif what == "item":  # an item's length field
                at = draw(st.sampled_from([76, 76 + 25, 76 + 29]))
                if at + 2 <= len(d):
                    d[at: at + 2] = struct.pack(">H", draw(st.sampled_from(
                        [0, 1, 0xFFFF, 0x8000])))
            elif what == "cut-items":
                d = d[: draw(st.integers(74, len(d)))]
                d[2:6] = struct.pack(">L", len(d) - 6)
            else:
                d = bytearray(associate_rq(max_pdu=draw(st.sampled_from([0, 1, 0xFFFFFFFF]))))
            steps[0].data = bytes(d)
        elif kind == "split":  # valid, but in fragments of a few bytes, many to a PDU
            size = draw(st.integers(1, 16))
            pieces = [body[k: k + size] for k in range(0, len(body), size)]
            pdvs = [pdv(CT_CONTEXT, 0x02 if k == len(pieces) - 1 else 0x00, p)
                    for k, p in enumerate(pieces)]
            first = next((j for j, s in enumerate(steps) if s.data[:1] == b"\x04"
                          and len(s.data) > 11 and not s.data[11] & 1), None)
            if first is not None:
                steps = [s for s in steps if not (s.data[:1] == b"\x04" and len(s.data) > 11
                                                  and not s.data[11] & 1)]
                per = max(1, 4000 // (size + 6))
                for j, k in enumerate(range(0, len(pdvs), per)):
                    steps.insert(first + j, Step(pdu(P_DATA_TF, b"".join(pdvs[k: k + per]))))
                steps[first + j].expect = "response"
        elif kind == "stall":  # the node must not wait forever for the rest of a PDU
            k = draw(st.integers(0, len(steps) - 1))
            d = steps[k].data
            steps = [*steps[:k], Step(d[: draw(st.integers(0, max(0, len(d) - 1)))])]
            truncated = True
    return steps, truncated, names


@settings(max_examples=PDU_EXAMPLES, **_SETTINGS)
@given(data=st.data())
def test_fuzzed_pdus_get_a_status_a_refusal_or_an_abort_and_only_acks_are_kept(listener,
                                                                              data):
    """Raw PDUs over TCP — wrong PDU and PDV lengths, bad message control headers and
    context IDs, fragments swapped, repeated, dropped, truncated, garbage between PDUs,
    unknown PDU types, broken command sets and association requests — each example on its
    own connection: the node answers with statuses, a refusal, an abort or a release (or
    closes after the peer half-closed mid-PDU), never stays silent; it keeps every CT
    instance it acknowledged and no other, but one whose response an abort overtook (the
    peer's next bytes were an invalid PDU), which a re-send then acknowledges as a
    duplicate; and it answers C-ECHO after every batch of examples."""
    env = listener
    env.sent += 1
    sop = f"1.2.826.0.1.3680043.10.1177.8.1{env.sent:09d}"
    steps, truncated, names = data.draw(pdu_plans(env.template, sop))
    reply, how = exchange(env.port, steps, half_close=truncated)
    assert how != "silent", f"the node neither answered nor closed: {names}"
    assert how != "dropped", f"the node closed without A-ABORT or release: {names}"
    assert not reply.undecodable, reply.undecodable
    assert set(reply.statuses) <= STORE_STATUSES, ([hex(s) for s in reply.statuses], names)
    kept = bool(db_rows(env.root / "state.db",
                        "SELECT 1 FROM instance WHERE sop_instance_uid = ?", (sop,)))
    # every acknowledged CT instance is kept (other classes are accepted and dropped:
    # node.other_storage = "ignore"; a mutated command's SOP class among them) ...
    acked_ct = {u for u, c in zip(reply.acked_sops, reply.acked_classes, strict=True)
                if c == CT}
    assert (sop in acked_ct) <= kept, (names, how, "acknowledged, not kept")
    # kept unacknowledged: only where the association did not end normally (see the next
    # test); a release comes after every response
    assert not (kept and how == "released" and sop not in reply.acked_sops), (names, how)
    env.acked |= acked_ct
    env.ended[sop] = f"{how} {names}"
    key = how + ("+ack" if reply.acked_sops else "")
    env.outcomes[key] = env.outcomes.get(key, 0) + 1
    if env.sent % ECHO_EVERY == 0:
        answer = echo(env.port)
        assert answer == 0, (f"no C-ECHO after {env.sent} fuzzed exchanges: {answer}, "
                             f"{threads_of(env.node.pid)} threads")
        env.echoes += 1
        assert not log_findings(env.node), log_findings(env.node)[:5]


def test_after_the_pdu_fuzzer_the_node_answers_and_holds_only_what_it_acknowledged(listener):
    """Runs after the PDU fuzzer (file order): C-ECHO answered, no thread of the node died,
    the spool holds every acknowledged instance, no partial file, and no other instance
    but ones whose association was cut before their response (each a duplicate when sent
    again)."""
    env = listener
    assert env.sent >= PDU_EXAMPLES, "the PDU fuzzer did not run first"
    assert echo(env.port) == 0
    assert env.node.alive()
    findings = log_findings(env.node)
    assert not findings, findings[:5]
    rows = {r[0] for r in db_rows(env.root / "state.db", "SELECT sop_instance_uid FROM "
                                  "instance WHERE sop_instance_uid LIKE '%.1177.8.%'")}
    assert env.acked <= rows
    # Kept, never acknowledged: the instance was stored, then the association ended before
    # its response went out — an abort (the peer's next bytes were an invalid PDU, which
    # the upper layer answers with A-ABORT at once, PS3.8 AA-8) or the peer closing.  The
    # sender sends it again: that must be a duplicate, acknowledged, still one instance.
    cut = sorted(rows - env.acked)
    for sop in cut:
        assert env.ended[sop].split()[0] in ("aborted", "closed"), (sop, env.ended[sop])
        f = env.root.parent / "resend.dcm"
        f.write_bytes(Instance(env.template.replace(_TEMPLATE_SOP.encode(), sop.encode()),
                               sop, 0, True).part10())
        assert resend(env.port, f) == 0, sop
        assert db_rows(env.root / "state.db", "SELECT COUNT(*) FROM instance WHERE "
                       "sop_instance_uid = ?", (sop,))[0][0] == 1
    assert not list((env.root / "spool").rglob("*.part"))
    figure("pdu-fuzz", examples=sum(env.outcomes.values()), echoes=env.echoes + 1,
           kept=len(rows), kept_unacknowledged=len(cut),
           outcomes=dict(sorted(env.outcomes.items())))


# -- association storms ---------------------------------------------------------------------
def _hold(port: int, count: int, first: bytes | None, rng: random.Random) -> list[socket.socket]:
    """``count`` connections, each sending ``first`` cut at a random point (or nothing)."""
    out = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first:
            with contextlib.suppress(OSError):
                s.sendall(first[: rng.randrange(1, len(first))])
        out.append(s)
    return out


def _associations(port: int, count: int) -> tuple[list[socket.socket], list[int | None]]:
    """``count`` connections that each send a whole A-ASSOCIATE-RQ and wait for the answer
    (its PDU type), then stay open."""
    held, answers = [], []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(associate_rq())
        s.settimeout(REPLY_WAIT_S * 3)
        r = Reply()
        with contextlib.suppress(OSError):
            while not r.kinds:
                chunk = s.recv(65536)
                if not chunk:
                    break
                r.feed(chunk)
        answers.append(r.kinds[0] if r.kinds else None)
        held.append(s)
    return held, answers


def _close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


def test_association_storms_never_stop_the_node_answering(listener):
    """Storms against the listener, each bounded in time: many silent TCP connections; many
    that send part of an A-ASSOCIATE-RQ and stall; full associations held open beyond
    ``node.max_associations``; a burst of connect/close and connect/reset; a PDU that
    declares 4 GiB and streams.  During a storm a C-ECHO is answered or refused (A-ASSOCIATE-RJ);
    after each, once the storm's sockets are gone, it is answered; the node's threads return
    to their count before and its memory stays within 100 MiB of it."""
    env = listener
    rng = random.Random(19)
    pid = env.node.pid
    threads0, rss0 = threads_of(pid), env.node.rss_kib()
    results: dict[str, dict] = {}
    t_all = time.perf_counter()

    def after(name: str, during: object, t0: float, **extra: object) -> None:
        t1 = time.perf_counter()
        answer = wait_for(lambda: echo(env.port) == 0, 60, f"C-ECHO after the {name} storm",
                          every=0.2)
        assert answer
        results[name] = {"echo_during": during, "echo_after_s": round(
            time.perf_counter() - t1, 2), "storm_s": round(t1 - t0, 2), **extra}

    # 1. silent connections, many more than max_associations
    t0 = time.perf_counter()
    socks = _hold(env.port, 40, None, rng)
    during = echo(env.port)
    _close_all(socks)
    after("silent", during, t0, connections=40)
    # 2. partial A-ASSOCIATE-RQ, then nothing
    t0 = time.perf_counter()
    socks = _hold(env.port, 24, associate_rq(), rng)
    during = echo(env.port)
    _close_all(socks)
    after("partial-rq", during, t0, connections=24)
    # 3. associations established and held beyond the limit: the 9th is refused, transient
    # (tried again for up to 30 s: an association of the tests before may still be ending)
    t0 = time.perf_counter()
    for _ in range(30):
        held, answers = _associations(env.port, 12)
        during = echo(env.port)
        _close_all(held)
        if answers.count(A_ASSOCIATE_AC) == 8:
            break
        time.sleep(1.0)
    assert answers.count(A_ASSOCIATE_AC) == 8 and answers.count(A_ASSOCIATE_RJ) == 4, answers
    assert during == "rejected", during
    after("held", during, t0, accepted=answers.count(A_ASSOCIATE_AC),
          rejected=answers.count(A_ASSOCIATE_RJ))
    # 4. rapid connect/close and connect/reset
    t0 = time.perf_counter()
    for k in range(120):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
        if k % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if k % 3 == 0:
            with contextlib.suppress(OSError):
                s.sendall(associate_rq()[: rng.randrange(1, 60)])
        s.close()
    after("connect-close", None, t0, connections=120)
    # 5. a PDU that declares 4 GiB, and bytes streaming after it, from four peers at once
    t0 = time.perf_counter()
    ended: list[str] = []

    def flood() -> None:
        s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
        s.settimeout(10)
        try:
            s.sendall(associate_rq())
            s.recv(65536)
            s.sendall(pdu(P_DATA_TF, b"", length=0xFFFFFFF0))
            chunk = bytes(1 << 20)
            for _ in range(256):
                s.sendall(chunk)
            ended.append("streamed 256 MiB")
        except OSError as exc:
            ended.append(type(exc).__name__)
        finally:
            s.close()

    floods = [threading.Thread(target=flood) for _ in range(4)]
    for t in floods:
        t.start()
    peak = rss0
    while any(t.is_alive() for t in floods):
        peak = max(peak, env.node.rss_kib())
        time.sleep(0.05)
    after("4-GiB-pdu", ended, t0, peak_rss_growth_mib=round((peak - rss0) / 1024))
    assert (peak - rss0) < 100 * 1024, f"the node grew by {(peak - rss0) // 1024} MiB"
    assert "streamed 256 MiB" not in ended, ended  # the node aborted before reading it all
    wait_for(lambda: threads_of(pid) <= threads0 + 2, 90, "the node's threads back to "
             f"{threads0} (now {threads_of(pid)})")
    findings = log_findings(env.node)
    assert not findings, findings[:5]
    figure("storms", threads_before=threads0, threads_after=threads_of(pid),
           rss_growth_mib=round((env.node.rss_kib() - rss0) / 1024),
           total_s=round(time.perf_counter() - t_all, 1), **results)


# -- the series loader ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def loader_env(tmp_path_factory: pytest.TempPathFactory, c64: Path):  # noqa: F811
    """Eight valid neighbouring slices (files) and the bytes of the ninth, to mutate."""
    root = tmp_path_factory.mktemp("loaderfuzz")
    files = sorted(c64.glob("*.dcm"))[30:39]
    return {"root": root, "valid": [f.read_bytes() for f in files[:8]],
            "victim": files[8].read_bytes(), "count": 0, "outcomes": {}}


@st.composite
def mutated_file(draw: st.DrawFn, raw: bytes) -> bytes:
    """A Part-10 file under 1-4 mutations anywhere: preamble, file meta, data set header,
    pixel data (flips, cuts, inserts, deletes, a run of 0xFF, a copy of another part)."""
    data = bytearray(raw)
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        region = draw(st.sampled_from(["meta", "meta", "header", "header", "header",
                                       "anywhere"]))
        hi = {"meta": min(meta_end, len(data)), "header": min(meta_end + 900, len(data)),
              "anywhere": len(data)}[region]
        at = draw(st.integers(0, max(0, hi - 1)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "ff", "copy"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "delete":
            del data[at: at + draw(st.integers(1, 256))]
        elif kind == "ff":
            data[at: at + 4] = b"\xff\xff\xff\xff"
        else:
            src = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[src: src + draw(st.integers(1, 64))]
    return bytes(data)


@settings(max_examples=LOADER_EXAMPLES, **_SETTINGS)
@given(data=st.data())
def test_fuzzed_series_files_load_or_are_refused_with_a_reason(loader_env, data):
    """The series loader ``l3node predict`` and the node use, on a folder of eight valid
    slices and one to three fuzzed files: it loads and decodes every slice, or raises
    ``SeriesError`` (a message naming the problem), never another exception."""
    env = loader_env
    env["count"] += 1
    folder = env["root"] / f"s{env['count']:05d}"
    folder.mkdir()
    for k, raw in enumerate(env["valid"]):
        (folder / f"{k:03d}.dcm").write_bytes(raw)
    for k in range(data.draw(st.integers(1, 3))):
        (folder / f"fuzz{k}.dcm").write_bytes(data.draw(mutated_file(env["victim"])))
    try:
        series = load_series(folder)
        series.hu(range(len(series)))
        outcome = "loaded"
    except SeriesError as exc:
        assert str(exc), "a SeriesError without a message"
        outcome = "refused"
    env["outcomes"][outcome] = env["outcomes"].get(outcome, 0) + 1
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


def test_after_the_loader_fuzzer_figures(loader_env):
    assert loader_env["count"] >= LOADER_EXAMPLES, "the loader fuzzer did not run first"
    figure("loader-fuzz", examples=sum(loader_env["outcomes"].values()),
           **loader_env["outcomes"])


# -- the configuration loader ---------------------------------------------------------------
_BASE_TOML = Path(__file__).resolve().parents[2] / "config" / "l3node.toml"
_SECTIONS = ("node", "paths", "scheduler", "model", "retry", "results", "housekeeping",
             "selection", "web", "logging", "tls", "destinations")


def toml_value(v: object) -> str:
    """A Python value as a TOML value (the test writes its own: no TOML writer is a
    dependency of the project)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else
                             f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                             for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_value(k)


def toml_document(doc: dict) -> str:
    """Top-level scalars first, then tables, then arrays of tables."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v
                                                 and all(isinstance(x, dict) for x in v))]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{toml_key(k)}]")
            lines += [f"{toml_key(a)} = {toml_value(b)}" for a, b in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines.append(f"[[{toml_key(k)}]]")
                lines += [f"{toml_key(a)} = {toml_value(b)}" for a, b in item.items()]
    return "\n".join(lines) + "\n"


_SCALARS = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["", " ", "..", "/", "cpu", "int8", "dimse", "folder", "0.0.0.0",
                     "not-an-ip", "\\", "A" * 17, "../../etc/passwd", "\x00", "ignore"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@st.composite
def fuzzed_toml(draw: st.DrawFn, base: dict) -> bytes:
    """The example configuration under 1-4 mutations: a value of another type or range, a
    key removed or unknown, a section that is not a table (or an array of tables when it
    should be one table), a destination broken; or bytes mangled after writing (syntax
    errors, invalid UTF-8, cut short)."""
    import copy

    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["value", "value", "value", "drop", "unknown", "section",
                                     "destination"]))
        name = draw(st.sampled_from(_SECTIONS))
        if kind == "section":
            doc[name] = draw(_VALUES)
            continue
        sect = doc.setdefault(name, [{}] if name == "destinations" else {})
        if name == "destinations":
            if not isinstance(sect, list) or not sect or not isinstance(sect[0], dict):
                continue
            if kind == "destination":
                sect.append(dict(draw(st.sampled_from(sect)) if draw(st.booleans()) else {}))
            sect = sect[draw(st.integers(0, len(sect) - 1))]
        if not isinstance(sect, dict):
            continue
        keys = sorted(sect) or ["x"]
        key = draw(st.sampled_from(keys))
        if kind == "drop":
            sect.pop(key, None)
        elif kind == "unknown":
            sect[draw(st.text(min_size=1, max_size=12))] = draw(_VALUES)
        else:
            sect[key] = draw(_VALUES)
    text = toml_document(doc).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:  # and now as bytes
        data = bytearray(text)
        for _ in range(draw(st.integers(1, 3))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            op = draw(st.sampled_from(["flip", "cut", "insert", "nest"]))
            if op == "flip":
                data[at] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del data[at:]
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            else:  # deeply nested arrays: tomllib recurses
                depth = draw(st.sampled_from([10, 1000, 5000]))
                data += b"\n[deep]\nv = " + b"[" * depth + b"]" * depth + b"\n"
        text = bytes(data)
    return text


def _type_ok(value: object, hint: object) -> bool:
    """Whether ``value`` is of the (resolved) type hint of a configuration field."""
    if hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_type_ok(v, inner) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return isinstance(value, hint)
    return isinstance(value, hint)  # type: ignore[arg-type]


def ill_typed(obj: object, where: str = "config") -> list[str]:
    """Every field of the loaded configuration whose value is not of its declared type."""
    out = []
    assert is_dataclass(obj)
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            out += ill_typed(value, f"{where}.{f.name}")
        elif f.name == "destinations":
            for k, d in enumerate(value):
                out += ill_typed(d, f"{where}.destinations[{k}]")
        elif not _type_ok(value, hints[f.name]):
            out.append(f"{where}.{f.name} = {value!r} (declared {hints[f.name]})")
    return out


@pytest.fixture(scope="module")
def config_env(tmp_path_factory: pytest.TempPathFactory):
    import tomllib

    return {"root": tmp_path_factory.mktemp("configfuzz"), "count": 0, "outcomes": {},
            "base": tomllib.loads(_BASE_TOML.read_text())}


_PRECISE = re.compile(r"\b(" + "|".join(_SECTIONS) + r"|destination)\b")


@settings(max_examples=CONFIG_EXAMPLES, **_SETTINGS)
@given(data=st.data())
def test_fuzzed_configuration_gives_a_typed_config_or_a_precise_error(config_env, data):
    """``load_config`` on a fuzzed ``l3node.toml``: a Config whose every value has its
    declared type (so nothing fails later, at start or at the first study), or a
    ConfigError whose message names the file or the section/key at fault — never
    another exception, which ``l3node serve`` would print as a traceback."""
    env = config_env
    env["count"] += 1
    path = env["root"] / "l3node.toml"
    path.write_bytes(data.draw(fuzzed_toml(env["base"])))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        msg = str(exc)
        assert str(path) in msg or _PRECISE.search(msg), f"imprecise: {msg!r}"
        outcome = "refused"
    else:
        assert isinstance(cfg, Config)
        wrong = ill_typed(cfg)
        assert not wrong, wrong
        outcome = "accepted"
    env["outcomes"][outcome] = env["outcomes"].get(outcome, 0) + 1


def test_after_the_config_fuzzer_figures(config_env):
    assert config_env["count"] >= CONFIG_EXAMPLES, "the config fuzzer did not run first"
    figure("config-fuzz", examples=sum(config_env["outcomes"].values()),
           **config_env["outcomes"])


def test_configuration_files_that_cannot_be_read_give_a_precise_error(tmp_path):
    """Not fuzzed, but the same promise: a folder, an unreadable file and invalid UTF-8 in
    place of the configuration each give a ConfigError naming the path."""
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[node]\nae_title = "N\xc9UD"\n'.encode("latin-1"))
    for path in (folder, latin):
        with pytest.raises(ConfigError, match=re.escape(str(path))):
            load_config(path)

