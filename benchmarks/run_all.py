"""``make bench``: the node against real peers, every figure measured in one run on this
machine, printed as one markdown table and written to ``benchmarks/RESULTS.md``.

1. ingest — DCMTK ``storescu`` sends a 1 mm whole-body phantom over loopback to DCMTK
   ``storescp`` (writing to disk), to Orthanc, and to the real ``l3node serve`` process (a
   config in a temp folder, quiet period one hour so nothing is processed meanwhile); same
   ``storescu`` command line for all three, only the port differs.  Plus a what-if: the
   node with fsync switched off, to show what durability costs;
2. end to end — a real node with an Orthanc C-STORE destination: the time from the moment
   the study turns complete (the scheduler claims it) to the KOS being queryable in Orthanc,
   for a 5 mm and a 1 mm whole-body study: int8 with ONNX Runtime (the default), fp32 with
   ONNX Runtime, fp32 with PyTorch, and bf16 (PyTorch autocast);
3. localizer — slices/s per stage (bench_localize.measure_parts) and how many slices the
   coarse-to-fine search sends through ResNet50 (``l3node predict``, bench_localize);
4. memory — peak RSS (VmHWM) of the serve process over receiving + processing the study;
5. ONNX Runtime (the node's fp32 engine) against PyTorch for ResNet50 (bench_onnx):
   inference time and whether the decisions are the same;
6. phantom generation (bench_phantom.measure), which used to be its own table.

Benchmarks print figures and assert nothing.  Phantoms are cached in ``.cache/bench``.
Run: ``python benchmarks/run_all.py [--quick] [--parts ingest,e2e,...] [--results FILE|-]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import bench_levers
import bench_localize
import bench_onnx
import bench_phantom
from benchlib import (
    CACHE,
    ORTHANC,
    ROOT,
    STORESCP,
    STORESCU,
    Phantom,
    free_port,
    machine,
    phantom,
    proc_status_kb,
    stop,
    wait_port,
    warm_page_cache,
)

from l3node.config import SchedulerConfig

if TYPE_CHECKING:
    from tests.support import Orthanc

PARTS = ("ingest", "e2e", "levers", "localizer", "onnx", "phantom")
RESULTS = Path(__file__).with_name("RESULTS.md")
KEEP_MARKER = "<!-- Everything below this line is hand-written; run_all.py keeps it. -->"
MODEL = ROOT / "models" / "default"
AET = "L3NODE"  # storescp and this Orthanc accept any called AE title; the node wants its own
INGEST_GOAL = 0.9  # l3node instances/s as a fraction of the bare pynetdicom SCP's
E2E_GOAL_S = 5.0  # complete → KOS in the PACS, 1 mm whole-body, 2 cores
ACK_GOAL_S = 15.0  # last instance acknowledged → KOS in the PACS, shipped configuration
RSS_GOAL_MIB = 1.5 * 1024
# engines the end-to-end and predict rows compare: name → (model.precision, model.runtime)
ENGINES = {"int8": ("int8", "auto"), "fp32": ("fp32", "auto"), "fp32-torch": ("fp32", "torch"),
           "bf16": ("bf16", "auto")}
DEFAULT_ENGINE = "int8"  # ModelConfig's default precision with runtime "auto"
ENGINE_LABEL = {"int8": "int8, ONNX Runtime (default)", "fp32": "fp32, ONNX Runtime",
                "fp32-torch": "fp32, PyTorch", "bf16": "bf16, PyTorch"}
# e2e: the shipped scheduler settings (a study completes study_settle_s after storescu
# releases its association; the quiet period is the fallback)
SHIPPED = SchedulerConfig()
# Debian's DCMTK (storescu, storescp, and Orthanc's DICOM server) leaves Nagle's algorithm
# on unless TCP_NODELAY=1 is in the environment; without it each C-STORE waits ~40 ms for a
# delayed ACK (storescp: 83 s instead of 2 s for 1577 instances).  Set for every child.
os.environ["TCP_NODELAY"] = "1"

# The node with every fsync off (files, folders, SQLite): not a configuration, a what-if.
NO_FSYNC_NODE = """
import os, sys
os.fsync = lambda fd: None
from l3node import spool
_init = spool.Spool.__init__
def _no_sync(self, *a, **k):
    _init(self, *a, **k)
    self.db.execute("PRAGMA synchronous=OFF")
spool.Spool.__init__ = _no_sync
from l3node.cli import main
sys.exit(main(["serve", "--config", sys.argv[1]]))
"""


@dataclass
class Row:
    area: str
    what: str
    figure: str
    goal: str = ""
    verdict: str = ""
    note: str = ""


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


def storescu(port: int, folder: Path, senders: int = 1) -> tuple[float, int]:
    """Send every .dcm under ``folder`` with DCMTK storescu, split over ``senders``
    concurrent associations (one storescu each, every Nth slice); (wall
    seconds until the last one finished, the worst exit status)."""
    files = sorted(folder.glob("*.dcm"))
    shares = [files[i::senders] for i in range(senders)] if senders > 1 else [[folder]]
    t = time.perf_counter()
    procs = [subprocess.Popen([STORESCU, *(["+sd", "+sp", "*.dcm"] if senders == 1 else []),
                               "-aec", AET, "127.0.0.1", str(port), *map(str, share)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for share in shares]
    rcs = [p.wait() for p in procs]
    return time.perf_counter() - t, max(rcs)


# -- peers --------------------------------------------------------------------------------------
def _orthanc(root: Path) -> Orthanc:
    """A fresh Orthanc on loopback ports: the test suite's helper (tests/orthanc.py)."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    from tests.support import Orthanc

    return Orthanc(root)


def _orthanc_find(o: Orthanc, query: dict) -> list:
    req = urllib.request.Request(f"http://127.0.0.1:{o.http_port}/tools/find",
                                 data=json.dumps(query).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _node_config(work: Path, port: int, *, quiet_s: float, poll_s: float,
                 engine: str = "fp32", orthanc: Orthanc | None = None,
                 settle_s: float | None = None) -> Path:
    """A node configuration in a temp folder; ``settle_s`` None: the settle period as long
    as the quiet period (only the quiet period completes the study)."""
    settle = quiet_s if settle_s is None else settle_s
    text = (f'[node]\nae_title = "{AET}"\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[paths]\nspool = "{work / "spool"}"\nstate_db = "{work / "state.db"}"\n\n'
            f"[scheduler]\nstudy_quiet_s = {quiet_s}\nstudy_max_wait_s = 7200\n"
            f"study_settle_s = {settle}\npoll_s = {poll_s}\n\n"
            f'[model]\npath = "{MODEL}"\nprecision = "{ENGINES[engine][0]}"\n'
            f'runtime = "{ENGINES[engine][1]}"\n')
    if orthanc is not None:
        text += (f'\n[[destinations]]\nname = "orthanc"\nkind = "dimse"\n'
                 f'ae_title = "{orthanc.aet}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n')
    cfg = work / "node.toml"
    cfg.write_text(text)
    return cfg


def _start_node(cfg: Path, port: int, log: Path, no_fsync: bool = False) -> subprocess.Popen:
    args = ["-c", NO_FSYNC_NODE, str(cfg)] if no_fsync else ["-m", "l3node", "serve",
                                                              "--config", str(cfg)]
    proc = subprocess.Popen([sys.executable, *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_port(port, proc, 180, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def _count_rows(db: Path, sql: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


# -- 1. ingest ----------------------------------------------------------------------------------
INGEST_KINDS = ("storescp", "orthanc", "pynetdicom", "pynetdicom-waking", "pynetdicom-fsync",
                "l3node", "l3node-nofsync")
INGEST_LABEL = {
    "storescp": "DCMTK storescp → disk",
    "orthanc": "Orthanc (files + SQLite index)",
    "pynetdicom": "bare pynetdicom SCP, bytes → file, no fsync (ceiling of a stock "
                  "pynetdicom receiver)",
    "pynetdicom-waking": "bare pynetdicom SCP with l3node.reactor's waking DUL (the same, "
                         "its polling sleep replaced)",
    "pynetdicom-fsync": "bare pynetdicom SCP, file and folder fsync'd before the ack (the "
                        "least a durable receiver on stock pynetdicom does)",
    "l3node": "l3node serve (fsync'd, then acked)",
    "l3node-nofsync": "l3node serve, fsync off (what-if, not a setting)"}


def ingest_once(kind: str, study: Phantom, work: Path, senders: int = 1) -> dict:
    """One receiver, fresh, one send; returns seconds and how many instances it holds."""
    work.mkdir(parents=True)
    port = free_port()
    count: Callable[[], int]
    if kind == "storescp":
        out = work / "out"
        out.mkdir()
        log = work / "storescp.log"
        # --fork: one process per association, so concurrent senders are served at once
        proc = subprocess.Popen([STORESCP, "--fork", "-od", str(out), str(port)],
                                stdout=log.open("w"), stderr=subprocess.STDOUT)
        wait_port(port, proc, 30, log)
        done: Callable[[], None] = lambda: stop(proc)  # noqa: E731
        count = lambda: sum(1 for _ in out.iterdir())  # noqa: E731
    elif kind.startswith("pynetdicom"):
        out = work / "out"
        log = work / "bare_scp.log"
        scp = Path(__file__).with_name("bare_scp.py")
        flags = {"pynetdicom-waking": ["--waking"], "pynetdicom-fsync": ["--fsync"]}.get(kind, [])
        proc = subprocess.Popen([sys.executable, str(scp), str(port), str(out), *flags],
                                stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        wait_port(port, proc, 60, log)
        done = lambda: stop(proc)  # noqa: E731
        count = lambda: sum(1 for _ in out.iterdir())  # noqa: E731
    elif kind == "orthanc":
        o = _orthanc(work / "orthanc")
        port = o.dicom_port
        done = o.stop
        count = lambda: int(o.get("/statistics")["CountInstances"])  # noqa: E731
    else:
        cfg = _node_config(work, port, quiet_s=3600, poll_s=2.0)
        proc = _start_node(cfg, port, work / "node.log", no_fsync=kind == "l3node-nofsync")
        done = lambda: stop(proc)  # noqa: E731
        count = lambda: _count_rows(work / "state.db", "SELECT COUNT(*) FROM instance")  # noqa: E731
    try:
        secs, rc = storescu(port, study.folder, senders)
        received = count()
    finally:
        done()
    shutil.rmtree(work, ignore_errors=True)
    os.sync()  # the next receiver must not pay for this one's dirty pages
    return {"secs": secs, "rc": rc, "received": received}


def bench_ingest(study: Phantom, work: Path, repeats: int,
                 senders: tuple[int, ...] = (1, 4)) -> list[Row]:
    rows = []
    warm_page_cache(study.files)
    for m in senders:
        runs: dict[str, list[dict]] = {k: [] for k in INGEST_KINDS}
        for r in range(repeats):  # round-robin, so background noise spreads over all
            for k in INGEST_KINDS:
                res = ingest_once(k, study, work / f"{k}-{m}-{r}", m)
                runs[k].append(res)
                print(f"  ingest {k:<17} {m} sender(s) run {r + 1}: {res['secs']:6.2f} s, "
                      f"{res['received']} received, storescu exit {res['rc']}",
                      file=sys.stderr)
        rows += _ingest_rows(study, runs, repeats, m)
    return rows


def _ingest_rows(study: Phantom, runs: dict[str, list[dict]], repeats: int,
                 senders: int) -> list[Row]:
    n, mb = study.slice_count, study.nbytes / 1e6
    secs = {k: statistics.median(x["secs"] for x in v) for k, v in runs.items()}
    what = (f"{n} × {mb / n:.2f} MB ({study.truth['series']['slice_thickness_mm']:g} mm), "
            f"{senders} sender{'s' if senders > 1 else ''}")
    rows = []
    for k in INGEST_KINDS:
        ips, mbs = n / secs[k], mb / secs[k]
        short = [x for x in runs[k] if x["received"] != n or x["rc"] != 0]
        note = (f"median of {repeats}: " + ", ".join(f"{x['secs']:.1f}" for x in runs[k]) +
                " s")
        if short:
            note += f"; **{len(short)} run(s) incomplete or failed**"
        goal = verdict = ""
        if k != "storescp" and k != "orthanc":
            note = f"{secs['storescp'] / secs[k]:.2f} × storescp; " + note
        if k.startswith("l3node"):
            note = (f"{secs['pynetdicom'] / secs[k]:.2f} × bare pynetdicom, "
                    f"{secs['pynetdicom-fsync'] / secs[k]:.2f} × bare durable pynetdicom, "
                    + note)
            if k == "l3node":
                ratio = secs["pynetdicom"] / secs[k]
                goal, verdict = (f"≥ {INGEST_GOAL:.1f} × bare pynetdicom",
                                 _verdict(ratio >= INGEST_GOAL))
        rows.append(Row("ingest", f"{INGEST_LABEL[k]}, {what}",
                        f"{ips:.0f} inst/s, {mbs:.0f} MB/s", goal, verdict, note))
    return rows


# -- 2. end to end, 4. memory -------------------------------------------------------------------
def e2e_once(study: Phantom, engine: str, work: Path, timeout: float = 600) -> dict:
    """Send ``study`` to a fresh node whose destination is a fresh Orthanc; time the KOS."""
    work.mkdir(parents=True)
    o = _orthanc(work / "orthanc")
    node = None
    try:
        port = free_port()
        cfg = _node_config(work, port, quiet_s=SHIPPED.study_quiet_s, poll_s=SHIPPED.poll_s,
                           settle_s=SHIPPED.study_settle_s, engine=engine, orthanc=o)
        node = _start_node(cfg, port, work / "node.log")
        rss_start = proc_status_kb(node.pid, "VmRSS") or 0
        send_s, rc = storescu(port, study.folder)
        rss_received = proc_status_kb(node.pid, "VmRSS") or 0
        db = sqlite3.connect(f"file:{work / 'state.db'}?mode=ro", uri=True, timeout=30)
        t_claim = t_kos = None
        rss_peak_sampled = 0
        deadline = time.time() + timeout
        while time.time() < deadline:
            now = time.time()
            rss_peak_sampled = max(rss_peak_sampled, proc_status_kb(node.pid, "VmRSS") or 0)
            row = db.execute("SELECT state FROM study").fetchone()
            state = row[0] if row else "none"
            if t_claim is None and state not in ("none", "receiving", "complete"):
                t_claim = now
            if _orthanc_find(o, {"Level": "Series", "Query": {"Modality": "KO"}}):
                t_kos = now
                break
            if state == "failed" or node.poll() is not None:
                break
            time.sleep(0.1)
        hwm = proc_status_kb(node.pid, "VmHWM") or 0
        last_ack, state = db.execute("SELECT last_instance_at, state FROM study").fetchone()
        res = db.execute("SELECT created_at, status, l3_index FROM result ORDER BY version "
                         "DESC").fetchone() or (None, "none", None)
        db.close()
    finally:
        if node is not None:
            stop(node)
        o.stop()
    out = {"send_s": send_s, "rc": rc, "state": state, "status": res[1], "l3_index": res[2],
           "rss_start_mib": rss_start / 1024, "rss_received_mib": rss_received / 1024,
           "hwm_mib": hwm / 1024,
           "rss_sampled_mib": rss_peak_sampled / 1024, "ok": t_kos is not None}
    if t_kos is not None and t_claim is not None:
        out.update(ack_to_kos=t_kos - last_ack, complete_to_kos=t_kos - t_claim,
                   processing=(res[0] or t_kos) - t_claim, dispatch=t_kos - (res[0] or t_kos))
    else:
        out["log_tail"] = (work / "node.log").read_text()[-2000:]
    shutil.rmtree(work, ignore_errors=True)
    return out


def bench_e2e(studies: list[Phantom], engines: list[str], work: Path) -> list[Row]:
    rows, mem = [], []
    for study in studies:
        mm = study.truth["series"]["slice_thickness_mm"]
        for engine in engines:
            r = e2e_once(study, engine, work / f"e2e-{mm:g}-{engine}")
            what = f"{mm:g} mm whole-body ({study.slice_count} slices), {ENGINE_LABEL[engine]}"
            print(f"  e2e {what}: {json.dumps({k: v for k, v in r.items() if k != 'log_tail'})}",
                  file=sys.stderr)
            if not r["ok"]:
                rows.append(Row("end to end", what, "no KOS in Orthanc", note=(
                    f"state {r['state']}, result {r['status']}; node log: "
                    + r.get("log_tail", "").replace("\n", " ")[-300:])))
                continue
            is_goal = mm == 1.0 and engine == DEFAULT_ENGINE  # the default configuration
            rows.append(Row(
                "end to end", f"{what}: study complete → KOS in Orthanc",
                f"{r['complete_to_kos']:.1f} s",
                f"≤ {E2E_GOAL_S:g} s" if is_goal else "",
                _verdict(r["complete_to_kos"] <= E2E_GOAL_S) if is_goal else "",
                f"processing {r['processing']:.1f} s + dispatch {r['dispatch']:.1f} s; L3 slice "
                f"{r['l3_index']} (truth {study.l3_middle}); sent in {r['send_s']:.1f} s"))
            rows.append(Row(
                "end to end", f"{what}: last instance acknowledged → KOS in Orthanc, shipped "
                f"scheduler settings", f"{r['ack_to_kos']:.1f} s",
                f"≤ {ACK_GOAL_S:g} s" if is_goal else "",
                _verdict(r["ack_to_kos"] <= ACK_GOAL_S) if is_goal else "",
                f"settle {SHIPPED.study_settle_s:g} s after the release (quiet period "
                f"{SHIPPED.study_quiet_s:g} s as the fallback), poll {SHIPPED.poll_s:g} s"))
            mem.append(Row(
                "memory", f"node peak RSS, {what}", f"{r['hwm_mib']:.0f} MiB",
                f"≤ {RSS_GOAL_MIB / 1024:g} GiB" if is_goal else "",
                _verdict(r["hwm_mib"] <= RSS_GOAL_MIB) if is_goal else "",
                f"VmHWM over receive + process; VmRSS {r['rss_start_mib']:.0f} MiB after start, "
                f"{r['rss_received_mib']:.0f} MiB once received, at most "
                f"{r['rss_sampled_mib']:.0f} MiB while processing (sampled)"))
    return rows + mem


# -- levers of complete → KOS -----------------------------------------------------------------
def bench_lever_rows(study: Phantom, quick: bool) -> list[Row]:
    """Processing (select → localize → compose) of the 1 mm study, one lever at a time."""
    from l3node.config import ModelConfig, Precision

    shipped = ModelConfig().precision.value
    others = [p.value for p in Precision if p.value != shipped and p.value != "bf16"]
    rows = []
    for r in bench_levers.measure(study.folder, [shipped, *others], 1 if quick else 2):
        print(f"  levers {json.dumps(r)}", file=sys.stderr)
        rows.append(Row(
            "levers", f"1 mm whole-body processing, {r['label']}", f"{r['total_s']:.2f} s", "",
            "", f"select {r['select_s']:.2f} s, localize {r['localize_s']:.2f} s (ResNet50 "
            f"{r['inference_s']:.2f} s, {r['evaluated']} slices), compose "
            f"{r['compose_s']:.2f} s; {r['status']} at {r['index']}; best of {r['runs']}"))
    return rows


# -- 3. localizer, 5. phantom -------------------------------------------------------------------
def bench_localizer(wb5: Phantom, wb1: Phantom, j2k: Phantom, quick: bool) -> list[Row]:
    rows = []
    for name, rate in bench_localize.measure_parts(MODEL, wb5.folder, j2k.folder).items():
        note = "batch 16, 224 × 224 × 3" if name.startswith("ResNet50") else (
            "512 × 512, abdomen-pelvis 5 mm" if "2000" in name else "512 × 512, 5 mm whole-body")
        rows.append(Row("localizer", name, f"{rate:.1f} slices/s", note=note))
    # batch 4 is the node's model.batch_size; PyTorch fp32 at batch 8 for comparison
    cases = [(wb1, "fp32", 4)] if quick else [
        *((s, e, 4) for s in (wb5, wb1) for e in ENGINES), (wb1, "fp32-torch", 8)]
    for study, engine, batch in cases:
        r = bench_localize.bench_predict(study.folder, MODEL, *ENGINES[engine], batch)
        t = r["timings"]
        rows.append(Row(
            "localizer", f"coarse-to-fine, {study.truth['series']['slice_thickness_mm']:g} mm "
            f"whole-body, {ENGINE_LABEL[engine]}, batch {batch}: slices through ResNet50",
            f"{r['evaluated']} of {r['slices']}", note=(
                f"`l3node predict` {r['wall_s']:.1f} s, {r['rss_mb']:.0f} MiB: "
                + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + " s")))
    return rows


def bench_ort(studies: list[Phantom]) -> list[Row]:
    rows = []
    for r in bench_onnx.compare(studies):
        same = r["torch_index"] == r["ort_index"] and r["torch_evaluated"] == r["ort_evaluated"]
        rows.append(Row(
            "onnx", f"ONNX Runtime vs PyTorch (channels-last), fp32, batch 4, {r['mm']:g} mm "
            "whole-body: "
            "inference time", f"{r['ort_inference_s']:.1f} s vs {r['torch_inference_s']:.1f} s "
            f"({r['torch_inference_s'] / r['ort_inference_s']:.1f}×)", note=(
                f"{'same' if same else '**different**'} decision: L3 slice "
                f"{r['ort_index']} vs {r['torch_index']}, {r['ort_evaluated']} vs "
                f"{r['torch_evaluated']} evaluated of {r['slices']}; max abs Δp "
                f"{r['max_prob_diff']:.1e}")))
    return rows


def bench_generation(quick: bool) -> list[Row]:
    rows = []
    for mm in (5.0,) if quick else (5.0, 1.0):
        r = bench_phantom.measure(mm, os.cpu_count() or 1)
        rows.append(Row("phantom", f"generate {mm:g} mm whole-body ({r['slices']} slices)",
                        f"{r['slices'] / r['seconds']:.0f} slices/s", note=(
                            f"{r['seconds']:.1f} s, parent {r['parent_rss_mb']:.0f} MiB, "
                            f"worker {r['worker_rss_mb']:.0f} MiB, {r['disk_mb']:.0f} MB")))
    return rows


# -- output -------------------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    lines = ["| area | what | figure | goal | met? | notes |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.area} | {r.what} | {r.figure} | {r.goal} | {r.verdict} | {r.note} |"
              for r in rows]
    return "\n".join(lines)


NOTES = f"""\
- **ingest**: wall time of one `{STORESCU} +sd +sp '*.dcm' -aec {AET} 127.0.0.1 PORT DIR`
  (one association, one instance at a time), or of 4 storescu run at once, each sending
  every 4th slice on its own association; the same for every receiver, each started fresh
  with its defaults (storescp with `--fork`, so it serves concurrent associations); median
  of the runs, round-robin.  `TCP_NODELAY=1` is set for all
  (Debian's DCMTK leaves Nagle on without it: ~40 ms per instance).  l3node acknowledges an
  instance only after its file (fsync, rename, fsync of the folder) and its row (SQLite WAL,
  synchronous=FULL) are on disk (the folder's fsync and the commit run together);
  storescp, Orthanc and the bare pynetdicom SCP flush nothing.  The what-if row turns every
  fsync off.
- **end to end**: a real `l3node serve` with the shipped scheduler settings
  (`study_settle_s = {SHIPPED.study_settle_s:g}`, `study_quiet_s = {SHIPPED.study_quiet_s:g}`,
  `poll_s = {SHIPPED.poll_s:g}`; model `models/default`) and an Orthanc C-STORE destination.
  The study completes `study_settle_s` after storescu releases its association (the listener
  wakes the scheduler for that moment).  "Study complete" is when the scheduler claims the
  study (its state leaves `complete`, read from the state database every 0.1 s); "last
  instance acknowledged" is the study's `last_instance_at`; KOS = the first `/tools/find`
  for a series with Modality KO.  Processing = series selection, localization and composing
  the KOS + SCs; dispatch = C-STORE to Orthanc.  The node has warmed up at start.
- **memory**: VmHWM of the serve process (model loaded, study received, localized, sent);
  GiB = 1024 MiB.
- **localizer**: stage rates from `bench_localize.measure_parts` (the node runs ResNet50
  channels-last); the coarse-to-fine counts and stage times from `l3node predict --json` (a
  fresh process: its wall time includes ~3 s of imports a resident node pays once).
- **onnx**: the same Localizer with `runtime = "torch"` and `"onnxruntime"` (the graph
  exported from the artifact and optimised for this CPU by a child process, see
  `l3node/localize/runtime.py`); the held-out check of the switch is in the model card.
- **engines**: "int8, ONNX Runtime (default)" is `model.precision = "int8"`,
  `model.runtime = "auto"` (static int8 from `models/default/int8-calibration.json`); the goal rows
  are the default configuration.  predict's peak RSS with ONNX Runtime is the larger of the
  process and its export child (rusage); the node's figure is its own VmHWM.
- **bare pynetdicom**: `benchmarks/bare_scp.py`, a storage SCP that writes each dataset's
  bytes and does nothing else: the ceiling pynetdicom's polling reactor puts on any receiver;
  `--waking` gives it the node's DUL (`l3node/reactor.py`: waits in `select()` on its socket
  instead of sleeping 1 ms), which shows what that change alone is worth.
"""


def write_results(path: Path, mach: dict[str, str], rows: list[Row], argv: list[str]) -> None:
    kept = ""
    if path.is_file() and KEEP_MARKER in path.read_text():
        kept = path.read_text().split(KEEP_MARKER, 1)[1]
    load1 = float(mach["load"].split()[0])
    warn = (f"\n**Warning: the machine was not idle** (1-minute load {load1:.2f} at start on "
            f"{os.cpu_count()} cores): these figures are not comparable.\n"
            if load1 > 0.5 else "")
    head = "\n".join(f"| {k} | {v} |" for k, v in mach.items())
    cmd = " ".join(["python benchmarks/run_all.py", *argv])
    path.write_text(
        f"# Benchmark results\n\nWritten by `make bench` (`{cmd}`): every figure below was "
        f"measured in one run on this machine.\n{warn}\n| machine | |\n|---|---|\n{head}\n\n"
        f"{table(rows)}\n\n{NOTES}\n{KEEP_MARKER}{kept or chr(10)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a check of the harness: one run each, 5 mm ingest, the default "
                    "engine only")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--repeats", type=int, default=None, help="ingest runs per receiver "
                    "(default 3, 1 with --quick)")
    ap.add_argument("--results", default=None, help="markdown file to write, '-' for none "
                    "(default benchmarks/RESULTS.md; none with --quick)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    missing = [exe for exe in (STORESCU, STORESCP, ORTHANC) if not Path(exe).is_file()]
    if missing and set(parts) & {"ingest", "e2e"}:
        ap.error(f"missing {', '.join(missing)}: run `make peers` (DCMTK, Orthanc)")
    repeats = args.repeats or (1 if args.quick else 3)
    out = None if args.results == "-" else Path(args.results) if args.results else (
        None if args.quick else RESULTS)
    mach = machine()
    print("\n".join(f"{k}: {v}" for k, v in mach.items()), file=sys.stderr)
    print("phantoms (cached in .cache/bench):", file=sys.stderr)
    wb5, wb1 = phantom("whole-body", 5.0), phantom("whole-body", 1.0)
    j2k = phantom("abdomen-pelvis", 5.0, transfer_syntax="jpeg2000-lossless")
    rows: list[Row] = []
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="run-") as tmp:
        work = Path(tmp)  # on the same disk as the repository, not a tmpfs /tmp
        if "ingest" in parts:
            rows += bench_ingest(wb5 if args.quick else wb1, work / "ingest", repeats)
        if "e2e" in parts:
            rows += bench_e2e([wb5, wb1], [DEFAULT_ENGINE] if args.quick else list(ENGINES),
                              work / "e2e")
        if "levers" in parts:
            rows += bench_lever_rows(wb1, args.quick)
        if "localizer" in parts:
            rows += bench_localizer(wb5, wb1, j2k, args.quick)
        if "onnx" in parts:
            rows += bench_ort([wb1] if args.quick else [wb5, wb1])
        if "phantom" in parts:
            rows += bench_generation(args.quick)
    order = {a: i for i, a in enumerate(("ingest", "end to end", "levers", "memory", "localizer",
                                         "onnx", "phantom"))}
    rows.sort(key=lambda r: order[r.area])
    print(table(rows))
    if out is not None:
        write_results(out, mach, rows, sys.argv[1:])
        print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
