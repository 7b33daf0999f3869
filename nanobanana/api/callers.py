"""Who calls the API, decided in one place, and how often they may.

`Authorization: Bearer nb_...` is an account's API key, looked up on every call (a revoked key stops at
once). Without one, a call is an anonymous visitor's (the visitor cookie and the client address, as on
the page: the anonymous allowance), or refused when `api.anonymous` is `none`. Sign-in cookies are not
API credentials. Every caller has a token bucket (`api.rate_limit`) per key, or per client address.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from starlette.requests import HTTPConnection

from nanobanana.errors import ApiKeyRequired, InvalidApiKey, RateLimited
from nanobanana.service.accounts import Identity
from nanobanana.service.config import ApiConfig, RateLimitConfig
from nanobanana.service.studio import ApiCaller, Studio
from nanobanana.web.middleware import VISITOR_COOKIE


class RateLimiter:
    """Token buckets in this process's memory: `burst` calls at once, refilled at `requests_per_minute`."""

    def __init__(self, config: RateLimitConfig, max_buckets: int = 100_000) -> None:
        self.rate = config.requests_per_minute / 60.0
        self.burst = float(config.burst)
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        """Spend one call of `who`'s bucket; `RateLimited` (with when to retry) when it is empty."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.pop(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise RateLimited(f"Too many requests: at most {self.rate * 60:g} a minute (bursts of "
                                  f"{self.burst:g}). Retry in {max(1, round(wait))} s.", retry_after=wait)
            self._buckets[who] = (tokens - 1, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)


def bearer_key(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidApiKey("Send the API key as `Authorization: Bearer <key>`.")
    return token.strip()


class Callers:
    """Resolves and rate-limits every API caller (the REST routes and the MCP tools share it)."""

    def __init__(self, studio: Studio, config: ApiConfig) -> None:
        self.studio = studio
        self.config = config
        self.limiter = RateLimiter(config.rate_limit)

    def resolve(self, connection: HTTPConnection, *, key_required: bool = False) -> ApiCaller:
        key = bearer_key(connection)
        address = connection.client.host if connection.client else None
        if key is not None:
            caller = self.studio.api_caller(key)
            assert caller.key is not None
            self.limiter.take(f"key:{caller.key.id}")
            return caller
        if key_required or self.config.anonymous == "none":
            raise ApiKeyRequired("This needs an API key: make one in the Account tab (or ask the operator) and "
                                 "send it as `Authorization: Bearer <key>`.")
        self.limiter.take(f"address:{address}")
        visitor = connection.cookies.get(VISITOR_COOKIE) or f"api:{address}"
        return ApiCaller(Identity.anonymous(visitor, address))

    @staticmethod
    def account_only(caller: ApiCaller) -> ApiCaller:
        if not caller.identity.is_account:
            raise ApiKeyRequired("This needs an account's API key: make one in the Account tab and send it as "
                                 "`Authorization: Bearer <key>`.")
        return caller
