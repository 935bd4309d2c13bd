"""A multi-frame CT study through the node: DCMTK storescu → l3node → Orthanc (loopback).

The twin of a small phantom (:mod:`l3node.phantom.enhanced`) is sent as its one instance;
the node must localize it, and the key object in Orthanc must reference the L3 frame.  The
Legacy Converted Enhanced CT twin needs the node to accept that SOP class
(1.2.840.10008.5.1.4.1.1.2.2 in ``l3node.receive.CT_CLASSES``); until it does, that case is
skipped and says so.

storescu is run with ``-R`` (propose only the SOP classes of the files sent): its default list
of presentation contexts has Enhanced CT but not Legacy Converted Enhanced CT.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from l3node import receive
from l3node.node import Node
from l3node.phantom.enhanced import SOP_CLASS, multiframe_twin

from ..conftest import load_truth
from ..support import storescu, wait_for
from .test_node import _config, _results_in_orthanc

ACCEPTED = {str(uid) for uid in receive.CT_CLASSES}


def _send(port: int, folder: Path) -> None:
    storescu(port, folder, "-R")  # -R: propose only the classes the files have


@pytest.fixture(scope="module")
def small(small_abdomen_study: Path) -> Path:
    return small_abdomen_study


@pytest.mark.parametrize("kind", [
    "enhanced",
    pytest.param("legacy", marks=pytest.mark.skipif(
        SOP_CLASS["legacy"] not in ACCEPTED,
        reason="l3node.receive.CT_CLASSES lacks Legacy Converted Enhanced CT "
               "(1.2.840.10008.5.1.4.1.1.2.2)")),
])
def test_multiframe_study_gets_a_kos_that_references_the_frame(tmp_path, orthanc, small,
                                                               kind):
    twin = multiframe_twin(small, tmp_path / "twin", kind).parent
    truth = load_truth(twin)
    study_uid = truth["series"]["study_instance_uid"]
    node = Node(_config(tmp_path, orthanc))
    node.start()
    try:
        _send(node.receiver.port, twin)
        row = wait_for(lambda: next((s for s in node.status()
                                     if s["state"] in ("exported", "failed")), None),
                       180, "multi-frame study exported to Orthanc")
    finally:
        node.stop()
    assert row["state"] == "exported" and row["result"] == "found", row
    mf_uid = truth["series"]["sop_instance_uids"][0]
    assert row["l3_sop_instance_uid"] == mf_uid
    k = row["l3_index"]
    assert row["l3_frame_number"] == truth["series"]["frame_numbers"][k]  # recorded too
    assert abs(truth["series"]["z_positions_mm"][k] - truth["l3"]["middle_z_mm"]) <= 10.0
    res = _results_in_orthanc(orthanc, study_uid)
    assert sorted(res) == ["KO", "OT", "SR"] and len(res["KO"]) == 1 and len(res["OT"]) == 2
    refs = [r for item in res["KO"][0].ContentSequence if item.ValueType == "IMAGE"
            for r in item.ReferencedSOPSequence if r.ReferencedSOPInstanceUID == mf_uid]
    assert len(refs) == 1 and refs[0].ReferencedSOPClassUID == SOP_CLASS[kind]
    assert int(refs[0].ReferencedFrameNumber) == truth["series"]["frame_numbers"][k]
