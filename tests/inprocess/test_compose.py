"""The result objects (l3node.compose) on a small phantom: what each builder makes, that it
survives a write/read, that dciodvfy finds no error in it, and that bad input is refused.

One 10 mm, 128² abdomen-pelvis phantom (37 slices) is made for the module, so the file runs
in a few seconds.
"""

from __future__ import annotations

import io
import math
import subprocess
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from l3node.compose import (
    Composed,
    ComposedObject,
    ResultUIDs,
    build_axial_sc,
    build_key_object,
    build_not_found_sc,
    build_sagittal_sc,
    compose,
)
from l3node.select import load_series
from l3node.series import CTSeries

from ..conftest import load_truth

DCIODVFY = Path("/usr/bin/dciodvfy")
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
KOS_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR (compose.report)
MODEL = "test-1.0"
IOD = {"sc-axial": "SCImage", "sc-sagittal": "SCImage", "sc-not-found": "SCImage",
       "kos": "KeyObjectSelectionDocument", "sr": "Comprehensive3DSR"}
STORAGE = {"kos": KOS_STORAGE, "sr": SR_STORAGE}


@pytest.fixture(scope="module")
def study(small_abdomen_study: Path) -> tuple[CTSeries, dict]:
    return load_series(small_abdomen_study), load_truth(small_abdomen_study)


@pytest.fixture(scope="module")
def found(study: tuple[CTSeries, dict], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Composed, Composed]:
    """The found result composed twice, into two folders (for determinism)."""
    series, truth = study
    i = truth["l3"]["middle_index"]
    return tuple(compose(series, i, 0.87, MODEL, tmp_path_factory.mktemp(f"found-{k}"),
                         anatomy="vertebra count agrees: L3") for k in "ab")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def not_found(study: tuple[CTSeries, dict], tmp_path_factory: pytest.TempPathFactory
              ) -> Composed:
    series, _ = study
    return compose(series, None, 0.0, MODEL, tmp_path_factory.mktemp("not-found"),
                   reason="no L3 in the field of view", not_found_sc_enabled=True)


def _round_trip(path: Path) -> pydicom.Dataset:
    """The file as read, written to memory and read back: must be the same dataset."""
    ds = pydicom.dcmread(path)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    buf.seek(0)
    back = pydicom.dcmread(buf)
    assert back == ds, path.name
    return back


def _kos_references(kos: pydicom.Dataset) -> set[str]:
    return {item.ReferencedSOPInstanceUID
            for e in kos.CurrentRequestedProcedureEvidenceSequence
            for s in e.ReferencedSeriesSequence for item in s.ReferencedSOPSequence}


def _content_references(kos: pydicom.Dataset) -> set[str]:
    return {ref.ReferencedSOPInstanceUID for item in kos.ContentSequence
            for ref in item.get("ReferencedSOPSequence", [])}


# --- what is composed ------------------------------------------------------------------------
def test_found_result_round_trips_and_the_kos_points_at_the_l3_slice(study, found):
    series, truth = study
    a, b = found
    assert [o.kind for o in a.objects] == ["sc-axial", "sc-sagittal", "sr", "kos"]
    assert a.files == [o.path for o in a.objects] and all(p.is_file() for p in a.files)
    ct = pydicom.dcmread(series.slices[0].path, stop_before_pixels=True)
    by_kind: dict[str, pydicom.Dataset] = {}
    for o in a.objects:
        ds = _round_trip(o.path)
        by_kind[o.kind] = ds
        assert ds.SOPClassUID == o.sop_class_uid == STORAGE.get(o.kind, SC_STORAGE), o.kind
        assert ds.SOPInstanceUID == o.sop_instance_uid
        assert ds.file_meta.MediaStorageSOPInstanceUID == o.sop_instance_uid
        assert ds.StudyInstanceUID == series.study_instance_uid
        assert ds.PatientID == ct.PatientID
        assert ds.SeriesDescription == "L3 (automated)"
    kos, axial = by_kind["kos"], by_kind["sc-axial"]
    l3_uid = truth["l3"]["middle_sop_instance_uid"]
    assert series.slices[truth["l3"]["middle_index"]].sop_instance_uid == l3_uid
    assert _kos_references(kos) == {l3_uid, axial.SOPInstanceUID}
    assert _content_references(kos) == {l3_uid, axial.SOPInstanceUID}
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"
    for kind in ("sc-axial", "sc-sagittal"):
        assert by_kind[kind].BurnedInAnnotation == "YES"
    assert axial.PhotometricInterpretation == "MONOCHROME2"
    assert axial.Rows > series.slices[0].rows  # the banner is added above the slice
    assert by_kind["sc-sagittal"].PhotometricInterpretation == "RGB"
    # Deterministic: composing again gives the same UIDs and file names ...
    assert [o.sop_instance_uid for o in b.objects] == [o.sop_instance_uid for o in a.objects]
    assert [p.name for p in b.files] == [p.name for p in a.files]
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid, MODEL)
    assert [o.sop_instance_uid for o in a.objects] == [uids.sc_axial, uids.sc_sagittal,
                                                       uids.sr, uids.ko]
    # ... and another model version different ones.
    other = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid, "2.0")
    assert not {other.sc_axial, other.sc_sagittal, other.sr, other.ko} & {
        o.sop_instance_uid for o in a.objects}


def test_not_found_result_is_one_sc_a_report_and_no_kos(study, not_found, tmp_path):
    series, _ = study
    assert [o.kind for o in not_found.objects] == ["sc-not-found", "sr"]
    ds = _round_trip(not_found.files[0])
    assert ds.SOPClassUID == SC_STORAGE
    assert ds.SOPInstanceUID == ResultUIDs.derive(
        series.study_instance_uid, series.series_instance_uid, MODEL).sc_not_found
    assert ds.StudyInstanceUID == series.study_instance_uid
    assert not_found.of_kind("kos") is None
    # Without the SC the report still says "not found" (to a viewer that reads SR).
    off = compose(series, None, 0.0, MODEL, tmp_path / "off", not_found_sc_enabled=False)
    assert [o.kind for o in off.objects] == ["sr"]
    assert [p.name for p in (tmp_path / "off").iterdir()] == [off.files[0].name]


@pytest.mark.skipif(not DCIODVFY.exists(),
                    reason=f"{DCIODVFY} not found (Debian package dicom3tools: `make peers`)")
@pytest.mark.parametrize("which", ["found", "not_found"])
def test_dciodvfy_reports_no_errors(request, which):
    composed = request.getfixturevalue(which)
    composed = composed[0] if isinstance(composed, tuple) else composed
    for o in composed.objects:
        res = subprocess.run([str(DCIODVFY), str(o.path)], capture_output=True, text=True,
                             timeout=60)
        out = res.stdout + res.stderr
        assert "Error" not in out, (o.kind, out)
        assert IOD[o.kind] in out, (o.kind, out)


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(("index", "confidence", "error", "match"), [
    (-1, 0.5, ValueError, r'"index" must be in \[0, 37\)'),
    (37, 0.5, ValueError, r'"index" must be in \[0, 37\)'),
    ("3", 0.5, TypeError, '"index" must be an integer'),
    (True, 0.5, TypeError, '"index" must be an integer'),
    (3, 1.5, ValueError, r'"confidence" must be in \[0, 1\]'),
    (3, -0.01, ValueError, r'"confidence" must be in \[0, 1\]'),
    (3, math.nan, ValueError, r'"confidence" must be in \[0, 1\]'),
    (3, "0.9", TypeError, '"confidence" must be a number'),
])
def test_axial_builder_rejects_bad_decisions(study, index, confidence, error, match):
    series, _ = study
    assert len(series) == 37  # the numbers in the messages above
    with pytest.raises(error, match=match):
        build_axial_sc(series, index, confidence, MODEL)


def test_every_builder_rejects_a_series_without_slices_or_a_bad_index(study):
    series, _ = study
    empty = replace(series, slices=[])
    sc = build_axial_sc(series, 3, 0.5, MODEL)
    for call in (lambda s: build_axial_sc(s, 0, 0.5, MODEL),
                 lambda s: build_sagittal_sc(s, 0, MODEL),
                 lambda s: build_not_found_sc(s, "why", MODEL),
                 lambda s: build_key_object(s, 0, 0.5, MODEL, sc)):
        with pytest.raises(ValueError, match="has no slices"):
            call(empty)
    with pytest.raises(ValueError, match='"index" must be in'):
        build_sagittal_sc(series, len(series), MODEL)
    with pytest.raises(ValueError, match='"index" must be in'):
        build_key_object(series, -1, 0.5, MODEL, sc)
    with pytest.raises(ValueError, match='"confidence" must be in'):
        build_key_object(series, 3, 2.0, MODEL, sc)
    with pytest.raises(ValueError, match='"model_version" must not be empty'):
        build_not_found_sc(series, "why", " ")
    with pytest.raises(ValueError, match='"max_rows" must be a positive integer'):
        build_sagittal_sc(series, 3, MODEL, max_rows=0)


def test_key_object_needs_a_secondary_capture_of_the_same_study(study):
    series, _ = study
    sc = build_axial_sc(series, 3, 0.5, MODEL)
    ct = pydicom.dcmread(series.slices[3].path, stop_before_pixels=True)
    with pytest.raises(ValueError, match='"key_image" must be a Secondary Capture'):
        build_key_object(series, 3, 0.5, MODEL, ct)
    sc.StudyInstanceUID = "1.2.3.4"
    with pytest.raises(ValueError, match=r'"key_image" belongs to study 1\.2\.3\.4'):
        build_key_object(series, 3, 0.5, MODEL, sc)


def test_compose_writes_nothing_on_bad_input(study, tmp_path):
    series, _ = study
    with pytest.raises(ValueError, match=r'"confidence" must be in \[0, 1\]'):
        compose(series, 3, 87.0, MODEL, tmp_path)  # a percentage, not a probability
    with pytest.raises(ValueError, match='"index" must be in'):
        compose(series, len(series), 0.9, MODEL, tmp_path)
    assert not list(tmp_path.glob("*.dcm"))
    with pytest.raises(ValueError, match='"kind" must be one of'):
        ComposedObject("sc", tmp_path / "x.dcm", "1.2", SC_STORAGE)  # type: ignore[arg-type]
