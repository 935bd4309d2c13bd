"""Which engine runs the network: PyTorch, or ONNX Runtime for fp32 or int8 on the CPU.

Why a second engine: on the 2-core machine ONNX Runtime runs the same ResNet50 in fp32 about
1.7× faster than PyTorch (channels-last, oneDNN) — its graph optimiser folds batch norm into
the convolutions and fuses the activations — and that is the largest single cost between
"study complete" and "key image in the PACS" (``benchmarks/RESULTS.md``).  Its probabilities
differ from PyTorch's by ~1e-7, so the decisions are the same (checked on the held-out
phantoms, ``docs/model-card.md``).

The model artifact stays the PyTorch state dict: the ONNX graph is exported from it when the
localizer is built, so there is one source of truth for the weights and nothing extra to ship
or keep in step.  A child process (``python -m l3node.localize.runtime``, ~5 s once per start)
exports the graph and lets ONNX Runtime optimise it for this CPU (batch norm folded, NCHWc
layout) into a temporary file; the node loads that file with optimisation off, without ONNX
Runtime's memory arena, and drops its PyTorch copy of the weights.  Measured on the 2-core
machine: the exporter's and the optimiser's copies of the weights (~400 MiB at their peak)
never count against the node's memory, and the session holds ~100 MiB of weights instead of
~250 MiB.

``auto`` picks ONNX Runtime where it helps: fp32 on the CPU (exact), and int8, which only ONNX
Runtime runs.  bf16 is a PyTorch autocast mode, and CUDA runs PyTorch.

int8 (:mod:`.int8`): the same child exports the fp32 graph, quantises it statically with the
activation ranges stored beside the weights (``int8-calibration.json``, measured offline on
phantoms by ``python -m training calibrate``; no calibration data at start), then optimises
it as above (the QDQ pairs fuse into QLinearConv).  The calibration's provenance (the
weights' sha256) is checked here before the child starts, and again in the child.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..config import Precision, Runtime
from .int8 import CalibrationError, quantize, read_calibration
from .model import LoadedModel, load_artifact


def resolve_runtime(runtime: Runtime, precision: Precision, device: str) -> Runtime:
    """The engine "auto" means for this precision and device (ONNX Runtime where it helps:
    fp32 and int8 on the CPU).  Impossible combinations (int8 on PyTorch or CUDA) were
    refused when the :class:`~l3node.config.ModelConfig` was built."""
    runtime, precision = Runtime(runtime), Precision(precision)
    if runtime is Runtime.AUTO:
        onnx_ok = precision in (Precision.FP32, Precision.INT8) and device == "cpu"
        return Runtime.ONNXRUNTIME if onnx_ok else Runtime.TORCH
    return runtime


def export_onnx(net: torch.nn.Module, size: int) -> bytes:
    """``net`` as an ONNX graph with a dynamic batch axis (input ``x``, output ``logit``)."""
    buf = io.BytesIO()
    was_training = net.training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net.eval(), (torch.zeros(2, 3, size, size),), buf,
                          input_names=["x"], output_names=["logit"], dynamo=False,
                          dynamic_axes={"x": {0: "n"}, "logit": {0: "n"}})
    net.train(was_training)
    return buf.getvalue()


def optimised_graph(model: LoadedModel, out: Path, timeout_s: float = 300.0,
                    precision: Precision | str = Precision.FP32) -> None:
    """Write the artifact's ONNX graph (int8-quantised for ``precision = "int8"``), optimised
    by ONNX Runtime for this CPU, to ``out``.

    Runs in a child process, which checks that the weights still have the sha256 this
    process loaded.
    """
    precision = Precision(precision)
    if precision is Precision.INT8:
        read_calibration(Path(model.path or "."), model.sha256)  # a clear error, before the child
    cmd = [sys.executable, "-m", "l3node.localize.runtime", str(model.path), model.sha256,
           str(out), precision.value]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0 or not out.is_file():
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exporting {model.path} to ONNX failed: {tail[0]}")


def _session_options(threads: int | None = None):  # -> onnxruntime.SessionOptions
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: not the warning that the saved graph is CPU-specific
    return so


class OnnxNet:
    """Stands in for the torch network: an N × 3 × S × S float tensor in, N logits out."""

    def __init__(self, graph: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        so = _session_options(threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done already
        # No arena: it keeps its high-water mark for good.  Measured in the node on the 1 mm
        # study, batch 4: peak RSS 1442 MiB without, 1508 MiB with, and no slower.
        so.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])

    @classmethod
    def from_model(cls, model: LoadedModel, precision: Precision | str = Precision.FP32,
                   ) -> tuple[OnnxNet, LoadedModel]:
        """The session, and ``model`` without its PyTorch network (no longer needed)."""
        with tempfile.TemporaryDirectory(prefix="l3node-onnx-") as tmp:
            graph = Path(tmp) / "l3net.onnx"
            optimised_graph(model, graph, precision=precision)
            net = cls(graph)
        return net, replace(model, net=None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": arr})[0])


def _main(argv: list[str]) -> int:
    """``python -m l3node.localize.runtime MODEL_DIR SHA256 OUT [fp32|int8]``: the optimised
    graph."""
    import onnxruntime as ort

    folder, want, out = Path(argv[0]), argv[1], argv[2]
    precision = Precision(argv[3] if len(argv) > 3 else "fp32")
    model = load_artifact(folder)
    if model.sha256 != want or model.net is None:
        print(f"{folder}: weights changed since the node loaded them (sha256 "
              f"{model.sha256[:12]}…, expected {want[:12]}…)", file=sys.stderr)
        return 2
    graph: bytes | str = export_onnx(model.net, model.spec.preprocessing.size)
    del model  # the graph holds the weights from here
    so = _session_options()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = out
    with tempfile.TemporaryDirectory(prefix="l3node-int8-") as tmp:
        if precision is Precision.INT8:
            try:
                calibration = read_calibration(folder, want)
                quantize(bytes(graph), calibration, Path(tmp) / "int8.onnx")
            except CalibrationError as exc:
                print(exc, file=sys.stderr)
                return 3
            graph = str(Path(tmp) / "int8.onnx")
        ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
