"""Series selection: one ranking for the node, ``l3node predict`` and the trainer."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from l3node.config import SelectionConfig
from l3node.select import load_series, select_series
from l3node.series import SeriesError

from ..conftest import load_truth


def test_series_selection_prefers_primary_then_coverage_and_says_why(tmp_path, chest_study):
    study = tmp_path / "study"
    study.mkdir()
    files = sorted(chest_study.glob("*.dcm"))
    for k, f in enumerate(files):
        shutil.copy(f, study / f"a{k}.dcm")
        ds = pydicom.dcmread(f)  # a derived copy: same coverage
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.save_as(study / f"b{k}.dcm")
    for k, f in enumerate(files[:5]):  # a short series
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".7"
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".7"
        ds.save_as(study / f"c{k}.dcm")
    (study / "junk.dcm").write_bytes(b"\0" * 300)
    truth = load_truth(chest_study)
    sel = select_series(study)
    assert sel.series.series_instance_uid == truth["series"]["series_instance_uid"]
    uid = truth["series"]["series_instance_uid"]
    assert "not the best candidate" in sel.skipped[uid + ".9"]
    assert "5 slices" in sel.skipped[uid + ".7"]
    assert any("unreadable" in why for why in sel.skipped.values())
    strict = select_series(study, SelectionConfig(min_slices=100))
    assert strict.series is None
    assert "(selection.min_slices)" in strict.skipped[uid]


def test_load_series_is_the_selection_or_says_why_not(tmp_path, chest_study):
    """``load_series`` (predict, the trainer) picks what the node picks, and honours
    ``selection.min_slices`` like the node."""
    assert load_series(chest_study).series_instance_uid == \
        select_series(chest_study).series.series_instance_uid
    with pytest.raises(SeriesError, match=r"selection\.min_slices"):
        load_series(chest_study, rules=SelectionConfig(min_slices=10000))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SeriesError, match="no CT series"):
        load_series(empty)
