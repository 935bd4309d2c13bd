"""Operations: the systemd unit verifies; check-config validates and C-ECHOes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..support import Orthanc, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_systemd_unit_verifies(tmp_path):
    analyze = "/usr/bin/systemd-analyze"
    assert Path(analyze).is_file(), "systemd-analyze is required"
    unit = (ROOT / "systemd" / "l3node.service").read_text()
    # verify resolves ExecStart binaries: point them at one that exists here
    unit = unit.replace("/opt/l3node/.venv/bin/l3node", sys.executable + " -m l3node")
    (tmp_path / "l3node.service").write_text(unit)
    res = subprocess.run([analyze, "verify", str(tmp_path / "l3node.service")],
                         capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    bad = [line for line in out.splitlines()
           if ("l3node.service" in line and "Unknown" in line) or "Failed" in line
           or "bad-setting" in line.lower()]
    assert res.returncode == 0 and not bad, out
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                "PrivateTmp=yes", "CapabilityBoundingSet=\n", "Restart=on-failure",
                "StateDirectory=l3node", "LogsDirectory=l3node", "User=l3node"):
        assert key in unit, key


def _check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l3node", "check-config", "--config",
                           str(config)], capture_output=True, text=True, timeout=120)


def test_check_config_passes_with_a_live_pacs_and_fails_precisely(tmp_path):
    o = Orthanc(tmp_path / "orthanc")
    try:
        good = tmp_path / "good.toml"
        good.write_text(
            f'[paths]\nspool = "{tmp_path}/spool"\nstate_db = "{tmp_path}/state.db"\n'
            f'[model]\npath = "{ROOT}/models/default"\n'
            f'[[destinations]]\nname = "pacs"\nkind = "dimse"\nae_title = "ORTHANC"\n'
            f'host = "127.0.0.1"\nport = {o.dicom_port}\n')
        res = _check(good)
        assert res.returncode == 0, res.stdout
        assert "ok   pacs: C-ECHO" in res.stdout and "ok   model" in res.stdout
    finally:
        o.stop()
    dead = tmp_path / "dead.toml"
    dead.write_text(good.read_text().replace(f"port = {o.dicom_port}", f"port = {free_port()}")
                    .replace(f'path = "{ROOT}/models/default"', 'path = "/nonexistent"'))
    res = _check(dead)
    assert res.returncode == 1
    assert "FAIL pacs: no association" in res.stdout
    assert "FAIL model.path" in res.stdout
    typo = tmp_path / "typo.toml"
    typo.write_text('[node]\nae_title = "WAY-TOO-LONG-FOR-DICOM"\n')
    res = _check(typo)
    assert res.returncode == 1 and "node.ae_title" in res.stdout
