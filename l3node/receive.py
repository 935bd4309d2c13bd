"""The DICOM listener: Verification and Storage SCP (pynetdicom).

The C-STORE handler only checks, writes and acknowledges: the encoded dataset goes to the
spool as received (no decoding of pixel data), and success is returned only once it is on
disk and in the state database.  Heavy work belongs to the scheduler.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable

from pydicom.filereader import read_dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    Verification,
)

from .config import NodeConfig, OtherStorage, TLSConfig
from .logs import event
from .metrics import Metrics
from .reactor import WakingAE
from .spool import Spool, StoreOutcome
from .statuses import Status

log = logging.getLogger(__name__)
CT_CLASSES = (CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)
# Transfer syntaxes accepted for CT: those pydicom decodes with pylibjpeg (openjpeg, libjpeg,
# rle) and pyjpegls.  Video, JPIP and JPEG XL are not offered for CT.
CT_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


StoreStatus = Status  # the name the listener's callers know


class Deliveries:
    """Which studies each open association is delivering, and whether all went well.

    Why: a sender that releases its association normally has sent what it meant to, so the
    study need not wait out the whole quiet period — unless another association is still
    delivering instances of it, or one of its instances was refused (the sender will try
    again).  An aborted association tells nothing: its studies keep the quiet period.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[object, dict[str, bool]] = {}  # association → {study: all stored}

    def delivered(self, assoc: object, study_uid: str, stored: bool) -> None:
        with self._lock:
            studies = self._open.setdefault(assoc, {})
            studies[study_uid] = studies.get(study_uid, True) and stored

    def open_count(self) -> int:
        """Associations that delivered a study and have not ended yet."""
        with self._lock:
            return len(self._open)

    def ended(self, assoc: object, released: bool) -> list[str]:
        """The studies this association completed: released, every instance stored, and
        no other open association delivering them."""
        with self._lock:
            mine = self._open.pop(assoc, {})
            if not released:
                return []
            busy = {uid for studies in self._open.values() for uid in studies}
            return [uid for uid, ok in mine.items() if ok and uid not in busy]


class Receiver:
    """Owns the pynetdicom server; :meth:`start` returns at once, :meth:`stop` drains."""

    def __init__(self, cfg: NodeConfig, spool: Spool,
                 disk_high_water_pct: float = 100.0, metrics: Metrics | None = None,
                 tls: TLSConfig | None = None) -> None:
        self.cfg = cfg
        self.ssl_context: ssl.SSLContext | None = None
        if tls is not None and tls.enabled:  # built now: a bad key fails before listening
            from .tls import server_context

            self.ssl_context = server_context(tls)
        self.metrics = metrics
        self.high_water = disk_high_water_pct
        self.spool = spool
        self.deliveries = Deliveries()
        # called with the studies a released association completed (the scheduler's wake-up)
        self.on_released: Callable[[list[str]], None] | None = None
        self._server = None
        ae = WakingAE(ae_title=cfg.ae_title)  # its DUL waits on the socket, not a sleep
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu
        ae.require_called_aet = cfg.require_called_ae_title
        if cfg.allowed_calling_ae_titles:
            ae.require_calling_aet = list(cfg.allowed_calling_ae_titles)
        ae.add_supported_context(Verification)
        classes = [cx.abstract_syntax for cx in AllStoragePresentationContexts] if (
            cfg.other_storage is OtherStorage.IGNORE) else list(CT_CLASSES)
        for uid in CT_CLASSES:
            ae.add_supported_context(uid, list(CT_TRANSFER_SYNTAXES))
        for uid in dict.fromkeys(classes):
            if uid not in CT_CLASSES:
                ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        self.ae = ae

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.cfg.port

    def start(self) -> None:
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_ABORTED, self._on_ended), (evt.EVT_CONN_CLOSE, self._on_ended)]
        self._server = self.ae.start_server((self.cfg.host, self.cfg.port), block=False,
                                            evt_handlers=handlers,
                                            ssl_context=self.ssl_context)
        if self.ssl_context is not None:  # handshake in the association's thread, see below
            self._server.get_request = self._accept_tls  # type: ignore[method-assign]
        # socketserver's own hook: refuse a connection from a host not on the allow-list
        self._server.verify_request = self._verify_peer  # type: ignore[method-assign]
        event(log, "listener.started", ae_title=self.cfg.ae_title, host=self.cfg.host,
              port=self.port, tls=self.ssl_context is not None)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _accept_tls(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept and wrap without the handshake.  pynetdicom handshakes in its accept loop,
        so one peer that connects and stays silent would hold up every other sender; here
        the handshake happens on the first read, in the association's own thread."""
        assert self._server is not None and self.ssl_context is not None
        sock, address = self._server.socket.accept()
        return self.ssl_context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False), address

    def _verify_peer(self, request: object, client_address: tuple[str, int]) -> bool:
        allowed = self.cfg.allowed_hosts
        if allowed and client_address[0] not in allowed:
            event(log, "connection.refused", logging.WARNING, peer=client_address[0],
                  reason="not in node.allowed_hosts")
            return False
        return True

    def disk_full(self) -> bool:
        """Above the high-water mark the node refuses instances instead of filling the disk."""
        usage = shutil.disk_usage(self.spool.root)
        return 100.0 * usage.used / usage.total >= self.high_water

    # -- association ends ------------------------------------------------------------------
    def _on_released(self, ev: evt.Event) -> None:
        """A normal release: the studies it completed start their settle period."""
        done = self.deliveries.ended(ev.assoc, released=True)
        if not done:
            return
        try:
            self.spool.released(done, time.time())
        except (OSError, sqlite3.Error) as exc:  # the quiet period still completes them
            event(log, "association.release_unrecorded", logging.WARNING, studies=len(done),
                  reason=str(exc))
            return
        event(log, "association.released", logging.DEBUG, studies=len(done))
        if self.on_released is not None:
            self.on_released(done)

    def _on_ended(self, ev: evt.Event) -> None:
        """Aborted, or the connection closed: forget the association, complete nothing."""
        self.deliveries.ended(ev.assoc, released=False)

    # -- C-STORE ---------------------------------------------------------------------------
    def _on_store(self, ev: evt.Event) -> int:
        """Check, write, acknowledge; count the outcome; a :class:`~l3node.statuses.Status`."""
        status, outcome, study = self._store(ev)
        if outcome != "ignored" and study:
            self.deliveries.delivered(ev.assoc, study, outcome != "refused")
        if self.metrics is not None:
            self.metrics.instances.labels(outcome).inc()
            if outcome == "refused":
                self.metrics.failures.labels("receive").inc()
        return status

    def _store(self, ev: evt.Event) -> tuple[int, str, str]:
        """(status, outcome, the data set's Study Instance UID or "")."""
        sop_class = str(ev.request.AffectedSOPClassUID)
        sop_uid = str(ev.request.AffectedSOPInstanceUID)
        calling = ev.assoc.requestor.ae_title
        if sop_class not in CT_CLASSES:
            event(log, "instance.ignored", sop=sop_uid, sop_class=sop_class, reason="not CT")
            return Status.SUCCESS, "ignored", ""
        try:
            study, series, ds_sop = _header_uids(ev)
        except Exception as exc:
            return (*_refused(Status.CANNOT_UNDERSTAND, logging.WARNING, sop_uid,
                              f"cannot parse: {exc}"), "")
        if self.disk_full():
            return (*_refused(Status.OUT_OF_RESOURCES, logging.ERROR, sop_uid,
                              f"spool disk above {self.high_water:g} %"), study)
        if not study or not series:
            return (*_refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, logging.WARNING, sop_uid,
                              "no Study or Series Instance UID"), study)
        if ds_sop and ds_sop != sop_uid:
            return (*_refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, logging.WARNING, sop_uid,
                              f"dataset says SOP Instance UID {ds_sop}"), study)
        try:
            # the file is the preamble, the file meta and the data set exactly as received
            # (pynetdicom's encoded_dataset, without joining them into one new buffer)
            meta = b"\x00" * 128 + b"DICM" + encode_file_meta(ev.file_meta)
            stored = self.spool.store(
                (meta, ev.request.DataSet.getvalue()), sop_class_uid=sop_class,
                sop_instance_uid=sop_uid, study_instance_uid=study, series_instance_uid=series,
                calling_ae_title=calling)
        except (OSError, sqlite3.Error) as exc:
            return (*_refused(Status.OUT_OF_RESOURCES, logging.ERROR, sop_uid,
                              f"could not spool: {exc}"), study)
        if stored.outcome is StoreOutcome.DUPLICATE:
            event(log, "instance.duplicate", sop=sop_uid, study=study)
            return Status.SUCCESS, "duplicate", study
        event(log, "instance.stored", logging.DEBUG, sop=sop_uid, series=series, study=study,
              calling=calling)
        return Status.SUCCESS, "stored", study


def _past_series_uid(tag: int, vr: str | None, length: int) -> bool:
    return tag > 0x0020000E  # (0020,000E) Series Instance UID: the last element needed


def _header_uids(ev: evt.Event) -> tuple[str, str, str]:
    """The Study, Series and SOP Instance UIDs of a C-STORE's data set, "" where absent.

    Why not ``ev.dataset``: it parses every element of the data set and copies its pixel
    data (half a megabyte per CT slice) into a new buffer, for three UIDs that all come
    before (0020,000E).  pydicom's ``read_dataset`` stops at the first later element; a
    deflated data set is inflated whole by pynetdicom as before.  An element pydicom cannot
    read before that point raises, as ``ev.dataset`` did (the caller refuses the instance).
    """
    ts = ev.context.transfer_syntax
    if ts.is_deflated:
        ds = ev.dataset
    else:
        stream = ev.request.DataSet
        stream.seek(0)
        ds = read_dataset(stream, ts.is_implicit_VR, ts.is_little_endian,
                          stop_when=_past_series_uid)
    return tuple(str(ds.get(k, "") or "") for k in  # type: ignore[return-value]
                 ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))


def _refused(status: Status, level: int, sop_uid: str, reason: str) -> tuple[Status, str]:
    """Log a refused instance (UIDs only, no PHI) and answer it with ``status``."""
    event(log, "instance.refused", level, sop=sop_uid, status=str(status), reason=reason)
    return status, "refused"
