"""The PACS a cohort comes from: find studies and their CT series, retrieve them.

Two transports behind one interface (:class:`Pacs`), chosen by the configured destination
the cohort names: a ``dimse`` destination is queried with C-FIND (Study Root) and retrieved
with C-GET on the same association or C-MOVE to the node's own AE title; a ``stowrs``
destination's DICOMweb root is queried with QIDO-RS and retrieved with WADO-RS.  Only a
study's CT series are retrieved — a PACS study also holds reports, scouts of other
modalities and earlier results, which the localizer would only skip.  Every retrieved
instance goes to a :data:`Sink` that makes it durable (the cohort's spool) before the
transfer counts it.  No query asks for, and no message names, a patient attribute.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..config import DestinationConfig, DestinationKind, TLSConfig
from ..dispatch import associate, web_client
from ..logs import event
from ..receive import CT_CLASSES, CT_TRANSFER_SYNTAXES
from ..statuses import Status
from .worklist import DateRange, Wanted

log = logging.getLogger(__name__)
PENDING = (0xFF00, 0xFF01)
STUDY_KEYS = ("StudyInstanceUID", "AccessionNumber", "StudyDate", "ModalitiesInStudy",
              "NumberOfStudyRelatedInstances")

# (encoded Part 10 bytes, its dataset's headers) -> stored; raises OSError/sqlite3.Error
Sink = Callable[[bytes, Dataset], None]


class PacsError(RuntimeError):
    """The PACS did not answer a query or a retrieval as asked; the message says how."""


@dataclass(frozen=True)
class FoundStudy:
    """A study the PACS holds (from its study-level answer)."""

    study_uid: str
    accession: str = ""
    study_date: str = ""
    instances: int | None = None  # NumberOfStudyRelatedInstances, when the PACS says


@dataclass
class Retrieved:
    """What one retrieval delivered: CT instances stored, and those that did not arrive."""

    series: int = 0
    stored: int = 0
    failed: int = 0


class Pacs(Protocol):
    def find(self, wanted: Wanted) -> list[FoundStudy]: ...

    def find_range(self, dates: DateRange) -> list[FoundStudy]: ...

    def retrieve(self, study_uid: str, sink: Sink) -> Retrieved: ...


def open_pacs(dest: DestinationConfig, calling_ae_title: str, retrieve: str = "auto",
              tls: TLSConfig | None = None, move_started: Callable[[], None] | None = None,
              ) -> Pacs:
    """The :class:`Pacs` of a configured destination; ``retrieve``: ``get``, ``move`` or
    ``wado`` (``auto``: C-GET for DIMSE, WADO-RS for DICOMweb)."""
    if dest.kind is DestinationKind.DIMSE:
        method = "get" if retrieve == "auto" else retrieve
        if method not in ("get", "move"):
            raise ValueError(f"--retrieve {retrieve}: a DIMSE PACS retrieves with get or move")
        return DimsePacs(dest, calling_ae_title, method, tls)
    if dest.kind is DestinationKind.STOWRS:
        if retrieve not in ("auto", "wado"):
            raise ValueError(f"--retrieve {retrieve}: a DICOMweb PACS retrieves with wado")
        return WebPacs(dest)
    raise ValueError(f"destination {dest.name!r} is a {dest.kind} destination: a cohort "
                     "needs a PACS to query (kind dimse or stowrs)")


def _study_query(**match: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for k in STUDY_KEYS:
        setattr(ds, k, match.get(k, ""))
    return ds


def _found(ds: Dataset) -> FoundStudy:
    n = ds.get("NumberOfStudyRelatedInstances")
    return FoundStudy(str(ds.get("StudyInstanceUID", "")), str(ds.get("AccessionNumber", "")),
                      str(ds.get("StudyDate", "")), int(n) if n not in (None, "") else None)


class DimsePacs:
    """C-FIND, and C-GET (the instances come back on the same association) or C-MOVE (the
    PACS sends them to the node's AE title, which must be running: :mod:`.run` starts the
    node's own listener for it and the PACS must know that AE)."""

    def __init__(self, dest: DestinationConfig, calling_ae_title: str, method: str,
                 tls: TLSConfig | None = None, timeout: float = 60.0) -> None:
        self.dest, self.calling, self.method, self.tls = dest, calling_ae_title, method, tls
        self.timeout = timeout

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = self.timeout
        return ae

    def _find(self, query: Dataset) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = associate(ae, self.dest, self.tls)
        out = []
        try:
            for status, ident in assoc.send_c_find(
                    query, StudyRootQueryRetrieveInformationModelFind):
                code = int(status.Status) if status else -1
                if code in PENDING and ident is not None:
                    out.append(ident)
                elif code != Status.SUCCESS:
                    raise PacsError(f"{self.dest.name}: C-FIND answered "
                                    + (f"0x{code:04X}" if code >= 0 else "nothing"))
        finally:
            assoc.release()
        return out

    def find(self, wanted: Wanted) -> list[FoundStudy]:
        q = (_study_query(StudyInstanceUID=wanted.study_uid) if wanted.study_uid
             else _study_query(AccessionNumber=wanted.accession))
        return [_found(ds) for ds in self._find(q)]

    def find_range(self, dates: DateRange) -> list[FoundStudy]:
        return [_found(ds) for ds in self._find(_study_query(
            StudyDate=dates.dicom, ModalitiesInStudy=dates.modality))]

    def ct_series(self, study_uid: str) -> list[str]:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.Modality = "CT"
        return [str(ds.SeriesInstanceUID) for ds in self._find(q)
                if ds.get("Modality", "CT") == "CT" and ds.get("SeriesInstanceUID")]

    def retrieve(self, study_uid: str, sink: Sink) -> Retrieved:
        out = Retrieved()
        for series_uid in self.ct_series(study_uid):
            q = Dataset()
            q.QueryRetrieveLevel = "SERIES"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = series_uid
            ok, failed = (self._get(q, sink) if self.method == "get" else self._move(q))
            out.series += 1
            out.stored += ok
            out.failed += failed
        return out

    def _get(self, query: Dataset, sink: Sink) -> tuple[int, int]:
        """C-GET one series; each C-STORE sub-operation is answered only once ``sink`` has
        made the instance durable (0xA700 when it could not: the PACS counts it failed)."""
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for uid in CT_CLASSES:  # the storage sub-operations come back as SCP role
            ae.add_requested_context(uid, list(CT_TRANSFER_SYNTAXES))
        roles = [build_role(uid, scp_role=True) for uid in CT_CLASSES]

        def on_store(ev: evt.Event) -> int:
            try:
                sink(ev.encoded_dataset(include_meta=True), ev.dataset)
            except Exception as exc:  # out of space, a bad dataset: not stored, say so
                event(log, "cohort.store_failed", logging.WARNING, sop=str(
                    ev.request.AffectedSOPInstanceUID), reason=type(exc).__name__)
                return Status.OUT_OF_RESOURCES
            return Status.SUCCESS

        assoc = associate(ae, self.dest, self.tls, ext_neg=roles,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            return _sub_operations(
                self.dest.name, "C-GET",
                assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        finally:
            assoc.release()

    def _move(self, query: Dataset) -> tuple[int, int]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = associate(ae, self.dest, self.tls)
        try:
            return _sub_operations(
                self.dest.name, "C-MOVE",
                assoc.send_c_move(query, self.calling,
                                  StudyRootQueryRetrieveInformationModelMove))
        finally:
            assoc.release()


def _sub_operations(name: str, what: str, responses) -> tuple[int, int]:
    """(completed, failed) sub-operations from the final C-GET/C-MOVE response."""
    last = None
    for status, _ident in responses:
        if not status:
            raise PacsError(f"{name}: no {what} response (association lost or timed out)")
        last = status
        if int(status.Status) not in PENDING:
            break
    if last is None:
        raise PacsError(f"{name}: no {what} response")
    code = int(last.Status)
    done = int(last.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(last.get("NumberOfFailedSuboperations", 0) or 0)
    warned = int(last.get("NumberOfWarningSuboperations", 0) or 0)
    if code not in (Status.SUCCESS, 0xB000):
        raise PacsError(f"{name}: {what} answered 0x{code:04X} ({done} stored, {failed} "
                        "failed)")
    return done + warned, failed


class WebPacs:
    """QIDO-RS and WADO-RS on a DICOMweb root (dicomweb-client); instances are asked for
    in their stored transfer syntax, so nothing is transcoded on the way."""

    def __init__(self, dest: DestinationConfig) -> None:
        self.dest = dest
        self.client = web_client(dest)

    def _qido(self, fn: Callable[..., list[dict]], **kw: object) -> list[Dataset]:
        import requests

        try:
            return [Dataset.from_json(d) for d in fn(**kw)]
        except requests.RequestException as exc:
            raise PacsError(f"{self.dest.name}: QIDO-RS failed: "
                            f"{exc.__class__.__name__}") from exc

    def find(self, wanted: Wanted) -> list[FoundStudy]:
        match = ({"StudyInstanceUID": wanted.study_uid} if wanted.study_uid
                 else {"AccessionNumber": wanted.accession})
        return [_found(ds) for ds in self._qido(self.client.search_for_studies,
                                                search_filters=match,
                                                fields=list(STUDY_KEYS))]

    def find_range(self, dates: DateRange) -> list[FoundStudy]:
        match = {"StudyDate": dates.dicom, "ModalitiesInStudy": dates.modality}
        return [_found(ds) for ds in self._qido(self.client.search_for_studies,
                                                search_filters=match,
                                                fields=list(STUDY_KEYS))]

    def retrieve(self, study_uid: str, sink: Sink) -> Retrieved:
        import requests

        out = Retrieved()
        series = self._qido(self.client.search_for_series, study_instance_uid=study_uid,
                            search_filters={"Modality": "CT"})
        for s in series:
            if s.get("Modality", "CT") != "CT":
                continue
            out.series += 1
            try:
                for ds in self.client.iter_series(
                        study_uid, str(s.SeriesInstanceUID),
                        media_types=(("application/dicom", "*"),)):
                    if str(ds.get("SOPClassUID", "")) not in CT_CLASSES:
                        continue
                    buf = io.BytesIO()
                    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
                    sink(buf.getvalue(), ds)
                    out.stored += 1
            except requests.RequestException as exc:
                raise PacsError(f"{self.dest.name}: WADO-RS failed: "
                                f"{exc.__class__.__name__}") from exc
        return out

