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
import tempfile
import zipfile
from pathlib import Path

from nanobanana.errors import ImageNotFound
from nanobanana.service.accounts import Accounts, Identity
from nanobanana.service.api_keys import ApiKeys
from nanobanana.service.db import Database
from nanobanana.service.generation_log import GenerationLog
from nanobanana.service.idempotency import IdempotencyKeys
from nanobanana.service.images import ExportFile, ImageStore
from nanobanana.service.jobs import JobStore, Owner
from nanobanana.service.ledger import Ledger
from nanobanana.service.webhooks import Webhooks

LEDGER_FIELDS = ["created_at", "kind", "delta", "balance_after", "reason", "request_id"]


def _json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


class Privacy:
    def __init__(self, db: Database, accounts: Accounts, ledger: Ledger, storage: ImageStore,
                 history: GenerationLog, jobs: JobStore, *, api_keys: ApiKeys | None = None,
                 idempotency: IdempotencyKeys | None = None, webhooks: Webhooks | None = None) -> None:
        self.db = db
        self.api_keys = api_keys
        self.idempotency = idempotency
        self.webhooks = webhooks
        self.jobs = jobs
        self.accounts = accounts
        self.ledger = ledger
        self.storage = storage
        self.history = history
        self.temp_dir = storage.exports_dir  # None: the system's temporary folder (object storage)

    def export(self, identity: Identity) -> ExportFile:
        """One zip: profile.json, ledger.csv, ledger.json, history.json, api_keys.json (names and dates,
        never the keys), requests.json (recent and open requests), webhooks.json, images.json and
        images/*.png."""
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
            if self.api_keys is not None:
                files["api_keys.json"] = _json([k.to_dict() for k in self.api_keys.list(account.id)])
        else:
            files["profile.json"] = _json(
                {"kind": "anonymous", "note": "No account: only your images are stored."}
            )
        owner = Owner(identity.kind, identity.owner_key)
        files["requests.json"] = _json([
            {"id": j.id, "state": j.state, "created_at": j.created_at, "finished_at": j.finished_at,
             "outcome": j.outcome, "settings": {k: v for k, v in j.settings.items() if k != "timings"}}
            for j in self.jobs.of_owner(owner, limit=10_000)
        ])
        if self.webhooks is not None:
            files["webhooks.json"] = _json([d.to_dict() for d in self.webhooks.of_owner(owner)])
        stored = self.storage.list(identity)
        files["images.json"] = _json([s.to_dict() for s in stored])
        return self._zip(identity, "export", files, [s.id for s in stored])

    def images_zip(self, identity: Identity) -> ExportFile:
        """All of this person's current images (and their settings) in one zip."""
        stored = self.storage.list(identity)
        return self._zip(identity, "images", {"images.json": _json([s.to_dict() for s in stored])},
                         [s.id for s in stored])

    def _zip(self, identity: Identity, label: str, files: dict[str, str], image_ids: list[str]) -> ExportFile:
        # Built in a temporary file on this machine, then kept in the store (moved, or uploaded).
        handle, temp_name = tempfile.mkstemp(prefix=".export-", suffix=".zip.tmp", dir=self.temp_dir)
        os.close(handle)
        temp = Path(temp_name)
        try:
            with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, text in files.items():
                    archive.writestr(name, text)
                for image_id in image_ids:
                    try:
                        data = self.storage.read(identity, image_id)
                    except ImageNotFound:
                        continue  # expired while we were zipping
                    archive.writestr(f"images/{image_id}.png", data, compress_type=zipfile.ZIP_STORED)
            return self.storage.save_export(identity, label, temp)
        finally:
            temp.unlink(missing_ok=True)

    def delete_account(self, identity: Identity) -> None:
        """Remove every row and file tied to this person. Anonymous usage rows carry no identity and stay."""
        with self.db.transaction() as c:
            image_ids = self.storage.delete_owner(identity, c)
            owner = Owner(identity.kind, identity.owner_key)
            job_ids = self.jobs.delete_owner(owner, c)
            if self.webhooks is not None:
                self.webhooks.delete_owner(owner, c)
            if self.idempotency is not None:
                self.idempotency.delete_owner(owner, c)
            if identity.is_account:
                self.accounts.get(identity.key, c)
                self.history.delete_account(identity.key, c)
                self.ledger.delete_account_entries(identity.key, c)
                if self.api_keys is not None:
                    self.api_keys.delete_account(identity.key, c)
                self.accounts.delete(identity.key, c)
        self.storage.remove_files(image_ids)
        for job_id in job_ids:
            self.jobs.remove_inputs(job_id)
        self.storage.remove_exports(identity)
        self.db.scrub()
