"""Privacy rights and the privacy policy.

`export` hands a person everything stored about them in one zip; `delete_account` removes every row and
file tied to them. `policy_markdown` renders the policy from the same configuration that enforces it,
so the page cannot promise something the code does not do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

from nanobanana.errors import NanobananaError
from nanobanana.service.accounts import Accounts, Identity
from nanobanana.service.config import ServiceConfig, analytics_enabled
from nanobanana.service.db import Database
from nanobanana.service.generation_log import History
from nanobanana.service.images import ImageStore
from nanobanana.service.ledger import CostRule, Ledger

LEDGER_FIELDS = ["created_at", "kind", "delta", "balance_after", "reason", "request_id"]


class PrivacyError(NanobananaError):
    """An export or deletion could not be completed."""


def _json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


class Privacy:
    def __init__(self, db: Database, accounts: Accounts, ledger: Ledger, storage: ImageStore,
                 history: History) -> None:
        self.db = db
        self.accounts = accounts
        self.ledger = ledger
        self.storage = storage
        self.history = history

    def export(self, identity: Identity) -> Path:
        """One zip: profile.json, ledger.csv, ledger.json, history.json, images.json and images/*.png."""
        files: dict[str, str] = {}
        if identity.is_account:
            account = self.accounts.get(identity.key)
            entries = [e.to_dict() for e in self.ledger.history(account.id)]
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=LEDGER_FIELDS)
            writer.writeheader()
            writer.writerows({k: e[k] for k in LEDGER_FIELDS} for e in entries)
            files["profile.json"] = _json(account.profile())
            files["ledger.csv"] = buffer.getvalue()
            files["ledger.json"] = _json(entries)
            files["history.json"] = _json([h.to_dict() for h in self.history.for_account(account.id)])
        else:
            files["profile.json"] = _json(
                {"kind": "anonymous", "note": "No account: only your images are stored."}
            )
        stored = self.storage.list(identity)
        files["images.json"] = _json([s.to_dict() for s in stored])
        return self._zip(identity, "export", files, [s.id for s in stored])

    def images_zip(self, identity: Identity) -> Path:
        """All of this person's current images (and their settings) in one zip."""
        stored = self.storage.list(identity)
        return self._zip(identity, "images", {"images.json": _json([s.to_dict() for s in stored])},
                         [s.id for s in stored])

    def _zip(self, identity: Identity, label: str, files: dict[str, str], image_ids: list[str]) -> Path:
        target = self.storage.new_export_path(identity, label)
        temp = target.with_name(f".{target.name}.tmp")
        try:
            with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, text in files.items():
                    archive.writestr(name, text)
                for image_id in image_ids:
                    try:
                        path = self.storage.path(identity, image_id)
                    except NanobananaError:
                        continue  # expired while we were zipping
                    archive.write(path, f"images/{image_id}.png", compress_type=zipfile.ZIP_STORED)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return target

    def delete_account(self, identity: Identity) -> None:
        """Remove every row and file tied to this person. Anonymous usage rows carry no identity and stay."""
        with self.db.transaction() as c:
            image_ids = self.storage.delete_owner(identity, c)
            if identity.is_account:
                self.accounts.get(identity.key, c)
                self.history.delete_account(identity.key, c)
                self.ledger.delete_account_entries(identity.key, c)
                self.accounts.delete(identity.key, c)
        self.storage.remove_files(image_ids)
        self.storage.remove_exports(identity)
        self.db.scrub()


def _hours(h: float) -> str:
    if h % 24 == 0 and h >= 24:
        days = int(h // 24)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{h:g} hour{'s' if h != 1 else ''}"


def policy_markdown(config: ServiceConfig, *, environ=None, prompt_filter: bool = True,
                    image_filter: bool = True) -> str:
    """The privacy policy, rendered from the configuration the service enforces."""
    credits, allowance, storage, privacy, smtp = (
        config.credits, config.allowance, config.storage, config.privacy, config.smtp,
    )
    analytics = analytics_enabled(environ)
    third = list(privacy.third_parties)
    if analytics:
        third.append("Gradio's usage analytics (GRADIO_ANALYTICS_ENABLED is on)")
    if smtp.enabled:
        third.append(f"the e-mail server {smtp.host} (only for service updates you opted in to)")
    third_text = ", ".join(third) if third else "none"
    filters = []
    filters.append("prompts are checked by a safety filter" if prompt_filter
                   else "**the prompt safety filter is turned off by the operator**")
    filters.append("every image is checked by a safety filter before you see it" if image_filter
                   else "**the image safety filter is turned off by the operator**")
    anonymous_limit = f"{storage.anonymous_max_images} images / {storage.anonymous_max_bytes / 1e6:g} MB"
    account_limit = f"{storage.account_max_images} images / {storage.account_max_bytes / 1e6:g} MB"
    email = "sent" if smtp.enabled else "not set up here, so updates appear only in the app"
    return f"""# Privacy policy

This Nanobanana instance is run by {privacy.operator_name}. Questions and requests: {privacy.contact}.

## What we store about you
- **Without an account:** nothing about you. Your images, with the prompts and settings that made them,
  are kept for **{_hours(storage.anonymous_expiry_hours)}**, then deleted. Your browser session is stored
  only as a one-way hash beside those images. Your network address is never written to disk: it is held
  in memory, for the day, only to count the free allowance.
- **With an account:** what your sign-in provider tells us (provider, your id there, username, e-mail if
  given), when the account was created, whether you want service updates, your credit balance and every
  credit movement (grants, charges, refunds); your images for **{_hours(storage.account_expiry_hours)}**;
  your generation history (prompts, settings, times) for **{privacy.history_retention_days:g} days**.
- **Uploaded images** for image-to-image and edits are processed in memory and never stored.

## Limits
- Free allowance without an account: **{allowance.anonymous_images_per_day} images per day**, counted per
  browser session and per network address, in memory only.
- New accounts receive **{credits.signup_grant} credits**. Price: {CostRule(credits).describe()}.
  Images that fail or are withheld by the safety filter are refunded (or not counted against the allowance).
- Stored images per person: at most **{anonymous_limit}** without an account, **{account_limit}** with
  one. At the limit your oldest images are deleted first, and we tell you.
- Safety: {"; ".join(filters)}.

## Anonymous usage statistics
For each request we record the hour (not the minute), mode, model, aspect ratio, steps, number of images,
outcome and how long each stage took. These records contain no account, session, address or prompt text,
and are kept to run and improve the service.

## Your rights
- **Export:** download everything stored about you (profile, credit ledger as CSV and JSON, generation
  history, every stored image) as one zip from your account panel. Exports are deleted after
  {storage.export_expiry_minutes:g} minutes.
- **Delete:** deleting your account removes every record and file tied to it at once and signs you out
  on every device. Only a keyed hash of your sign-in (provider and id, not readable back) is kept for
  **{privacy.closed_account_days:g} days**, so that deleting and signing up again does not give a second
  sign-up grant; then it is deleted too.
- **Sign-in:** a sign-in lasts **{_hours(privacy.sign_in_hours)}**; the server keeps a random session id
  (hashed) for it, and signing out ends it at once.
- **Service updates:** off unless you opt in; opting out stops them in the app and by e-mail.
  E-mail is {email}.

## Third parties
Data shared with third parties: {third_text}. Analytics: {"on" if analytics else "off"}.
"""
