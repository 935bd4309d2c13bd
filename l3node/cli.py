"""The ``l3node`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:  # the heavy modules load only for the commands that need them
    from .localize.localizer import Result
    from .localize.model import LoadedModel
    from .localize.series import CTSeries


def _add_phantom(sub: argparse._SubParsersAction) -> None:
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


def default_model_dir() -> Path:
    """``$L3NODE_MODEL``, else the model shipped beside the package (``models/default``)."""
    import os

    env = os.environ.get("L3NODE_MODEL")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models" / "default"


def _add_predict(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--batch-size", type=int, default=4, help="as the node's model.batch_size")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16 autocast (faster on CPUs with bf16 support)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="engine for the network (auto: ONNX Runtime for fp32 on the CPU)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .localize.localizer import Localizer, pick_device
    from .localize.model import ArtifactError, load_artifact
    from .localize.series import SeriesError, load_series

    model_dir = args.model or default_model_dir()
    t0 = time.perf_counter()
    try:
        device = pick_device(args.device)
        model = load_artifact(model_dir, device=device)
        series = load_series(args.series_dir)
        loc = Localizer(model, batch_size=args.batch_size, precision=args.precision,
                        device=device, runtime=args.runtime)
        model = loc.model  # without the PyTorch weights when ONNX Runtime holds them
    except (ArtifactError, SeriesError, ValueError) as exc:
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
            f"SOPInstanceUID: {l3['sop_instance_uid']}",
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


def _load(path: Path):
    from .config import load_config

    return load_config(path)


def _add_node_commands(sub: argparse._SubParsersAction) -> None:
    cfg_default = Path("config/l3node.toml")
    p = sub.add_parser("serve", help="run the node (receive, localize, send results)")
    p.add_argument("--config", type=Path, default=cfg_default)
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("check-config", help="validate a configuration; C-ECHO destinations")
    p.add_argument("--config", type=Path, default=cfg_default)
    p.add_argument("--no-echo", action="store_true", help="skip the C-ECHO of destinations")
    p.set_defaults(func=_cmd_check_config)
    p = sub.add_parser("status", help="studies and their states, from the state database")
    p.add_argument("--config", type=Path, default=cfg_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("retry", help="retry a study's failed exports")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--config", type=Path, default=cfg_default)
    p.set_defaults(func=_cmd_retry)
    p = sub.add_parser("echo", help="C-ECHO a configured destination")
    p.add_argument("destination", metavar="DEST")
    p.add_argument("--config", type=Path, default=cfg_default)
    p.set_defaults(func=_cmd_echo)
    p = sub.add_parser("send", help="C-STORE every DICOM file under a folder")
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--to", required=True, metavar="HOST:PORT")
    p.add_argument("--aet", required=True, help="the receiver's (called) AE title")
    p.add_argument("--calling-aet", default="L3SEND")
    p.set_defaults(func=_cmd_send)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from .heap import DEFAULT_MMAP_THRESHOLD, fix_mmap_threshold
    from .logs import configure as configure_logs
    from .logs import event
    from .node import Node

    fixed = fix_mmap_threshold()  # before the model's and the studies' allocations
    cfg = _load(args.config)
    configure_logs(cfg.logging.level, cfg.logging.format, cfg.logging.hash_uids)
    event(logging.getLogger("l3node.heap"), "node.heap",
          mmap_threshold=f"{DEFAULT_MMAP_THRESHOLD >> 20} MiB, fixed" if fixed else "unchanged")
    node = Node(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node.start()
    except (RuntimeError, OSError) as exc:
        print(f"l3node: cannot start: {exc}", file=sys.stderr)
        node.stop()
        return 1
    print(f"l3node serving as {node.cfg.node.ae_title} on port {node.receiver.port}", flush=True)
    if node.web is not None:
        print(f"status page: http://{node.web.host}:{node.web.port}/", flush=True)
    stop.wait()
    node.stop()
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Exit 0 when the file is valid, its paths writable, the model loadable and every
    DIMSE destination answers C-ECHO; else 1, with one line per problem."""
    import os

    from .config import ConfigError
    from .dispatch import DispatchError, echo
    from .localize.model import ArtifactError, load_artifact

    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        print(f"FAIL {exc}")
        return 1
    problems = []
    for what, path in (("paths.spool", cfg.paths.spool),
                       ("paths.state_db", cfg.paths.state_db.parent)):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            problems.append(f"{what}: {path} is not writable (checked {probe})")
    try:
        m = load_artifact(cfg.model.path)
        print(f"ok   model {m.spec.version} ({m.spec.input_mode}) at {cfg.model.path}")
    except ArtifactError as exc:
        problems.append(f"model.path: {exc}")
    for d in cfg.destinations:
        if args.no_echo or d.kind != "dimse":
            continue
        try:
            echo(d, cfg.node.ae_title, tls=cfg.tls)
            print(f"ok   {d.name}: C-ECHO {d.ae_title}@{d.host}:{d.port}")
        except DispatchError as exc:
            problems.append(str(exc))
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"ok   {args.config}")
    return 1 if problems else 0


def _cmd_status(args: argparse.Namespace) -> int:
    import sqlite3

    from .node import ensure_schema, study_status
    from .spool import SCHEMA

    cfg = _load(args.config)
    if not cfg.paths.state_db.is_file():
        print(f"no state database at {cfg.paths.state_db} (nothing received yet)")
        return 0
    db = sqlite3.connect(str(cfg.paths.state_db))
    db.executescript(SCHEMA)
    ensure_schema(db)
    rows = study_status(db)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        exp = ", ".join(f"{d}: {e['state']}" + (f" ({e['last_error']})" if e["last_error"]
                                                 else "") for d, e in r["exports"].items())
        l3 = (f"L3 slice {r['l3_index']} ({r['l3_sop_instance_uid']}, z {r['z_mm']:.1f} mm)"
              if r["l3_index"] is not None else (r["reason"] or ""))
        print(f"{r['study_instance_uid']}  {r['state']:<10} v{r['version']} "
              f"{r['instances']} instances  {l3}  {exp}")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    import sqlite3

    from .node import retry_exports

    cfg = _load(args.config)
    db = sqlite3.connect(str(cfg.paths.state_db), isolation_level=None)
    n = retry_exports(db, args.study_uid)
    print(f"{n} failed export(s) of {args.study_uid} queued again"
          + ("" if n else " (none were failed)"))
    return 0 if n else 1


def _cmd_echo(args: argparse.Namespace) -> int:
    from .dispatch import DispatchError, echo

    cfg = _load(args.config)
    d = next((d for d in cfg.destinations if d.name == args.destination), None)
    if d is None:
        print(f"no destination named {args.destination!r}; configured: "
              f"{[x.name for x in cfg.destinations]}")
        return 1
    try:
        echo(d, cfg.node.ae_title, tls=cfg.tls)
    except DispatchError as exc:
        print(f"FAILED: {exc}")
        return 1
    print(f"{d.name}: C-ECHO OK" if d.kind == "dimse" else f"{d.name}: folder {d.path}")
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    import pydicom
    from pynetdicom import AE, StoragePresentationContexts

    from .dispatch import STORED_STATUSES

    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f'"--to" must be HOST:PORT, got {args.to!r}')
    files = []
    for f in sorted(p for p in args.folder.rglob("*") if p.is_file()):
        try:
            files.append((f, pydicom.dcmread(f, stop_before_pixels=True)))
        except Exception:
            continue
    if not files:
        print(f"no DICOM files under {args.folder}")
        return 1
    ae = AE(ae_title=args.calling_aet)
    classes = {str(ds.SOPClassUID) for _, ds in files}
    tss = {str(ds.file_meta.TransferSyntaxUID) for _, ds in files}
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax in classes:
            ae.add_requested_context(cx.abstract_syntax, [*tss, "1.2.840.10008.1.2.1"])
    assoc = ae.associate(host, int(port), ae_title=args.aet)
    if not assoc.is_established:
        print(f"no association with {args.aet}@{host}:{port}")
        return 1
    failed = 0
    try:
        for f, _ in files:
            status = assoc.send_c_store(pydicom.dcmread(f))
            if not status or int(status.Status) not in STORED_STATUSES:
                failed += 1
                print(f"{f.name}: {'no response' if not status else hex(status.Status)}")
    finally:
        assoc.release()
    print(f"sent {len(files) - failed} of {len(files)} instances to {args.aet}@{host}:{port}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l3node",
        description="Find the L3 vertebra slice in CT and put the answer in the PACS.",
    )
    parser.add_argument("--version", action="version", version=f"l3node {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    _add_phantom(sub)
    _add_predict(sub)
    _add_node_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad values, bad config: a precise message, no traceback
        print(f"l3node {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
