"""`python -m nanobanana verify FILE...` and `python -m nanobanana provenance init`.

`verify` prints one JSON object per file: its C2PA manifest (present, valid, trusted, signer, digital
source type, software, model) and its invisible watermark (found, payload). Exit code, the worst file
deciding: 0 every file is marked as made by AI, 3 a file carries no AI mark, 4 a file was changed after
signing (tampered), 5 a file is not a readable image. Signatures are checked against this instance's own
CA and `c2pa.trust_anchors`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanobanana.errors import NanobananaError
from nanobanana.provenance import AI_MARKED, NOT_MARKED, TAMPERED, UNREADABLE, Provenance
from nanobanana.provenance.keys import CA_FILE, CHAIN_FILE, KEY_FILE, create_local_ca, key_dir, signer_summary
from nanobanana.service.config import load_service_config

SEVERITY = [AI_MARKED, NOT_MARKED, UNREADABLE, TAMPERED]  # later is worse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="check images for C2PA Content Credentials and the watermark",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.set_defaults(func=run_verify)
    parser = subparsers.add_parser("provenance", help="the C2PA signing key: `provenance init` makes a local CA",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="make a local CA and signing certificate in the data folder")
    init.add_argument("--force", action="store_true", help="replace an existing local key")
    init.add_argument("--json", action="store_true", help="print the result as one JSON object")
    init.set_defaults(func=run_init)


def run_verify(args: argparse.Namespace) -> int:
    from nanobanana.cli.main import print_json

    reader = Provenance.from_config(load_service_config().data_dir, signing=False)  # type: ignore[arg-type]
    worst = AI_MARKED
    for path in args.files:
        try:
            verdict = reader.verify_file(path)
        except (OSError, NanobananaError) as exc:
            message = exc.strerror if isinstance(exc, OSError) else str(exc)
            print_json({"file": str(path), "status": "unreadable", "error": message})
            code = UNREADABLE
        else:
            print_json({"file": str(path), **verdict.to_dict()})
            code = verdict.exit_code
        worst = max(worst, code, key=SEVERITY.index)
    sys.stdout.flush()
    return worst


def run_init(args: argparse.Namespace) -> int:
    from nanobanana.cli.main import print_json

    config = load_service_config()
    operator = "Nanobanana" if config.privacy.operator_unset else config.privacy.operator_name
    folder = key_dir(config.data_dir)  # type: ignore[arg-type]
    ca = create_local_ca(folder, operator, force=args.force)
    summary = signer_summary((folder / CHAIN_FILE).read_bytes())
    payload = {"ok": True, "ca": str(ca), "chain": str(folder / CHAIN_FILE), "key": str(folder / KEY_FILE),
               "signer": summary}
    if args.json:
        print_json(payload)
    else:
        print(f"Made a local CA and signing certificate ({summary['subject']}, valid until "
              f"{summary['not_after']}) in {folder}/.\nReaders trust the images' manifests when they trust "
              f"{folder / CA_FILE}; the key {KEY_FILE} is readable by this user only.")
    return 0
