"""`python -m nanobanana check-prompt` and `check-image`: run the safety filters from the command line.

Each prints one JSON object per input: {"allowed": ..., "category": ..., "score": ..., "reason": ...}.
Exit status: 0 when everything was allowed, 3 when something was blocked (1 for an error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_ALLOWED = 0
EXIT_BLOCKED = 3

_EPILOG = (
    "Exit status: 0 = allowed, 3 = blocked (with --file: at least one prompt blocked), 1 = error.\n"
    "Thresholds and switches come from configs/safety.yaml (NANOBANANA_SAFETY__... overrides it)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    prompt = subparsers.add_parser(
        "check-prompt",
        help="check a prompt or edit instruction with the safety filter (exit 3 if blocked)",
        description=(
            "Check a prompt (or edit instruction) with the prompt safety filter and print the verdict "
            "as JSON. Negative prompts are not meant to be checked: they list what the user does not want."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prompt.add_argument("text", nargs="?", help="the prompt to check")
    prompt.add_argument(
        "--file",
        help="read one prompt per line from FILE ('-' = stdin); prints one JSON line per prompt, in order "
        "(blank lines are skipped; each line also carries 'line' and 'prompt')",
    )
    prompt.add_argument(
        "--terms-only", action="store_true", help="skip the sentence-embedding layer (faster, less recall)"
    )
    prompt.set_defaults(func=run_check_prompt)

    image = subparsers.add_parser(
        "check-image",
        help="check an image file with the image safety filter (exit 3 if blocked)",
        description="Check an image with NudeNet and open-nsfw and print the verdict as JSON.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    image.add_argument("path", type=Path, help="image file (PNG, JPEG, WebP, ...)")
    image.set_defaults(func=run_check_image)


def _checker(terms_only: bool = False):
    from nanobanana.safety.checker import SafetyChecker
    from nanobanana.safety.config import load_safety_config

    config = load_safety_config()
    if terms_only:
        config.prompt.semantic.enabled = False
    return SafetyChecker(config)


def _print(payload: dict) -> None:
    print(json.dumps(payload, ensure_ascii=False), flush=True)


def run_check_prompt(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.file is None):
        raise SystemExit("check-prompt: give either TEXT or --file FILE (not both)")
    checker = _checker(args.terms_only)
    if args.file is None:
        verdict = checker.check_prompt(args.text)
        _print(verdict.to_dict())
        return EXIT_ALLOWED if verdict.allowed else EXIT_BLOCKED

    if args.file == "-":
        lines = sys.stdin.read().splitlines()
    else:
        lines = Path(args.file).read_text(encoding="utf-8").splitlines()
    numbered = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    verdicts = checker.check_prompts([text for _, text in numbered])
    for (number, text), verdict in zip(numbered, verdicts, strict=True):
        _print(verdict.to_dict() | {"line": number, "prompt": text})
    return EXIT_ALLOWED if all(v.allowed for v in verdicts) else EXIT_BLOCKED


def run_check_image(args: argparse.Namespace) -> int:
    from nanobanana.errors import NanobananaError

    if not args.path.is_file():
        raise NanobananaError(f"{args.path} is not a file: give the path of an image to check.")
    try:
        from PIL import Image

        with Image.open(args.path) as image:
            image.load()
            verdict = _checker().check_image(image)
    except OSError as exc:
        raise NanobananaError(f"{args.path} could not be read as an image: {exc}") from exc
    _print(verdict.to_dict())
    return EXIT_ALLOWED if verdict.allowed else EXIT_BLOCKED
