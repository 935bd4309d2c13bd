"""Localizer throughput and `predict` wall time / peak RSS: prints figures, asserts nothing.

1. slices/s for decode (uncompressed and JPEG 2000), preprocessing, and ResNet50 inference
   in fp32, bf16 autocast, each with and without channels-last;
2. ``l3node predict`` on a 5 mm and a 1 mm whole-body phantom (coarse-to-fine), wall time,
   peak RSS, and how many slices went through the network.

Run: ``python benchmarks/bench_localize.py [--model DIR]`` (default: models/default).
Phantoms are cached in ``.cache/bench`` (benchlib.phantom); ``benchmarks/run_all.py`` reuses
:func:`measure_parts` and :func:`bench_predict` for the table of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import phantom

from l3node.config import default_model_dir
from l3node.localize.model import load_artifact
from l3node.localize.preprocess import preprocess
from l3node.select import load_series


def measure_parts(model_dir: Path, study: Path, j2k: Path) -> dict[str, float]:
    """slices/s for each stage on its own: decode (uncompressed, JPEG 2000), preprocessing,
    and ResNet50 in fp32 and bf16 autocast, each with and without channels-last."""
    rates: dict[str, float] = {}
    s = load_series(study)
    idx = list(range(0, min(len(s), 64)))
    t = time.perf_counter()
    hu = s.hu(idx)
    rates["decode explicit VR"] = len(idx) / (time.perf_counter() - t)
    sj = load_series(j2k)
    jdx = list(range(0, min(len(sj), 32)))
    t = time.perf_counter()
    sj.hu(jdx)
    rates["decode JPEG 2000"] = len(jdx) / (time.perf_counter() - t)
    m = load_artifact(model_dir)
    preprocess(hu[:4], m.spec.preprocessing)
    t = time.perf_counter()
    x = preprocess(hu, m.spec.preprocessing)
    rates["preprocess"] = len(idx) / (time.perf_counter() - t)
    xb = torch.from_numpy(np.repeat(x[:16, None], 3, axis=1))
    for name, cl, bf in (("fp32", False, False), ("fp32 channels-last", True, False),
                         ("bf16", False, True), ("bf16 channels-last", True, True)):
        net = m.net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        inp = xb.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
            net(inp)  # warm-up
            t = time.perf_counter()
            for _ in range(4):  # one batch is too noisy to compare layouts
                net(inp)
            secs = time.perf_counter() - t
        rates[f"ResNet50 {name}"] = 4 * len(inp) / secs
    return rates


def bench_parts(model_dir: Path, study: Path, j2k: Path) -> None:
    for name, rate in measure_parts(model_dir, study, j2k).items():
        batch = " (batch 16)" if name.startswith("ResNet50") else ""
        print(f"{name:<27}{rate:8.1f} slices/s{batch}")


def bench_predict(study: Path, model_dir: Path, precision: str, runtime: str = "auto",
                  batch_size: int = 16) -> dict:
    """``l3node predict`` in a fresh process: wall time and peak RSS by /usr/bin/time (its
    child's rusage, so the figure is not inflated by a big parent: Linux carries ru_maxrss
    over exec; with ONNX Runtime it is the larger of predict and its graph-export child),
    plus the JSON summary's counts and stage timings."""
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "l3node", "predict",
           str(study), "--json", "--model", str(model_dir), "--precision", precision,
           "--runtime", runtime, "--batch-size", str(batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall, rss_kb = res.stderr.strip().splitlines()[-1].split()
    out = json.loads(res.stdout)
    return {"wall_s": float(wall), "rss_mb": int(rss_kb) / 1024, "status": out["status"],
            "evaluated": out["evaluated"], "slices": out["slice_count"],
            "timings": out["timings_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=default_model_dir())
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    wb5 = phantom("whole-body", 5.0).folder
    wb1 = phantom("whole-body", 1.0).folder
    j2k = phantom("abdomen-pelvis", 5.0, transfer_syntax="jpeg2000-lossless").folder
    bench_parts(args.model, wb5, j2k)
    print(f"{'predict':<22}{'precision':>10}{'slices':>8}{'through net':>12}"
          f"{'wall s':>8}{'peak MB':>9}  status")
    for name, study in (("whole-body 5 mm", wb5), ("whole-body 1 mm", wb1)):
        for prec in ("fp32", "bf16"):
            r = bench_predict(study, args.model, prec)
            print(f"{name:<22}{prec:>10}{r['slices']:>8}{r['evaluated']:>12}"
                  f"{r['wall_s']:>8.1f}{r['rss_mb']:>9.0f}  {r['status']} "
                  f"{json.dumps(r['timings'])}")


if __name__ == "__main__":
    main()
