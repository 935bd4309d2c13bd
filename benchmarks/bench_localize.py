"""Localizer throughput and `predict` wall time / peak RSS: prints figures, asserts nothing.

1. slices/s for decode (uncompressed and JPEG 2000), preprocessing, and ResNet50 inference
   in fp32, bf16 autocast, each with and without channels-last;
2. ``l3node predict`` on a 5 mm and a 1 mm whole-body phantom (coarse-to-fine), wall time,
   peak RSS, and how many slices went through the network.

Run: ``python benchmarks/bench_localize.py [--model DIR]`` (default: models/default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l3node.cli import default_model_dir
from l3node.localize.model import load_artifact
from l3node.localize.preprocess import preprocess
from l3node.localize.series import load_series
from l3node.phantom import StudyRequest, generate_study


def _rate(n: int, secs: float) -> str:
    return f"{n / secs:8.1f}"


def bench_parts(model_dir: Path, study: Path, j2k: Path) -> None:
    s = load_series(study)
    idx = list(range(0, min(len(s), 64)))
    t = time.perf_counter()
    hu = s.hu(idx)
    print(f"decode explicit VR      {_rate(len(idx), time.perf_counter() - t)} slices/s")
    sj = load_series(j2k)
    jdx = list(range(0, min(len(sj), 32)))
    t = time.perf_counter()
    sj.hu(jdx)
    print(f"decode JPEG 2000        {_rate(len(jdx), time.perf_counter() - t)} slices/s")
    m = load_artifact(model_dir)
    preprocess(hu[:4], m.spec.preprocessing)
    t = time.perf_counter()
    x = preprocess(hu, m.spec.preprocessing)
    print(f"preprocess              {_rate(len(idx), time.perf_counter() - t)} slices/s")
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
        print(f"ResNet50 {name:<15}{_rate(4 * len(inp), secs)} slices/s (batch 16)")


def bench_predict(study: Path, model_dir: Path, precision: str) -> dict:
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "l3node", "predict",
           str(study), "--json", "--model", str(model_dir), "--precision", precision]
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
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        wb5, wb1, j2k = tmp_p / "wb5", tmp_p / "wb1", tmp_p / "j2k"
        generate_study(wb5, StudyRequest(seed=5, preset="whole-body", slice_mm=5.0))
        generate_study(wb1, StudyRequest(seed=5, preset="whole-body", slice_mm=1.0))
        generate_study(j2k, StudyRequest(seed=5, preset="abdomen-pelvis", slice_mm=5.0,
                                         transfer_syntax="jpeg2000-lossless"))
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
