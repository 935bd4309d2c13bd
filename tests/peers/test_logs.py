"""Structured logs: one line per event, UIDs hashed on request, JSON parseable."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from l3node.logs import EventFormatter, event


def _record(caplog: pytest.LogCaptureFixture, **fields) -> logging.LogRecord:
    log = logging.getLogger("l3node.test")
    with caplog.at_level(logging.INFO, logger="l3node.test"):
        event(log, "study.processed", **fields)
    return caplog.records[-1]


def test_text_lines_are_one_event_each_with_quoted_values(caplog):
    rec = _record(caplog, study="1.2.3", status="found", reason='two\nlines "quoted"',
                  seconds=3.14159, index=None)
    line = EventFormatter("text").format(rec)
    assert "\n" not in line
    assert " INFO study.processed study=1.2.3 status=found " in line
    assert 'reason="two\\nlines \\"quoted\\""' in line
    assert "seconds=3.14" in line and "index=" not in line  # None fields are left out


def test_uids_hashed_when_configured(caplog):
    rec = _record(caplog, study="1.2.840.99", series="1.2.840.98", sop="1.2.840.97",
                  destination="pacs")
    plain = EventFormatter("text").format(rec)
    hashed = EventFormatter("text", hash_uids=True).format(rec)
    assert "1.2.840.99" in plain
    for uid in ("1.2.840.99", "1.2.840.98", "1.2.840.97"):
        assert uid not in hashed
        assert "h:" + hashlib.sha256(uid.encode()).hexdigest()[:16] in hashed
    assert "destination=pacs" in hashed  # other fields untouched


def test_json_lines_and_library_messages(caplog):
    rec = _record(caplog, study="1.2.3", attempts=2)
    doc = json.loads(EventFormatter("json").format(rec))
    assert doc["event"] == "study.processed" and doc["attempts"] == 2 and doc["level"] == "INFO"
    lib = logging.LogRecord("pynetdicom.assoc", logging.WARNING, __file__, 1,
                            "Association Aborted\nby peer", None, None)
    line = EventFormatter("text").format(lib)
    assert "\n" not in line and "event" not in line.split()[2]
    assert line.split()[2] == "log" and 'msg="Association Aborted\\nby peer"' in line


def test_exception_stays_on_one_line(caplog):
    log = logging.getLogger("l3node.test")
    with caplog.at_level(logging.ERROR, logger="l3node.test"):
        try:
            raise ValueError("bad slice")
        except ValueError:
            event(log, "study.failed", logging.ERROR, exc_info=True, study="1.2.3")
    line = EventFormatter("text").format(caplog.records[-1])
    assert "\n" not in line and "ValueError: bad slice" in line


def test_library_warnings_are_events_and_a_quoted_person_name_is_dropped(capsys):
    """Warnings reach the log as one event each; highdicom's person-name warning, which
    quotes the patient's name, does not reach it at all (PHI)."""
    import warnings

    from l3node.logs import configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("INFO", "json")
        warnings.warn('The string "DOE" is unlikely to represent the intended person name '
                      "since it contains only a single component.", UserWarning, stacklevel=1)
        warnings.warn("a library changed its mind", DeprecationWarning, stacklevel=1)
        lines = capsys.readouterr().err.splitlines()
    finally:
        logging.captureWarnings(False)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert "DOE" not in "\n".join(lines)
    docs = [json.loads(line) for line in lines]
    assert any("a library changed its mind" in d.get("msg", "") for d in docs), lines


def test_serve_writes_json_lines_with_hashed_uids(tmp_path, chest_study):
    """The real `l3node serve` process: every stderr line is one JSON event, and with
    logging.hash_uids the study's UID never appears in clear."""
    import subprocess
    import sys
    from pathlib import Path

    from l3node.config import default_model_dir

    from ..conftest import load_truth
    from ..support import free_port

    port = free_port()
    toml = tmp_path / "node.toml"
    toml.write_text(f'[node]\nhost = "127.0.0.1"\nport = {port}\n'
                    f'[paths]\nspool = "{tmp_path / "spool"}"\nstate_db = "{tmp_path / "s.db"}"\n'
                    f'[scheduler]\nstudy_quiet_s = 600\n[model]\npath = "{default_model_dir()}"\n'
                    '[logging]\nformat = "json"\nhash_uids = true\nlevel = "DEBUG"\n')
    err = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "l3node", "serve", "--config", str(toml)],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert "serving" in (proc.stdout.readline() if proc.stdout else "")
        files = sorted(Path(chest_study).glob("*.dcm"))[:3]
        res = subprocess.run(["/usr/bin/storescu", "-aec", "L3NODE", "127.0.0.1", str(port),
                              *map(str, files)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        err.close()
    uid = load_truth(chest_study)["series"]["study_instance_uid"]
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line parses
    stored = [e for e in events if e["event"] == "instance.stored"]
    assert len(stored) == 3
    assert all(e["study"] == "h:" + hashlib.sha256(uid.encode()).hexdigest()[:16]
               for e in stored)
    assert uid not in "\n".join(lines)
    assert any(e["event"] == "listener.started" for e in events)
