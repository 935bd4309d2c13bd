"""The status page, ``/metrics`` and ``/healthz`` (Flask app, served by waitress in a thread).

Read-only: the page shows what the state database says (recent studies, their state, the
L3 key image as a thumbnail, timings, delivery per destination) through a connection of its
own, so a slow browser never holds up the scheduler.  It binds to 127.0.0.1 unless the admin
configures otherwise, and with ``web.token_env`` set every route but ``/healthz`` wants the
token (``Authorization: Bearer …`` or ``?token=…``).  Patient names and IDs are not shown:
studies are listed by UID, as in the logs.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from flask import Flask, Response, abort, render_template, request, url_for

from .config import Config, WebConfig
from .logs import event
from .metrics import Metrics
from .state.views import key_image, state_counts, study_status

log = logging.getLogger(__name__)
THUMB_PX = 160
RECENT = 50


class Observed(Protocol):
    """What the page reads from a running node (:class:`l3node.node.Node` is one)."""

    cfg: Config
    metrics: Metrics

    def reader(self) -> sqlite3.Connection: ...

    def health(self) -> dict: ...


def create_app(node: Observed, token: str | None = None) -> Flask:
    """The Flask app over one node; ``token`` (if any) guards every route but /healthz."""
    app = Flask(__name__)
    connect: Callable[[], sqlite3.Connection] = node.reader

    @app.before_request
    def _check_token() -> None:
        if not token or request.endpoint in ("healthz", "static"):
            return
        given = request.args.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode(), token.encode()):
            abort(401)

    def _url(endpoint: str, **kw: str) -> str:
        if token and request.args.get("token"):
            kw["token"] = request.args["token"]  # keep the token on the page's own links
        return url_for(endpoint, **kw)

    @app.get("/")
    def index() -> str:
        db = connect()
        try:
            studies = study_status(db, limit=RECENT)
            counts = state_counts(db)
        finally:
            db.close()
        for s in studies:
            s["thumb"] = _url("thumbnail", study_uid=s["study_instance_uid"]) if (
                key_image(s)) else None
            last = s["last_instance_at"]
            s["latency_s"] = s["exported_at"] - last if s["exported_at"] else None
        return render_template("status.html", node=node.cfg.node, studies=studies,
                               counts=counts, health=node.health(), now=time.time(),
                               destinations=[d.name for d in node.cfg.destinations],
                               metrics_url=_url("metrics"), fmt_time=_fmt_time)

    @app.get("/study/<study_uid>/l3.png")
    def thumbnail(study_uid: str) -> Response:
        db = connect()
        try:
            rows = study_status(db, study_uid=study_uid)
        finally:
            db.close()
        path = key_image(rows[0]) if rows else None
        if path is None or not path.is_file():
            abort(404)
        return Response(_png_thumbnail(path), mimetype="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/metrics")
    def metrics() -> Response:
        from .metrics import CONTENT_TYPE_LATEST

        return Response(node.metrics.render(), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> tuple[dict, int]:
        h = node.health()
        return h, 200 if h["ok"] else 503

    return app


def _png_thumbnail(path: Path) -> bytes:
    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if arr.dtype != np.uint8:
        arr = (255.0 * (arr - arr.min()) / max(float(np.ptp(arr)), 1.0)).astype(np.uint8)
    img = Image.fromarray(arr)
    img.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


class StatusServer:
    """waitress in a daemon thread; :meth:`stop` closes the socket and joins."""

    @classmethod
    def from_config(cls, w: WebConfig, node: Observed) -> StatusServer:
        """Bound now (so a taken port or a missing token fails before the node listens)."""
        token = None
        if w.token_env:
            token = os.environ.get(w.token_env)
            if not token:
                raise RuntimeError(f"web.token_env: environment variable {w.token_env} is "
                                   "not set (the status page would be open without a token)")
        try:
            return cls(node, w.host, w.port, token)
        except OSError as exc:
            raise OSError(f"web: cannot listen on {w.host}:{w.port}: {exc}") from exc

    def __init__(self, node: Observed, host: str, port: int, token: str | None) -> None:
        from waitress.server import create_server

        self.server = create_server(create_app(node, token), host=host, port=port, threads=2,
                                    ident="l3node")
        self.port = int(self.server.effective_port)  # type: ignore[union-attr]
        self.host = host
        self._thread = threading.Thread(target=self._run, name="l3node-web", daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # the socket closed under the loop at stop()
            self.server.run()

    def start(self) -> None:
        self._thread.start()
        event(log, "web.started", host=self.host, port=self.port)

    def stop(self) -> None:
        self.server.close()
        self._thread.join(timeout=5)
