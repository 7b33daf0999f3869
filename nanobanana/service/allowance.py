"""The anonymous visitors' free daily allowance, counted in the database so every replica sees one count.

Counted per browser session and per client address, by UTC day. Neither is stored in clear: each is
kept as an HMAC under a key made once per installation (`instance_secrets`), so a copy of the database
cannot be matched against a list of addresses without that key. Rows carry only the day, the keyed hash
and a count; the sweeper deletes every row of past days.

Reservations join the caller's transaction (the job row is written in the same one): a request that is
refused, fails or is withheld gives its images back in the transaction that ends it, whichever process
ends it. Concurrent reservations of one visitor on two replicas are serialised by the row lock the
increment takes; the increment is undone (the transaction rolled back) when it goes over the limit.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nanobanana.errors import AllowanceExhausted, DuplicateRequest
from nanobanana.service.accounts import Identity
from nanobanana.service.db import Database, allowance_holds, allowance_usage

KEY_SECRET = "allowance-hmac-key"


class Allowance:
    def __init__(self, db: Database, images_per_day: int, clock=lambda: datetime.now(UTC).date()) -> None:
        self.db = db
        self.images_per_day = images_per_day
        self._clock = clock
        self._key = db.instance_secret(KEY_SECRET)  # now, not inside a caller's transaction

    def _hash(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def _keys(self, identity: Identity) -> tuple[str, ...]:
        keys = [self._hash("session", identity.key)]
        if identity.client_address:
            keys.append(self._hash("address", identity.client_address))
        return tuple(keys)

    def _used(self, conn: Connection, day: date, keys: tuple[str, ...]) -> int:
        counts = conn.execute(
            sa.select(allowance_usage.c.images)
            .where(allowance_usage.c.day == day, allowance_usage.c.key.in_(keys))
        ).scalars().all()
        return max(counts, default=0)

    def left(self, identity: Identity, conn: Connection | None = None) -> int:
        with self.db.transaction(conn) as c:
            return max(0, self.images_per_day - self._used(c, self._clock(), self._keys(identity)))

    def reserve(self, identity: Identity, images: int, request_id: str, conn: Connection | None = None) -> int:
        """Hold `images` of today's allowance for this request; returns what is left after it. Inside the
        caller's transaction when `conn` is given (an error leaves that transaction to be rolled back)."""
        day, keys = self._clock(), self._keys(identity)
        with self.db.transaction(conn) as c:
            if c.execute(sa.select(allowance_holds.c.request_id)
                         .where(allowance_holds.c.request_id == request_id)).first() is not None:
                raise DuplicateRequest("This request was already sent (same request id); it counted once.")
            used = 0
            for key in keys:  # the increment locks the row until commit: replicas take turns
                used = max(used, self._add(c, day, key, images))
            left = self.images_per_day - used
            if left < 0:
                before = max(0, left + images)
                raise AllowanceExhausted(
                    f"Visitors without an account can make {self.images_per_day} images a day; "
                    f"{before} left today. Ask for fewer images, come back tomorrow, or sign in "
                    "to use credits."
                )
            c.execute(allowance_holds.insert().values(
                request_id=request_id, day=day, session_key=keys[0], address_key=keys[1] if len(keys) > 1 else None,
                images=images, settled=False,
            ))
            return left

    def _add(self, conn: Connection, day: date, key: str, images: int) -> int:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(allowance_usage).values(day=day, key=key, images=images)
        statement = statement.on_conflict_do_update(
            index_elements=["day", "key"], set_={"images": allowance_usage.c.images + images}
        ).returning(allowance_usage.c.images)
        return int(conn.execute(statement).scalar_one())

    def release(self, request_id: str, images: int | None = None, conn: Connection | None = None) -> None:
        """Give back `images` (default: all) of a request's hold: failed or blocked images are free."""
        with self.db.transaction(conn) as c:
            hold = c.execute(sa.select(allowance_holds).where(allowance_holds.c.request_id == request_id)
                             .with_for_update()).first()
            if hold is None or hold.settled:
                return
            back = hold.images if images is None else min(images, hold.images)
            if back <= 0:
                return
            keys = [k for k in (hold.session_key, hold.address_key) if k]
            c.execute(allowance_usage.update()
                      .where(allowance_usage.c.day == hold.day, allowance_usage.c.key.in_(keys))
                      .values(images=sa.func.max(allowance_usage.c.images - back, 0)
                              if c.dialect.name == "sqlite" else
                              sa.func.greatest(allowance_usage.c.images - back, 0)))
            c.execute(allowance_holds.update().where(allowance_holds.c.request_id == request_id)
                      .values(images=hold.images - back))

    def settle(self, request_id: str, conn: Connection | None = None) -> None:
        """The request is finished; its hold becomes plain usage (the id stays known until tomorrow)."""
        with self.db.transaction(conn) as c:
            c.execute(allowance_holds.update().where(allowance_holds.c.request_id == request_id)
                      .values(settled=True))

    def sweep(self) -> int:
        """Forget every past day (counts and holds); returns the rows deleted."""
        today = self._clock()
        with self.db.transaction() as c:
            n = c.execute(allowance_holds.delete().where(allowance_holds.c.day < today)).rowcount
            n += c.execute(allowance_usage.delete().where(allowance_usage.c.day < today)).rowcount
        return n
