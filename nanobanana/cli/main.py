"""`python -m nanobanana`: the command line for researchers, scripts and operators.

Each concern registers its own subcommands (a `register(subparsers)` function beside its code); this
module only assembles them and turns our errors into a message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from nanobanana.errors import NanobananaError

# Modules that contribute subcommands, in the order `--help` lists them.
COMMAND_MODULES = [
    "nanobanana.cli.generate",
    "nanobanana.cli.safety",
    "nanobanana.cli.provenance",
    "nanobanana.cli.operator",
    "nanobanana.cli.worker",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanobanana",
        description="Nanobanana: generate and edit images, check prompts, run the service's operator tasks.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def print_json(payload: object) -> None:
    """Print one JSON object on one line (what `--json` promises to scripts)."""
    print(json.dumps(payload, ensure_ascii=False, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NanobananaError as exc:
        if getattr(args, "json", False):
            print_json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
