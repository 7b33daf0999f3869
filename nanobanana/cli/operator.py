"""Operator commands: `python -m nanobanana users|credits|api-keys|export|delete-account|sweep|announce ...`.

USER is a username or an account id. Every command prints a sentence (or, with `--json`, one JSON
object) and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanobanana.cli.main import print_json
from nanobanana.service.operations import open_operations


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
    with open_operations() as ops:
        account = ops.add_user(args.username, args.provider, args.provider_user_id, args.email, args.opt_in)
        return _out(args, {"account": _account_payload(account), **_account_payload(account)},
                    f"Created account {account.username} ({account.id}) with {account.balance} credits.")


def users_list(args):
    with open_operations() as ops:
        accounts = ops.users()
        lines = [f"{a.username:24} {a.balance:>8} credits  {a.provider:12} {a.id}" for a in accounts]
        return _out(args, {"users": [_account_payload(a) for a in accounts]},
                    "\n".join(lines) if lines else "No accounts yet.")


def users_show(args):
    with open_operations() as ops:
        payload = {**_account_payload(ops.account(args.user)), "images": ops.image_count(args.user)}
        return _out(args, payload, "\n".join(f"{k}: {v}" for k, v in payload.items()))


def credits_grant(args):
    with open_operations() as ops:
        account = ops.account(args.user)
        balance = ops.grant(args.user, args.amount, args.reason)
        return _out(args, {"username": account.username, "delta": args.amount, "balance": balance},
                    f"{account.username}: {args.amount:+d} credits ({args.reason}); balance {balance}.")


def credits_history(args):
    with open_operations() as ops:
        account = ops.account(args.user)
        entries = [e.to_dict() for e in ops.ledger(args.user)]
        lines = [
            f"{e['created_at']}  {e['kind']:7} {e['delta']:+6d}  → {e['balance_after']:>6}  {e['reason']}"
            for e in entries
        ]
        return _out(args, {"username": account.username, "entries": entries},
                    "\n".join(lines) if lines else f"{account.username} has no ledger entries.")


def api_keys_create(args):
    with open_operations() as ops:
        account = ops.account(args.user)
        new = ops.create_api_key(args.user, args.name, args.webhook_url)
        payload = {"username": account.username, **new.record.to_dict(), "key": new.key,
                   "webhook_secret": new.webhook_secret}
        return _out(args, payload, f"API key {new.record.id} ({new.record.name}) for {account.username}:\n"
                                   f"  key:            {new.key}\n  webhook secret: {new.webhook_secret}\n"
                                   "Shown this once; only a hash is stored.")


def api_keys_list(args):
    with open_operations() as ops:
        account = ops.account(args.user)
        keys = [k.to_dict() for k in ops.api_keys(args.user)]
        lines = [f"{k['id']}  {k['prefix']}…  {k['name']:24} made {k['created_at']}  last used "
                 f"{k['last_used_at'] or 'never'}" for k in keys]
        return _out(args, {"username": account.username, "keys": keys},
                    "\n".join(lines) if lines else f"{account.username} has no API keys.")


def api_keys_revoke(args):
    with open_operations() as ops:
        account = ops.account(args.user)
        key = ops.revoke_api_key(args.user, args.key_id)
        return _out(args, {"username": account.username, "id": key.id, "revoked": True},
                    f"Revoked API key {key.id} ({key.name}) of {account.username}; it stops working at once.")


def export(args):
    with open_operations() as ops:
        account = ops.account(args.user)
        out = ops.export(args.user, Path(args.out))
        return _out(args, {"username": account.username, "path": str(out), "bytes": out.stat().st_size},
                    f"Wrote everything stored about {account.username} to {out}.")


def delete_account(args):
    with open_operations() as ops:
        account = ops.delete_account(args.user)
        return _out(args, {"username": account.username, "deleted": True},
                    f"Deleted account {account.username} and every record and file tied to it.")


def sweep(args):
    with open_operations() as ops:
        report = ops.sweep()
        return _out(args, report.to_dict(),
                    f"Removed {report.images} expired image(s), {report.files} file(s), {report.exports} "
                    f"export(s), {report.history} history row(s).")


def announce(args):
    with open_operations() as ops:
        report = ops.announce(args.text)
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

    keys = subparsers.add_parser("api-keys", help="make, list and revoke an account's API keys")
    keys_sub = keys.add_subparsers(dest="api_keys_command", required=True, metavar="ACTION")
    p = _parser(keys_sub, "create", "make an API key (printed once)", api_keys_create)
    p.add_argument("user", help="username or account id")
    p.add_argument("--name", required=True, help="what will use it (shown in the key list)")
    p.add_argument("--webhook-url", help="where this key's job ends are posted by default")
    p = _parser(keys_sub, "list", "an account's API keys (never the keys themselves)", api_keys_list)
    p.add_argument("user", help="username or account id")
    p = _parser(keys_sub, "revoke", "revoke an API key at once", api_keys_revoke)
    p.add_argument("user", help="username or account id")
    p.add_argument("key_id", help="the key's id (see `api-keys list`)")

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
