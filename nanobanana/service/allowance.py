"""The anonymous visitors' free daily allowance, counted in memory only.

Counted per browser session and per client address; both counters live in this process and vanish at
the end of the (UTC) day or on restart. Neither the session id nor the address is written anywhere.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

from nanobanana.errors import AllowanceExhausted, DuplicateRequest
from nanobanana.service.accounts import Identity


def _key(prefix: str, value: str) -> str:
    # Hashed even in memory: a heap dump does not list addresses.
    return hashlib.sha256(f"{prefix}:{value}".encode()).hexdigest()


@dataclass
class _Hold:
    keys: tuple[str, ...]
    images: int
    done: bool = False


class Allowance:
    def __init__(self, images_per_day: int, clock=lambda: datetime.now(UTC).date()) -> None:
        self.images_per_day = images_per_day
        self._clock = clock
        self._lock = threading.Lock()
        self._day: date | None = None
        self._used: dict[str, int] = defaultdict(int)
        self._holds: dict[str, _Hold] = {}

    def _roll(self) -> None:
        today = self._clock()
        if today != self._day:
            self._day, self._used, self._holds = today, defaultdict(int), {}

    @staticmethod
    def _keys(identity: Identity) -> tuple[str, ...]:
        keys = [_key("session", identity.key)]
        if identity.client_address:
            keys.append(_key("address", identity.client_address))
        return tuple(keys)

    def left(self, identity: Identity) -> int:
        with self._lock:
            self._roll()
            return max(0, self.images_per_day - max(self._used[k] for k in self._keys(identity)))

    def reserve(self, identity: Identity, images: int, request_id: str) -> int:
        """Hold `images` of today's allowance for this request; returns what is left after it."""
        with self._lock:
            self._roll()
            if request_id in self._holds:
                raise DuplicateRequest("This request was already sent (same request id); it counted once.")
            keys = self._keys(identity)
            left = self.images_per_day - max(self._used[k] for k in keys)
            if images > left:
                raise AllowanceExhausted(
                    f"Visitors without an account can make {self.images_per_day} images a day; "
                    f"{max(0, left)} left today. Ask for fewer images, come back tomorrow, or sign in "
                    "to use credits."
                )
            for k in keys:
                self._used[k] += images
            self._holds[request_id] = _Hold(keys, images)
            return left - images

    def release(self, request_id: str, images: int | None = None) -> None:
        """Give back `images` (default: all) of a request's hold: failed or blocked images are free."""
        with self._lock:
            hold = self._holds.get(request_id)
            if hold is None or hold.done:
                return
            back = hold.images if images is None else min(images, hold.images)
            for k in hold.keys:
                self._used[k] = max(0, self._used[k] - back)
            hold.images -= back

    def settle(self, request_id: str) -> None:
        """The request is finished; its hold becomes plain usage (the id stays known until tomorrow)."""
        with self._lock:
            hold = self._holds.get(request_id)
            if hold is not None:
                hold.done = True
