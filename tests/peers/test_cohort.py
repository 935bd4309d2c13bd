"""Issue #17, ``l3node cohort``: a research cohort's L3 slices from a real PACS (Orthanc).

Twenty phantom studies (abdomens with an L3 and chests without) are stored in Orthanc; the
cohort command queries it (C-FIND), retrieves each study's CT (C-GET), runs the node's
pipeline and writes one row per study.  The first run is killed with SIGKILL half-way; the
second must finish the rest without redoing a study the first one finished, and the 20
rows must match the phantoms' truth.  The other transports — C-MOVE to the cohort's own AE
and QIDO-RS/WADO-RS — and the rows for a study the PACS does not hold and one asked for by
accession number are checked on a few studies in-process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from l3node.cohort import Cohort, Options, Wanted
from l3node.config import load_config
from l3node.phantom import StudyRequest, generate_study

from ..conftest import load_truth
from ..support import Orthanc, free_port, storescu, wait_for

ROOT = Path(__file__).resolve().parents[2]
N_STUDIES = 20


@pytest.fixture(scope="module")
def cohort_studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """20 small phantoms (10 mm, 128²): every seventh a chest (no L3), the rest abdomens."""
    root = tmp_path_factory.mktemp("cohort")
    out = []
    for i in range(N_STUDIES):
        folder = root / f"s{i:02d}"
        preset = "chest" if i % 7 == 6 else "abdomen-pelvis"
        generate_study(folder, StudyRequest(seed=100 + i, preset=preset, slice_mm=10.0,
                                            matrix=128, transitional_rate=0.0,
                                            truncated_rate=0.0), workers=1)
        out.append(folder)
    return out


def _pacs(root: Path, node_port: int, dicomweb: bool = False) -> Orthanc:
    # The PACS's own durability is not under test: no fsync per stored file (the test stores
    # 828 instances, ~80 s on 2 busy cores with it).
    return Orthanc(root, dicomweb=dicomweb, options={"SyncStorageArea": False},
                   modalities={"l3node": ("L3NODE", "127.0.0.1", node_port)})


def _store(pacs: Orthanc, folders: list[Path]) -> None:
    """One DCMTK association for all the studies, as a modality or an archive sends."""
    storescu(pacs.dicom_port, [p for f in folders for p in sorted(f.glob("*.dcm"))],
             called=pacs.aet)


def _config(root: Path, pacs: Orthanc, node_port: int) -> Path:
    path = root / "node.toml"
    path.write_text(
        f'[node]\nae_title = "L3NODE"\nhost = "127.0.0.1"\nport = {node_port}\n'
        f'[paths]\nspool = "{root / "unused-spool"}"\nstate_db = "{root / "unused.db"}"\n'
        f'[logging]\nformat = "json"\nhash_uids = true\n'
        f'[[destinations]]\nname = "pacs"\nkind = "dimse"\nae_title = "{pacs.aet}"\n'
        f'host = "127.0.0.1"\nport = {pacs.dicom_port}\n'
        f'[[destinations]]\nname = "web"\nkind = "stowrs"\n'
        f'url = "http://127.0.0.1:{pacs.http_port}/dicom-web"\n')
    return path


def _matches_truth(row: dict, folder: Path) -> bool:
    """Found within L3's body (± one slice) where the phantom has an L3; else not found."""
    l3 = load_truth(folder)["l3"]
    if not l3["present"]:
        return row["status"] == "not_found"
    return (row["status"] == "found"
            and l3["first_index"] - 1 <= int(row["l3_index"]) <= l3["last_index"] + 1)


def _journal(out: Path) -> list[dict]:
    path = out / "cohort.jsonl"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    return [json.loads(x) for x in lines[:-1] if x.strip()]  # the last may be cut


def _cohort_cmd(cfg: Path, studies: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "l3node", "cohort", "--config", str(cfg), "--pacs", "pacs",
            "--studies", str(studies), "--out", str(out), "--concurrency", "2"]


def test_cohort_of_20_killed_half_way_finishes_without_redoing_done_studies(
        tmp_path, cohort_studies):
    port = free_port()
    pacs = _pacs(tmp_path / "orthanc", port)
    try:
        t0 = time.monotonic()
        _store(pacs, cohort_studies)
        by_uid = {load_truth(f)["series"]["study_instance_uid"]: f for f in cohort_studies}
        assert len(pacs.get("/studies")) == N_STUDIES
        stored_s = time.monotonic() - t0
        cfg = _config(tmp_path, pacs, port)
        studies = tmp_path / "studies.csv"
        studies.write_text("PatientAlias,StudyInstanceUID\n" + "".join(
            f"case{i:02d},{uid}\n" for i, uid in enumerate(by_uid)))
        out = tmp_path / "out"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        # run 1: killed once about half the studies have their row
        t1 = time.monotonic()
        with (tmp_path / "run1.err").open("w") as err:
            proc = subprocess.Popen(_cohort_cmd(cfg, studies, out), cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                wait_for(lambda: len(_journal(out)) >= N_STUDIES // 2 or proc.poll() is not None,
                         600, "half the cohort's rows", every=0.2)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
        first = {r["study_instance_uid"]: r for r in _journal(out)}
        assert N_STUDIES // 2 <= len(first) < N_STUDIES, "the kill came too late to test"
        run1_s = time.monotonic() - t1

        # run 2: the same command finishes the rest
        t2 = time.monotonic()
        done = subprocess.run(_cohort_cmd(cfg, studies, out), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        run2_s = time.monotonic() - t2
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["rows"] == N_STUDIES and summary["unfinished"] == 0
        assert f"{len(first)} done before" in done.stderr  # the progress line says so

        rows = list(csv.DictReader((out / "cohort.csv").open()))
        assert len(rows) == N_STUDIES
        assert {r["study_instance_uid"] for r in rows} == set(by_uid)
        wrong = [r for r in rows if not _matches_truth(r, by_uid[r["study_instance_uid"]])]
        assert not wrong, wrong
        # nothing done twice: the studies run 1 finished have one journal line and one run
        journal = _journal(out)
        assert len(journal) == N_STUDIES
        db = sqlite3.connect(out / "work" / "state.db")
        runs = dict(db.execute("SELECT study_instance_uid, COUNT(*) FROM result "
                               "GROUP BY study_instance_uid"))
        assert all(runs[uid] == 1 for uid in first), runs
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # the retrieved input is deleted once a study's row is written
        left = [p for p in (out / "work" / "spool").iterdir() if p.name != "_results"]
        assert not left
        # each found row names the phantom's instance at its index
        for r in rows:
            if r["status"] == "found":
                series = load_truth(by_uid[r["study_instance_uid"]])["series"]
                assert series["sop_instance_uids"][int(r["l3_index"])] == \
                    r["l3_sop_instance_uid"]
        # no PHI and no plain UID on the terminal: counts only, JSON log lines hash UIDs
        assert not any(uid in done.stderr for uid in by_uid)
        figures = dict(studies=N_STUDIES, killed_after=len(first), store_s=round(stored_s, 1),
                       run1_s=round(run1_s, 1), run2_s=round(run2_s, 1),
                       counts=summary["counts"])
        print(f"COHORT c-get: {json.dumps(figures)}")
    finally:
        pacs.stop()


@pytest.fixture(scope="module")
def localizer():
    from l3node.config import ModelConfig
    from l3node.localize.localizer import Localizer

    return Localizer.open(ModelConfig())


@pytest.mark.parametrize("retrieve", ["move", "wado"])
def test_cohort_by_c_move_and_by_wado_rs_with_a_missing_study_and_an_accession(
        tmp_path, cohort_studies, localizer, retrieve):
    port = free_port()
    pacs = _pacs(tmp_path / "orthanc", port, dicomweb=True)
    try:
        picked = [cohort_studies[0], cohort_studies[6]]  # an abdomen and a chest
        _store(pacs, picked)
        truth = [load_truth(f)["series"]["study_instance_uid"] for f in picked]
        accession = str(pydicom.dcmread(next(picked[1].glob("*.dcm")),
                                        stop_before_pixels=True).AccessionNumber)
        assert accession
        cfg = load_config(_config(tmp_path, pacs, port))
        wanted = [Wanted(study_uid=truth[0]), Wanted(accession=accession),
                  Wanted(study_uid="1.2.826.0.1.3680043.10.1234.999")]
        stream = io.StringIO()
        source = "pacs" if retrieve == "move" else "web"
        cohort = Cohort(cfg, tmp_path / "out", Options(source=source, retrieve=retrieve),
                        localizer=localizer, stream=stream)
        counts = cohort.run(wanted)
        rows = {r["request"]: r for r in cohort.table.rows.values()}
        assert counts == {"found": 1, "not_found": 1, "missing": 1}, rows
        assert _matches_truth(rows[truth[0]], picked[0])
        acc = rows[f"accession:{accession}"]
        assert acc["study_instance_uid"] == truth[1] and acc["accession_number"] == accession
        assert _matches_truth(acc, picked[1])
        assert "not in the PACS" in rows["1.2.826.0.1.3680043.10.1234.999"]["reason"]
        assert "cohort [" in stream.getvalue()
        # a second run asks nothing more of the PACS for the done ones; the missing one is
        # asked again (it may have arrived) and is still missing
        again = Cohort(cfg, tmp_path / "out", Options(source=source, retrieve=retrieve),
                       localizer=localizer, stream=io.StringIO())
        assert again.run(wanted) == counts
        assert len(_journal(tmp_path / "out")) == 4
    finally:
        pacs.stop()
