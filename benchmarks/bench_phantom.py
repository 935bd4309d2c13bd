"""Phantom generation speed and memory: prints figures, asserts nothing.

Measures a 1 mm whole-body series (about 1600-1900 slices) and a 5 mm one, each in a fresh
child process so peak RSS is per run (parent + its workers).  Run: ``make bench`` or
``python benchmarks/bench_phantom.py [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

CHILD = r"""
import json, re, resource, sys, time
from pathlib import Path
from l3node.phantom import StudyRequest, generate_study
out, slice_mm, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
truth = generate_study(Path(out), StudyRequest(seed=5, preset="whole-body", slice_mm=slice_mm),
                       workers=workers)
secs = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of a big process
# (run_all.py after loading torch) would report its parent's peak
self_kb = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"slices": truth["series"]["slice_count"], "seconds": secs,
                  "parent_rss_mb": self_kb / 1024, "worker_rss_mb": kids_kb / 1024}))
"""


def measure(slice_mm: float, workers: int) -> dict:
    """One whole-body series generated in a fresh child process: slices, seconds, peak RSS
    of the parent and of its largest worker (MB), and the size on disk (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-c", CHILD, tmp, str(slice_mm), str(workers)],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r["disk_mb"] = sum(f.stat().st_size for f in os.scandir(tmp)) / 1e6
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, workers={args.workers}")
    print(f"{'series':<22}{'slices':>8}{'wall s':>9}{'slices/s':>10}{'parent MB':>11}"
          f"{'worker MB':>11}{'disk MB':>9}")
    for slice_mm in (5.0, 1.0):
        r = measure(slice_mm, args.workers)
        print(f"{f'whole-body {slice_mm:g} mm':<22}{r['slices']:>8}{r['seconds']:>9.1f}"
              f"{r['slices'] / r['seconds']:>10.1f}{r['parent_rss_mb']:>11.0f}"
              f"{r['worker_rss_mb']:>11.0f}{r['disk_mb']:>9.0f}")


if __name__ == "__main__":
    main()
