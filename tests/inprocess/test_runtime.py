"""ONNX Runtime in place of PyTorch: the same probabilities and decisions, or a clear error."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from l3node.config import ConfigError, ModelConfig, default_model_dir
from l3node.localize.localizer import Localizer
from l3node.localize.model import load_artifact
from l3node.localize.runtime import OnnxNet, optimised_graph, resolve_runtime
from l3node.phantom import StudyRequest, generate_study
from l3node.select import load_series


def test_auto_picks_onnxruntime_only_for_fp32_on_the_cpu():
    assert resolve_runtime("auto", "fp32", "cpu") == "onnxruntime"
    assert resolve_runtime("auto", "bf16", "cpu") == "torch"
    assert resolve_runtime("auto", "fp32", "cuda") == "torch"
    assert resolve_runtime("torch", "fp32", "cpu") == "torch"
    with pytest.raises(ConfigError, match="fp32 or int8 on the CPU only"):
        ModelConfig(runtime="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match=r"model\.runtime: must be one of"):
        ModelConfig(runtime="tensorrt")


def test_onnxruntime_gives_the_torch_probabilities_and_decision(tmp_path):
    """Every slice of a phantom through both engines (exhaustive): probabilities within 1e-4,
    the same L3 slice; the ONNX localizer no longer holds the PyTorch weights."""
    generate_study(tmp_path, StudyRequest(seed=78, preset="abdomen-pelvis", slice_mm=5.0,
                                          transitional_rate=0.0, truncated_rate=0.0), workers=2)
    series = load_series(tmp_path)
    ref = Localizer(load_artifact(default_model_dir()),
                    ModelConfig(batch_size=8, runtime="torch", precision="fp32"))
    ort = Localizer(load_artifact(default_model_dir()),
                    ModelConfig(batch_size=8, runtime="onnxruntime", precision="fp32"))
    assert isinstance(ort.net, OnnxNet) and ort.model.net is None
    with pytest.raises(ValueError, match="released"):
        Localizer(ort.model, ModelConfig(runtime="torch", precision="fp32"))
    a, b = ref.run(series, exhaustive=True), ort.run(series, exhaustive=True)
    assert a.evaluated == b.evaluated == len(series)
    assert np.abs(a.probs - b.probs).max() < 1e-4
    assert a.probs.max() > 0.5  # the comparison covers an L3 peak, not only near-zero values
    assert (a.status, a.index) == (b.status, b.index)


def test_export_refuses_weights_changed_since_loading(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(default_model_dir(), model_dir)
    model = load_artifact(model_dir)
    with pytest.raises(RuntimeError, match="weights changed since the node loaded them"):
        optimised_graph(dataclasses.replace(model, sha256="0" * 64), tmp_path / "g.onnx")
    (model_dir / "weights.pt").write_bytes(b"not a state dict")
    with pytest.raises(RuntimeError, match=r"exporting .* to ONNX failed"):
        optimised_graph(model, tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()


@pytest.fixture(autouse=True)
def _model_present():
    assert (Path(default_model_dir()) / "model.json").is_file()
