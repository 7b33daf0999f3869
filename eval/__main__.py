"""`python -m eval <command>`: benchmarks and evaluations, each writing CSV/JSON under a results folder.

Each command lives in its own module here with a `register(subparsers)` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "eval.overhead",
    "eval.overhead_service",
    "eval.safety",
    "eval.image_fp",
    "eval.provenance",
    "eval.speed",
    "eval.errors",
    "eval.adherence",
    "eval.throughput",
    "eval.report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
