"""``l3node predict``: the localizer on one folder, as the node runs it, with timings."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy modules load only when the command runs
    from .config import ModelConfig
    from .localize.localizer import Result
    from .localize.model import LoadedModel
    from .series import CTSeries


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="find the L3 slice in a folder of CT slices",
        description="Load the axial CT series in SERIES_DIR, run the L3 localizer and print "
        "the L3 slice (index in superior-to-inferior order, SOPInstanceUID, InstanceNumber, z), "
        "the confidence, and timings.  Exit 0 when found, 3 when not found, 1 on error.",
    )
    p.add_argument("series_dir", type=Path, metavar="SERIES_DIR")
    p.add_argument("--model", type=Path, default=None,
                   help="model artifact folder (default: $L3NODE_MODEL or models/default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--png", type=Path, default=None, help="write a QC picture here")
    p.add_argument("--exhaustive", action="store_true",
                   help="run every slice through the network (default: coarse-to-fine)")
    add_model_options(p)
    p.set_defaults(func=_cmd_predict)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--device --batch-size --precision --runtime``, defaulting to :class:`ModelConfig`'s
    (the node's ``[model]``); :func:`model_config` turns them into one."""
    from .config import Device, ModelConfig, Precision, Runtime

    d = ModelConfig.__dataclass_fields__
    p.add_argument("--device", choices=[m.value for m in Device], default=d["device"].default)
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default,
                   help="as the node's model.batch_size")
    p.add_argument("--precision", choices=[m.value for m in Precision],
                   default=d["precision"].default,
                   help="int8: ONNX Runtime, static int8 from MODEL/int8-calibration.json "
                   "(the default; CPU); fp32; bf16: PyTorch autocast")
    p.add_argument("--runtime", choices=[m.value for m in Runtime],
                   default=d["runtime"].default,
                   help="engine for the network (auto: ONNX Runtime for int8 and fp32 on the "
                   "CPU)")


def model_config(args: argparse.Namespace, path: Path | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of :func:`add_model_options`' options (validated there)."""
    from .config import ModelConfig

    extra = {"path": path} if path is not None else {}
    return ModelConfig(device=args.device, batch_size=args.batch_size,
                       precision=args.precision, runtime=args.runtime, **extra)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .localize.localizer import Localizer
    from .localize.model import ArtifactError
    from .select import load_series
    from .series import SeriesError

    t0 = time.perf_counter()
    try:
        settings = model_config(args, args.model)
        loc = Localizer.open(settings)
        series = load_series(args.series_dir)
        model = loc.model  # without the PyTorch weights when ONNX Runtime holds them
    except (ArtifactError, ConfigError, SeriesError, ValueError) as exc:
        if args.json:
            print(json.dumps({"status": "error", "reason": str(exc)}))
        else:
            print(f"status: error\nreason: {exc}")
        return 1
    t_load = time.perf_counter() - t0
    res = loc.run(series, exhaustive=args.exhaustive)
    out = predict_summary(series, res, model, t_load)
    if args.png:
        from .localize.qc import qc_png

        qc_png(series, res, args.png, title=f"{series.series_instance_uid} — model "
               f"{model.spec.version} ({model.spec.input_mode})")
        out["png"] = str(args.png)
    if args.json:
        print(json.dumps(out))
    else:
        print(_format_predict(out))
    return 0 if res.status == "found" else 3


def predict_summary(series: CTSeries, res: Result, model: LoadedModel, load_s: float) -> dict:
    d = res.decision
    out: dict = {
        "status": res.status,
        "series_instance_uid": series.series_instance_uid,
        "slice_count": res.slice_count,
        "evaluated": res.evaluated,
        "model": {"version": model.spec.version, "input_mode": model.spec.input_mode,
                  "sha256": model.sha256[:16]},
        "timings_s": {"load": round(load_s, 3), "decode": round(res.timings.decode_s, 3),
                      "preprocess": round(res.timings.preprocess_s, 3),
                      "inference": round(res.timings.inference_s, 3),
                      "localize": round(res.timings.total_s, 3)},
        "skipped_files": [f"{p.name}: {why}" for p, why in series.skipped],
    }
    if d is not None and d.status == "found" and d.index is not None:
        sl = series.slices[d.index]
        out["l3"] = {"index": d.index, "first": d.first, "last": d.last,
                     "sop_instance_uid": sl.sop_instance_uid,
                     "instance_number": sl.instance_number, "z_mm": round(sl.z_mm, 3),
                     "confidence": d.confidence}
        if sl.frame_number is not None:  # a frame of a multi-frame CT: name it
            out["l3"]["frame_number"] = sl.frame_number
    else:
        out["reason"] = res.reason
    if res.opinion is not None:
        out["anatomy"] = res.opinion.to_json()
        out["anatomy"]["summary"] = res.opinion.banner()
    return out


def _format_predict(o: dict) -> str:
    lines = [f"status: {o['status']}"]
    if "l3" in o:
        l3 = o["l3"]
        lines += [
            f"L3 slice: index {l3['index']} of {o['slice_count']} (sorted superior to "
            f"inferior), InstanceNumber {l3['instance_number']}, z = {l3['z_mm']:.1f} mm",
            f"SOPInstanceUID: {l3['sop_instance_uid']}"
            + (f", frame {l3['frame_number']}" if "frame_number" in l3 else ""),
            f"confidence: {l3['confidence']:.2f} (L3 run: slices {l3['first']}..{l3['last']})",
        ]
    else:
        lines.append(f"reason: {o.get('reason', '')}")
    if o.get("anatomy", {}).get("summary"):
        lines.append(o["anatomy"]["summary"])
    t = o["timings_s"]
    lines.append(f"evaluated {o['evaluated']} of {o['slice_count']} slices; time: load "
                 f"{t['load']:.2f} s, decode {t['decode']:.2f} s, preprocess "
                 f"{t['preprocess']:.2f} s, inference {t['inference']:.2f} s, localize "
                 f"{t['localize']:.2f} s")
    if o["skipped_files"]:
        lines.append(f"skipped {len(o['skipped_files'])} files: " + "; ".join(
            o["skipped_files"][:5]))
    if "png" in o:
        lines.append(f"QC picture: {o['png']}")
    return "\n".join(lines)


