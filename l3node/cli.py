"""The ``l3node`` command line: one subcommand per job (``cli_*`` modules hold them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, cli_admin, cli_cohort, cli_phantom, cli_predict


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l3node",
        description="Find the L3 vertebra slice in CT and put the answer in the PACS.",
    )
    parser.add_argument("--version", action="version", version=f"l3node {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    cli_phantom.add_parser(sub)
    cli_predict.add_parser(sub)
    cli_admin.add_parsers(sub)
    cli_cohort.add_parser(sub)
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
