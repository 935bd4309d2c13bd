"""``python -m training int8-check``: int8 against fp32, case by case.

int8 is acceptable only if it changes no decision, so this runs each series through two
production localizers (coarse to fine, second opinion included: what the node runs), fp32
and int8 on ONNX Runtime, and records per case both statuses and L3 slices, the slices
evaluated, the largest |p difference| on the slices both networks saw and the largest over
the whole (interpolated) profile.  Cases are phantom
studies (``--data``, repeatable) and the real cases (``--real``, found and converted as
``evaluate-real`` does).  Each finished case is appended to ``OUT.partial.jsonl`` and
skipped on a rerun, so a long check that is killed resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from l3node.config import ModelConfig
from l3node.localize.localizer import Localizer
from l3node.localize.model import load_artifact
from l3node.select import load_series

from .data import cases_from_phantoms
from .realeval import discover


def compare_case(name: str, kind: str, folder: Path, fp32: Localizer, int8: Localizer) -> dict:
    """One series through both localizers: decisions, evaluated slices, max |Δp|, seconds."""
    series = load_series(folder)
    a, b = fp32.run(series), int8.run(series)
    both = a.scored & b.scored  # slices both networks saw (elsewhere the profile is
    # interpolated, from different slices where the refinement differed)
    return {
        "case": name, "kind": kind, "slices": len(series),
        "fp32_status": a.status, "int8_status": b.status,
        "fp32_index": a.index, "int8_index": b.index,
        "same_decision": (a.status, a.index) == (b.status, b.index),
        "fp32_evaluated": a.evaluated, "int8_evaluated": b.evaluated,
        "max_abs_p_diff": round(float(np.max(np.abs(a.probs - b.probs)[both])), 5),
        "max_abs_profile_diff": round(float(np.max(np.abs(a.probs - b.probs))), 5),
        "fp32_highest_p": round(float(np.max(a.probs)), 4),
        "int8_highest_p": round(float(np.max(b.probs)), 4),
        "fp32_inference_s": round(a.timings.inference_s, 2),
        "int8_inference_s": round(b.timings.inference_s, 2),
    }


def run(args) -> int:
    cases: list[tuple[str, str, Path]] = []
    for data in args.data:
        cases += [(Path(c.folder).relative_to(data).as_posix() or Path(c.folder).name,
                   "phantom", Path(c.folder)) for c in cases_from_phantoms(data)]
    if args.real:
        cases += [(c.name, "real", c.series_dir)
                  for c in discover(Path(args.real), Path(args.work) / "dicom")]
    if not cases:
        raise SystemExit("no cases: give --data and/or --real")
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial.jsonl")
    done = {}
    if partial.is_file():
        for line in partial.read_text().splitlines():
            rec = json.loads(line)
            done[(rec["kind"], rec["case"])] = rec
    todo = [c for c in cases if (c[1], c[0]) not in done]
    if todo:
        model = load_artifact(args.model)
        fp32 = Localizer(model, ModelConfig(path=args.model, precision="fp32"))
        int8 = Localizer(load_artifact(args.model), ModelConfig(path=args.model,
                                                                precision="int8"))
        for name, kind, folder in todo:
            rec = compare_case(name, kind, folder, fp32, int8)
            done[(kind, name)] = rec
            with partial.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    records = [done[(k, n)] for n, k, _ in cases]
    changed = [r["case"] for r in records if not r["same_decision"]]
    summary = {
        "model": str(args.model), "weights_sha256": load_artifact(args.model).sha256,
        "cases": len(records), "phantom_cases": sum(r["kind"] == "phantom" for r in records),
        "real_cases": sum(r["kind"] == "real" for r in records),
        "decisions_changed": changed, "all_decisions_unchanged": not changed,
        "max_abs_p_diff": max(r["max_abs_p_diff"] for r in records),
        "fp32_inference_s": round(sum(r["fp32_inference_s"] for r in records), 1),
        "int8_inference_s": round(sum(r["int8_inference_s"] for r in records), 1),
        "per_case": records,
    }
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_case"}, indent=1))
    return 0 if not changed else 5
