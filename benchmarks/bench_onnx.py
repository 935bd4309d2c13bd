"""ONNX Runtime instead of PyTorch for ResNet50: faster on this CPU, and the same decisions?

Optional: needs ``onnxruntime`` and ``onnx`` (not dependencies of l3node; ``pip install
onnxruntime onnx`` into the venv).  The shipped model is exported once (TorchScript exporter)
into ``.cache/bench/onnx``; then the real :class:`~l3node.localize.localizer.Localizer` runs
the coarse-to-fine search on each phantom twice, once with the torch network (fp32,
channels-last, as the node runs it) and once with an ONNX Runtime session in its place, and
compares the chosen slice, the slices evaluated, the largest probability difference and
the inference time.  Run: ``python benchmarks/bench_onnx.py``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from benchlib import CACHE, ROOT, Phantom, phantom

from l3node.localize.localizer import Localizer
from l3node.localize.model import LoadedModel, load_artifact
from l3node.localize.series import load_series

MODEL = ROOT / "models" / "default"


def available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OrtNet:
    """Stands in for the torch network inside Localizer: a tensor in, logits out."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": arr})[0])


def export(model: LoadedModel) -> Path:
    """The model as ONNX, cached under the sha256 of its weights."""
    digest = hashlib.sha256((MODEL / "weights.pt").read_bytes()).hexdigest()[:16]
    path = CACHE / "onnx" / f"l3net-{digest}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        net = model.net.eval().to(memory_format=torch.contiguous_format)
        x = torch.zeros(2, 3, model.spec.preprocessing.size, model.spec.preprocessing.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(path.with_suffix(".part")), input_names=["x"],
                              output_names=["logit"], dynamo=False,
                              dynamic_axes={"x": {0: "n"}, "logit": {0: "n"}})
        path.with_suffix(".part").rename(path)
    return path


def compare(studies: list[Phantom]) -> list[dict]:
    """Per study: torch vs ONNX Runtime decision, evaluated count, max abs Δp, inference s."""
    model = load_artifact(MODEL)
    path = export(model)
    torch_loc = Localizer(model)  # fp32, channels-last: what the node runs by default
    ort_loc = Localizer(load_artifact(MODEL))
    ort_loc.net = OrtNet(path, max(1, os.cpu_count() or 1))  # type: ignore[assignment]
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
    if not available():
        print("onnxruntime/onnx not installed: pip install onnxruntime onnx")
        return
    for r in compare([phantom("whole-body", 5.0), phantom("whole-body", 1.0)]):
        print(f"{r['mm']:g} mm ({r['slices']} slices): L3 torch {r['torch_index']} / ORT "
              f"{r['ort_index']}, evaluated {r['torch_evaluated']} / {r['ort_evaluated']}, "
              f"max abs Δp {r['max_prob_diff']:.2e}, inference {r['torch_inference_s']:.1f} s / "
              f"{r['ort_inference_s']:.1f} s")


if __name__ == "__main__":
    main()
