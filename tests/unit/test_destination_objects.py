"""``objects`` of a ``[[destinations]]`` entry: validated, and what the export sends there."""

from __future__ import annotations

from pathlib import Path

import pytest

from l3node.config import ConfigError, ResultObject, parse_config
from l3node.export import Exporter
from l3node.metrics import Metrics
from l3node.state import StudyState, open_db, studies
from l3node.state import exports as queue
from l3node.state.studies import Outcome
from l3node.state.views import study_status


def _dest(**kw) -> dict:
    return {"name": "pacs", "kind": "folder", "path": "/tmp/out", **kw}


def test_objects_default_to_all_three_and_are_validated():
    cfg = parse_config({"destinations": [_dest(), _dest(name="kos-only", objects=["kos"])]})
    assert cfg.destinations[0].objects == (ResultObject.KOS, ResultObject.SC, ResultObject.SR)
    assert cfg.destinations[1].objects == (ResultObject.KOS,)
    for bad, match in [(["kos", "xsr"], r'''destination 'pacs': objects: must be one of "kos", '''
                                        r'''"sc", "sr", got 'xsr\''''),
                       ("kos", "objects: must be a list of"),
                       ([], "objects: must name at least one of"),
                       (["sc", "sc"], "objects: names an object twice")]:
        with pytest.raises(ConfigError, match=match):
            parse_config({"destinations": [_dest(objects=bad)]})


def _outcome(tmp: Path, found: bool) -> Outcome:
    kinds = ["sc-axial", "sc-sagittal", "sr", "kos"] if found else ["sc-not-found", "sr"]
    objects = []
    for k in kinds:
        (tmp / f"{k}.dcm").write_bytes(b"not DICOM: a folder destination copies files")
        objects.append({"kind": k, "path": str(tmp / f"{k}.dcm"), "sop_instance_uid": "9"})
    return Outcome("1.1", 1, StudyState.DONE if found else StudyState.NOT_FOUND,
                   "found" if found else "not_found", objects=objects)


@pytest.mark.parametrize("found", [True, False])
def test_each_destination_gets_only_the_kinds_it_wants(tmp_path, found):
    db = open_db(tmp_path / "state.db")
    db.execute("INSERT INTO study (study_instance_uid, state, instances, version, "
               "first_instance_at, last_instance_at) VALUES ('1.1', 'processing', 1, 1, 0, 0)")
    out = {n: tmp_path / n for n in ("all", "kos", "sc-sr")}
    cfg = parse_config({"destinations": [
        _dest(name="all", path=str(out["all"])),
        _dest(name="kos", path=str(out["kos"]), objects=["kos"]),
        _dest(name="sc-sr", path=str(out["sc-sr"]), objects=["sc", "sr"])]})
    (tmp_path / "res").mkdir()
    studies.record_outcome(db, _outcome(tmp_path / "res", found), ["all", "kos", "sc-sr"])
    Exporter(cfg, db, Metrics()).run_due()
    got = {n: sorted(p.name for p in f.glob("*")) if f.is_dir() else [] for n, f in out.items()}
    if found:
        assert got == {"all": ["kos.dcm", "sc-axial.dcm", "sc-sagittal.dcm", "sr.dcm"],
                       "kos": ["kos.dcm"], "sc-sr": ["sc-axial.dcm", "sc-sagittal.dcm", "sr.dcm"]}
    else:  # no KOS: the kos-only destination is sent nothing and counts as delivered
        assert got == {"all": ["sc-not-found.dcm", "sr.dcm"], "kos": [],
                       "sc-sr": ["sc-not-found.dcm", "sr.dcm"]}
    row = study_status(db)[0]
    assert row["state"] == StudyState.EXPORTED
    assert {d: e["state"] for d, e in row["exports"].items()} == dict.fromkeys(out, "sent")


def test_a_result_without_recorded_kinds_goes_everywhere(tmp_path):
    d = queue.Due("1.1", 1, "pacs", 0, [tmp_path / "a.dcm", tmp_path / "b.dcm"])
    assert d.files_for({"kos"}) == d.files  # a row from before kinds were recorded
    d = queue.Due("1.1", 1, "pacs", 0, [tmp_path / "a.dcm", tmp_path / "b.dcm"],
                  ["sc-not-found", "sr"])
    assert d.files_for({"sc"}) == [tmp_path / "a.dcm"] and d.files_for({"kos"}) == []
    assert queue.object_group("sc-sagittal") == "sc" and queue.object_group("sr") == "sr"
