"""What the tests share besides fixtures: the real data's place, waiting with a deadline,
loopback ports, and a real Orthanc (Debian package) started for a test, spoken to over REST.

Ports: whatever l3node listens on is bound as 0 and read back (``node.receiver.port``,
``web.port``); :func:`free_port` is only for peers that cannot report their port (DCMTK's
``storescp``, Orthanc), the one place a race with another process remains.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Every real CT the project has (see its README): beside the repository, never downloaded.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

STORESCU = "/usr/bin/storescu"  # DCMTK's; pynetdicom's script of the same name shadows it
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # orthanc-dicomweb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, root: Path, aet: str = "ORTHANC", dicomweb: bool = False,
                 dicom_port: int | None = None,
                 modalities: dict[str, tuple[str, str, int]] | None = None,
                 options: dict | None = None) -> None:
        """``modalities``: the AEs Orthanc knows ({name: (AE title, host, port)}) — they may
        query and retrieve (C-FIND, C-GET, C-MOVE), and C-MOVE can send to them;
        ``options``: more of Orthanc's configuration."""
        assert Path(ORTHANC).is_file(), "Orthanc is required: run `make peers`"
        self.aet = aet
        self.dicom_port, self.http_port = dicom_port or free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "l3node-test", "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"), "DicomAet": aet, "DicomPort": self.dicom_port,
            "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True,
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
            "OverwriteInstances": True,
            "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            **(options or {}),
        }
        (root / "orthanc.json").write_text(json.dumps(cfg))
        self.log = (root / "orthanc.log").open("w")
        self.proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("Orthanc did not start within 30 s")

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                    timeout=10) as r:
            return json.loads(r.read())

    def raw(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                    timeout=30) as r:
            return r.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def storescu(port: int, paths: list[Path] | Path, *options: str, called: str = "L3NODE",
             calling: str = "STORESCU", timeout: float = 300) -> None:
    """DCMTK ``storescu`` sends ``paths`` (a folder: its ``*.dcm``) on one association;
    fails the test with DCMTK's output when it does not succeed."""
    if isinstance(paths, Path) and paths.is_dir():
        args = ["+sd", "+sp", "*.dcm", str(paths)]
    else:
        args = [str(p) for p in ([paths] if isinstance(paths, Path) else paths)]
    res = subprocess.run([STORESCU, *options, "-aet", calling, "-aec", called, "127.0.0.1",
                          str(port), *args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr


def wait_for(fn: Callable[[], T], timeout: float, msg: str, every: float = 0.3) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``msg`` at the deadline."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s: {msg}")
