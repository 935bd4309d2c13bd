"""The state store on its own: claims, outcomes, the export queue, migrations."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from l3node.state import ExportState, StudyState, instances, open_db, open_reader, studies
from l3node.state import exports as queue
from l3node.state.studies import Outcome
from l3node.state.views import key_image, study_status


def _receive(db: sqlite3.Connection, study: str, sop: str) -> None:
    instances.record_instance(db, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                              sop_instance_uid=sop, study_instance_uid=study,
                              series_instance_uid="1.2.3", path=Path(f"/x/{sop}.dcm"),
                              size=10, calling_ae_title="SCU")


def _found(study: str, version: int, tmp: Path) -> Outcome:
    return Outcome(study, version, StudyState.DONE, "found", series_uid="1.2.3", l3_index=4,
                   l3_sop_instance_uid="1.2.3.4", z_mm=-120.0, confidence=0.9,
                   objects=[{"kind": "sc-axial", "path": str(tmp / "SC.dcm"),
                             "sop_instance_uid": "9.1"},
                            {"kind": "kos", "path": str(tmp / "KO.dcm"),
                             "sop_instance_uid": "9.2"}])


def test_a_study_is_claimed_once_and_its_outcome_queues_one_export_per_destination(tmp_path):
    db = open_db(tmp_path / "state.db")
    _receive(db, "1.1", "1.1.1")
    assert studies.mark_complete(db, time.time() + 100, quiet_s=60, max_wait_s=1800) == 1
    assert studies.complete_batch(db, 4) == ["1.1"]
    assert studies.claim(db, "1.1") == 1
    assert studies.claim(db, "1.1") is None  # a second worker gets nothing
    studies.record_outcome(db, _found("1.1", 1, tmp_path), ["pacs", "archive"])
    row = study_status(db)[0]
    assert row["state"] == StudyState.DONE and row["l3_index"] == 4
    assert key_image(row) == tmp_path / "SC.dcm"  # by its recorded kind, not file order
    due = queue.due(db, time.time() + 1)
    assert sorted(d.destination for d in due) == ["archive", "pacs"]
    assert queue.mark_sent(db, due[0], time.time()) is None  # one destination still open
    latency = queue.mark_sent(db, due[1], time.time())
    assert latency is not None and latency >= 0
    assert study_status(db)[0]["state"] == StudyState.EXPORTED


def test_a_released_study_completes_after_the_settle_period_not_the_quiet_period(tmp_path):
    db = open_db(tmp_path / "state.db")
    _receive(db, "1.1", "1.1.1")
    _receive(db, "2.2", "2.2.1")
    now = time.time()
    instances.mark_released(db, ["1.1"], now)
    assert studies.mark_complete(db, now + 1, 60, 1800, settle_s=3) == 0  # settling
    assert studies.mark_complete(db, now + 4, 60, 1800, settle_s=3) == 1
    assert studies.complete_batch(db, 4) == ["1.1"]  # 2.2 (never released) still waits
    _receive(db, "2.2", "2.2.2")
    instances.mark_released(db, ["2.2"], time.time())
    _receive(db, "2.2", "2.2.3")  # another association's instance, after the release
    assert studies.mark_complete(db, time.time() + 10, 60, 1800, settle_s=3) == 0


def test_a_restart_keeps_a_released_study_settling_and_restarts_the_others(tmp_path):
    db = open_db(tmp_path / "state.db")
    _receive(db, "1.1", "1.1.1")
    _receive(db, "2.2", "2.2.1")
    instances.mark_released(db, ["1.1"], time.time())
    studies.restart_quiet_periods(db, time.time() + 100)  # the node was down 100 s
    assert studies.mark_complete(db, time.time() + 100, 60, 1800, settle_s=3) == 1
    assert studies.complete_batch(db, 4) == ["1.1"]


def test_an_instance_during_processing_sends_the_study_back_to_receiving(tmp_path):
    db = open_db(tmp_path / "state.db")
    _receive(db, "1.1", "1.1.1")
    studies.mark_complete(db, time.time() + 100, 60, 1800)
    version = studies.claim(db, "1.1")
    _receive(db, "1.1", "1.1.2")  # a late instance while the run is busy
    studies.record_outcome(db, _found("1.1", version, tmp_path), ["pacs"])
    assert study_status(db)[0]["state"] == StudyState.RECEIVING  # the run does not end it


def test_a_newer_run_supersedes_undelivered_exports_and_failed_ones_can_be_retried(tmp_path):
    db = open_db(tmp_path / "state.db")
    _receive(db, "1.1", "1.1.1")
    studies.mark_complete(db, time.time() + 100, 60, 1800)
    studies.record_outcome(db, _found("1.1", studies.claim(db, "1.1"), tmp_path), ["pacs"])
    _receive(db, "1.1", "1.1.2")
    studies.mark_complete(db, time.time() + 100, 60, 1800)
    studies.record_outcome(db, _found("1.1", studies.claim(db, "1.1"), tmp_path), ["pacs"])
    states = dict(db.execute("SELECT version, state FROM export").fetchall())
    assert states == {1: ExportState.SUPERSEDED, 2: ExportState.PENDING}
    (d,) = queue.due(db, time.time() + 1)
    queue.mark_failed(db, d, 6, "refused")
    assert queue.retry_failed(db, "1.1") == 1
    assert queue.retry_failed(db, "1.1") == 0


def test_resume_makes_interrupted_runs_complete_again(tmp_path):
    db = open_db(tmp_path / "state.db")
    _receive(db, "1.1", "1.1.1")
    studies.mark_complete(db, time.time() + 100, 60, 1800)
    studies.claim(db, "1.1")
    assert studies.resume_interrupted(db) == 1
    assert studies.complete_batch(db, 1) == ["1.1"]


def test_an_older_database_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE result (study_instance_uid TEXT NOT NULL, version INTEGER NOT NULL, "
        "series_instance_uid TEXT, status TEXT NOT NULL, l3_index INTEGER, "
        "l3_sop_instance_uid TEXT, z_mm REAL, confidence REAL, reason TEXT, "
        "skipped_series TEXT, files TEXT NOT NULL, created_at REAL NOT NULL, "
        "PRIMARY KEY (study_instance_uid, version));"
        "INSERT INTO result VALUES ('1.1', 1, NULL, 'found', 3, NULL, NULL, NULL, '', '{}', "
        "'[]', 0);")
    old.commit()
    old.close()
    db = open_db(path)
    cols = {r[1] for r in db.execute("PRAGMA table_info(result)")}
    assert {"processing_s", "objects", "l3_frame_number"} <= cols
    reader = open_reader(path)
    assert reader.execute("SELECT status FROM result").fetchone() == ("found",)
