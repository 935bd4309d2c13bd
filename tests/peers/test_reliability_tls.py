"""Issue #7, access: association rules with their exact A-ASSOCIATE-RJ codes, and DICOM TLS
(``[tls]``) on the listener and towards a destination, with certificates made here by the
``openssl`` command line: a real node process, DCMTK storescu/echoscu with and without
certificates, and Orthanc as a TLS-only PACS.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from l3node.config import ConfigError, NodeConfig, TLSConfig, parse_config
from l3node.receive import Receiver
from l3node.spool import Spool
from l3node.tls import client_context, server_context

from ..support import ORTHANC, Orthanc, free_port, wait_for
from .test_reliability import (
    NodeProcess,
    cli,
    db_rows,
    figure,
    result_sops,
    spooled_result_sops,
    write_config,
)
from .test_reliability_input import c64  # noqa: F401  (the module fixture, shared)

STORESCU, ECHOSCU = "/usr/bin/storescu", "/usr/bin/echoscu"
OPENSSL = "openssl"


# -- a small PKI ------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def _leaf(d: Path, name: str, ca: str) -> None:
    (d / f"{name}.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                                   "extendedKeyUsage = serverAuth, clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
             f"{name}.key", "-out", f"{name}.csr", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
             cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca → node, pacs, sender; rogue-ca → rogue (a sender the node must not trust)."""
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    for name in ("node", "pacs", "sender"):
        _leaf(d, name, "ca")
    _leaf(d, "rogue", "rogue-ca")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return d


class TLSOrthanc(Orthanc):
    """Orthanc whose DICOM port speaks TLS only and requires a client certificate."""

    def __init__(self, root: Path, pki: Path) -> None:
        self.aet = "ORTHANC"
        self.dicom_port, self.http_port = free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "l3node-tls", "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"), "DicomAet": self.aet,
            "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True, "DicomCheckCalledAet": False,
            "OverwriteInstances": True, "Plugins": [],
            "DicomTlsEnabled": True, "DicomTlsCertificate": str(pki / "pacs.crt"),
            "DicomTlsPrivateKey": str(pki / "pacs.key"),
            "DicomTlsTrustedCertificates": str(pki / "ca.crt"),
            "DicomTlsRemoteCertificateRequired": True,
        }
        (root / "orthanc.json").write_text(json.dumps(cfg))
        self.log = (root / "orthanc.log").open("w")
        self.proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self._up(), 30, "Orthanc (TLS) started")
        except AssertionError:
            self.stop()
            raise

    def _up(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def post(self, path: str, body: dict) -> object:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


# -- configuration ----------------------------------------------------------------------------
def test_tls_configuration_errors_name_the_key(pki, tmp_path):
    """Every [tls] mistake is refused at load with the key and the value (no silent
    plain-TCP fallback), and a key that does not match its certificate is named too."""
    ok = {"cert": str(pki / "node.crt"), "key": str(pki / "node.key"), "ca": str(pki / "ca.crt")}
    cfg = parse_config({"tls": {"enabled": True, **ok}})
    assert cfg.tls == TLSConfig(True, pki / "node.crt", pki / "node.key", pki / "ca.crt", True)
    cases = [
        ({"tls": {"enabled": "yes"}}, "tls.enabled: must be true or false, got 'yes'"),
        ({"tls": {"enabled": True}}, "tls.enabled = true: the listener needs tls.cert"),
        ({"tls": {"enabled": True, "cert": ok["cert"], "key": ok["key"]}},
         "tls.require_client_cert = true: needs tls.ca"),
        ({"tls": {"cert": ok["cert"]}}, "tls.cert and tls.key: give both"),
        ({"tls": {"ca": str(tmp_path / "missing.crt")}}, "tls.ca: no such file"),
        ({"tls": {"cert": 5, "key": ok["key"]}}, "tls.cert: must be the path of a PEM file"),
        ({"tls": {"verify": True}}, "[tls]: unknown key(s) ['verify']"),
        ({"destinations": [{"name": "w", "kind": "stowrs", "url": "https://x", "tls": True}]},
         "destinations[0].tls: DICOM TLS is for dimse destinations"),
        ({"destinations": [{"name": "p", "kind": "dimse", "ae_title": "P", "host": "h",
                            "port": 1, "tls": 1}]}, "destinations[0].tls: must be true"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(raw)
    wrong = TLSConfig(True, pki / "node.crt", pki / "pacs.key", pki / "ca.crt")
    with pytest.raises(ConfigError, match=re.escape("tls.cert/tls.key: cannot load")):
        server_context(wrong)
    with pytest.raises(ConfigError, match=re.escape("tls.ca: cannot load")):
        client_context(TLSConfig(ca=pki / "node.key"))


# -- association rules ------------------------------------------------------------------------
def test_rejections_carry_their_codes_and_the_association_limit_holds(tmp_path):
    """Wrong called AE title: A-ASSOCIATE-RJ permanent, service user, reason 7; unknown
    calling AE title: reason 3; beyond node.max_associations: transient, service provider
    (presentation), reason 2 — and the node answers an allowed peer throughout."""
    spool = Spool(tmp_path / "spool", tmp_path / "state.db")
    rx = Receiver(NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=free_port(),
                             allowed_calling_ae_titles=("PACS",), max_associations=2), spool)
    rx.start()
    held = []
    try:
        def assoc(calling: str, called: str = "L3NODE"):
            ae = AE(ae_title=calling)
            ae.acse_timeout = ae.network_timeout = 10
            ae.add_requested_context(Verification)
            return ae.associate("127.0.0.1", rx.port, ae_title=called)

        codes = {}
        for name, (calling, called) in {"wrong-called": ("PACS", "OTHER"),
                                        "unknown-calling": ("INTRUDER", "L3NODE")}.items():
            a = assoc(calling, called)
            assert a.is_rejected, name
            rj = a.acceptor.primitive
            codes[name] = (rj.result, rj.result_source, rj.diagnostic)
        assert codes == {"wrong-called": (1, 1, 7), "unknown-calling": (1, 1, 3)}
        held = [assoc("PACS"), assoc("PACS")]
        assert all(a.is_established for a in held)
        over = assoc("PACS")
        assert over.is_rejected
        rj = over.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)
        held.pop().release()
        time.sleep(0.5)
        again = assoc("PACS")
        assert again.is_established and int(again.send_c_echo().Status) == 0
        again.release()
    finally:
        for a in held:
            a.release()
        rx.stop()
        spool.close()
    assert spool.root.is_dir() and not list(spool.root.rglob("*.dcm"))


# -- DICOM TLS end to end ---------------------------------------------------------------------
def _storescu(port: int, folder: Path, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run([STORESCU, *tls, "-to", "10", "-ta", "10", "-td", "10", "-aet",
                           "PACS", "-aec", "L3NODE", "+sd", "+sp", "*.dcm", "127.0.0.1", str(port),
                           str(folder)], capture_output=True, text=True, timeout=30)


def _echoscu(port: int, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run([ECHOSCU, *tls, "-to", "10", "-ta", "10", "-aet", "PACS", "-aec",
                           "L3NODE", "127.0.0.1", str(port)], capture_output=True, text=True,
                          timeout=60)


def test_tls_listener_and_destination_with_real_peers(tmp_path, pki, c64):  # noqa: F811
    """``[tls] enabled`` with client certificates required, and a ``tls = true``
    destination (Orthanc, TLS only): DCMTK with a certificate from the CA stores; plain TCP,
    no certificate, and a certificate from another CA are refused and store nothing; a
    silent TCP peer holds up no one; the result reaches Orthanc over TLS; ``l3node echo``
    speaks TLS."""
    pacs = TLSOrthanc(tmp_path / "pacs", pki)
    port = free_port()
    root = tmp_path / "node"
    tls = (f'[tls]\nenabled = true\ncert = "{pki / "node.crt"}"\nkey = "{pki / "node.key"}"\n'
           f'ca = "{pki / "ca.crt"}"\nrequire_client_cert = true\n')
    dest = (f'[[destinations]]\nname = "pacs"\nkind = "dimse"\nae_title = "ORTHANC"\n'
            f'host = "127.0.0.1"\nport = {pacs.dicom_port}\ntls = true\n')
    cfg = write_config(root, port=port, quiet_s=1.0, extra=tls, destinations=dest)
    node = NodeProcess(cfg, tmp_path / "node.log")
    good = ["+tls", str(pki / "sender.key"), str(pki / "sender.crt"), "+cf", str(pki / "ca.crt")]
    rogue = ["+tls", str(pki / "rogue.key"), str(pki / "rogue.crt"), "+cf",
             str(pki / "ca.crt")]
    anonymous = ["+tla", "+cf", str(pki / "ca.crt")]
    some = tmp_path / "some"
    some.mkdir()
    for f in sorted(c64.glob("*.dcm"))[:3]:
        (some / f.name).write_bytes(f.read_bytes())
    try:
        node.start()
        refused = {name: _storescu(port, some, *args) for name, args in
                   {"plain": [], "no-certificate": anonymous, "rogue-certificate": rogue}.items()}
        assert all(r.returncode != 0 for r in refused.values()), refused
        assert all("Association Request Failed" in r.stdout + r.stderr
                   for r in refused.values()), refused
        assert not db_rows(root / "state.db", "SELECT * FROM instance")
        silent = socket.create_connection(("127.0.0.1", port))  # connects, says nothing
        try:
            t0 = time.perf_counter()
            sent = _storescu(port, c64, *good)
            secs = time.perf_counter() - t0
        finally:
            silent.close()
        assert sent.returncode == 0, sent.stdout + sent.stderr
        n = len(list(c64.glob("*.dcm")))
        assert db_rows(root / "state.db", "SELECT COUNT(*) FROM instance")[0][0] == n
        assert _echoscu(port, *good).returncode == 0 and node.alive()
        plain = AE(ae_title="PROBE")
        plain.add_requested_context(Verification)
        a = plain.associate("127.0.0.1", pacs.dicom_port, ae_title="ORTHANC")
        assert not a.is_established  # the PACS speaks TLS only: what arrives came over TLS
        study = db_rows(root / "state.db", "SELECT study_instance_uid FROM study")[0][0]
        wait_for(lambda: db_rows(root / "state.db", "SELECT state FROM study")[0][0] in
                 ("exported", "failed"), 180, "processed and exported")
        state = db_rows(root / "state.db", "SELECT state FROM study")[0][0]
        assert state == "exported", node.tail()
        assert result_sops(pacs, study) == spooled_result_sops(root / "state.db", study)
        echo = cli(cfg, "echo", "pacs")
        assert echo.returncode == 0 and "C-ECHO OK" in echo.stdout, echo.stdout + echo.stderr
    finally:
        node.stop()
        pacs.stop()
    figure("tls", instances=n, seconds=round(secs, 2), instances_per_s=round(n / secs, 1),
           refused=sorted(refused))
