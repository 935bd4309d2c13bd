"""DICOM TLS (PS3.15 Annex B, the BCP 195 profiles): the SSL contexts of the listener and
of the DIMSE destinations, built from the ``[tls]`` section.

TLS 1.2 or newer only; certificates are verified against ``tls.ca`` (for destinations, the
system's trust store when ``tls.ca`` is not set) and a destination's certificate must name
the host it is reached at.  A file that cannot be loaded is a :class:`ConfigError` naming
the key, so ``l3node check-config`` and the start of ``serve`` say what is wrong.
"""

from __future__ import annotations

import ssl

from .config import ConfigError, TLSConfig


def _load_chain(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    if tls.cert is None or tls.key is None:
        return
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.cert/tls.key: cannot load {tls.cert} with {tls.key} "
                          f"({exc.__class__.__name__}: {exc})") from exc


def _load_ca(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    if tls.ca is None:
        return
    try:
        ctx.load_verify_locations(cafile=str(tls.ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.ca: cannot load {tls.ca} ({exc.__class__.__name__}: "
                          f"{exc})") from exc


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """The listener's context: our certificate; senders' certificates checked against
    ``tls.ca`` (required when ``require_client_cert``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, tls)
    _load_ca(ctx, tls)
    if tls.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(tls: TLSConfig) -> ssl.SSLContext:
    """A destination's context: its certificate verified (``tls.ca``, else the system's
    trust store) and matched to the host name; ours presented when configured."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # only the CA given, not the system's
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_ca(ctx, tls)
    _load_chain(ctx, tls)
    return ctx
