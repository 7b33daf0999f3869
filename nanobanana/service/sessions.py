"""Sign-in sessions held on the server, and deleted accounts remembered as a keyed hash.

A signed cookie alone cannot be taken back: whoever replays it stays signed in until it expires. So
every sign-in gets a random session id whose hash is stored here; the web layer checks it on every
request, and signing out or deleting the account removes it at once.

Who signed in is stored only as `subject`: an HMAC of provider and provider user id under a key made
once per installation. After an account is deleted that hash is kept for `closed_account_days`, so
deleting and signing up again does not hand out a second sign-up grant; then it is forgotten too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nanobanana.service.db import Database, closed_accounts, sign_in_sessions, utcnow

SUBJECT_KEY = "subject-hmac-key"


def _hash_session(session_id: str) -> str:
    return hashlib.sha256(f"nanobanana-sign-in:{session_id}".encode()).hexdigest()


class SignInSessions:
    def __init__(self, db: Database, hours: float, closed_account_days: float) -> None:
        self.db = db
        self.lifetime = timedelta(hours=hours)
        self.closed_memory = timedelta(days=closed_account_days)
        self._key = db.instance_secret(SUBJECT_KEY)  # now, not inside a caller's transaction

    # -- who ----------------------------------------------------------------------------------------
    def subject(self, provider: str, provider_user_id: str) -> str:
        message = f"{provider}\x00{provider_user_id}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    # -- sessions -----------------------------------------------------------------------------------
    def open(self, provider: str, provider_user_id: str) -> str:
        """A new session for this person; returns the id to put in their cookie."""
        session_id = secrets.token_urlsafe(24)
        now = utcnow()
        subject = self.subject(provider, provider_user_id)
        with self.db.transaction() as c:
            c.execute(sign_in_sessions.insert().values(
                id=_hash_session(session_id), subject=subject, created_at=now, expires_at=now + self.lifetime,
            ))
        return session_id

    def is_active(self, session_id: str, provider: str, provider_user_id: str) -> bool:
        """True while the session exists, has not expired and belongs to this person."""
        with self.db.transaction() as c:
            row = c.execute(
                sa.select(sign_in_sessions.c.subject, sign_in_sessions.c.expires_at)
                .where(sign_in_sessions.c.id == _hash_session(session_id))
            ).first()
        if row is None or row.expires_at <= utcnow():
            return False
        return hmac.compare_digest(row.subject, self.subject(provider, provider_user_id))

    def close(self, session_id: str) -> None:
        with self.db.transaction() as c:
            c.execute(sign_in_sessions.delete().where(sign_in_sessions.c.id == _hash_session(session_id)))

    def close_all(self, provider: str, provider_user_id: str, conn: Connection | None = None) -> int:
        """End every session of this person (on every device)."""
        subject = self.subject(provider, provider_user_id)
        with self.db.transaction(conn) as c:
            return c.execute(sign_in_sessions.delete().where(sign_in_sessions.c.subject == subject)).rowcount

    # -- closed accounts ----------------------------------------------------------------------------
    def remember_closed(self, provider: str, provider_user_id: str, conn: Connection | None = None) -> None:
        subject = self.subject(provider, provider_user_id)
        forget_at = utcnow() + self.closed_memory
        with self.db.transaction(conn) as c:
            c.execute(closed_accounts.delete().where(closed_accounts.c.subject == subject))
            c.execute(closed_accounts.insert().values(subject=subject, forget_at=forget_at))

    def was_closed(self, provider: str, provider_user_id: str, conn: Connection | None = None) -> bool:
        """Whether this person deleted an account here within the remembered time."""
        subject = self.subject(provider, provider_user_id)
        with self.db.transaction(conn) as c:
            return c.execute(
                sa.select(closed_accounts.c.subject)
                .where(closed_accounts.c.subject == subject, closed_accounts.c.forget_at > utcnow())
            ).first() is not None

    def sweep(self) -> int:
        """Drop expired sessions and closed-account hashes past their time."""
        now = utcnow()
        with self.db.transaction() as c:
            gone = c.execute(sign_in_sessions.delete().where(sign_in_sessions.c.expires_at <= now)).rowcount
            gone += c.execute(closed_accounts.delete().where(closed_accounts.c.forget_at <= now)).rowcount
        return gone
