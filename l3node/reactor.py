"""pynetdicom's acceptor, woken by its socket instead of polling it (pynetdicom 3.0.x).

pynetdicom runs each association on two threads.  Its DUL thread (the DICOM upper layer:
reads PDUs, runs the state machine, sends PDUs) sleeps ``_run_loop_delay`` = 1 ms whenever a
pass over its queues and its socket found nothing to do (``dul.py``, ``run_reactor``).  For a
C-STORE SCP that sleep falls after every response: the sender answers within a fraction of a
millisecond, but its next request is read only when the sleep ends, and a response queued by
the association thread waits for the same sleep.  Measured on the bare SCP of
``benchmarks/bare_scp.py`` (1 mm study, one run of ``make bench``, 2026-12-03): +14 % with one
sender, no gain with four (``benchmarks/RESULTS.md``).

:class:`WakingDUL` keeps pynetdicom's loop as it is and changes only how it waits: instead of
sleeping it waits in ``select()`` on the association's socket and on a wake-up socket pair,
for at most the same 1 ms.  ``send_pdu`` (a primitive for the peer), ``kill_dul`` and
``stop_dul`` write the wake-up byte.  So data from the peer or a queued primitive is handled
at once, and every timer and flag is still looked at at least every 1 ms, as before.  The
association's own thread (``association.py`` ``_run_reactor``) also sleeps 1 ms per pass; a
request complete during that sleep waited for the rest of it.  Its DIMSE provider
(:class:`l3node.dimse_guard.GuardedDIMSE`) now lets it wait on the message queue instead.
Idle cost, measured (2026-12-04, 4 associations open and silent for 10 s): stock pynetdicom
14.8 % of a core, the node 16.2 % (22.1 % before the association thread waited on its queue).

Guards against hostile peers (issue #19), found by the raw-PDU fuzzer and the association
storms of tests/peers/test_reliability_fuzz.py, each said where it is: a PDU longer than the
node reads is refused before its body is buffered (:meth:`WakingDUL._read_pdu_data`); an
A-ASSOCIATE-RQ without a usable maximum length is refused; a P-DATA that decodes as no
valid DIMSE request aborts instead of killing the DUL thread or being ignored
(:class:`GuardedDIMSE`); an association whose connection is over stops waiting for its
request at once (:meth:`WakingDUL.receive_pdu`); an event the state machine has no action
for is ignored (:class:`TrackedStateMachine`); garbage after the node's A-ABORT closes the
connection.  Each outcome is one the standard has for it: A-ABORT, or a closed connection.

How it is applied: only to the node's acceptor associations, through the documented
``request_handler`` argument of pynetdicom's ``AssociationServer`` (:class:`WakingAE`
passes it from ``make_server``, which ``start_server`` calls); nothing global is patched.
The hooks used (``DULServiceProvider._is_transport_event``, ``_read_pdu_data``,
``_decode_pdu``, ``receive_pdu``, ``_run_loop_delay``, ``StateMachine.do_action`` and
``transition``, ``DIMSEServiceProvider.receive_primitive`` and ``get_msg``,
``RequestHandler._create_association``) are pynetdicom 3.0.4's (pinned in pyproject.toml);
if one is missing, :data:`AVAILABLE` is False and the node runs pynetdicom's stock loop.
tests/peers/test_receive.py checks both that the node's associations use it and that
release, abort and the network timeout still work.

To offer upstream (not sent yet: this machine has no route to GitHub): "DUL reactor: wait on
the socket instead of sleeping — replace the ``time.sleep(_run_loop_delay)`` in
``DULServiceProvider.run_reactor`` by a ``select()`` on the transport socket plus a self-pipe
written by ``send_pdu``/``kill_dul``, with the same 1 ms as its timeout; measured +14 % on a
bare C-STORE SCP with one sender, none with four" (pynetdicom's own TODO at
``_run_loop_delay``: "try and make this event based").
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.transport import RequestHandler

from .dimse_guard import GuardedDIMSE
from .logs import event

log = logging.getLogger(__name__)
AVAILABLE = (hasattr(DULServiceProvider, "_is_transport_event")
             and hasattr(DULServiceProvider, "_read_pdu_data")
             and hasattr(DULServiceProvider, "_decode_pdu")
             and hasattr(DIMSEServiceProvider, "receive_primitive")
             and hasattr(DIMSEServiceProvider, "get_msg")
             and hasattr(StateMachine, "transition")
             and hasattr(DULServiceProvider, "receive_pdu")
             and hasattr(RequestHandler, "_create_association"))
# The longest PDU other than P-DATA-TF the node reads (an A-ASSOCIATE-RQ: 128 presentation
# contexts of a 64-character abstract syntax and a dozen transfer syntaxes each is ~110 KB).
MAX_CONTROL_PDU = 1 << 20
_PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
# The smallest Maximum Length Received (other than 0, no limit) a peer may announce:
# pynetdicom cannot fragment a message for 1-6 (``_generate_pdv_fragments`` refuses them).
MIN_PEER_PDU = 7


def _max_length(pdu: Any) -> int | None:
    """The Maximum Length Received of an A-ASSOCIATE-RQ PDU, if it has one."""
    info = getattr(pdu, "user_information", None)
    return getattr(info, "maximum_length", None) if info is not None else None


class TrackedStateMachine(StateMachine):
    """pynetdicom's upper-layer state machine, remembering whether it ever left Sta1 (idle):
    back in Sta1 after that, the connection is over; and ignoring an event its table has
    no action for, where pynetdicom raised.

    Why the latter: an abort requested by the association's thread (Evt15) while the
    state machine had already aborted on an invalid PDU (Sta13) raised InvalidEventError
    in the DUL thread, which died with a traceback (tests/peers/test_reliability_fuzz.py).
    Nothing is left to do for such an event: the abort is under way or the connection
    is over."""

    def __init__(self, dul: DULServiceProvider) -> None:
        super().__init__(dul)
        self.was_active = False

    def do_action(self, event_name: str) -> None:
        if (event_name, self.current_state) not in TRANSITION_TABLE:
            event(log, "association.ignored_event", logging.WARNING, fsm_event=event_name,
                  state=self.current_state)
            return
        super().do_action(event_name)

    def transition(self, state: str) -> None:
        super().transition(state)
        if state != "Sta1":
            self.was_active = True


class WakingDUL(DULServiceProvider):
    """pynetdicom's DUL provider, waiting in ``select()`` where the stock one sleeps."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._max_wait = self._run_loop_delay  # 1 ms: the longest any check waits, as before
        self._run_loop_delay = 0  # run_reactor's sleep; the wait is in _is_transport_event
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.state_machine = TrackedStateMachine(self)
        self._invalid_pdus = 0

    def wake(self) -> None:
        """Cut the current wait short (from any thread; harmless after the reactor ended)."""
        # OSError: the pair is full (a wake is pending anyway) or already closed
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """As pynetdicom's, but joins the thread instead of polling it with sleep(0)."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
            if threading.current_thread() is not self:
                self.join()
            return True
        return False

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _is_transport_event(self) -> bool:
        self._wait_for_work()
        return super()._is_transport_event()

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """As pynetdicom's, but a blocking wait ends as soon as the connection is over.

        Why: an acceptor's association thread waits ``acse_timeout`` (30 s) for the
        A-ASSOCIATE-RQ, even when the peer already closed, or sent garbage and was aborted.
        That thread counts against ``node.max_associations`` meanwhile: eight peers that
        each sent a few bad bytes and left made the node refuse every sender for 30 s
        (tests/peers/test_reliability_fuzz.py).  Here the wait is cut into short ones, and
        ends when the state machine is idle again (Sta1) after the connection was up:
        nothing more can arrive."""
        if not wait:
            return super().receive_pdu(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            primitive = super().receive_pdu(wait=True, timeout=left)
            if primitive is not None:
                return primitive
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if self._connection_over():
                return super().receive_pdu(wait=False)

    def _connection_over(self) -> bool:
        """Idle (Sta1) again after the connection was up: closed, aborted or timed out."""
        return self.state_machine.was_active and self.state_machine.current_state == "Sta1"

    def _pdu_limit(self, pdu_type: int) -> int:
        """The longest PDU of this type the node reads: for P-DATA-TF the maximum length it
        announced (PS3.8 §9.3.1: the peer must not exceed it), else :data:`MAX_CONTROL_PDU`."""
        announced = self.assoc.acceptor.maximum_length if self.assoc.is_acceptor else 0
        return announced if pdu_type == 0x04 and announced else MAX_CONTROL_PDU

    def _invalid(self, reason: str) -> None:
        """An invalid PDU: Evt19 for the state machine (it sends A-ABORT), logged once per
        association.  Once the node has aborted (Sta13, waiting for the peer to close), more
        garbage closes the connection instead.

        Why: in Sta13 pynetdicom reads on, 6 bytes at a time, and answers every unknown
        "PDU" with another A-ABORT until its ARTIM timer (30 s) expires: a peer streaming
        bytes after its first invalid PDU kept the node busy, and the log full, that long."""
        self._invalid_pdus += 1
        if self._invalid_pdus == 1:
            event(log, "association.invalid_pdu", logging.WARNING, reason=reason)
        if self.state_machine.current_state == "Sta13" and self.socket is not None:
            self.socket.close()  # Evt17: transport closed, the state machine goes idle
        else:
            self.event_queue.put("Evt19")

    def _read_pdu_data(self) -> None:
        """pynetdicom 3.0.4's ``_read_pdu_data`` (same events), with two checks added — a
        PDU longer than :meth:`_pdu_limit` is invalid before any of its body is read, and
        so is an A-ASSOCIATE-RQ without a maximum length or below :data:`MIN_PEER_PDU` —
        and one line per association (:meth:`_invalid`) where pynetdicom logged a traceback
        per invalid PDU.

        Why the limit: pynetdicom reads as many bytes as the 4-byte length field says, into memory,
        before it decodes anything: one peer that declared a 4 GiB PDU and streamed bytes
        grew the node by 400 MiB in 0.7 s (tests/peers/test_reliability_fuzz.py), before
        any AE title was checked; eight such peers exhaust any machine."""
        sock = self.socket
        assert sock is not None
        try:
            head = sock.recv(6)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")  # transport closed
            return
        try:
            pdu_type, _, pdu_length = struct.unpack(">BBL", head)
        except struct.error:
            self.event_queue.put("Evt17")  # closed within the header
            return
        if pdu_type not in _PDU_TYPES:
            self._invalid(f"unknown PDU type 0x{pdu_type:02X}")
            return
        if pdu_length > (limit := self._pdu_limit(pdu_type)):
            self._invalid(f"PDU type 0x{pdu_type:02X} declares {pdu_length} bytes; at most "
                          f"{limit} are read")
            return
        try:
            body = sock.recv(pdu_length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != pdu_length:  # the peer closed within the PDU
            self.event_queue.put("Evt17")
            return
        try:
            pdu, evt_name = self._decode_pdu(bytearray(head) + body)
        except Exception as exc:  # what pynetdicom does: an invalid PDU, A-ABORT
            self._invalid(f"PDU type 0x{pdu_type:02X} undecodable: {type(exc).__name__}: "
                          f"{exc}"[:300])
            return
        if pdu_type == 0x01 and ((peer_max := _max_length(pdu)) is None
                                 or 0 < peer_max < MIN_PEER_PDU):
            # pynetdicom accepts both, then cannot send a response (a TypeError or a
            # ValueError in the association's thread, after it stored the instance): refuse
            # the request now, as the invalid PDU it is (PS3.8 Annex D.1: the Maximum Length
            # sub-item is mandatory)
            self._invalid("A-ASSOCIATE-RQ: no Maximum Length sub-item" if peer_max is None
                          else f"A-ASSOCIATE-RQ: maximum length {peer_max} (at least "
                               f"{MIN_PEER_PDU}, or 0 for no limit)")
            return
        self.event_queue.put(evt_name)
        self._recv_pdu.put(pdu)

    def _wait_for_work(self) -> None:
        """Return when the socket is readable, a primitive is queued, or after 1 ms."""
        if not (self.event_queue.empty() and self.to_provider_queue.empty()):
            return
        sock = self.socket.socket if self.socket is not None else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select() cannot see them
        try:
            ready, _, _ = select.select([self._wake_r] + ([sock] if sock else []), [], [],
                                        self._max_wait)
        except (OSError, ValueError):  # the socket was closed meanwhile: wait as before
            time.sleep(self._max_wait)
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):  # BlockingIOError: drained
                while self._wake_r.recv(4096):
                    pass


def wake_on_io(assoc: Association) -> None:
    """Give a not yet started association a :class:`WakingDUL` in place of its stock one.

    The stock provider has no thread yet; the socket and the two timeouts it holds are set
    again through the association's public setters, and the events it already queued (the
    socket's "transport connection indication", Evt5) move to the new one in order."""
    old = assoc.dul
    sock = old.socket
    assoc.dul = WakingDUL(assoc)
    while not old.event_queue.empty():
        assoc.dul.event_queue.put(old.event_queue.get_nowait())
    if sock is not None:
        assoc.set_socket(sock)
    assoc.acse_timeout = assoc.acse_timeout  # the ARTIM timer, on the DUL
    assoc.network_timeout = assoc.network_timeout  # the idle timer, on the DUL
    assoc.dimse = GuardedDIMSE(assoc)  # nothing received yet: its state is empty


class WakingRequestHandler(RequestHandler):
    """pynetdicom's request handler; each association it creates gets a WakingDUL and a
    GuardedDIMSE."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        wake_on_io(assoc)
        return assoc


class WakingAE(AE):
    """An AE whose servers use :class:`WakingRequestHandler` (stock if not AVAILABLE)."""

    def make_server(self, address: Any, ae_title: str | None = None, contexts: Any = None,
                    ssl_context: Any = None, evt_handlers: Any = None,
                    server_class: Any = None, **kwargs: Any) -> Any:
        if AVAILABLE:
            kwargs.setdefault("request_handler", WakingRequestHandler)
        return super().make_server(address, ae_title, contexts, ssl_context, evt_handlers,
                                   server_class, **kwargs)
