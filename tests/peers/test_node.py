"""The node end to end with real peers: DCMTK storescu → l3node → Orthanc (loopback)."""

from __future__ import annotations

import io
import logging
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pydicom

from l3node.config import (
    Config,
    DestinationConfig,
    ModelConfig,
    NodeConfig,
    PathsConfig,
    RetryConfig,
    SchedulerConfig,
    default_model_dir,
)
from l3node.logs import EventFormatter
from l3node.node import Node
from l3node.state.views import study_status

from ..conftest import load_truth
from ..support import Orthanc, free_port, storescu, wait_for


def _config(tmp_path: Path, orthanc: Orthanc, quiet: float = 1.0) -> Config:
    return Config(
        node=NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0),  # bound, read back
        paths=PathsConfig(spool=tmp_path / "spool", state_db=tmp_path / "state.db"),
        scheduler=SchedulerConfig(study_quiet_s=quiet, poll_s=0.5),
        model=ModelConfig(path=default_model_dir()),
        destinations=(DestinationConfig(name="pacs", kind="dimse", ae_title=orthanc.aet,
                                        host="127.0.0.1", port=orthanc.dicom_port),),
    )


def _send(port: int, folder: Path) -> None:
    storescu(port, folder)


def _orthanc_study(o: Orthanc, study_uid: str) -> dict | None:
    for sid in o.get("/studies"):  # type: ignore[union-attr]
        st = o.get(f"/studies/{sid}")
        if st["MainDicomTags"]["StudyInstanceUID"] == study_uid:  # type: ignore[index]
            return st  # type: ignore[return-value]
    return None


def _results_in_orthanc(o: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    st = _orthanc_study(o, study_uid)
    out: dict[str, list[pydicom.Dataset]] = {}
    for series_id in st["Series"] if st else []:
        series = o.get(f"/series/{series_id}")
        modality = series["MainDicomTags"].get("Modality")  # type: ignore[index]
        if modality == "CT":
            continue
        for inst in series["Instances"]:  # type: ignore[index]
            ds = pydicom.dcmread(io.BytesIO(o.raw(f"/instances/{inst}/file")))
            out.setdefault(modality, []).append(ds)
    return out


def _image_references(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The Referenced SOP Sequence items of every IMAGE content item in the report."""
    out, todo = [], list(sr.ContentSequence)
    while todo:
        item = todo.pop()
        if item.ValueType == "IMAGE":
            out += list(item.ReferencedSOPSequence)
        todo += list(item.get("ContentSequence", []))
    return out


def test_study_goes_through_the_node_into_orthanc(tmp_path, orthanc, abdomen_study, caplog):
    caplog.set_level(logging.DEBUG)
    truth = load_truth(abdomen_study)
    study_uid = truth["series"]["study_instance_uid"]
    cfg = _config(tmp_path, orthanc)
    # A second destination wanting the key object only (e.g. a body-composition tool).
    cfg = replace(cfg, destinations=(*cfg.destinations, DestinationConfig(
        name="kos-only", kind="folder", path=tmp_path / "kos-only", objects=("kos",))))
    node = Node(cfg)
    node.start()
    try:
        _send(node.receiver.port, abdomen_study)
        row = wait_for(lambda: next((s for s in node.status() if s["state"] == "exported"),
                                    None), 180, "study exported to Orthanc")
    finally:
        node.stop()
    assert row["study_instance_uid"] == study_uid and row["result"] == "found"
    chosen = row["l3_sop_instance_uid"]
    k = truth["series"]["sop_instance_uids"].index(chosen)
    z = truth["series"]["z_positions_mm"]
    assert abs(z[k] - truth["l3"]["middle_z_mm"]) <= 10.0  # the model on a held-out phantom
    res = _results_in_orthanc(orthanc, study_uid)
    assert sorted(res) == ["KO", "OT", "SR"]
    assert len(res["KO"]) == 1 and len(res["OT"]) == 2 and len(res["SR"]) == 1
    kos = res["KO"][0]
    refs = {item.ReferencedSOPInstanceUID
            for e in kos.CurrentRequestedProcedureEvidenceSequence
            for s in e.ReferencedSeriesSequence for item in s.ReferencedSOPSequence}
    assert chosen in refs
    assert {sc.SOPInstanceUID for sc in res["OT"]} & refs  # the KOS points at the L3 SC too
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert all(sc.StudyInstanceUID == study_uid for sc in res["OT"])
    # The measurement report, read back from Orthanc, points at the chosen slice.
    sr = res["SR"][0]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert [r.ReferencedSOPInstanceUID for r in _image_references(sr)] == [chosen]
    assert [f.name for f in (tmp_path / "kos-only").iterdir()] == [
        f"KO-{kos.SOPInstanceUID}.dcm"]  # objects = ["kos"]: the KOS and nothing else
    for f in (tmp_path / "spool" / "_results").rglob("*.dcm"):
        r = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
        out = r.stdout + r.stderr
        assert "Error" not in out, (f.name, out)
    # No PHI in the logs (UIDs are fine): name, ID and birth date never appear, in the
    # lines the node writes (l3node.logs) nor in any library's message at DEBUG.
    ct = pydicom.dcmread(next(abdomen_study.glob("*.dcm")), stop_before_pixels=True)
    text = "\n".join(EventFormatter().format(r) for r in caplog.records)
    assert f"study.processed study={study_uid}" in text  # the logs were captured ...
    for phi in (str(ct.PatientName), ct.PatientID, ct.PatientBirthDate):
        assert phi not in text, phi  # ... and hold no patient identifiers


def test_restart_between_receive_and_processing_gives_one_result_set(tmp_path, orthanc,
                                                                      chest_study):
    cfg = _config(tmp_path, orthanc, quiet=3.0)
    cfg = replace(cfg, scheduler=replace(cfg.scheduler, study_quiet_s=3.0))
    study_uid = load_truth(chest_study)["series"]["study_instance_uid"]
    first = Node(cfg)
    first.start()
    _send(first.receiver.port, chest_study)
    first.stop()  # acknowledged, not yet processed
    assert [s["state"] for s in study_status(_db(cfg))] == ["receiving"]
    second = Node(cfg)
    second.start()
    try:
        wait_for(lambda: any(s["state"] == "exported" for s in second.status()), 180,
                 "study exported after restart")
        again = second.status()
    finally:
        second.stop()
    assert again[0]["result"] == "not_found" and again[0]["version"] == 1
    res = _results_in_orthanc(orthanc, study_uid)
    # "L3 not in field of view": one SC, and the report saying so
    assert sorted(res) == ["OT", "SR"] and len(res["OT"]) == 1 and len(res["SR"]) == 1


def _db(cfg: Config) -> sqlite3.Connection:
    return sqlite3.connect(str(cfg.paths.state_db))


def test_stow_rs_export_into_orthanc_dicomweb(tmp_path, abdomen_study):
    o = Orthanc(tmp_path / "orthanc-web", dicomweb=True)
    try:
        cfg = _config(tmp_path, o)
        cfg = replace(cfg, destinations=(DestinationConfig(
            name="web", kind="stowrs", url=f"http://127.0.0.1:{o.http_port}/dicom-web"),))
        node = Node(cfg)
        node.start()
        try:
            _send(node.receiver.port, abdomen_study)
            row = wait_for(lambda: next((s for s in node.status()
                                         if s["state"] in ("exported", "failed")), None),
                           180, "study exported over STOW-RS")
        finally:
            node.stop()
        assert row["state"] == "exported", row
        res = _results_in_orthanc(o, load_truth(abdomen_study)["series"]["study_instance_uid"])
        assert sorted(res) == ["KO", "OT", "SR"] and len(res["OT"]) == 2
    finally:
        o.stop()


def test_a_released_series_completes_at_once_and_a_second_series_reruns(tmp_path, orthanc,
                                                                         abdomen_study):
    """A PACS sending series by series: the first association's release completes the study
    after the settle period (the quiet period is ten minutes); a second series on a new
    association re-opens it, and the re-run's results replace the first ones in the PACS
    (the same series wins: same UIDs, overwritten, no rejection note).  A third series that
    ranks higher (thinner slices) gives results with new UIDs: the node sends them and an
    IOCM rejection note that references exactly the objects the earlier runs left there."""
    truth = load_truth(abdomen_study)
    files = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f
             for f in abdomen_study.glob("*.dcm")}
    sops = truth["series"]["sop_instance_uids"]
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for sop in sops:
        shutil.copy(files[sop], first)
    series_uid = pydicom.uid.generate_uid(prefix=None)  # 2.25.…: room for ".k"
    for k, sop in enumerate(sops[-10:]):  # a second, shorter series of the same study
        ds = pydicom.dcmread(files[sop])
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, int(ds.SeriesNumber) + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series_uid}.{k + 1}"
        ds.save_as(second / f"{k:03d}.dcm")
    third, third_uid = tmp_path / "third", pydicom.uid.generate_uid(prefix=None)
    third.mkdir()
    for k, sop in enumerate(sops):  # the full series again, thinner: it ranks first
        ds = pydicom.dcmread(files[sop])
        ds.SeriesInstanceUID, ds.SeriesNumber = third_uid, int(ds.SeriesNumber) + 2
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{third_uid}.{k + 1}"
        ds.SliceThickness = float(ds.SliceThickness) - 0.5
        ds.save_as(third / f"{k:03d}.dcm")
    study_uid = truth["series"]["study_instance_uid"]
    cfg = _config(tmp_path, orthanc, quiet=600.0)
    cfg = replace(cfg, scheduler=replace(cfg.scheduler, study_settle_s=1.0))
    node = Node(cfg)
    node.start()
    try:
        _send(node.receiver.port, first)
        wait_for(lambda: any(s["state"] == "exported" for s in node.status()), 180, "v1")
        _send(node.receiver.port, second)
        row = wait_for(lambda: next((s for s in node.status() if s["state"] == "exported"
                                     and s["version"] == 2), None), 180, "v2 exported")
        assert row["instances"] == len(sops) + 10
        assert row["l3_sop_instance_uid"] in sops  # still the full series' slice
        res = _results_in_orthanc(orthanc, study_uid)
        assert len(res["KO"]) == 1 and len(res["OT"]) == 2 and len(res["SR"]) == 1  # replaced
        old = {(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))
               for kind in res.values() for ds in kind}
        _send(node.receiver.port, third)
        row = wait_for(lambda: next((s for s in node.status() if s["state"] == "exported"
                                     and s["version"] == 3), None), 180, "v3 exported")
    finally:
        node.stop()
    assert row["l3_sop_instance_uid"].startswith(third_uid + ".")  # the third series won
    assert [o["kind"] for o in row["objects"]][-1] == "rejection"  # sent after the results
    res = _results_in_orthanc(orthanc, study_uid)
    notes = [ds for ds in res["KO"] if ds.ConceptNameCodeSequence[0].CodeValue == "113001"]
    assert len(notes) == 1 and len(res["KO"]) == 3  # the old KOS, the new one, the note
    assert len(res["OT"]) == 4 and len(res["SR"]) == 2  # Orthanc keeps what a note rejects
    title = notes[0].ConceptNameCodeSequence[0]
    assert (title.CodingSchemeDesignator, title.CodeMeaning) == \
        ("DCM", "Rejected for Quality Reasons")
    assert {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID),
             str(se.SeriesInstanceUID))
            for e in notes[0].CurrentRequestedProcedureEvidenceSequence
            for se in e.ReferencedSeriesSequence for i in se.ReferencedSOPSequence} == old


def test_retention_removes_spooled_input_after_export(tmp_path, orthanc, chest_study):
    cfg = _config(tmp_path, orthanc)
    cfg = replace(cfg, housekeeping=replace(cfg.housekeeping, retention_h=0.0005))  # ~2 s
    node = Node(cfg)
    node.start()
    try:
        _send(node.receiver.port, chest_study)
        wait_for(lambda: any(s["state"] == "exported" for s in node.status()), 180, "exported")
        wait_for(lambda: not list((tmp_path / "spool").glob("2.25.*")), 60,
                 "spooled input removed")
        assert node.status()[0]["state"] == "exported"  # the record stays
    finally:
        node.stop()


def test_pacs_down_ends_failed_then_retry_delivers(tmp_path, chest_study):
    port = free_port()
    cfg = Config(
        node=NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0),  # bound, read back
        paths=PathsConfig(spool=tmp_path / "spool", state_db=tmp_path / "state.db"),
        scheduler=SchedulerConfig(study_quiet_s=1.0, poll_s=0.3),
        model=ModelConfig(path=default_model_dir()),
        retry=RetryConfig(max_attempts=3, backoff_s=0.2, backoff_max_s=1.0),
        destinations=(DestinationConfig(name="pacs", kind="dimse", ae_title="ORTHANC",
                                        host="127.0.0.1", port=port),),
    )
    node = Node(cfg)
    node.start()
    try:
        _send(node.receiver.port, chest_study)
        row = wait_for(lambda: next((s for s in node.status()
                                     if s["exports"].get("pacs", {}).get("state") == "failed"),
                                    None), 120, "export failed while the PACS is down")
        assert row["exports"]["pacs"]["attempts"] == 3
        assert "no association" in row["exports"]["pacs"]["last_error"]
        o = Orthanc(tmp_path / "orthanc", dicom_port=port)
        try:
            toml = tmp_path / "node.toml"
            toml.write_text(f'[paths]\nspool = "{tmp_path / "spool"}"\n'
                            f'state_db = "{tmp_path / "state.db"}"\n'
                            f'[[destinations]]\nname = "pacs"\nkind = "dimse"\n'
                            f'ae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {port}\n')
            echo = subprocess.run([sys.executable, "-m", "l3node", "echo", "pacs", "--config",
                                   str(toml)], capture_output=True, text=True, timeout=60)
            assert echo.returncode == 0 and "C-ECHO OK" in echo.stdout, echo.stdout
            retry = subprocess.run([sys.executable, "-m", "l3node", "retry",
                                    row["study_instance_uid"], "--config", str(toml)],
                                   capture_output=True, text=True, timeout=60)
            assert retry.returncode == 0 and "1 failed export(s)" in retry.stdout, retry.stdout
            wait_for(lambda: any(s["state"] == "exported" for s in node.status()), 60,
                     "exported after retry")
            assert len(_results_in_orthanc(o, row["study_instance_uid"])["OT"]) == 1
        finally:
            o.stop()
    finally:
        node.stop()


def test_a_rerun_supersedes_the_undelivered_results_of_the_earlier_run(tmp_path, abdomen_study):
    """PACS down: run 1's export keeps retrying; late instances make run 2, whose results
    replace run 1's in the queue (same SOP Instance UIDs: run 1 must never be sent after it).
    Then the PACS comes up and receives run 2 only."""
    files = sorted(abdomen_study.glob("*.dcm"))
    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir()
    late.mkdir()
    for k, f in enumerate(files):
        shutil.copy(f, late if k >= len(files) - 10 else early)
    port = free_port()
    cfg = Config(
        node=NodeConfig(ae_title="L3NODE", host="127.0.0.1", port=0),  # bound, read back
        paths=PathsConfig(spool=tmp_path / "spool", state_db=tmp_path / "state.db"),
        scheduler=SchedulerConfig(study_quiet_s=1.0, poll_s=0.3),
        model=ModelConfig(path=default_model_dir()),
        retry=RetryConfig(max_attempts=1000, backoff_s=0.2, backoff_max_s=0.5),
        destinations=(DestinationConfig(name="pacs", kind="dimse", ae_title="ORTHANC",
                                        host="127.0.0.1", port=port),),
    )
    db = sqlite3.connect(tmp_path / "state.db", timeout=30)

    def exports() -> dict[int, tuple[str, int]]:
        return {v: (s, a) for v, s, a in db.execute(
            "SELECT version, state, attempts FROM export ORDER BY version")}

    node = Node(cfg)
    node.start()
    o = None
    try:
        _send(node.receiver.port, early)
        wait_for(lambda: exports().get(1, ("", 0))[1] >= 2, 120, "run 1 retrying")
        _send(node.receiver.port, late)
        wait_for(lambda: 2 in exports(), 180, "run 2 queued")
        assert exports()[1][0] == "superseded"
        attempts_1 = exports()[1][1]
        o = Orthanc(tmp_path / "orthanc", dicom_port=port)
        wait_for(lambda: exports()[2][0] == "sent", 60, "run 2 delivered")
        row = next(s for s in node.status())
        assert row["state"] == "exported" and row["version"] == 2
        assert exports()[1] == ("superseded", attempts_1)  # never tried again
        study_uid = row["study_instance_uid"]
        res = _results_in_orthanc(o, study_uid)
        assert len(res["KO"]) == 1 and len(res["OT"]) == 2 and len(res["SR"]) == 1
        changes = o.get("/changes?limit=1000")["Changes"]  # type: ignore[index]
        assert sum(c["ChangeType"] == "NewInstance" for c in changes) == 4
    finally:
        node.stop()
        db.close()
        if o is not None:
            o.stop()
