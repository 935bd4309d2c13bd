"""Structured logs: one line per event, ``event`` name plus ``key=value`` fields (or JSON).

Code logs an event with :func:`event`; the :class:`EventFormatter` installed by
:func:`configure` writes it as one line, for example::

    2026-11-25T10:00:00.123Z INFO study.processed study=1.2.3 version=1 status=found seconds=3.1

Studies, series and instances are identified by UID only; with ``hash_uids`` those fields
are replaced by ``h:`` + the first 16 hex digits of their SHA-256, so logs shipped off the
machine cannot be joined with the PACS without the node (``l3node status`` shows the
plain UIDs; ``printf %s UID | sha256sum`` gives the hash).  Patient names, IDs and birth
dates are never logged: no event carries them.  Lines from libraries (pynetdicom,
APScheduler) keep their text in a ``msg`` field, with newlines escaped, so one event is
always one line.

A line that cannot be written (stderr redirected to a file on a full disk: ENOSPC) is
dropped and counted, never retried and never allowed to stop the node; the first line that
can be written again is preceded by ``log.lost lines=N``.  A line the disk cut short is
ended there, so the next event still starts a line of its own (:class:`LineHandler`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, TextIO

from pynetdicom import _config as pynetdicom_config

UID_FIELDS = frozenset({"study", "series", "sop"})
_EVENT = "l3_event"
_FIELDS = "l3_fields"


def event(logger: logging.Logger, name: str, level: int = logging.INFO,
          exc_info: bool = False, **fields: Any) -> None:
    """Log one event: ``name`` (dotted, e.g. ``instance.stored``) and its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, exc_info=exc_info,
                   extra={_EVENT: name, _FIELDS: fields})


def hash_uid(uid: str) -> str:
    return "h:" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class EventFormatter(logging.Formatter):
    """``text`` (logfmt-like) or ``json`` lines; UIDs hashed when asked."""

    def __init__(self, style: str = "text", hash_uids: bool = False) -> None:
        super().__init__()
        if style not in ("text", "json"):
            raise ValueError(f'log format must be "text" or "json", got {style!r}')
        self.style = style
        self.hash_uids = hash_uids

    def fields(self, record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
        name = getattr(record, _EVENT, None)
        if name is None:  # a library's message
            return "log", {"logger": record.name, "msg": record.getMessage()}
        out = dict(getattr(record, _FIELDS, {}))
        if self.hash_uids:
            out = {k: hash_uid(v) if k in UID_FIELDS and isinstance(v, str) and v else v
                   for k, v in out.items()}
        return name, out

    def format(self, record: logging.LogRecord) -> str:
        name, fields = self.fields(record)
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
            f".{int(record.msecs):03d}Z")
        if self.style == "json":
            return json.dumps({"ts": ts, "level": record.levelname, "event": name, **fields},
                              default=str)
        parts = [ts, record.levelname, name]
        parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
        return " ".join(parts)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    s = str(v)
    if not s or any(c in s for c in ' "=\n\r\t'):
        return json.dumps(s)  # quoted, newlines escaped: one event stays one line
    return s


class LineHandler(logging.StreamHandler):
    """A stream handler that keeps one event per line when writes fail.

    Why: with the stream on a full disk, logging's own handler loses the tail of the line
    the disk cut short, glues the next event to its head once there is room again (a log
    shipper then misreads both), and reports each failure with a traceback written to the
    same full stream (more lines that fail, or a multi-line block later).  Here each line
    goes out in whole ``os.write`` calls on the stream's file descriptor (when it has one),
    so a cut is known and is ended with a newline before the next line; a line that fails
    is counted (``lost``), and the first one written afterwards is preceded by a
    ``log.lost`` event saying how many are missing."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.lost = 0  # lines dropped since the last one written
        self._cut = False  # the last write ended inside a line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)  # a formatting bug, not the stream: report it
            return
        if self.lost:
            text = self.format(_lost_record(self.lost)) + self.terminator + text
        if self._cut:
            text = self.terminator + text
        try:
            self._write(text)
        except OSError:  # ENOSPC, EDQUOT, EIO, EPIPE: the line is gone, the node goes on
            self.lost += 1
            return
        self.lost = 0

    def _write(self, text: str) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no fd
            fd = None
        if fd is None:  # e.g. a test's capture: whole writes through the stream
            self.stream.write(text)
            self.flush()
            return
        self.stream.flush()  # whatever else was written to it goes first
        data = text.encode(getattr(self.stream, "encoding", None) or "utf-8",
                           "backslashreplace")
        view, written = memoryview(data), 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
        finally:
            if written:
                self._cut = data[written - 1:written] != b"\n"


def _lost_record(n: int) -> logging.LogRecord:
    record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, "log.lost", None, None)
    setattr(record, _EVENT, "log.lost")
    setattr(record, _FIELDS, {"lines": n, "reason": "the log could not be written"})
    return record


def configure(level: str = "INFO", style: str = "text", hash_uids: bool = False) -> None:
    """Install the formatter on the root logger (stderr: journald under systemd)."""
    handler = LineHandler(sys.stderr)
    handler.setFormatter(EventFormatter(style, hash_uids))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # A library's warnings become events on the same handler (one line each, JSON when
    # asked), not raw text between the events on stderr
    logging.captureWarnings(True)
    # highdicom warns when a person name has one component, quoting it: that is the
    # sender's PatientName, copied unchanged into the results, and quoting it is PHI
    warnings.filterwarnings("ignore", message=r"The string .* unlikely to represent the "
                            r"intended person name", category=UserWarning)
    # pynetdicom logs whole datasets (with patient data) at DEBUG: never below WARNING
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # ...so its "standard" event handlers, bound to every association, would only format
    # INFO and DEBUG lines (each PDU, each DIMSE message) for nothing: pynetdicom's own
    # switch unbinds them (its warnings and errors still come)
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    # APScheduler warns on every tick skipped while a study is processing (by design: one
    # tick at a time); its errors (a job that raised) still show
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
