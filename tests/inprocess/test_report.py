"""The TID 1500 Measurement Report (l3node.compose.report) on the small phantom test_compose
uses: what it holds, that pydicom and highdicom read it back, that dciodvfy finds no error in
it, and that its UIDs are deterministic.  (The multi-frame reference: test_multiframe.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from l3node.compose import ResultUIDs, build_measurement_report, compose
from l3node.compose.report import (
    COUNT_AGREES,
    L3_FOUND,
    LOCAL_SCHEME,
    NOT_COUNTED,
    REASON,
    TRANSITIONAL,
)
from l3node.localize.opinion import Opinion
from l3node.select import load_series
from l3node.series import CTSeries

from ..conftest import load_truth

DCIODVFY = Path("/usr/bin/dciodvfy")
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
MODEL = "test-1.0"
AGREES = Opinion(mode="flag", agreement="agree", count={"bodies": []}, transitional=False)


@pytest.fixture(scope="module")
def study(small_abdomen_study: Path) -> tuple[CTSeries, dict]:
    return load_series(small_abdomen_study), load_truth(small_abdomen_study)


@pytest.fixture(scope="module")
def found(study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    series, truth = study
    out = compose(series, truth["l3"]["middle_index"], 0.87, MODEL,
                  tmp_path_factory.mktemp("sr-found"), anatomy="anatomy agrees",
                  opinion=AGREES)
    return out.of_kind("sr").path  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def not_found(study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    series, _ = study
    out = compose(series, None, 0.0, MODEL, tmp_path_factory.mktemp("sr-not-found"),
                  reason="no L3 in the field of view", not_found_sc_enabled=False,
                  opinion=Opinion(mode="flag", note="the network found no L3; no fallback"))
    return out.of_kind("sr").path  # type: ignore[union-attr]


def _items(ds) -> list:
    """Every content item of the tree, depth first."""
    out = []
    for item in ds.get("ContentSequence", []):
        out.append(item)
        out += _items(item)
    return out


def _code(item) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return (c.CodeValue, c.CodingSchemeDesignator)


def _value(items: list, concept) -> tuple[str, str]:
    (item,) = [i for i in items if i.ValueType == "CODE" and _code(i) == (
        concept.value, concept.scheme_designator)]
    c = item.ConceptCodeSequence[0]
    return (c.CodeValue, c.CodingSchemeDesignator)


def test_the_found_report_points_at_the_l3_slice_with_the_confidence(study, found):
    series, truth = study
    i = truth["l3"]["middle_index"]
    l3_uid = series.slices[i].sop_instance_uid
    ds = pydicom.dcmread(found)
    ct = pydicom.dcmread(series.slices[i].path, stop_before_pixels=True)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid, MODEL)
    assert (ds.SOPClassUID, ds.Modality, ds.SeriesNumber) == (SR_STORAGE, "SR", 9303)
    assert (ds.SOPInstanceUID, ds.SeriesInstanceUID) == (uids.sr, uids.sr_series)
    assert ds.StudyInstanceUID == series.study_instance_uid and ds.PatientID == ct.PatientID
    assert ds.SeriesDescription == "L3 (automated)" and ds.CompletionFlag == "COMPLETE"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == LOCAL_SCHEME
    evidence = {r.ReferencedSOPInstanceUID for e in ds.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    assert evidence == {l3_uid}
    items = _items(ds)
    (point,) = [x for x in items if x.ValueType == "SCOORD"]
    assert point.GraphicType == "POINT"
    assert list(point.GraphicData) == [series.slices[i].columns / 2, series.slices[i].rows / 2]
    (img,) = point.ContentSequence
    assert img.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == l3_uid
    assert "ReferencedFrameNumber" not in img.ReferencedSOPSequence[0]  # single-frame CT
    nums = {_code(x): x.MeasuredValueSequence[0] for x in items if x.ValueType == "NUM"}
    assert float(nums[("122157", "DCM")].NumericValue) == pytest.approx(0.87)
    assert nums[("122157", "DCM")].MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert float(nums[("110903", "DCM")].NumericValue) == pytest.approx(series.slices[i].z_mm)
    assert _value(items, codes.SCT.FindingSite) == ("36470004", "SCT")
    assert _value(items, COUNT_AGREES) == ("373066001", "SCT")  # Yes
    assert _value(items, TRANSITIONAL) == ("373067005", "SCT")  # No
    # highdicom parses it as a TID 1500 report with one planar ROI group.
    sr = hd.sr.srread(found)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    (group,) = sr.content.get_planar_roi_measurement_groups()
    assert group.finding_type == codes.SCT.L3Vertebra
    (source,) = group.roi.ContentSequence  # the region's source image
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == l3_uid
    (prob, z) = group.get_measurements()
    assert prob.name == codes.DCM.Probability and prob.value == pytest.approx(0.87)
    assert z.unit == hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    assert str(group.tracking_identifier) == "L3 slice"


def test_the_not_found_report_says_no_and_why(study, not_found):
    series, _ = study
    ds = pydicom.dcmread(not_found)
    assert ds.SOPInstanceUID == ResultUIDs.derive(
        series.study_instance_uid, series.series_instance_uid, MODEL).sr
    items = _items(ds)
    assert not [x for x in items if x.ValueType in ("SCOORD", "NUM")]
    assert _value(items, L3_FOUND) == ("373067005", "SCT")  # No
    assert _value(items, COUNT_AGREES) == (NOT_COUNTED.value, LOCAL_SCHEME)
    assert not [x for x in items if x.ValueType == "CODE" and _code(x) == (
        TRANSITIONAL.value, LOCAL_SCHEME)]  # no count was made: nothing to say about it
    (text,) = [x for x in items if x.ValueType == "TEXT" and _code(x)[1] == LOCAL_SCHEME]
    assert _code(text) == (REASON.value, LOCAL_SCHEME)
    assert text.TextValue == "no L3 in the field of view"
    sr = hd.sr.srread(not_found)
    (group,) = sr.content.get_image_measurement_groups()
    assert group.finding_type == codes.SCT.L3Vertebra


@pytest.mark.skipif(not DCIODVFY.exists(),
                    reason=f"{DCIODVFY} not found (Debian package dicom3tools: `make peers`)")
@pytest.mark.parametrize("which", ["found", "not_found"])
def test_dciodvfy_reports_no_errors(request, which):
    path = request.getfixturevalue(which)
    res = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert "Error" not in out and "Comprehensive3DSR" in out, out


def test_the_report_is_deterministic_and_the_opinion_is_coded_as_it_was(study):
    series, truth = study
    i = truth["l3"]["middle_index"]
    a = build_measurement_report(series, i, 0.5, MODEL, opinion=AGREES)
    b = build_measurement_report(series, i, 0.5, MODEL, opinion=AGREES)
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert build_measurement_report(series, i, 0.5, "2.0").SOPInstanceUID != a.SOPInstanceUID
    off = _items(build_measurement_report(series, i, 0.5, MODEL, opinion=Opinion(mode="off",
                                                                                 agreement="off")))
    assert not [x for x in off if x.ValueType == "CODE" and _code(x)[1] == LOCAL_SCHEME]
    odd = Opinion(mode="flag", agreement="disagree", count={"bodies": []}, transitional=True)
    items = _items(build_measurement_report(series, i, 0.5, MODEL, opinion=odd))
    assert _value(items, COUNT_AGREES) == ("373067005", "SCT")  # No
    assert _value(items, TRANSITIONAL) == ("373066001", "SCT")  # Yes
    with pytest.raises(ValueError, match=r'"confidence" must be in \[0, 1\]'):
        build_measurement_report(series, i, 1.5, MODEL)
    with pytest.raises(ValueError, match='"index" must be in'):
        build_measurement_report(series, len(series), 0.5, MODEL)
