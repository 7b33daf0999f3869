"""Who pays for a request, and how: credits for accounts, the free daily allowance for visitors.

The request path never asks which one it has: it asks the `Payer` for a quote, reserves before spending
compute, settles what was kept (inside the transaction that stores the images) and releases everything
if the request fails. Each payer keeps its own words for the person ("credits" or "free images").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Connection

from nanobanana.errors import DuplicateRequest
from nanobanana.service.accounts import Identity
from nanobanana.service.allowance import Allowance
from nanobanana.service.ledger import CostRule, Ledger


@dataclass
class Quote:
    """What a request would cost this person, and whether they can afford it now."""

    cost: int  # credits (accounts) or images of the allowance (anonymous)
    per_image: int
    num_images: int
    affordable: bool
    message: str
    balance: int | None = None
    allowance_left: int | None = None


@dataclass
class Reservation:
    """What a payer holds for one request until it is settled or released."""

    request_id: str
    num_images: int
    per_image: int

    @property
    def amount(self) -> int:
        return self.num_images * self.per_image


class Payer(Protocol):
    account_id: str | None  # the account whose history records the request; None for visitors
    withheld_note: str  # how a withheld image is made good, as the person reads it

    def quote(self, width: int, height: int, steps: int, num_images: int) -> Quote: ...

    def reserve(self, request_id: str, width: int, height: int, steps: int, num_images: int,
                description: str, conn: Connection | None = None) -> Reservation: ...

    def settle(self, reservation: Reservation, kept: int, conn: Connection) -> None: ...

    def after_commit(self, reservation: Reservation, kept: int) -> None: ...

    def release(self, reservation: Reservation, reason: str, conn: Connection | None = None) -> None: ...

    def charged(self, reservation: Reservation, kept: int) -> int: ...

    def balance(self, conn: Connection | None = None) -> int | None: ...

    def allowance_left(self) -> int | None: ...


class CreditsPayer:
    """An account pays in credits; withheld or failed images are refunded."""

    withheld_note = "and refunded."

    def __init__(self, ledger: Ledger, cost_rule: CostRule, account_id: str) -> None:
        self.ledger = ledger
        self.cost_rule = cost_rule
        self.account_id: str | None = account_id

    def quote(self, width: int, height: int, steps: int, num_images: int) -> Quote:
        per_image = self.cost_rule.per_image(width, height, steps)
        balance = self.ledger.balance(self.account_id)
        cost = per_image * num_images
        ok = cost <= balance
        message = (
            f"{cost} credit(s) ({per_image} per image); your balance is {balance}."
            if ok else
            f"This needs {cost} credit(s) and your balance is {balance}: ask for fewer or smaller "
            "images or fewer steps."
        )
        return Quote(cost, per_image, num_images, ok, message, balance=balance)

    def reserve(self, request_id: str, width: int, height: int, steps: int, num_images: int,
                description: str, conn: Connection | None = None) -> Reservation:
        per_image = self.cost_rule.per_image(width, height, steps)
        charge = self.ledger.charge(self.account_id, per_image * num_images, request_id, reason=description,
                                    conn=conn)
        if charge.replayed:
            raise DuplicateRequest(
                "This request was already sent (same request id); it was charged once. "
                "Its images are in your gallery."
            )
        return Reservation(request_id, num_images, per_image)

    def settle(self, reservation: Reservation, kept: int, conn: Connection) -> None:
        refund = reservation.per_image * (reservation.num_images - kept)
        if refund:
            self.ledger.refund(self.account_id, refund, reservation.request_id,
                               "images withheld by the safety filter", conn)

    def after_commit(self, reservation: Reservation, kept: int) -> None:
        return None

    def release(self, reservation: Reservation, reason: str, conn: Connection | None = None) -> None:
        self.ledger.refund(self.account_id, reservation.amount, reservation.request_id, f"refund: {reason}",
                           conn)

    def charged(self, reservation: Reservation, kept: int) -> int:
        return reservation.per_image * kept

    def balance(self, conn: Connection | None = None) -> int | None:
        return self.ledger.balance(self.account_id, conn)

    def allowance_left(self) -> int | None:
        return None


class AllowancePayer:
    """A visitor pays with the free daily allowance; withheld or failed images do not count."""

    withheld_note = "and not counted against your allowance."
    account_id: str | None = None

    def __init__(self, allowance: Allowance, identity: Identity | None) -> None:
        # `identity` is None when a job is settled by a worker: settling needs only the request id.
        self.allowance = allowance
        self.identity = identity

    def quote(self, width: int, height: int, steps: int, num_images: int) -> Quote:
        left = self.allowance.left(self.identity)
        ok = num_images <= left
        message = (
            f"Free: {left} of {self.allowance.images_per_day} images left today."
            if ok else
            f"{left} free image(s) left today; sign in to use credits, or come back tomorrow."
        )
        return Quote(num_images, 1, num_images, ok, message, allowance_left=left)

    def reserve(self, request_id: str, width: int, height: int, steps: int, num_images: int,
                description: str, conn: Connection | None = None) -> Reservation:
        self.allowance.reserve(self.identity, num_images, request_id, conn)
        return Reservation(request_id, num_images, 1)

    def settle(self, reservation: Reservation, kept: int, conn: Connection) -> None:
        self.allowance.release(reservation.request_id, reservation.num_images - kept, conn)
        self.allowance.settle(reservation.request_id, conn)

    def after_commit(self, reservation: Reservation, kept: int) -> None:
        return None

    def release(self, reservation: Reservation, reason: str, conn: Connection | None = None) -> None:
        self.allowance.release(reservation.request_id, conn=conn)
        self.allowance.settle(reservation.request_id, conn)

    def charged(self, reservation: Reservation, kept: int) -> int:
        return 0

    def balance(self, conn: Connection | None = None) -> int | None:
        return None

    def allowance_left(self) -> int | None:
        return self.allowance.left(self.identity)
