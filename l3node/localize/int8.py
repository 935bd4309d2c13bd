"""int8 ResNet50 for ONNX Runtime: static quantisation from ranges calibrated offline.

Why: on the CPU the network is most of the time between "study complete" and "key image in
the PACS", and ONNX Runtime's int8 kernels (VNNI) run it ~3× faster than fp32.  int8 is
shipped only because every decision on the held-out phantoms and the real cases is the same
as fp32's (``models/default/int8-check.json``, ``docs/model-card.md``).

How, and why this way.  Static quantisation needs each activation tensor's range.  Those come
from calibration: ``python -m training calibrate`` runs preprocessed *phantom* slices through
ONNX Runtime's percentile calibrator (:func:`onnxruntime.quantization.quantize_static` with a
``CalibrationDataReader`` and ``calibration_cache_path``) and stores the ranges, with their
provenance, in ``MODEL/int8-calibration.json`` (:data:`CALIBRATION_FILE`).  At node start
:func:`quantize` calls the same ``quantize_static`` with ``calibration_cache_path`` pointing
at those ranges and no reader (the documented use of ``calibration_cache_path`` in ONNX
Runtime 1.32): no calibration data and no calibration pass at start, the graph depends only
on the weights and the stored ranges (deterministic), and the cache is written with ONNX
Runtime's own ``save_tensors_data``.  Rejected: ``TensorQuantOverrides`` (per-tensor
``rmin``/``rmax``, but ``quantize_static`` still wants a reader to calibrate the rest) and
calling ``QDQQuantizer`` with a ``TensorsData`` directly (not public API; it skips
``quantize_static``'s model preparation).

Choices, measured on the 2-core AMD EPYC (VNNI) machine (``docs/model-card.md``): QDQ format
(ONNX Runtime fuses it into QLinearConv; QOperator was no faster), per-channel int8 weights,
uint8 activations, no reduced range (VNNI does not saturate; on an AVX2-only CPU rerun
``python -m training int8-check`` first), the head (``Gemm``, 2048 → 1)
kept in fp32 so the logit itself is not rounded to 8 bits, and **percentile** ranges (the
99.999th percentile of each activation's histogram): plain min/max ranges, stretched by rare
outliers, moved the L3 slice by one on 5 of 30 check cases; percentile ranges on none.

The calibration file names the weights (sha256) and the exported graph's topology it was
made for; :func:`read_calibration` refuses any other (a clear :class:`CalibrationError`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .model import ArtifactError

CALIBRATION_FILE = "int8-calibration.json"
FORMAT = "l3node-int8-calibration"
FORMAT_VERSION = 1
# The quantisation itself: fixed here, recorded in every calibration file.
SETTINGS: dict[str, Any] = {
    "quant_format": "QDQ", "per_channel": True, "reduce_range": False,
    "activation_type": "QUInt8", "weight_type": "QInt8", "calibrate_method": "Percentile",
    "percentile": 99.999, "fp32_op_types": ["Gemm"],
}
STRIDE = 8  # calibration batches per histogram update (ResNet50's activations are large)


class CalibrationError(ArtifactError):
    """The int8 calibration file is missing, malformed, or made for other weights."""


def graph_topology_sha256(graph_bytes: bytes) -> str:
    """sha256 of the graph's nodes (op type, input and output names), without weights: the
    stored ranges are keyed by tensor name, so they fit a graph with the same topology."""
    import onnx

    g = onnx.load_from_string(graph_bytes).graph
    h = hashlib.sha256()
    for n in g.node:
        h.update(json.dumps([n.op_type, list(n.input), list(n.output)]).encode())
    return h.hexdigest()


def _quantize_kwargs(graph_bytes: bytes) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    g = onnx.load_from_string(graph_bytes).graph
    return {
        "quant_format": QuantFormat[SETTINGS["quant_format"]],
        "per_channel": SETTINGS["per_channel"], "reduce_range": SETTINGS["reduce_range"],
        "activation_type": QuantType[SETTINGS["activation_type"]],
        "weight_type": QuantType[SETTINGS["weight_type"]],
        "calibrate_method": CalibrationMethod[SETTINGS["calibrate_method"]],
        "nodes_to_exclude": [n.name for n in g.node if n.op_type in SETTINGS["fp32_op_types"]],
        "extra_options": {"CalibPercentile": SETTINGS["percentile"]},
    }


def calibrate(graph_bytes: bytes, reader: Any) -> dict[str, list]:
    """Per-tensor [low, high] of the fp32 graph over ``reader``'s batches (offline only), as
    nested lists that keep the calibrator's array shapes.  ``reader`` is a
    ``CalibrationDataReader`` with ``len()`` (batches) and ``set_range()``: the histograms
    are updated every few batches (``CalibStridedMinMax``), so memory stays bounded."""
    import onnx
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    n = len(reader)
    stride = max(k for k in range(1, min(STRIDE, n) + 1) if n % k == 0)
    kwargs = _quantize_kwargs(graph_bytes)
    kwargs["extra_options"]["CalibStridedMinMax"] = stride
    with tempfile.TemporaryDirectory(prefix="l3node-calib-") as tmp:
        cache = Path(tmp) / "ranges.json"
        quantize_static(onnx.load_from_string(graph_bytes), str(Path(tmp) / "q.onnx"),
                        reader, calibration_cache_path=str(cache), **kwargs)
        data = load_tensors_data(cache).data
    return {k: [np.asarray(v.range_value[0]).tolist(), np.asarray(v.range_value[1]).tolist()]
            for k, v in sorted(data.items())}


def calibration_record(graph_bytes: bytes, ranges: dict[str, list], *,
                       weights_sha256: str, model_version: str, phantoms: list[dict],
                       images: int) -> dict:
    """The calibration file's content: the ranges and where they came from."""
    import onnxruntime
    import torch

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "weights_sha256": weights_sha256, "model_version": model_version,
        "graph_topology_sha256": graph_topology_sha256(graph_bytes),
        "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": SETTINGS, "calibration_data": {"kind": "phantom", "images": images,
                                                   "phantoms": phantoms},
        "ranges": ranges,
    }


def read_calibration(folder: Path, weights_sha256: str) -> dict:
    """``folder``'s calibration file, checked against these weights and this code's settings."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        raise CalibrationError(
            f'{path} is missing: precision "int8" needs the int8 calibration of these weights '
            f"(python -m training calibrate --model {folder} --data PHANTOM_SET)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path} is not valid JSON: {exc}") from exc
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise CalibrationError(f"{path} is not an l3node int8 calibration (format "
                               f"{doc.get('format')!r} version {doc.get('format_version')!r})")
    if doc.get("weights_sha256") != weights_sha256:
        raise CalibrationError(
            f"{path} was calibrated for other weights (sha256 "
            f"{str(doc.get('weights_sha256'))[:12]}…, these are {weights_sha256[:12]}…); "
            f"run python -m training calibrate again for these weights")
    if doc.get("settings") != SETTINGS:
        raise CalibrationError(f"{path} was made with other quantisation settings "
                               f"({doc.get('settings')}); run python -m training calibrate "
                               "again")
    if not isinstance(doc.get("ranges"), dict) or not doc["ranges"]:
        raise CalibrationError(f"{path} holds no tensor ranges")
    return doc


def quantize(graph_bytes: bytes, calibration: dict, out: Path) -> None:
    """Write the int8 (QDQ) graph of ``graph_bytes`` to ``out`` from the stored ranges."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    topo = graph_topology_sha256(graph_bytes)
    if calibration.get("graph_topology_sha256") != topo:
        raise CalibrationError(
            f"the int8 calibration was made for another export of the network (graph "
            f"{str(calibration.get('graph_topology_sha256'))[:12]}…, this one {topo[:12]}…: "
            f"torch {calibration.get('torch')} then); run python -m training calibrate again")
    data = {k: TensorData(lowest=np.asarray(lo, dtype=np.float32),
                          highest=np.asarray(hi, dtype=np.float32))
            for k, (lo, hi) in calibration["ranges"].items()}
    with tempfile.TemporaryDirectory(prefix="l3node-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        method = CalibrationMethod[SETTINGS["calibrate_method"]]
        save_tensors_data(TensorsData(method, data), cache)
        quantize_static(onnx.load_from_string(graph_bytes), str(out), None,
                        calibration_cache_path=str(cache), **_quantize_kwargs(graph_bytes))
