"""The IHE IOCM rejection note (l3node.compose.rejection) on the small phantom: its title,
that it references exactly the superseded objects, that its UIDs are deterministic, that
dciodvfy finds no error in it, and that a re-run overwriting the same UIDs needs none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from l3node.compose import Composed, compose
from l3node.compose.rejection import rejection_uids, write_rejection_note
from l3node.select import load_series
from l3node.series import CTSeries
from l3node.state.exports import Due

from ..conftest import load_truth

DCIODVFY = Path("/usr/bin/dciodvfy")


def _records(c: Composed) -> list[dict]:
    """What the pipeline records of a result's objects."""
    return [{"kind": o.kind, "path": str(o.path), "sop_instance_uid": o.sop_instance_uid,
             "sop_class_uid": o.sop_class_uid, "series_instance_uid": o.series_instance_uid}
            for o in c.objects]


@pytest.fixture(scope="module")
def runs(small_abdomen_study: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[CTSeries, Composed, Composed]:
    """Run 1 with model 1.0, run 2 with model 2.0 (new UIDs) of the same series."""
    series = load_series(small_abdomen_study)
    i = load_truth(small_abdomen_study)["l3"]["middle_index"]
    return (series, compose(series, i, 0.9, "m-1.0", tmp_path_factory.mktemp("v1")),
            compose(series, i, 0.9, "m-2.0", tmp_path_factory.mktemp("v2")))


def _note(runs, tmp_path: Path, old_records: list[dict] | None = None):
    series, old, new = runs
    written = write_rejection_note(series, old_records or _records(old),
                                   {o.sop_instance_uid for o in new.objects}, 1, 2, tmp_path)
    assert written is not None
    return written


def test_the_note_is_titled_rejected_and_references_exactly_the_old_objects(runs, tmp_path):
    series, old, _ = runs
    path, _ = _note(runs, tmp_path)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59" and ds.Modality == "KO"
    title = ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == \
        ("113001", "DCM", "Rejected for Quality Reasons")
    assert ds.StudyInstanceUID == series.study_instance_uid
    assert ds.PatientID == pydicom.dcmread(series.slices[0].path).PatientID
    evidence = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID, s.SeriesInstanceUID)
                for e in ds.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert evidence == {(o.sop_class_uid, o.sop_instance_uid, o.series_instance_uid)
                        for o in old.objects}
    content = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID: i.ValueType
               for i in ds.ContentSequence if "ReferencedSOPSequence" in i}
    assert content == {o.sop_instance_uid: "IMAGE" if o.kind.startswith("sc-") else "COMPOSITE"
                       for o in old.objects}


def test_the_note_uids_derive_from_study_and_versions(runs, tmp_path):
    series = runs[0]
    _, a = _note(runs, tmp_path / "a")
    _, b = _note(runs, tmp_path / "b")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == \
        rejection_uids(series.study_instance_uid, 1, 2)
    assert rejection_uids(series.study_instance_uid, 1, 3)[1] != a.SOPInstanceUID
    assert rejection_uids(series.study_instance_uid, 1, 3)[0] == a.SeriesInstanceUID


def test_old_records_without_class_and_series_are_read_from_their_files(runs, tmp_path):
    _, old, _ = runs
    bare = [{"kind": o.kind, "path": str(o.path), "sop_instance_uid": o.sop_instance_uid}
            for o in old.objects]
    _, a = _note(runs, tmp_path / "a")
    _, b = _note(runs, tmp_path / "b", bare)
    assert a.CurrentRequestedProcedureEvidenceSequence == \
        b.CurrentRequestedProcedureEvidenceSequence


def test_no_note_when_the_rerun_overwrites_the_same_uids(runs, tmp_path):
    series, old, _ = runs
    same = {o.sop_instance_uid for o in old.objects}
    assert write_rejection_note(series, _records(old), same, 1, 2, tmp_path) is None
    # an earlier rejection note is never itself withdrawn
    note = {"kind": "rejection", "path": "x.dcm", "sop_instance_uid": "1.2.3",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.59", "series_instance_uid": "1.2"}
    assert write_rejection_note(series, [*_records(old), note], same, 1, 2, tmp_path) is None


def test_bad_versions_are_refused(runs, tmp_path):
    series, old, _ = runs
    with pytest.raises(ValueError, match="older version"):
        write_rejection_note(series, _records(old), set(), 2, 2, tmp_path)


def test_the_note_goes_only_to_the_destinations_it_names(tmp_path):
    files = [tmp_path / "sr.dcm", tmp_path / "rej.dcm"]
    due = {d: Due("1.1", 2, d, 0, files, ["sr", "rejection"], [None, ["pacs"]])
           for d in ("pacs", "other")}
    assert due["pacs"].files_for({"kos"}) == [files[1]]  # whatever kinds it wants
    assert due["other"].files_for({"sr"}) == [files[0]]


@pytest.mark.skipif(not DCIODVFY.exists(),
                    reason=f"{DCIODVFY} not found (Debian package dicom3tools: `make peers`)")
def test_dciodvfy_reports_no_errors(runs, tmp_path):
    path, _ = _note(runs, tmp_path)
    res = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                         timeout=60)
    out = res.stdout + res.stderr
    assert "Error" not in out, out
    assert "KeyObjectSelectionDocument" in out, out
