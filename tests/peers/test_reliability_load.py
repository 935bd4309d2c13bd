"""Issue #7, load: eight senders at once (DCMTK storescu, one association each), each with a
300-slice study, into the node as a real process: no instance lost (counted in the state
database and on disk), the node's memory bounded (its RSS sampled from /proc while it
receives), and the throughput printed in instances per second.

The studies are a 5 mm whole-body phantom of 128 × 128 pixels (300 of its slices, ~33 KiB
each) under eight sets of UIDs: the work per instance (association, PDUs, parsing the
header, an fsync'd file, a committed row) is that of a real CT slice, its bytes a fifth.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest

from l3node.phantom import StudyRequest, generate_study

from ..support import free_port
from .test_reliability import NodeProcess, db_rows, figure, write_config

STORESCU = "/usr/bin/storescu"
SENDERS, SLICES = 8, 300


def _variant(uid: str, k: int) -> str:
    """The same-length UID with its last digit replaced: byte offsets stay valid."""
    return uid[:-1] + str(k)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    """Eight 300-slice studies: one phantom, its UIDs varied per study, byte for byte."""
    src = tmp_path_factory.mktemp("wb128")
    generate_study(src, StudyRequest(seed=3, preset="whole-body", slice_mm=5.0, matrix=128),
                   workers=2)
    files = sorted(src.glob("*.dcm"))[:SLICES]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    out = []
    for k in range(1, SENDERS + 1):
        folder = tmp_path_factory.mktemp(f"load{k}")
        new_study = _variant(study, k)
        for f, sop in zip(files, sops, strict=True):
            data = f.read_bytes()
            for old in (study, series, sop):
                data = data.replace(old.encode(), _variant(old, k).encode())
            (folder / f.name).write_bytes(data)
        out.append((new_study, folder))
    assert len({s for s, _ in out}) == SENDERS
    return out


@pytest.mark.slow
def test_eight_concurrent_300_slice_studies_lose_nothing_in_bounded_memory(tmp_path, studies):
    """Eight associations at once (node.max_associations = 8): every sender succeeds, every
    instance is a row and a file (no temp file left), and the node's RSS grows by less than
    256 MiB while it receives 2400 instances (the spool writes as it goes)."""
    port = free_port()
    root = tmp_path / "node"
    cfg = write_config(root, port=port, quiet_s=600.0, settle_s=600.0, poll_s=1.0, destinations=(
        f'[[destinations]]\nname = "results"\nkind = "folder"\npath = "{root / "out"}"\n'))
    node = NodeProcess(cfg, tmp_path / "node.log")
    node.start()
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(node.rss_kib())
            time.sleep(0.1)

    try:
        time.sleep(1.0)
        idle = node.rss_kib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        procs = [subprocess.Popen([STORESCU, "-aet", "PACS", "-aec", "L3NODE", "+sd", "+sp",
                                   "*.dcm", "127.0.0.1", str(port), str(folder)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _, folder in studies]
        outs = [p.communicate(timeout=240)[0] for p in procs]
        secs = time.perf_counter() - t0
        done.set()
        sampler.join()
        assert [p.returncode for p in procs] == [0] * SENDERS, outs
        assert node.alive()
    finally:
        done.set()
        node.stop()
    counts = dict(db_rows(root / "state.db", "SELECT study_instance_uid, COUNT(*) FROM "
                                             "instance GROUP BY study_instance_uid"))
    assert counts == {uid: SLICES for uid, _ in studies}
    on_disk = [p for p in (root / "spool").rglob("*.dcm")]
    assert len(on_disk) == SENDERS * SLICES
    assert not list((root / "spool").rglob("*.part"))
    n = SENDERS * SLICES
    peak = max(samples)
    figure("load", senders=SENDERS, instances=n, seconds=round(secs, 1),
           instances_per_s=round(n / secs, 1), megabytes=round(
               sum(p.stat().st_size for p in on_disk) / 2**20, 1),
           rss_idle_mib=round(idle / 1024), rss_peak_mib=round(peak / 1024),
           rss_samples=len(samples))
    assert peak - idle < 256 * 1024, (idle, peak)  # receiving holds no study in memory
