"""int8 on ONNX Runtime: its configuration, the same decision as fp32, the calibration's
provenance (``l3node.localize.int8``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from l3node.config import ConfigError, ModelConfig, Precision, Runtime, default_model_dir
from l3node.localize.int8 import CALIBRATION_FILE, CalibrationError, read_calibration
from l3node.localize.localizer import Localizer
from l3node.localize.model import load_artifact
from l3node.localize.runtime import OnnxNet, resolve_runtime
from l3node.phantom import StudyRequest, generate_study
from l3node.select import load_series


def test_int8_config_runs_on_onnxruntime_on_the_cpu_only():
    cfg = ModelConfig(precision="int8")
    assert cfg.precision is Precision.INT8
    assert resolve_runtime(cfg.runtime, cfg.precision, "cpu") is Runtime.ONNXRUNTIME
    assert ModelConfig(precision="int8", runtime="onnxruntime").runtime is Runtime.ONNXRUNTIME
    with pytest.raises(ConfigError, match=r'ONNX Runtime only.*got runtime = "torch"'):
        ModelConfig(precision="int8", runtime="torch")
    with pytest.raises(ConfigError, match=r'"int8" runs on the CPU only.*got device = "cuda"'):
        ModelConfig(precision="int8", device="cuda")
    with pytest.raises(ConfigError, match=r'"int8" runs on the CPU only.*got device = "auto"'):
        ModelConfig(precision="int8", device="auto")
    with pytest.raises(ConfigError, match="fp32 or int8 on the CPU only"):
        ModelConfig(precision="bf16", runtime="onnxruntime")


@pytest.fixture(scope="module")
def small_series(tmp_path_factory: pytest.TempPathFactory):
    """A 5 mm abdomen-pelvis phantom at 256² (84 slices), from a seed no model saw."""
    d = tmp_path_factory.mktemp("int8-abd")
    generate_study(d, StudyRequest(seed=79, preset="abdomen-pelvis", slice_mm=5.0, matrix=256,
                                   transitional_rate=0.0, truncated_rate=0.0), workers=2)
    return load_series(d)


def test_int8_gives_the_fp32_decision(small_series):
    """The shipped calibration, quantised at start: the same status and L3 slice as fp32 (coarse
    to fine, as the node runs), and probabilities close to fp32's on every slice."""
    model_dir = default_model_dir()
    fp32 = Localizer(load_artifact(model_dir), ModelConfig(precision="fp32", batch_size=8))
    int8 = Localizer(load_artifact(model_dir), ModelConfig(precision="int8", batch_size=8))
    assert isinstance(int8.net, OnnxNet) and int8.model.net is None
    a, b = fp32.run(small_series), int8.run(small_series)
    assert a.status == "found" and (a.status, a.index) == (b.status, b.index)
    fa, fb = fp32.run(small_series, exhaustive=True), int8.run(small_series, exhaustive=True)
    assert fa.probs.max() > 0.5  # the comparison covers an L3 peak
    # measured: max 0.25 (one slice on the flank of the L3 peak, where p is steepest), mean 0.007
    dp = np.abs(fa.probs - fb.probs)
    assert dp.mean() < 0.02 and dp.max() < 0.35, (dp.mean(), dp.max())


def test_a_calibration_for_other_weights_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(default_model_dir(), model_dir)
    model = load_artifact(model_dir)
    calib = model_dir / CALIBRATION_FILE
    doc = json.loads(calib.read_text())
    assert read_calibration(model_dir, model.sha256)["weights_sha256"] == model.sha256
    assert doc["calibration_data"]["kind"] == "phantom" and doc["calibration_data"]["phantoms"]
    doc["weights_sha256"] = "0" * 64
    calib.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match="calibrated for other weights"):
        Localizer(model, ModelConfig(path=model_dir, precision="int8"))
    calib.unlink()
    with pytest.raises(CalibrationError, match=r"int8-calibration\.json is missing.*calibrate"):
        Localizer(model, ModelConfig(path=model_dir, precision="int8"))


def test_a_calibration_for_another_graph_is_refused(tmp_path):
    """Ranges are keyed by tensor name: an export with another topology is refused in the
    child, and the node's error says why."""
    model_dir = tmp_path / "model"
    shutil.copytree(default_model_dir(), model_dir)
    calib = model_dir / CALIBRATION_FILE
    doc = json.loads(calib.read_text())
    doc["graph_topology_sha256"] = "f" * 64
    calib.write_text(json.dumps(doc))
    with pytest.raises(RuntimeError, match="another export of the network"):
        Localizer(load_artifact(model_dir), ModelConfig(path=model_dir, precision="int8"))


@pytest.fixture(autouse=True)
def _calibration_present():
    assert (Path(default_model_dir()) / CALIBRATION_FILE).is_file()
