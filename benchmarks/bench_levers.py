"""Complete → KOS, lever by lever: the processing path of the node (select → localize →
compose) on one study, each configuration in a fresh process so one-time costs show.

Levers (issue #16): the warm-up at start (``l3node.warmup``) and the engine
(``model.precision``).  (Preprocessing the next batch on a thread while the network runs was
tried and dropped: ONNX Runtime already keeps both cores busy, interleaved A/B in one process
6.5–7.0 s against 6.1–7.0 s.)  Each
row switches one lever off (or on) against the shipped configuration, so its gain is
measured in the same run on the same study.
Run: ``python benchmarks/bench_levers.py FOLDER [--precision P ...]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from l3node.config import ModelConfig, SelectionConfig
from l3node.compose import compose
from l3node.localize.localizer import Localizer
from l3node.select import select_series
from l3node.warmup import warm_up
folder, precision, warm = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
loc = Localizer.open(ModelConfig(precision=precision))
warm_s = warm_up(loc, loc.model.spec.version) if warm else 0.0
t0 = time.perf_counter()
sel = select_series(Path(folder), SelectionConfig())
t1 = time.perf_counter()
res = loc.run(sel.series)
t2 = time.perf_counter()
d = res.decision
with tempfile.TemporaryDirectory() as tmp:
    compose(sel.series, d.index if res.status == "found" else None, d.confidence,
            loc.model.spec.version, Path(tmp), reason=res.reason,
            anatomy=res.opinion.banner() if res.opinion else "")
t3 = time.perf_counter()
print(json.dumps({"select_s": t1 - t0, "localize_s": t2 - t1, "compose_s": t3 - t2,
                  "total_s": t3 - t0, "inference_s": res.timings.inference_s,
                  "evaluated": res.evaluated, "status": res.status, "index": d.index,
                  "warm_up_s": warm_s}))
"""


def run_once(folder: Path, precision: str, warm: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), precision,
                          "1" if warm else "0"],
                         capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def configurations(precisions: list[str]) -> list[tuple[str, str, bool]]:
    """(label, precision, warm-up): the shipped one first, then one lever changed."""
    base = precisions[0]
    rows = [(f"{base}, warmed up at start (shipped)", base, True),
            (f"{base}, no warm-up (the first study after a start)", base, False)]
    rows += [(f"{p}, warmed up", p, True) for p in precisions[1:]]
    return rows


def measure(folder: Path, precisions: list[str], repeats: int = 1) -> list[dict]:
    out = []
    for label, precision, warm in configurations(precisions):
        runs = [run_once(folder, precision, warm) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["total_s"])
        out.append({"label": label, **best, "runs": [round(r["total_s"], 2) for r in runs]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory():
        for r in measure(args.folder, args.precision, args.repeats):
            print(json.dumps(r))
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
