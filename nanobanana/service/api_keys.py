"""API keys: how scripts and agents act for an account.

A key is `nb_` + 43 random characters, shown once when it is made; only its sha256 is stored, with a
name, the first characters (to recognise it in a list), when it was made and when it was last used.
Every call looks the key up again, so a revoked key (or one whose account was deleted) stops working at
once. Each key also signs its webhooks with a secret derived from the installation's key and the key's
id (Standard Webhooks' `whsec_` form): nothing more to store, and it dies with the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nanobanana.errors import ApiKeyNotFound, InvalidApiKey, InvalidRequest
from nanobanana.service.db import Database, api_keys, utcnow

KEY_PREFIX = "nb_"
SHOWN_CHARS = 10  # "nb_" and 7 more: enough to tell one's keys apart, far too few to guess the rest
WEBHOOK_KEY = "webhook-signing-key"
LAST_USED_EVERY = timedelta(seconds=30)  # last-used is written at most this often per key
MAX_NAME = 100


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the key itself)."""

    id: str
    account_id: str
    name: str
    prefix: str
    webhook_url: str | None
    created_at: datetime
    last_used_at: datetime | None

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "prefix": self.prefix, "webhook_url": self.webhook_url,
            "created_at": self.created_at.isoformat() + "Z",
            "last_used_at": self.last_used_at.isoformat() + "Z" if self.last_used_at else None,
        }


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: the only time `key` and `webhook_secret` are known in full."""

    record: ApiKey
    key: str
    webhook_secret: str


def _key(row: sa.Row) -> ApiKey:
    return ApiKey(id=row.id, account_id=row.account_id, name=row.name, prefix=row.prefix,
                  webhook_url=row.webhook_url, created_at=row.created_at, last_used_at=row.last_used_at)


class ApiKeys:
    def __init__(self, db: Database, max_per_account: int = 20) -> None:
        self.db = db
        self.max_per_account = max_per_account
        self._signing_key = db.instance_secret(WEBHOOK_KEY)  # now, not inside a caller's transaction

    def webhook_secret(self, key_id: str) -> str:
        """The key's webhook signing secret, as Standard Webhooks writes it (`whsec_` + base64)."""
        raw = hmac.new(self._signing_key, f"webhook:{key_id}".encode(), hashlib.sha256).digest()[:24]
        return "whsec_" + base64.b64encode(raw).decode()

    # -- making and revoking ------------------------------------------------------------------------
    def create(self, account_id: str, name: str, webhook_url: str | None = None) -> NewApiKey:
        name = (name or "").strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidRequest(f"Give the key a name of 1 to {MAX_NAME} characters (what will use it).")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = secrets.token_hex(8)
        with self.db.transaction() as c:
            mine = c.execute(sa.select(sa.func.count()).select_from(api_keys)
                             .where(api_keys.c.account_id == account_id)).scalar_one()
            if mine >= self.max_per_account:
                raise InvalidRequest(f"An account may have at most {self.max_per_account} API keys; revoke one "
                                     "you no longer use first.")
            c.execute(api_keys.insert().values(
                id=key_id, account_id=account_id, name=name, prefix=key[:SHOWN_CHARS], secret_hash=hash_key(key),
                webhook_url=webhook_url, created_at=utcnow(), last_used_at=None,
            ))
            record = _key(c.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one())
        return NewApiKey(record, key, self.webhook_secret(key_id))

    def list(self, account_id: str) -> list[ApiKey]:
        with self.db.transaction() as c:
            rows = c.execute(sa.select(api_keys).where(api_keys.c.account_id == account_id)
                             .order_by(api_keys.c.created_at, api_keys.c.id)).all()
        return [_key(r) for r in rows]

    def revoke(self, account_id: str, key_id: str) -> ApiKey:
        """Delete one of this account's keys; it stops working with the next call."""
        with self.db.transaction() as c:
            row = c.execute(sa.select(api_keys).where(api_keys.c.id == str(key_id),
                                                      api_keys.c.account_id == account_id)).first()
            if row is None:
                raise ApiKeyNotFound("There is no such API key on this account (it may be revoked already).")
            c.execute(api_keys.delete().where(api_keys.c.id == row.id))
        return _key(row)

    def delete_account(self, account_id: str, conn: Connection) -> int:
        return conn.execute(api_keys.delete().where(api_keys.c.account_id == account_id)).rowcount

    # -- using --------------------------------------------------------------------------------------
    def resolve(self, key: str) -> ApiKey:
        """The stored key for a presented one (and note its use); `InvalidApiKey` for anything else."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > 200:
            raise InvalidApiKey("This API key is not valid: check it, or make a new one in the Account tab.")
        now = utcnow()
        with self.db.transaction() as c:
            row = c.execute(sa.select(api_keys).where(api_keys.c.secret_hash == hash_key(key))).first()
            if row is None:
                raise InvalidApiKey("This API key is not valid (unknown or revoked): make a new one in the "
                                    "Account tab.")
            if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
                c.execute(api_keys.update().where(api_keys.c.id == row.id).values(last_used_at=now))
        return _key(row)

    def get(self, key_id: str) -> ApiKey | None:
        with self.db.transaction() as c:
            row = c.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return _key(row) if row else None
