"""Operator commands: `python -m nanobanana users|credits|export|delete-account|sweep|announce ...`.

USER is a username or an account id. Every command prints a sentence (or, with `--json`, one JSON
object) and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from nanobanana.cli.main import print_json
from nanobanana.errors import ConfigError, NanobananaError
from nanobanana.service.accounts import OAuthProfileData

if TYPE_CHECKING:
    from nanobanana.service.studio import Studio


class OperatorError(NanobananaError):
    """An operator command could not run."""


def _no_safety_needed():
    raise ConfigError("Operator commands do not generate images; no safety filter was loaded.")


@contextmanager
def open_studio() -> Iterator[Studio]:
    """The studio for operator tasks: same data folder and database as the app, no sweeper thread."""
    from nanobanana.service.studio import build_studio

    studio = build_studio(safety=_no_safety_needed, start_sweeper=False)
    try:
        yield studio
    finally:
        studio.close()


def generate_as(user: str, request, *, generator=None, **kwargs):
    """Run `request` through the full request path as the account `user` (username or id): credits
    charged, images stored in the data folder, a usage row written. Returns the `StudioResult`."""
    from nanobanana.service.studio import build_studio

    studio = build_studio(generator=generator, start_sweeper=False)
    try:
        account = studio.accounts.resolve(user)
        return studio.generate(request, account.identity, **kwargs)
    finally:
        studio.close()


def run_generate_as_user(args: argparse.Namespace) -> int:
    """`generate ... --user USER`: the generate command, through the service as that account."""
    from nanobanana.cli.generate import request_from_args
    from nanobanana.generation import Generator
    from nanobanana.generation.config import load_generation_config, model_config_from_reference
    from nanobanana.service.studio import build_studio

    config = load_generation_config()
    if args.model:
        config = config.model_copy(update={"model": model_config_from_reference(args.model)})
    generator = Generator(config)
    studio = build_studio(generator=generator, start_sweeper=False)
    try:
        account = studio.accounts.resolve(args.user)
        result = studio.generate(request_from_args(args, generator), account.identity)
        args.out.mkdir(parents=True, exist_ok=True)
        files = []
        for image in result.images:  # the studio keeps them; the caller gets copies in --out
            target = args.out / f"{image.id}.png"
            shutil.copyfile(studio.image_path(account.identity, image.id), target)
            files.append(str(target))
    finally:
        studio.close()
    payload = {"request_id": result.request_id, "charged": result.charged, "balance": result.balance,
               "blocked": result.blocked, "images": [i.id for i in result.images], "files": files,
               "messages": result.messages}
    summary = (f"{len(files)} image(s) for {account.username}: {result.charged} credit(s) charged, "
               f"balance {result.balance} → {args.out}/")
    return _out(args, payload, "\n".join([*result.messages, summary]))


def _extend_generate(subparsers) -> None:
    """Add `--user USER` to the `generate` command (registered before us by nanobanana.cli.generate)."""
    generate = subparsers.choices.get("generate")
    if generate is None:
        return
    generate.add_argument(
        "--user", default=None,
        help="run through the service as this account (username or id): charges its credits, keeps the "
             "images in the data folder for the account, writes a usage row",
    )
    plain = generate.get_default("func")

    def run(args: argparse.Namespace) -> int:
        return run_generate_as_user(args) if args.user else plain(args)

    generate.set_defaults(func=run)


def _out(args: argparse.Namespace, payload: dict, text: str) -> int:
    if args.json:
        print_json({"ok": True, **payload})
    else:
        print(text)
    return 0


def _account_payload(account) -> dict:
    return {
        "id": account.id, "username": account.username, "provider": account.provider,
        "email": account.email, "created_at": account.created_at.isoformat() + "Z",
        "updates_opt_in": account.updates_opt_in, "balance": account.balance,
    }


# -- handlers ----------------------------------------------------------------------------------------
def users_add(args):
    with open_studio() as studio:
        provider_id = args.provider_user_id or args.username
        if studio.accounts.find_by_provider(args.provider, provider_id) is not None:
            raise OperatorError(f"An account for {args.provider} user {provider_id!r} already exists.")
        account = studio.sign_in(OAuthProfileData(args.provider, provider_id, args.username, args.email))
        if args.opt_in:
            studio.set_updates_opt_in(account.identity, True)
            account = studio.accounts.get(account.id)
        return _out(args, {"account": _account_payload(account), **_account_payload(account)},
                    f"Created account {account.username} ({account.id}) with {account.balance} credits.")


def users_list(args):
    with open_studio() as studio:
        accounts = studio.accounts.list()
        lines = [f"{a.username:24} {a.balance:>8} credits  {a.provider:12} {a.id}" for a in accounts]
        return _out(args, {"users": [_account_payload(a) for a in accounts]},
                    "\n".join(lines) if lines else "No accounts yet.")


def users_show(args):
    with open_studio() as studio:
        account = studio.accounts.resolve(args.user)
        images = studio.list_images(account.identity)
        payload = {**_account_payload(account), "images": len(images)}
        text = "\n".join(f"{k}: {v}" for k, v in payload.items())
        return _out(args, payload, text)


def credits_grant(args):
    with open_studio() as studio:
        account = studio.accounts.resolve(args.user)
        if args.amount > 0:
            balance = studio.ledger_service.grant(account.id, args.amount, args.reason)
        else:
            balance = studio.ledger_service.adjust(account.id, args.amount, args.reason)
        return _out(args, {"username": account.username, "delta": args.amount, "balance": balance},
                    f"{account.username}: {args.amount:+d} credits ({args.reason}); balance {balance}.")


def credits_history(args):
    with open_studio() as studio:
        account = studio.accounts.resolve(args.user)
        entries = [e.to_dict() for e in studio.ledger_service.history(account.id)]
        lines = [
            f"{e['created_at']}  {e['kind']:7} {e['delta']:+6d}  → {e['balance_after']:>6}  {e['reason']}"
            for e in entries
        ]
        return _out(args, {"username": account.username, "entries": entries},
                    "\n".join(lines) if lines else f"{account.username} has no ledger entries.")


def export(args):
    with open_studio() as studio:
        account = studio.accounts.resolve(args.user)
        made = studio.export(account.identity)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(made, out)
        return _out(args, {"username": account.username, "path": str(out), "bytes": out.stat().st_size},
                    f"Wrote everything stored about {account.username} to {out}.")


def delete_account(args):
    with open_studio() as studio:
        account = studio.accounts.resolve(args.user)
        studio.delete_account(account.identity)
        return _out(args, {"username": account.username, "deleted": True},
                    f"Deleted account {account.username} and every record and file tied to it.")


def sweep(args):
    with open_studio() as studio:
        report = studio.sweep()
        return _out(args, report.to_dict(),
                    f"Removed {report.images} expired image(s), {report.files} file(s), {report.exports} "
                    f"export(s), {report.history} history row(s).")


def announce(args):
    with open_studio() as studio:
        report = studio.announce(args.text)
        mail = (f"e-mailed to {report.emailed} opted-in account(s)"
                + (f", {report.email_failures} failed" if report.email_failures else "")
                if report.email_enabled else "not e-mailed (SMTP is not configured)")
        payload = {"id": report.announcement.id, "emailed": report.emailed,
                   "email_failures": report.email_failures, "email_enabled": report.email_enabled}
        return _out(args, payload, f"Posted announcement {report.announcement.id}; shown in the app to "
                                   f"opted-in accounts, {mail}.")


# -- wiring ------------------------------------------------------------------------------------------
def _parser(subparsers, name: str, help_text: str, func) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=func)
    return parser


def register(subparsers) -> None:
    _extend_generate(subparsers)
    users = subparsers.add_parser("users", help="list, show and add accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = _parser(users_sub, "add", "create an account (as if its owner signed in)", users_add)
    p.add_argument("username")
    p.add_argument("--provider", default="local", help="sign-in provider (default: local)")
    p.add_argument("--provider-user-id", help="the id at the provider (default: the username)")
    p.add_argument("--email")
    p.add_argument("--opt-in", action="store_true", help="opt in to service updates")
    _parser(users_sub, "list", "list accounts", users_list)
    p = _parser(users_sub, "show", "show one account", users_show)
    p.add_argument("user", help="username or account id")

    credits = subparsers.add_parser("credits", help="grant credits, show an account's ledger")
    credits_sub = credits.add_subparsers(dest="credits_command", required=True, metavar="ACTION")
    p = _parser(credits_sub, "grant", "grant credits (a negative amount adjusts down)", credits_grant)
    p.add_argument("user", help="username or account id")
    p.add_argument("amount", type=int)
    p.add_argument("--reason", required=True, help="why (kept in the ledger)")
    p = _parser(credits_sub, "history", "an account's ledger", credits_history)
    p.add_argument("user", help="username or account id")

    p = _parser(subparsers, "export", "write an account's privacy export zip", export)
    p.add_argument("user", help="username or account id")
    p.add_argument("--out", required=True, help="the zip file to write")
    p = _parser(subparsers, "delete-account", "delete an account and everything tied to it", delete_account)
    p.add_argument("user", help="username or account id")
    _parser(subparsers, "sweep", "delete expired images, exports and history", sweep)
    p = _parser(subparsers, "announce", "post a service update to opted-in accounts", announce)
    p.add_argument("text")


if __name__ == "__main__":  # pragma: no cover
    from nanobanana.cli.main import main

    sys.exit(main())
