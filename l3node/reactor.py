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
at once, and every timer and flag is still looked at at least every 1 ms, as before; idle CPU
is the same.  (The association thread's own 1 ms sleep, ``association.py`` ``_run_reactor``,
is hard-coded; it falls while the next instance is still arriving and cost ~0.05 ms per
instance in the same trace, so it is left alone.)

How it is applied: only to the node's acceptor associations, through the documented
``request_handler`` argument of pynetdicom's ``AssociationServer`` (:class:`WakingAE`
passes it from ``make_server``, which ``start_server`` calls); nothing global is patched.
The hooks used (``DULServiceProvider._is_transport_event``, ``_run_loop_delay``,
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
import select
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler

AVAILABLE = (hasattr(DULServiceProvider, "_is_transport_event")
             and hasattr(RequestHandler, "_create_association"))


class WakingDUL(DULServiceProvider):
    """pynetdicom's DUL provider, waiting in ``select()`` where the stock one sleeps."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._max_wait = self._run_loop_delay  # 1 ms: the longest any check waits, as before
        self._run_loop_delay = 0  # run_reactor's sleep; the wait is in _is_transport_event
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

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


class WakingRequestHandler(RequestHandler):
    """pynetdicom's request handler; each association it creates gets a WakingDUL."""

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
