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
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import warnings
from typing import Any

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


def configure(level: str = "INFO", style: str = "text", hash_uids: bool = False) -> None:
    """Install the formatter on the root logger (stderr: journald under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
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
    # APScheduler warns on every tick skipped while a study is processing (by design: one
    # tick at a time); its errors (a job that raised) still show
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
