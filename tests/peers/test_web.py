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

from l3node.cli_admin import start_node, stop_node
from l3node.config import (
    Config,
    DestinationConfig,
    ModelConfig,
    NodeConfig,
    PathsConfig,
    RetryConfig,
    SchedulerConfig,
    WebConfig,
    default_model_dir,
)
from l3node.state.exports import retry_failed
from l3node.state.views import study_status

from ..conftest import load_truth
from ..support import free_port, storescu, wait_for

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


class Served:
    """A node with its page, one study received; archive delivered, the PACS down."""

    def __init__(self, tmp: Path, study: Path) -> None:
        self.tmp = tmp
        self.pacs_port = free_port()  # storescp cannot report a port of its own
        self.node, self.web = start_node(_config(tmp, self.pacs_port, 0))  # web: port 0
        assert self.web is not None
        self.base = f"http://127.0.0.1:{self.web.port}"
        self.pacs: subprocess.Popen | None = None
        self.healthy_before = _get(self.base + "/healthz")
        storescu(self.node.receiver.port, study)
        self.n_slices = len(list(study.glob("*.dcm")))
        self.uid = load_truth(study)["series"]["study_instance_uid"]
        wait_for(lambda: {e["state"] for e in self.exports().values()} == {"sent", "failed"},
                 180, "archive sent and pacs failed")

    def exports(self) -> dict:
        db = self.node.reader()
        try:
            rows = study_status(db, study_uid=self.uid)
        finally:
            db.close()
        return rows[0]["exports"] if rows else {}

    def stop(self) -> None:
        if self.pacs is not None:
            self.pacs.terminate()
            self.pacs.wait(timeout=10)
        stop_node(self.node, self.web)


@pytest.fixture(scope="module")
def served(tmp_path_factory, abdomen_study):
    s = Served(tmp_path_factory.mktemp("web"), abdomen_study)
    yield s
    s.stop()


def test_the_page_binds_to_localhost_and_is_healthy(served):
    assert served.web.server.socket.getsockname()[0] == "127.0.0.1"
    code, body, _ = served.healthy_before
    assert code == 200 and json.loads(body)["ok"] is True


def test_metrics_count_the_study_and_the_failed_delivery(served):
    m = _metrics(served.base)
    assert m[("l3node_instances_received_total", (("outcome", "stored"),))] == served.n_slices
    assert m[("l3node_studies_processed_total", (("result", "found"),))] == 1
    assert m[("l3node_processing_seconds_count", ())] == 1
    assert m[("l3node_exports_total", (("destination", "archive"), ("outcome", "sent")))] == 1
    assert m[("l3node_exports_total", (("destination", "pacs"), ("outcome", "failed")))] == 1
    assert m[("l3node_failures_total", (("stage", "export"),))] == 1
    assert m[("l3node_result_latency_seconds_count", ())] == 0  # not delivered everywhere
    for state in ("receiving", "complete", "processing"):
        assert m[("l3node_queue_depth", (("state", state),))] == 0


def test_the_page_lists_the_study_its_key_image_and_each_delivery(served):
    code, html, ctype = _get(served.base + "/")
    page = html.decode()
    assert code == 200 and ctype.startswith("text/html")
    assert served.uid in page and "archive: sent" in page and "pacs: failed" in page
    thumb_url = f"/study/{served.uid}/l3.png"
    assert thumb_url in page
    code, png, ctype = _get(served.base + thumb_url)
    assert code == 200 and ctype == "image/png"
    assert max(Image.open(io.BytesIO(png)).size) == 160
    assert _get(served.base + "/study/1.2.3.4/l3.png")[0] == 404


def test_a_browser_shows_the_key_image_and_the_state_colours(served):
    shot = _screenshot(served.base + "/", served.tmp / "status.png", served.tmp)
    assert shot.shape[1] == 1280
    # the key image rendered: a CT thumbnail is mostly black air around the body, a
    # large dark block on a white page (alt text alone would leave none)
    assert (shot.max(axis=2) < 30).sum() > 120 * 80, "no key image in the screenshot"
    assert _near(shot, GREEN) > 100, "no green 'done' state badge"
    assert _near(shot, RED) > 20, "the failed delivery is not shown in red"


def test_an_admin_retry_delivers_once_the_pacs_is_back(served):
    pacs_dir = served.tmp / "pacs"
    pacs_dir.mkdir()
    served.pacs = subprocess.Popen([STORESCP, "-od", str(pacs_dir), "-aet", "STORESCP",
                                    str(served.pacs_port)])
    # retry only once it listens: with max_attempts = 1 a refused attempt is final
    wait_for(lambda: _accepts(served.pacs_port), 30, "storescp listening")
    db = sqlite3.connect(served.node.cfg.paths.state_db, isolation_level=None)
    assert retry_failed(db, served.uid) == 1
    wait_for(lambda: served.exports()["pacs"]["state"] == "sent", 60, "pacs sent after retry")
    m = _metrics(served.base)
    assert m[("l3node_result_latency_seconds_count", ())] == 1
    assert m[("l3node_exports_total", (("destination", "pacs"), ("outcome", "sent")))] == 1
    assert "pacs: sent" in _get(served.base + "/")[1].decode()


def test_healthz_fails_when_the_dicom_listener_is_down(served):
    served.node.receiver.stop()  # last in this module: the node is not healthy after it
    code, body, _ = _get(served.base + "/healthz")
    assert code == 503 and json.loads(body)["checks"]["listener"] is False


def test_status_page_token(tmp_path, monkeypatch):
    """With web.token_env set, every route but /healthz wants the token; without the
    variable the node refuses to start rather than serve an open page."""
    cfg = _config(tmp_path, free_port(), 0, token_env="L3NODE_TEST_WEB_TOKEN")
    monkeypatch.delenv("L3NODE_TEST_WEB_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="L3NODE_TEST_WEB_TOKEN"):
        start_node(cfg)
    # refused before the DICOM port opened: the node's port is free to take
    with socket.create_server(("127.0.0.1", cfg.node.port)):
        pass

    monkeypatch.setenv("L3NODE_TEST_WEB_TOKEN", "s3cret-token")
    node, web = start_node(cfg)
    assert web is not None
    base = f"http://127.0.0.1:{web.port}"
    try:
        assert _get(base + "/")[0] == 401
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(base + "/", {"Authorization": "Bearer s3cret-token"})[0] == 200
        code, html, _ = _get(base + "/?token=s3cret-token")
        assert code == 200 and "metrics?token=s3cret-token" in html.decode()
        assert _get(base + "/healthz")[0] == 200
    finally:
        stop_node(node, web)
