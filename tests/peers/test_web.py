"""The status page, /metrics and /healthz of a running node, checked over HTTP and in a real
headless browser (Debian chromium) with a screenshot."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from l3node.cli import default_model_dir
from l3node.config import (
    Config,
    DestinationConfig,
    ModelConfig,
    NodeConfig,
    PathsConfig,
    RetryConfig,
    SchedulerConfig,
    WebConfig,
)
from l3node.node import Node, retry_exports, study_status

from .conftest import load_truth
from .orthanc import free_port, wait_for

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
CHROMIUM = "/usr/bin/chromium"
GREEN = (0x1A, 0x7F, 0x37)  # .state.done / .state.exported in status.html
RED = (0xC6, 0x28, 0x28)  # .state.failed / failed deliveries



def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def _metrics(base: str) -> dict[tuple[str, tuple], float]:
    code, body, ctype = _get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain"), (code, ctype)
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _screenshot(url: str, out: Path, tmp: Path) -> np.ndarray:
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
         "--force-color-profile=srgb", f"--user-data-dir={tmp / 'chromium-profile'}",
         "--window-size=1280,1000", f"--screenshot={out}", url],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and out.is_file(), res.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 4) -> int:
    return int((np.abs(img - np.array(rgb)).max(axis=2) <= tol).sum())


def _config(tmp_path: Path, pacs_port: int, web_port: int, token_env: str = "") -> Config:
    return Config(
        node=NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=free_port()),
        paths=PathsConfig(spool=tmp_path / "spool", state_db=tmp_path / "state.db"),
        scheduler=SchedulerConfig(study_quiet_s=1.0, poll_s=0.5),
        model=ModelConfig(path=default_model_dir()),
        retry=RetryConfig(max_attempts=1),
        web=WebConfig(enabled=True, port=web_port, token_env=token_env),
        destinations=(
            DestinationConfig(name="archive", kind="folder", path=tmp_path / "archive"),
            DestinationConfig(name="pacs", kind="dimse", ae_title="STORESCP",
                              host="127.0.0.1", port=pacs_port),
        ),
    )


def test_status_page_metrics_and_health_follow_a_study(tmp_path, abdomen_study):
    """A study goes through with the PACS down, then up: the page shows its state, key
    image and delivery per destination (screenshot), /metrics counts it, /healthz fails
    when the listener is down."""
    pacs_port, web_port = free_port(), free_port()
    node = Node(_config(tmp_path, pacs_port, web_port))
    node.start()
    base = f"http://127.0.0.1:{web_port}"
    pacs = None
    try:
        assert node.web is not None and node.web.server.socket.getsockname()[0] == "127.0.0.1"
        code, body, _ = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["ok"] is True
        res = subprocess.run([STORESCU, "-aet", "STORESCU", "-aec", "L3NODE", "+sd", "+sp",
                              "*.dcm", "127.0.0.1", str(node.receiver.port), str(abdomen_study)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        n_slices = len(list(abdomen_study.glob("*.dcm")))
        uid = load_truth(abdomen_study)["series"]["study_instance_uid"]

        def exports() -> dict:
            db = node.reader()
            try:
                rows = [r for r in study_status(db) if r["study_instance_uid"] == uid]
            finally:
                db.close()
            return rows[0]["exports"] if rows else {}

        wait_for(lambda: {e["state"] for e in exports().values()} == {"sent", "failed"},
                 180, "archive sent and pacs failed")

        m = _metrics(base)
        assert m[("l3node_instances_received_total", (("outcome", "stored"),))] == n_slices
        assert m[("l3node_studies_processed_total", (("result", "found"),))] == 1
        assert m[("l3node_processing_seconds_count", ())] == 1
        assert m[("l3node_exports_total", (("destination", "archive"), ("outcome", "sent")))] == 1
        assert m[("l3node_exports_total", (("destination", "pacs"), ("outcome", "failed")))] == 1
        assert m[("l3node_failures_total", (("stage", "export"),))] == 1
        assert m[("l3node_result_latency_seconds_count", ())] == 0  # not delivered everywhere
        for state in ("receiving", "complete", "processing"):
            assert m[("l3node_queue_depth", (("state", state),))] == 0

        code, html, ctype = _get(base + "/")
        page = html.decode()
        assert code == 200 and ctype.startswith("text/html")
        assert uid in page and "archive: sent" in page and "pacs: failed" in page
        thumb_url = f"/study/{uid}/l3.png"
        assert thumb_url in page
        code, png, ctype = _get(base + thumb_url)
        assert code == 200 and ctype == "image/png"
        thumb = Image.open(io.BytesIO(png))
        assert max(thumb.size) == 160
        assert _get(base + "/study/1.2.3.4/l3.png")[0] == 404

        shot = _screenshot(base + "/", tmp_path / "status.png", tmp_path)
        assert shot.shape[1] == 1280
        # the key image rendered: a CT thumbnail is mostly black air around the body, a
        # large dark block on a white page (alt text alone would leave none)
        assert (shot.max(axis=2) < 30).sum() > 120 * 80, "no key image in the screenshot"
        assert _near(shot, GREEN) > 100, "no green 'done' state badge"
        assert _near(shot, RED) > 20, "the failed delivery is not shown in red"

        # the PACS comes back; an admin retries: delivered, latency observed
        pacs_dir = tmp_path / "pacs"
        pacs_dir.mkdir()
        pacs = subprocess.Popen([STORESCP, "-od", str(pacs_dir), "-aet", "STORESCP",
                                 str(pacs_port)])
        # retry only once it listens: with max_attempts = 1 a refused attempt is final
        wait_for(lambda: _accepts(pacs_port), 30, "storescp listening")
        assert retry_exports(sqlite3.connect(node.cfg.paths.state_db, isolation_level=None),
                             uid) == 1
        wait_for(lambda: exports()["pacs"]["state"] == "sent", 60, "pacs sent after retry")
        m = _metrics(base)
        assert m[("l3node_result_latency_seconds_count", ())] == 1
        assert m[("l3node_exports_total", (("destination", "pacs"), ("outcome", "sent")))] == 1
        assert "pacs: sent" in _get(base + "/")[1].decode()

        node.receiver.stop()  # the DICOM listener is down: not healthy
        code, body, _ = _get(base + "/healthz")
        assert code == 503 and json.loads(body)["checks"]["listener"] is False
    finally:
        if pacs is not None:
            pacs.terminate()
            pacs.wait(timeout=10)
        node.stop()


def test_status_page_token(tmp_path, monkeypatch):
    """With web.token_env set, every route but /healthz wants the token; without the
    variable the node refuses to start rather than serve an open page."""
    web_port = free_port()
    cfg = _config(tmp_path, free_port(), web_port, token_env="L3NODE_TEST_WEB_TOKEN")
    monkeypatch.delenv("L3NODE_TEST_WEB_TOKEN", raising=False)
    node = Node(cfg)
    with pytest.raises(RuntimeError, match="L3NODE_TEST_WEB_TOKEN"):
        node.start()
    node.stop()
    assert not node.receiver.running  # refused before the DICOM port opened

    monkeypatch.setenv("L3NODE_TEST_WEB_TOKEN", "s3cret-token")
    node = Node(cfg)
    node.start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        assert _get(base + "/")[0] == 401
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(base + "/", {"Authorization": "Bearer s3cret-token"})[0] == 200
        code, html, _ = _get(base + "/?token=s3cret-token")
        assert code == 200 and "metrics?token=s3cret-token" in html.decode()
        assert _get(base + "/healthz")[0] == 200
    finally:
        node.stop()
