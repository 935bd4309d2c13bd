"""``l3node cohort``: a research cohort's L3 slices from the PACS, one table row per study."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cohort",
        help="find the L3 slice of every study in a list, retrieved from the PACS",
        description="Query the PACS for the studies of a CSV file (a StudyInstanceUID or "
        "AccessionNumber column) or of a study date range, retrieve each study's CT series "
        "(C-GET or C-MOVE, or WADO-RS), run them through the node's pipeline and write one "
        "row per study to OUT/cohort.csv (and the journal OUT/cohort.jsonl).  Run it again "
        "with the same OUT to finish an interrupted cohort: done studies are skipped.  Exit "
        "0 when every study has a final row (found, not_found, no_series), 1 otherwise.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--studies", type=Path, metavar="CSV",
                     help="the study list (header: StudyInstanceUID and/or AccessionNumber)")
    src.add_argument("--dates", metavar="FROM..TO",
                     help="study dates, YYYY-MM-DD..YYYY-MM-DD (with --modality)")
    p.add_argument("--modality", default="CT", help="with --dates (default CT)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT",
                   help="folder of the table, its journal and the work files")
    p.add_argument("--config", type=Path, default=Path("config/l3node.toml"))
    p.add_argument("--pacs", required=True, metavar="DEST",
                   help="the configured destination to query and retrieve from "
                   "(kind dimse or stowrs)")
    p.add_argument("--retrieve", choices=("auto", "get", "move", "wado"), default="auto",
                   help="auto: C-GET for a DIMSE PACS, WADO-RS for DICOMweb; move: C-MOVE "
                   "to node.ae_title, which the PACS must know, listening on node.port "
                   "(or --move-port)")
    p.add_argument("--move-port", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=2, help="retrievals in flight")
    p.add_argument("--send", action="store_true",
                   help="also send the results to the configured destinations")
    p.add_argument("--keep-input", action="store_true",
                   help="keep the retrieved CT under OUT/work/spool")
    p.set_defaults(func=_cmd_cohort)


def _cmd_cohort(args: argparse.Namespace) -> int:
    from .cohort import FINAL, Cohort, Options, parse_range, read_worklist
    from .config import load_config
    from .logs import configure as configure_logs

    cfg = load_config(args.config)
    configure_logs(cfg.logging.level, cfg.logging.format, cfg.logging.hash_uids)
    wanted = read_worklist(args.studies) if args.studies else None
    dates = parse_range(args.dates, args.modality) if args.dates else None
    cohort = Cohort(cfg, args.out, Options(
        source=args.pacs, retrieve=args.retrieve, concurrency=args.concurrency,
        send=args.send, keep_input=args.keep_input, move_port=args.move_port))
    counts = cohort.run(wanted, dates)
    rows = cohort.table.rows.values()
    unfinished = [r for r in rows if r["status"] not in FINAL]
    for r in unfinished:  # the researcher's to-do list: which, and why
        print(f"not done: {r['study_instance_uid'] or r['request']}: {r['status']}: "
              f"{r['reason']}", file=sys.stderr)
    print(json.dumps({"counts": counts, "rows": len(cohort.table.rows),
                      "csv": str(cohort.table.csv), "unfinished": len(unfinished)}))
    return 1 if unfinished else 0
