"""Credits: what a generation costs, and the ledger every movement of credits goes through.

Each movement (grant, charge, refund, admin adjustment) is one ledger row written in the same
transaction as the balance change, so the balance always equals the sum of the ledger. A charge is a
conditional `UPDATE ... WHERE balance >= cost`: two requests at once can never overdraw an account.
A request id charges at most once and is refunded at most once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nanobanana.errors import CreditsError, InsufficientCredits, InvalidAdjustment, UnknownUser
from nanobanana.service.config import CreditsConfig
from nanobanana.service.db import Database, accounts, ledger, utcnow

Kind = Literal["grant", "charge", "refund", "adjust"]


@dataclass(frozen=True)
class LedgerEntry:
    delta: int
    kind: str
    reason: str
    request_id: str | None
    created_at: datetime
    balance_after: int

    def to_dict(self) -> dict:
        return {
            "delta": self.delta,
            "kind": self.kind,
            "reason": self.reason,
            "request_id": self.request_id,
            "created_at": self.created_at.isoformat() + "Z",
            "balance_after": self.balance_after,
        }


@dataclass(frozen=True)
class Charge:
    """A charge made (or found: `replayed` when this request id was charged before)."""

    request_id: str
    amount: int
    balance_after: int
    replayed: bool = False


@dataclass(frozen=True)
class CostRule:
    """Credits per image = per_image × (pixels / reference pixels) × (steps / reference steps), rounded up;
    or, for a model priced per size (a remote one: `credits_per_image` in its config), that size's price."""

    config: CreditsConfig
    size_prices: tuple[tuple[str, int, int], ...] = ()  # (label, pixels of its square, credits)

    @classmethod
    def for_model(cls, config: CreditsConfig, model: Any) -> CostRule:
        prices = getattr(model, "credits_per_image", None) or {}
        sizes = getattr(model, "sizes", None) or {}
        return cls(config, tuple((label, sizes[label] ** 2, int(prices[label])) for label in sizes if label in prices))

    def per_image(self, width: int, height: int, steps: int) -> int:
        if self.size_prices:
            # The size whose pixel count is nearest (every ratio of a size keeps about its square's pixels).
            pixels = max(1, width * height)
            return min(self.size_prices, key=lambda p: abs(math.log(pixels / p[1])))[2]
        c = self.config
        cost = c.per_image
        if c.scale_with_pixels:
            cost *= (width * height) / c.reference_pixels
        if c.scale_with_steps:
            cost *= steps / c.reference_steps
        return max(c.minimum_per_image, math.ceil(round(cost, 9)))

    def describe(self) -> str:
        if self.size_prices:
            return "per image by size: " + ", ".join(f"{label} {credits} credit(s)" for label, _, credits
                                                      in self.size_prices)
        c = self.config
        parts = [f"{_fmt(c.per_image)} credit(s) per image"]
        if c.scale_with_pixels:
            parts.append(f"scaled by its pixel count relative to {c.reference_pixels:,} pixels")
        if c.scale_with_steps:
            parts.append(f"and by its steps relative to {c.reference_steps}")
        return ", ".join(parts) + f", rounded up, at least {c.minimum_per_image} per image"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _entry(row: sa.Row) -> LedgerEntry:
    return LedgerEntry(
        delta=int(row.delta),
        kind=row.kind,
        reason=row.reason,
        request_id=row.request_id,
        created_at=row.created_at,
        balance_after=int(row.balance_after),
    )


class Ledger:
    """Moves credits. Every public method is one transaction unless the caller passes its own `conn`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def balance(self, account_id: str, conn: Connection | None = None) -> int:
        with self.db.transaction(conn) as c:
            value = c.execute(sa.select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()
        if value is None:
            raise UnknownUser("This account no longer exists; sign in again.")
        return int(value)

    def history(self, account_id: str, conn: Connection | None = None) -> list[LedgerEntry]:
        with self.db.transaction(conn) as c:
            rows = c.execute(
                sa.select(ledger).where(ledger.c.account_id == account_id).order_by(ledger.c.id)
            ).all()
        return [_entry(r) for r in rows]

    def ledger_sum(self, account_id: str) -> int:
        with self.db.transaction() as c:
            value = c.execute(
                sa.select(sa.func.coalesce(sa.func.sum(ledger.c.delta), 0))
                .where(ledger.c.account_id == account_id)
            ).scalar()
        return int(value)

    # -- movements ----------------------------------------------------------------------------------
    def _move(
        self, c: Connection, account_id: str, delta: int, kind: Kind, reason: str, request_id: str | None,
        *, guard: bool,
    ) -> int:
        update = accounts.update().where(accounts.c.id == account_id)
        if guard:
            update = update.where(accounts.c.balance + delta >= 0)
        new_balance = c.execute(
            update.values(balance=accounts.c.balance + delta).returning(accounts.c.balance)
        ).scalar()
        if new_balance is None:
            exists = c.execute(sa.select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()
            if exists is None:
                raise UnknownUser("This account no longer exists; sign in again.")
            raise InsufficientCredits(
                f"This needs {-delta} credit(s) and your balance is {exists}. "
                "Ask for fewer or smaller images, fewer steps, or ask the operator for more credits."
            )
        c.execute(
            ledger.insert().values(
                account_id=account_id, delta=delta, kind=kind, reason=reason[:500], request_id=request_id,
                created_at=utcnow(), balance_after=int(new_balance),
            )
        )
        return int(new_balance)

    def grant(self, account_id: str, amount: int, reason: str, conn: Connection | None = None,
              request_id: str | None = None) -> int:
        """Add credits (sign-up grant, operator grant); returns the new balance."""
        if amount <= 0:
            raise InvalidAdjustment(f"A grant must be a positive number of credits, not {amount}.")
        with self.db.transaction(conn) as c:
            return self._move(c, account_id, amount, "grant", reason, request_id, guard=False)

    def adjust(self, account_id: str, delta: int, reason: str) -> int:
        """An operator correction, up or down; never below zero."""
        if delta == 0:
            raise InvalidAdjustment("An adjustment of 0 credits changes nothing.")
        with self.db.transaction() as c:
            try:
                return self._move(c, account_id, delta, "adjust", reason, None, guard=True)
            except InsufficientCredits as exc:
                raise InvalidAdjustment(f"The balance cannot go below zero: {exc}") from exc

    def charge(self, account_id: str, amount: int, request_id: str, reason: str,
               conn: Connection | None = None) -> Charge:
        """Reserve `amount` for `request_id` before generating. Raises `InsufficientCredits`.

        Charging the same request id again charges nothing and returns the first charge (`replayed`).
        Given `conn`, the charge joins the caller's transaction (a job is inserted with its charge).
        """
        if amount < 0:
            raise CreditsError(f"A charge cannot be negative ({amount}).")
        if conn is not None:
            return self._charge(conn, account_id, amount, request_id, reason)
        try:
            with self.db.transaction() as c:
                return self._charge(c, account_id, amount, request_id, reason)
        except IntegrityError:
            # The same request id raced us (PostgreSQL) and won: that charge stands, ours never happened.
            with self.db.transaction() as c:
                previous = self._find(c, account_id, request_id, "charge")
            if previous is None:
                raise
            return Charge(request_id, -previous.delta, previous.balance_after, replayed=True)

    def _charge(self, c: Connection, account_id: str, amount: int, request_id: str, reason: str) -> Charge:
        previous = self._find(c, account_id, request_id, "charge")
        if previous is not None:
            return Charge(request_id, -previous.delta, previous.balance_after, replayed=True)
        balance = self._move(c, account_id, -amount, "charge", reason, request_id, guard=True)
        return Charge(request_id, amount, balance)

    def refund(self, account_id: str, amount: int, request_id: str, reason: str,
               conn: Connection | None = None) -> int | None:
        """Give back `amount` of this request's charge (once per request); returns the new balance."""
        if amount <= 0:
            return None
        with self.db.transaction(conn) as c:
            if self._find(c, account_id, request_id, "refund") is not None:
                return None
            charge = self._find(c, account_id, request_id, "charge")
            if charge is None or amount > -charge.delta:
                raise CreditsError(f"Request {request_id} has no charge of {amount} credit(s) to refund.")
            return self._move(c, account_id, amount, "refund", reason, request_id, guard=False)

    def _find(self, c: Connection, account_id: str, request_id: str, kind: str) -> LedgerEntry | None:
        row = c.execute(
            sa.select(ledger).where(
                ledger.c.account_id == account_id, ledger.c.request_id == request_id, ledger.c.kind == kind
            )
        ).first()
        return _entry(row) if row else None

    def delete_account_entries(self, account_id: str, conn: Connection) -> None:
        conn.execute(ledger.delete().where(ledger.c.account_id == account_id))
