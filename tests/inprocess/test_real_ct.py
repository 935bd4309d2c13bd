"""The shipped model on the real CT in shared/data, through ``l3node predict`` as a user runs it.

The shared real abdomen is a held-out check (never trained or tuned on): the answer must lie
inside its L3 body (TotalSegmentator labels: k = 69…79 from inferior, sorted indices 32…42);
the real T11–T12 slab and the real chest crop contain no L3 and must say "not found".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import SHARED

pytestmark = pytest.mark.skipif(not SHARED.is_dir(),
                                reason="shared/data (the real CT) is not beside the repository")


def _predict(folder: Path) -> dict:
    res = subprocess.run([sys.executable, "-m", "l3node.cli", "predict", str(folder), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode in (0, 3), res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    from training.nifti import nifti_to_dicom

    out = tmp_path_factory.mktemp("real")
    cases = {"abdomen": SHARED / "real-ct-abdomen-nifti" / "example_ct.nii.gz",
             "chest": SHARED / "real-ct-chest-crop-nifti" / "ct_cropped.nii.gz"}
    for name, src in cases.items():
        nifti_to_dicom(src, out / name)
    return {k: out / k for k in cases} | {"t11-t12": SHARED / "real-ct-t11-t12-jpeg2000"}


@pytest.mark.slow
def test_real_abdomen_answer_lies_inside_the_l3_body(converted):
    o = _predict(converted["abdomen"])
    assert o["status"] == "found", o.get("reason")
    assert 32 <= o["l3"]["index"] <= 42, o["l3"]
    assert "anatomy" in o  # the second opinion is reported


@pytest.mark.slow
@pytest.mark.parametrize("case", ["t11-t12", "chest"])
def test_real_scans_without_l3_say_not_found(converted, case):
    o = _predict(converted[case])
    assert o["status"] == "not_found", o.get("l3")
    assert o["reason"]
