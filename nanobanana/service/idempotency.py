"""Idempotency keys: a retried submission returns the job the first one made, and is charged once.

The first request with a key claims it (an insert under the owner's primary key, so of several parallel
retries exactly one wins) together with the fingerprint of what it asked and the job id it will use. A
retry with the same fingerprint gets that job id back; one with another fingerprint is refused. When the
first submission is refused (bad input, no credits) its claim is dropped, so a corrected retry may use the
key. Keys are forgotten after `api.idempotency_hours`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nanobanana.errors import IdempotencyKeyReused, InvalidRequest
from nanobanana.service.db import Database, idempotency_keys, utcnow
from nanobanana.service.jobs import Owner

MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class Claim:
    job_id: str
    replayed: bool  # True: an earlier request with this key made (or is making) the job
    age_seconds: float = 0.0  # since the key was first used


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidRequest(f"An Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable characters.")
    return key


class IdempotencyKeys:
    def __init__(self, db: Database, hours: float) -> None:
        self.db = db
        self.lifetime = timedelta(hours=hours)

    def _mine(self, owner: Owner, key: str) -> tuple:
        return (idempotency_keys.c.owner_kind == owner.kind, idempotency_keys.c.owner_key == owner.owner_key,
                idempotency_keys.c.key == key)

    def claim(self, owner: Owner, key: str, fingerprint: str) -> Claim:
        """This key's job id: a new one (the caller submits with it) or the first request's (a replay).
        Raises `IdempotencyKeyReused` when the key came with another request."""
        check_key(key)
        now = utcnow()
        job_id = secrets.token_urlsafe(16)
        try:
            with self.db.transaction() as c:
                c.execute(idempotency_keys.delete()
                          .where(*self._mine(owner, key), idempotency_keys.c.expires_at <= now))
                c.execute(idempotency_keys.insert().values(
                    owner_kind=owner.kind, owner_key=owner.owner_key, key=key, fingerprint=fingerprint,
                    job_id=job_id, created_at=now, expires_at=now + self.lifetime,
                ))
            return Claim(job_id, replayed=False)
        except IntegrityError:
            pass  # someone (a parallel retry) holds it: read theirs
        with self.db.transaction() as c:
            row = c.execute(sa.select(idempotency_keys).where(*self._mine(owner, key))).first()
        if row is None:  # the holder's submission was refused and its claim dropped meanwhile: try again
            return self.claim(owner, key, fingerprint)
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request. Use a new key for a new "
                "request (the same key only for retries of the same one)."
            )
        return Claim(row.job_id, replayed=True, age_seconds=(utcnow() - row.created_at).total_seconds())

    def release(self, owner: Owner, key: str, job_id: str) -> None:
        """The first submission with this key was refused before it made a job: forget the claim."""
        with self.db.transaction() as c:
            c.execute(idempotency_keys.delete().where(*self._mine(owner, key), idempotency_keys.c.job_id == job_id))

    def sweep(self) -> int:
        with self.db.transaction() as c:
            return c.execute(idempotency_keys.delete().where(idempotency_keys.c.expires_at <= utcnow())).rowcount

    def delete_owner(self, owner: Owner, conn) -> int:
        return conn.execute(idempotency_keys.delete().where(
            idempotency_keys.c.owner_kind == owner.kind, idempotency_keys.c.owner_key == owner.owner_key)).rowcount
