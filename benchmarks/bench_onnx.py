"""ONNX Runtime vs PyTorch for ResNet50 in fp32: how much faster, and the same decisions?

The node runs fp32 on the CPU with ONNX Runtime (``model.runtime = "auto"``,
:mod:`l3node.localize.runtime`).  This runs the real
:class:`~l3node.localize.localizer.Localizer` coarse-to-fine on each phantom with both
engines and compares the chosen slice, the slices evaluated, the largest probability
difference and the inference time.  Run: ``python benchmarks/bench_onnx.py``.
"""

from __future__ import annotations

import numpy as np
from benchlib import ROOT, Phantom, phantom

from l3node.config import ModelConfig
from l3node.localize.localizer import Localizer
from l3node.localize.model import load_artifact
from l3node.select import load_series

MODEL = ROOT / "models" / "default"


def compare(studies: list[Phantom]) -> list[dict]:
    """Per study: torch vs ONNX Runtime decision, evaluated count, max abs Δp, inference s."""
    torch_loc = Localizer(load_artifact(MODEL), ModelConfig(batch_size=4, runtime="torch",
                                                              precision="fp32"))
    ort_loc = Localizer(load_artifact(MODEL), ModelConfig(batch_size=4, runtime="onnxruntime",
                                                              precision="fp32"))
    out = []
    for study in studies:
        series = load_series(study.folder)
        a, b = torch_loc.run(series), ort_loc.run(series)
        out.append({
            "slices": len(series), "mm": study.truth["series"]["slice_thickness_mm"],
            "torch_index": a.index, "ort_index": b.index,
            "torch_evaluated": a.evaluated, "ort_evaluated": b.evaluated,
            "max_prob_diff": float(np.nanmax(np.abs(a.probs - b.probs))),
            "torch_inference_s": a.timings.inference_s, "ort_inference_s": b.timings.inference_s,
        })
    return out


def main() -> None:
    for r in compare([phantom("whole-body", 5.0), phantom("whole-body", 1.0)]):
        print(f"{r['mm']:g} mm ({r['slices']} slices): L3 torch {r['torch_index']} / ORT "
              f"{r['ort_index']}, evaluated {r['torch_evaluated']} / {r['ort_evaluated']}, "
              f"max abs Δp {r['max_prob_diff']:.2e}, inference {r['torch_inference_s']:.1f} s / "
              f"{r['ort_inference_s']:.1f} s")


if __name__ == "__main__":
    main()
