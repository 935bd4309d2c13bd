"""``python -m training evaluate-real``: case discovery, label import and the scoring."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from training.realeval import discover, score, slice_auc, table

from ..conftest import load_truth
from ..support import SHARED


def test_scoring_against_a_phantoms_truth(abdomen_study):
    """On a phantom: a slice inside the L3 body passes with its error to the middle slice in
    slices and mm; one outside fails; "not found" fails where L3 is, passes where it is not."""
    t = load_truth(abdomen_study)
    z = np.asarray(t["series"]["z_positions_mm"])
    first, last, mid = (t["l3"][k] for k in ("first_index", "last_index", "middle_index"))
    ok = score(z, "found", mid + 1, first, last, "L3")
    assert ok["passed"] and ok["inside_l3"] and ok["error_slices"] == 1
    assert ok["error_mm"] == pytest.approx(abs(z[mid + 1] - z[mid]), abs=0.01)
    out = score(z, "found", last + 2, first, last, "L3")
    assert out["passed"] is False and out["error_slices"] == last + 2 - mid
    missed = score(z, "not_found", None, first, last, "L3")
    assert missed["passed"] is False and missed["error_slices"] is None
    assert score(z, "not_found", None, None, None, "no L3 (chest)")["passed"] is True
    assert score(z, "found", 3, None, None, "no L3 (chest)")["passed"] is False
    assert score(z, "found", 3, None, None, "unknown")["passed"] is None


def test_slice_auc():
    y = np.array([0, 0, 1, 1, 0])
    assert slice_auc(np.array([0.1, 0.2, 0.9, 0.8, 0.3]), y) == 1.0
    assert slice_auc(np.array([0.9, 0.8, 0.1, 0.2, 0.7]), y) == 0.0
    assert slice_auc(np.full(5, 0.5), y) == 0.5
    assert slice_auc(np.ones(3), np.ones(3)) is None


def _nifti(path: Path, data: np.ndarray, spacing: float = 3.0) -> None:
    nib.save(nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])), str(path))


def test_discovery_converts_nifti_reads_labels_and_knows_the_negatives(tmp_path, chest_study):
    """A TotalSegmentator-style folder gives its L3 body range in sorted (superior-first)
    order; a DICOM folder is taken as is, with the expectation from the shared README."""
    data = tmp_path / "data"
    abd = data / "some-abdomen"
    abd.mkdir(parents=True)
    ct = np.full((24, 20, 40), -1000, dtype=np.int16)
    ct[4:20, 4:16, :] = 40
    lab = np.zeros(ct.shape, dtype=np.uint8)
    lab[10:14, 8:12, 12:18] = 29  # L3 at k = 12..17 (k from inferior)
    body = (lab > 0).astype(np.uint8)
    _nifti(abd / "example_ct.nii.gz", ct)
    _nifti(abd / "totalseg.nii.gz", lab)
    _nifti(abd / "totalseg_vertebrae_body.nii.gz", body)
    neg = data / "real-ct-t11-t12-jpeg2000"
    neg.mkdir()
    for f in sorted(chest_study.glob("*.dcm"))[:12]:
        (neg / f.name).write_bytes(f.read_bytes())
    cases = {c.name: c for c in discover(data, tmp_path / "work")}
    assert set(cases) == {"some-abdomen", "real-ct-t11-t12-jpeg2000"}
    a = cases["some-abdomen"]
    assert a.source == "nifti" and a.expected == "L3" and a.labels == "totalseg.nii.gz"
    assert (a.l3_first, a.l3_last) == (40 - 1 - 17, 40 - 1 - 12)
    n = cases["real-ct-t11-t12-jpeg2000"]
    assert n.source == "dicom" and n.expected.startswith("no L3") and n.l3_first is None
    # converted once: a second discovery reuses the series
    stamp = (tmp_path / "work" / "some-abdomen.done").stat().st_mtime_ns
    discover(data, tmp_path / "work")
    assert (tmp_path / "work" / "some-abdomen.done").stat().st_mtime_ns == stamp


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data is not beside the repository")
def test_shared_real_cases_are_all_found_with_their_truth(tmp_path):
    cases = {c.name: c for c in discover(SHARED, tmp_path)}
    abd = cases["real-ct-abdomen-nifti"]
    assert (abd.l3_first, abd.l3_last) == (111 - 79, 111 - 69)  # README: k = 69…79
    assert cases["real-ct-chest-crop-nifti"].expected.startswith("no L3")
    assert cases["real-ct-l3-vertebra-crop"].crop and cases["real-ct-l3-vertebra-crop"].l3_first
    assert cases["real-ct-t11-t12-jpeg2000"].source == "dicom"


def test_table_marks_failures():
    from training.realeval import RealResult

    r = RealResult(name="x", expected="L3", status="not_found", index=None, l3_body=[3, 9],
                   inside_l3=False, error_slices=None, error_mm=None, highest_p=0.1, auc=0.7,
                   confidence=0.0, slices=20, spacing_mm=3.0, evaluated=5, seconds=1.0,
                   passed=False)
    text = table([r])
    assert "**fail**" in text and "(3..9)" in text
    json.dumps(text)
