"""``l3node phantom``: write a synthetic CT study with its ground truth."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .phantom import PRESETS, TRANSFER_SYNTAXES

    p = sub.add_parser(
        "phantom",
        help="generate synthetic CT studies with known vertebra levels",
        description="Write K synthetic CT studies (one CT Image Storage file per slice plus "
        "truth.json with every vertebra level) into OUT/study-NNN/. Deterministic per seed.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--count", type=int, default=1, help="number of studies (default 1)")
    p.add_argument("--preset", choices=PRESETS, default="whole-body", help="scan range")
    p.add_argument(
        "--slice-mm",
        type=float,
        default=None,
        help="slice thickness in mm (default: drawn from 1, 1.25, 2, 2.5, 3, 5)",
    )
    p.add_argument("--transfer-syntax", choices=TRANSFER_SYNTAXES, default="explicit")
    p.add_argument(
        "--transitional-rate",
        type=float,
        default=0.10,
        help="fraction of patients with transitional anatomy (default 0.10)",
    )
    p.add_argument(
        "--truncated-rate",
        type=float,
        default=0.05,
        help="fraction of L3-bearing scans that end inside L3 (default 0.05)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON summary per study")
    p.set_defaults(func=_cmd_phantom)


def _cmd_phantom(args: argparse.Namespace) -> int:
    from .phantom import StudyRequest, generate_study

    if args.count < 1:
        raise SystemExit(f'l3node phantom: "--count" must be at least 1, got {args.count}.')
    for k in range(args.count):
        req = StudyRequest(
            seed=args.seed,
            index=k,
            preset=args.preset,
            slice_mm=args.slice_mm,
            transfer_syntax=args.transfer_syntax,
            transitional_rate=args.transitional_rate,
            truncated_rate=args.truncated_rate,
        )
        folder = args.out / f"study-{k:03d}"
        t0 = time.perf_counter()
        truth = generate_study(folder, req, workers=args.workers)
        secs = time.perf_counter() - t0
        if args.json:
            print(
                json.dumps(
                    {
                        "folder": str(folder),
                        "seconds": round(secs, 2),
                        "series": {
                            k2: v for k2, v in truth["series"].items() if not isinstance(v, list)
                        },
                        "l3": truth["l3"],
                        "hard_case": truth["hard_case"],
                    }
                )
            )
        else:
            print(describe_truth(folder, truth, secs))
    return 0


def describe_truth(folder: Path, truth: dict, seconds: float | None = None) -> str:
    """A human summary of a phantom's ground truth (no PHI: phantoms have none anyway)."""
    s, l3, hc = truth["series"], truth["l3"], truth["hard_case"]
    lines = [
        f"{folder}: {s['slice_count']} slices, {s['slice_thickness_mm']:g} mm, "
        f"{s['pixel_spacing_mm']:g} mm pixels, {s['patient_position']}, "
        f"{s['transfer_syntax']}" + (f" ({seconds:.1f} s)" if seconds is not None else ""),
        f"  study {s['study_instance_uid']}",
    ]
    if l3["present"]:
        lines.append(
            f"  L3 body: slices {l3['first_index']}..{l3['last_index']} (sorted head to feet), "
            f"middle {l3['middle_index']} = InstanceNumber {l3['middle_instance_number']}, "
            f"z = {l3['middle_z_mm']:.1f} mm"
        )
        lines.append(f"  L3 SOPInstanceUID {l3['middle_sop_instance_uid']}")
    else:
        lines.append("  L3: not in the field of view")
    flags = [k for k, v in hc.items() if v is True]
    if flags:
        lines.append(f"  hard case: {', '.join(flags)} (variant {hc['variant']})")
    return "\n".join(lines)


