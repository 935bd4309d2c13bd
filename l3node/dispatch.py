"""Send result objects to a destination: DIMSE C-STORE (pynetdicom), DICOMweb STOW-RS
(dicomweb-client) or a folder.

Warning statuses (0xB000 coercion, 0xB006 elements discarded, 0xB007 data set does not
match SOP class) count as stored, as PS3.4 allows; anything else is a failure the caller
retries with backoff.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pynetdicom import AE, Association

from .config import DestinationConfig as Destination
from .config import DestinationKind, TLSConfig
from .logs import event
from .statuses import STORED, Status, hex4

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

log = logging.getLogger(__name__)


class DispatchError(RuntimeError):
    """A destination did not take the results; the message says which and why."""


def _tls_args(dest: Destination, tls: TLSConfig | None) -> tuple | None:
    """(context, host name to verify) for a ``tls = true`` destination, else None."""
    if not dest.tls:
        return None
    from .tls import client_context

    return client_context(tls or TLSConfig()), dest.host


def associate(ae: AE, dest: Destination, tls: TLSConfig | None, **kw: object) -> Association:
    """An established association with a DIMSE destination, or :class:`DispatchError`
    (``kw``: pynetdicom's ``associate`` options, e.g. the C-GET's roles and handlers)."""
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title,
                         tls_args=_tls_args(dest, tls), **kw)  # type: ignore[arg-type]
    if not assoc.is_established:
        raise DispatchError(f"{dest.name}: no association with {dest.ae_title}@{dest.host}:"
                            f"{dest.port}" + (" (TLS)" if dest.tls else ""))
    return assoc


def echo(dest: Destination, calling_ae_title: str, timeout: float = 10.0,
         tls: TLSConfig | None = None) -> None:
    """C-ECHO a DIMSE destination; raises :class:`DispatchError` when it does not answer."""
    if dest.kind is not DestinationKind.DIMSE:
        return
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.network_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = associate(ae, dest, tls)
    try:
        status = assoc.send_c_echo()
        if not status or status.Status != Status.SUCCESS:
            raise DispatchError(f"{dest.name}: C-ECHO failed ({status})")
    finally:
        assoc.release()


def send(dest: Destination, files: list[Path], calling_ae_title: str,
         timeout: float = 30.0, tls: TLSConfig | None = None) -> None:
    """Deliver every file or raise :class:`DispatchError` (nothing is assumed delivered)."""
    if dest.kind is DestinationKind.STOWRS:
        _stow(dest, files, timeout)
        return
    if dest.kind is DestinationKind.FOLDER:
        assert dest.path is not None
        dest.path.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest.path / f.name)
        return
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    for uid in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(uid, [str(datasets[0].file_meta.TransferSyntaxUID),
                                       "1.2.840.10008.1.2.1"])
    assoc = associate(ae, dest, tls)
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status else -1
            if code not in STORED:
                raise DispatchError(f"{dest.name}: C-STORE of {ds.SOPInstanceUID} answered "
                                    f"{hex4(code)}" if code >= 0 else
                                    f"{dest.name}: no C-STORE response for {ds.SOPInstanceUID}")
            if code:
                event(log, "export.warning", logging.WARNING, destination=dest.name,
                      sop=str(ds.SOPInstanceUID), status=hex4(code))
    finally:
        assoc.release()


def web_client(dest: Destination) -> DICOMwebClient:
    """A DICOMweb client for a ``stowrs`` destination's root (STOW-RS here; QIDO-RS and
    WADO-RS for a cohort); the bearer token comes from the environment variable named in
    the config and is never logged."""
    from dicomweb_client.api import DICOMwebClient

    headers = {}
    if dest.token_env:
        token = os.environ.get(dest.token_env)
        if not token:
            raise DispatchError(f"{dest.name}: environment variable {dest.token_env} is not set")
        headers["Authorization"] = f"Bearer {token}"
    return DICOMwebClient(url=dest.url, headers=headers)


def _stow(dest: Destination, files: list[Path], timeout: float) -> None:
    """STOW-RS; the token comes from the environment variable named in the config."""
    import requests

    client = web_client(dest)
    try:
        resp = client.store_instances([pydicom.dcmread(f) for f in files])
    except requests.RequestException as exc:
        raise DispatchError(f"{dest.name}: STOW-RS to {dest.url} failed: "
                            f"{exc.__class__.__name__}") from exc
    failed = resp.get("FailedSOPSequence") if resp is not None else None
    if failed:
        raise DispatchError(f"{dest.name}: STOW-RS refused {len(failed)} instance(s)")
