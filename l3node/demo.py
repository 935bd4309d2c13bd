"""``make demo``: one phantom study through a real node, end to end, in seconds.

Generates a 5 mm whole-body phantom, starts ``l3node serve`` with ``config/demo.toml``
(results go to a folder, so no PACS is needed), sends the study with ``l3node send``, waits
for the node to export, prints the L3 slice it chose beside the phantom's truth and where the
KOS and Secondary Captures landed, and stops the node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "demo.toml"
WORK = Path("/tmp/l3node-demo")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l3node", *args], capture_output=True,
                          text=True, timeout=600)


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    t0 = time.perf_counter()
    gen = run("phantom", "--out", str(WORK / "input"), "--seed", "7", "--preset", "whole-body",
              "--slice-mm", "5", "--json")
    info = json.loads(gen.stdout)
    study = Path(info["folder"])
    print(f"1. phantom: {info['series']['slice_count']} slices in {study} "
          f"({time.perf_counter() - t0:.1f} s)")
    log = (WORK / "node.log").open("w")
    node = subprocess.Popen([sys.executable, "-m", "l3node", "serve", "--config", str(CONFIG)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while "serving" not in (WORK / "node.log").read_text():
            if node.poll() is not None or time.time() > deadline:
                print((WORK / "node.log").read_text())
                return 1
            time.sleep(0.2)
        print(f"2. node started (config {CONFIG.relative_to(ROOT)})")
        t1 = time.perf_counter()
        sent = run("send", str(study), "--to", "127.0.0.1:11112", "--aet", "L3NODE")
        print(f"3. {sent.stdout.strip()}")
        t_ack = time.perf_counter()
        rows: list = []
        while time.time() < deadline + 300:
            rows = json.loads(run("status", "--config", str(CONFIG), "--json").stdout or "[]")
            if rows and rows[0]["state"] in ("exported", "failed"):
                break
            time.sleep(0.5)
        else:
            print("the node did not finish in time; see", WORK / "node.log")
            return 1
        r = rows[0]
        print(f"4. state {r['state']} {time.perf_counter() - t_ack:.1f} s after the last "
              f"instance was acknowledged (2 s quiet period included)")
    finally:
        node.terminate()
        node.wait(30)
        log.close()
    truth = info["l3"]
    if r["l3_index"] is not None:
        print(f"   L3 chosen: slice {r['l3_index']} (z = {r['z_mm']:.1f} mm, confidence "
              f"{r['confidence']:.2f}); truth: slice {truth.get('middle_index')} "
              f"(z = {truth.get('middle_z_mm')} mm)")
    else:
        print(f"   L3 not found: {r['reason']}")
    for f in sorted((WORK / "outbox").glob("*.dcm")):
        kind = {"KO": "Key Object Selection", "OT": "Secondary Capture",
                "SR": "Measurement Report (SR)"}[f.name[:2]]
        print(f"   {kind}: {f}")
    print(f"done in {time.perf_counter() - t0:.1f} s (send to export "
          f"{time.perf_counter() - t1:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
