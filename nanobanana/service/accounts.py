"""Who is asking: anonymous visitors and signed-in accounts.

An account is created on first sign-in from what the sign-in provider told us (provider, provider user
id, username, e-mail if given) plus its creation time, its service-updates choice and its credit
balance. Nothing else is stored about a person.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nanobanana.errors import IdentityError, UnknownUser
from nanobanana.service.db import Database, accounts, utcnow


@dataclass(frozen=True)
class Identity:
    """One caller. `key` is the account id, or an opaque browser-session id for anonymous visitors.

    `client_address` feeds only the per-address allowance, which stores it as a keyed hash for the day.
    """

    kind: Literal["anonymous", "account"]
    key: str
    client_address: str | None = None

    @classmethod
    def anonymous(cls, session_id: str, client_address: str | None = None) -> Identity:
        if not session_id:
            raise IdentityError("An anonymous visitor needs a browser-session id.")
        return cls("anonymous", session_id, client_address)

    @classmethod
    def account(cls, account_id: str) -> Identity:
        return cls("account", account_id)

    @property
    def is_account(self) -> bool:
        return self.kind == "account"

    @property
    def owner_key(self) -> str:
        """What stored rows carry as their owner: the account id, or a hash of the session id (so a copy
        of the database does not hand out live session ids)."""
        if self.is_account:
            return self.key
        return hashlib.sha256(f"nanobanana-session:{self.key}".encode()).hexdigest()[:48]

    def __repr__(self) -> str:  # the address stays out of logs and tracebacks
        return f"Identity(kind={self.kind!r}, key={self.key[:6]}…)"


@dataclass(frozen=True)
class OAuthProfileData:
    """What a sign-in provider told us about a person."""

    provider: str  # "huggingface" | "google" | "github" | "local"
    provider_user_id: str
    username: str
    email: str | None = None


@dataclass(frozen=True)
class Account:
    id: str
    provider: str
    provider_user_id: str
    username: str
    email: str | None
    created_at: datetime
    updates_opt_in: bool
    balance: int
    embed_settings: bool = False  # prompt and settings written into the PNG files as text

    @property
    def identity(self) -> Identity:
        return Identity.account(self.id)

    def profile(self) -> dict:
        """Everything stored about the person, for the privacy export."""
        return {
            "id": self.id,
            "provider": self.provider,
            "provider_user_id": self.provider_user_id,
            "username": self.username,
            "email": self.email,
            "created_at": self.created_at.isoformat() + "Z",
            "updates_opt_in": self.updates_opt_in,
            "balance": self.balance,
            "embed_settings_in_png": self.embed_settings,
        }


@dataclass(frozen=True)
class AccountSummary:
    """What the UI shows about the signed-in person."""

    username: str
    balance: int
    opt_in: bool
    created_at: datetime
    email: str | None = None
    embed_settings: bool = False


def _account(row: sa.Row) -> Account:
    return Account(
        id=row.id,
        provider=row.provider,
        provider_user_id=row.provider_user_id,
        username=row.username,
        email=row.email,
        created_at=row.created_at,
        updates_opt_in=bool(row.updates_opt_in),
        balance=int(row.balance),
        embed_settings=bool(row.embed_settings),
    )


class Accounts:
    """Creating, finding and removing accounts. Credits move only through `nanobanana.service.ledger.Ledger`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def find_by_provider(self, provider: str, provider_user_id: str, conn: Connection | None = None):
        with self.db.transaction(conn) as c:
            row = c.execute(
                sa.select(accounts).where(
                    accounts.c.provider == provider, accounts.c.provider_user_id == provider_user_id
                )
            ).first()
        return _account(row) if row else None

    def create(self, profile: OAuthProfileData, conn: Connection) -> Account:
        """Insert a new account with a zero balance (the caller grants the sign-up credits)."""
        username = self._free_username(profile.username.strip() or "user", conn)
        account_id = secrets.token_hex(16)
        conn.execute(
            accounts.insert().values(
                id=account_id,
                provider=profile.provider,
                provider_user_id=str(profile.provider_user_id),
                username=username,
                email=profile.email or None,
                created_at=utcnow(),
                updates_opt_in=False,
                balance=0,
            )
        )
        return self.get(account_id, conn)

    def _free_username(self, wanted: str, conn: Connection) -> str:
        # Usernames are unique here even when two providers each have a "maria".
        candidate, n = wanted, 1
        while conn.execute(sa.select(accounts.c.id).where(accounts.c.username == candidate)).first():
            n += 1
            candidate = f"{wanted}-{n}"
        return candidate

    def get(self, account_id: str, conn: Connection | None = None) -> Account:
        with self.db.transaction(conn) as c:
            row = c.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()
        if row is None:
            raise UnknownUser("This account no longer exists; sign in again.")
        return _account(row)

    def exists(self, account_id: str, conn: Connection | None = None) -> bool:
        with self.db.transaction(conn) as c:
            return c.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)).first() is not None

    def resolve(self, user: str, conn: Connection | None = None) -> Account:
        """An account by username or id (what the operator commands take)."""
        with self.db.transaction(conn) as c:
            row = c.execute(
                sa.select(accounts).where(sa.or_(accounts.c.username == user, accounts.c.id == user))
            ).first()
        if row is None:
            raise UnknownUser(
                f"No account with username or id {user!r}; see `python -m nanobanana users list`."
            )
        return _account(row)

    def list(self) -> list[Account]:
        with self.db.transaction() as c:
            rows = c.execute(sa.select(accounts).order_by(accounts.c.created_at, accounts.c.username)).all()
        return [_account(r) for r in rows]

    def set_updates_opt_in(self, account_id: str, opt_in: bool) -> None:
        with self.db.transaction() as c:
            done = c.execute(
                accounts.update().where(accounts.c.id == account_id).values(updates_opt_in=bool(opt_in))
            ).rowcount
        if not done:
            raise UnknownUser("This account no longer exists; sign in again.")

    def set_embed_settings(self, account_id: str, embed: bool) -> None:
        """Whether this account's new images carry their prompt and settings as PNG text."""
        with self.db.transaction() as c:
            done = c.execute(
                accounts.update().where(accounts.c.id == account_id).values(embed_settings=bool(embed))
            ).rowcount
        if not done:
            raise UnknownUser("This account no longer exists; sign in again.")

    def opted_in(self) -> list[Account]:
        with self.db.transaction() as c:
            rows = c.execute(sa.select(accounts).where(accounts.c.updates_opt_in.is_(True))).all()
        return [_account(r) for r in rows]

    def delete(self, account_id: str, conn: Connection) -> None:
        conn.execute(accounts.delete().where(accounts.c.id == account_id))
