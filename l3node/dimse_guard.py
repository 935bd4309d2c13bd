"""The node's DIMSE provider for its acceptor associations (pynetdicom 3.0.x): a request
that does not decode aborts, and the association's thread takes each request the moment
it is complete.  Installed by :func:`l3node.reactor.wake_on_io` beside the waking DUL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider

from .logs import event

log = logging.getLogger(__name__)
# How long the association's loop waits for a request before it checks release, abort and
# its timers again (GuardedDIMSE._wait_for_message): short next to any timeout a peer sets.
MESSAGE_WAIT_S = 0.01


@dataclass(frozen=True)
class _Invalid:
    """Put in the message queue in place of a message that could not be decoded."""

    reason: str


class GuardedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider; a P-DATA whose fragments do not decode as a DIMSE
    message, or decode as no valid request, aborts the association (A-ABORT) instead of
    killing its DUL thread or being ignored.

    Why: pynetdicom decodes the command set in the DUL thread (``DT-2``) and guards only the
    last step (``message_to_primitive``).  A command set without Command Field, or a
    command fragment that is no data set, raised there: the DUL thread died with a
    traceback on stderr and the peer saw its connection dropped, with no A-ABORT.  And a
    message that decodes but is no valid request (a C-STORE-RQ without its SOP Instance
    or Class UID or its Message ID, a response sent to the SCP) pynetdicom dropped with a
    warning, answering nothing: the sender waited for a response until its own timeout
    (both found by tests/peers/test_reliability_fuzz.py).

    The abort is sent from the association's thread when it reaches the bad message in
    the queue, so the messages before it are answered first: an instance stored just
    before is acknowledged, not left in the spool unacknowledged by an abort that
    overtook its response."""

    def receive_primitive(self, primitive: Any) -> None:
        try:
            super().receive_primitive(primitive)
        except Exception as exc:
            self.message = None
            invalid = _Invalid(f"{type(exc).__name__}: {exc}")
            self.msg_queue.put((None, invalid))  # type: ignore[arg-type]

    def get_msg(self, block: bool = False) -> tuple[Any, Any]:
        """The next message, as pynetdicom's, unless it is invalid (see the class): then the
        association is aborted and nothing is returned.  A non-blocking call (the
        association's reactor loop, its only caller) first waits up to
        :data:`MESSAGE_WAIT_S` for a message, see :meth:`_wait_for_message`."""
        if not block:
            self._wait_for_message()
        context_id, msg = super().get_msg(block)
        if isinstance(msg, _Invalid):
            reason = msg.reason
        elif msg is not None and self.assoc.is_acceptor and not msg.is_valid_request:
            reason = f"{msg.msg_type} message that is not a valid request"
        else:
            return context_id, msg
        event(log, "association.invalid_message", logging.WARNING, reason=reason[:300])
        self.assoc.abort()  # A-ABORT queued behind the responses already sent
        return None, None

    def _wait_for_message(self) -> None:
        """Return when a message is queued, or after :data:`MESSAGE_WAIT_S`.

        Why: the association's thread (``association.py`` ``_run_reactor``) sleeps 1 ms,
        then looks for a message, then checks release, abort and its timers, and loops.  A
        request that is complete while it sleeps waits for the rest of that sleep: ~0.5 ms
        on average per C-STORE, ~10 % of a bare SCP's time per instance (1 mm phantom,
        one sender).  Waiting here on the queue's own condition, the thread takes a
        message the moment the DUL thread queues it.  The loop's other checks (a release
        or abort by the peer, the network timeout, a kill) now run every 1 ms +
        ``MESSAGE_WAIT_S`` instead of every 1 ms while no request comes: a release is
        answered at most that much later."""
        q = self.msg_queue
        with q.not_empty:  # the queue's lock; q.queue is its deque (read under that lock)
            if not q.queue:
                q.not_empty.wait(MESSAGE_WAIT_S)
