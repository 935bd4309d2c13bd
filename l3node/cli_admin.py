"""The admin's commands: ``serve``, ``check-config``, ``status``, ``retry``, ``echo``, ``send``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config
    from .node import Node
    from .web import StatusServer


def _load(path: Path):
    from .config import load_config

    return load_config(path)


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
    fixed = fix_mmap_threshold()  # before the model's and the studies' allocations
    cfg = _load(args.config)
    configure_logs(cfg.logging.level, cfg.logging.format, cfg.logging.hash_uids)
    event(logging.getLogger("l3node.heap"), "node.heap",
          mmap_threshold=f"{DEFAULT_MMAP_THRESHOLD >> 20} MiB, fixed" if fixed else "unchanged")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node, web = start_node(cfg)
    except (RuntimeError, OSError) as exc:
        print(f"l3node: cannot start: {exc}", file=sys.stderr)
        return 1
    print(f"l3node serving as {node.cfg.node.ae_title} on port {node.receiver.port}", flush=True)
    if web is not None:
        print(f"status page: http://{web.host}:{web.port}/", flush=True)
    stop.wait()
    stop_node(node, web)
    return 0


def start_node(cfg: Config) -> tuple[Node, StatusServer | None]:
    """A started node and, when ``web.enabled``, its status page.  The page's socket is
    bound first, so a taken port or a missing token fails before the DICOM port opens;
    on any failure everything started is stopped again."""
    from .node import Node
    from .web import StatusServer

    node = Node(cfg)
    web = None
    try:
        if cfg.web.enabled:
            web = StatusServer.from_config(cfg.web, node)
        node.start()
    except BaseException:
        if web is not None:
            web.stop()
        node.stop()
        raise
    if web is not None:
        web.start()
    return node, web


def stop_node(node: Node, web: StatusServer | None) -> None:
    """The listener first, then the scheduler drains, then the page goes."""
    node.stop()
    if web is not None:
        web.stop()


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Exit 0 when the file is valid, its paths writable, the model loadable and every
    DIMSE destination answers C-ECHO; else 1, with one line per problem."""
    import os

    from .config import ConfigError, DestinationKind
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
        if args.no_echo or d.kind is not DestinationKind.DIMSE:
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
    from .state import open_db
    from .state.views import study_status

    cfg = _load(args.config)
    if not cfg.paths.state_db.is_file():
        print(f"no state database at {cfg.paths.state_db} (nothing received yet)")
        return 0
    db = open_db(cfg.paths.state_db)  # migrates a database an older release wrote
    rows = study_status(db)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        exp = ", ".join(f"{d}: {e['state']}" + (f" ({e['last_error']})" if e["last_error"]
                                                 else "") for d, e in r["exports"].items())
        frame = f" frame {r['l3_frame_number']}" if r.get("l3_frame_number") else ""
        l3 = (f"L3 slice {r['l3_index']} ({r['l3_sop_instance_uid']}{frame}, "
              f"z {r['z_mm']:.1f} mm)"
              if r["l3_index"] is not None else (r["reason"] or ""))
        print(f"{r['study_instance_uid']}  {r['state']:<10} v{r['version']} "
              f"{r['instances']} instances  {l3}  {exp}")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    from .state import open_db
    from .state.exports import retry_failed

    cfg = _load(args.config)
    n = retry_failed(open_db(cfg.paths.state_db), args.study_uid)
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
    print(f"{d.name}: C-ECHO OK" if d.kind == "dimse" else f"{d.name}: {d.kind} {d.path or d.url}")
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    import pydicom
    from pynetdicom import AE, StoragePresentationContexts

    from .statuses import STORED, hex4

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
            if not status or int(status.Status) not in STORED:
                failed += 1
                print(f"{f.name}: {'no response' if not status else hex4(status.Status)}")
    finally:
        assoc.release()
    print(f"sent {len(files) - failed} of {len(files)} instances to {args.aet}@{host}:{port}")
    return 1 if failed else 0


