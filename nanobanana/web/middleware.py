"""What every request passes before it reaches the page or a route: pure ASGI middleware, outermost first.

- `VisitorCookie`: an opaque random id per browser, for the anonymous allowance and images.
- `SecurityHeaders`: the usual response headers (nosniff, frame ancestors, referrer policy, HSTS over
  HTTPS) and a 404 for schema and docs routes nobody meant to publish.
- `SameOriginOnly`: browsers attach cookies to cross-site requests, so a request whose `Origin` is another
  site is refused unless the operator listed that origin, and no CORS header invites one.
- `SessionGuard`: a sign-in cookie is honoured only while its server-side session lives
  (`nanobanana.service.sessions`); every session cookie we send gets an id, our lifetime and our flags.
- `InputGuard`: a handler receives only files this client uploaded through Gradio; any other path in
  the request data (a server file, a special file, a URL) is refused before anything touches it. Body
  size, argument count and each argument's JSON type are checked too, so malformed calls get a clear 400
  instead of a traceback in Gradio's preprocessing (and in the log).
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import threading
import time
import urllib.parse
from base64 import b64decode, b64encode
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import itsdangerous
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

SESSION_COOKIE = "session"
VISITOR_COOKIE = "nb_visitor"
SESSION_ID_KEY = "nb_sid"
API_PREFIX = "/gradio_api"
UNPUBLISHED = {"/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect", f"{API_PREFIX}/openapi.json"}
DATA_ROUTES = re.compile(rf"^{API_PREFIX}/(?:queue/join|run/[^/]+|api/[^/]+|call/[^/]+)/?$")
UPLOAD_ROUTE = re.compile(rf"^{API_PREFIX}/upload/?$")
# The only other POSTs the page and gradio_client make. Every other Gradio POST route (e.g. /stream/{id},
# which replaces a queued event's data unchecked, component_server, run-history) answers 404.
OTHER_POSTS = re.compile(rf"^{API_PREFIX}/(?:cancel|reset)/?$")


def request_cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies, parsed as Starlette parses them (what every layer below us will read)."""
    raw = "; ".join(v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie")
    return cookie_parser(raw)


def _set_cookies(scope: Scope, cookies: dict[str, str]) -> None:
    """Replace the request's cookie headers by one header holding exactly `cookies`."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k != b"cookie"]
    if cookies:
        headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode("latin-1")))
    scope["headers"] = headers


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _drop_cookie(scope: Scope, name: str) -> None:
    """Remove one cookie from the request, so nothing downstream sees it."""
    _set_cookies(scope, {k: v for k, v in request_cookies(scope).items() if k != name})


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def is_https(scope: Scope) -> bool:
    return scope.get("scheme") in {"https", "wss"}


# -- headers ------------------------------------------------------------------------------------------
class SecurityHeaders:
    def __init__(self, app: ASGIApp, frame_ancestors: Iterable[str] = ()) -> None:
        self.app = app
        ancestors = list(frame_ancestors)
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
            (b"content-security-policy", " ".join(["frame-ancestors 'self'", *ancestors]).encode()),
        ]
        if not ancestors:  # X-Frame-Options cannot name another site; CSP alone speaks for a Space
            self.headers.append((b"x-frame-options", b"SAMEORIGIN"))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/") in UNPUBLISHED:
            await _refuse(send, 404, "Not found.")
            return
        https = is_https(scope)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.headers]
                if https:
                    message["headers"].append((b"strict-transport-security", b"max-age=31536000"))
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- cross-origin -------------------------------------------------------------------------------------
def _origin_of(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    return f"{parsed.scheme}://{parsed.netloc}".lower() if parsed.scheme and parsed.netloc else ""


class SameOriginOnly:
    """Refuse requests sent from another site's page (their `Origin` names that site)."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {_origin_of(o) for o in allowed_origins if _origin_of(o)}

    def _same_site(self, origin: str, scope: Scope) -> bool:
        parsed = urllib.parse.urlsplit(origin)
        hosts = {h for h in (_header(scope, b"host"), _header(scope, b"x-forwarded-host")) if h}
        return bool(parsed.netloc) and parsed.netloc.lower() in {h.split(",")[0].strip().lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        listed = bool(origin) and origin.lower() in self.allowed
        if origin is not None and not listed and not self._same_site(origin, scope):
            log.info("refused a cross-origin request to %s", scope["path"])
            await _refuse(send, 403, "Requests from other sites are not accepted.")
            return

        async def send_without_cors(message: dict) -> None:
            if message["type"] == "http.response.start" and not listed:
                message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                      if not k.lower().startswith(b"access-control-allow-")]
            await send(message)

        await self.app(scope, receive, send_without_cors)


# -- sign-in sessions ---------------------------------------------------------------------------------
class SessionCodec:
    """Starlette's session cookie format (what Gradio's and our SessionMiddleware read and write)."""

    def __init__(self, secret_key: str, max_age: int) -> None:
        self.signer = itsdangerous.TimestampSigner(secret_key)
        self.max_age = max_age

    def decode(self, value: str) -> dict | None:
        try:
            data = json.loads(b64decode(self.signer.unsign(value.encode(), max_age=self.max_age)))
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def encode(self, session: dict) -> str:
        return self.signer.sign(b64encode(json.dumps(session).encode())).decode()


class SessionGuard:
    """Honour a signed-in cookie only while its server-side session is open.

    `who(userinfo)` gives (provider, provider user id) for a session's claims; `sessions` is a
    `nanobanana.service.sessions.SignInSessions`. Cookies are rewritten with our flags on the way out.
    """

    def __init__(self, app: ASGIApp, codec: SessionCodec, sessions: Any,
                 who: Callable[[dict], tuple[str, str]], same_site: str = "lax") -> None:
        self.app = app
        self.codec = codec
        self.sessions = sessions
        self.who = who
        self.same_site = same_site.capitalize()
        self.flags = f"Path=/; Max-Age={codec.max_age}; HttpOnly; Secure; SameSite={self.same_site}"

    def _person(self, session: dict | None) -> tuple[str, str] | None:
        info = session.get("oauth_info") if session is not None else None
        if not isinstance(info, dict) or not isinstance(info.get("userinfo"), dict):
            return None
        try:
            return self.who(info["userinfo"])
        except Exception:
            return None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # The layers below see exactly the cookies checked here, in one header.
        cookies = request_cookies(scope)
        _set_cookies(scope, cookies)
        raw = cookies.get(SESSION_COOKIE)
        session = self.codec.decode(raw) if raw else None
        active_id: str | None = None
        person = self._person(session)
        stripped = False
        if raw and session is None:  # a bad signature, or older than a sign-in lasts
            _drop_cookie(scope, SESSION_COOKIE)
            stripped = True
        elif person is not None:
            sid = session.get(SESSION_ID_KEY)
            if isinstance(sid, str) and await run_in_threadpool(self.sessions.is_active, sid, *person):
                active_id = sid
            else:  # signed out, deleted, expired, or a cookie we never issued: treat as signed out
                _drop_cookie(scope, SESSION_COOKIE)
                stripped = True

        async def send_guarded(message: dict) -> None:
            if message["type"] == "http.response.start":
                await self._rewrite(message, active_id, person if active_id else None, stripped)
            await send(message)

        await self.app(scope, receive, send_guarded)

    async def _rewrite(self, message: dict, active_id: str | None, active_person: tuple[str, str] | None,
                       stripped: bool) -> None:
        headers = message.get("headers", [])
        ours = [v for k, v in headers if k.lower() == b"set-cookie"
                and v.decode("latin-1").split("=", 1)[0].strip() == SESSION_COOKIE]
        others = [(k, v) for k, v in headers if not (k.lower() == b"set-cookie" and v in ours)]
        value: str | None = None
        if ours:  # the last Set-Cookie wins in the browser; it alone is kept
            value = ours[-1].decode("latin-1").split("=", 1)[1].split(";", 1)[0]
            session = self.codec.decode(value) if value != "null" else None
            person = self._person(session)
            if person is None:  # signed out (or a session without a sign-in, e.g. OAuth state)
                if active_id:
                    await run_in_threadpool(self.sessions.close, active_id)
                value = None if session is None else value
            elif active_id is None or session.get(SESSION_ID_KEY) != active_id or person != active_person:
                if active_id:  # someone else signed in on this browser: the old session ends
                    await run_in_threadpool(self.sessions.close, active_id)
                session[SESSION_ID_KEY] = await run_in_threadpool(self.sessions.open, *person)
                value = self.codec.encode(session)
        if value is not None:
            others.append((b"set-cookie", f"{SESSION_COOKIE}={value}; {self.flags}".encode()))
        elif ours or stripped:
            others.append((b"set-cookie", f"{SESSION_COOKIE}=null; Path=/; Max-Age=0; HttpOnly; Secure; "
                                          f"SameSite={self.same_site}".encode()))
        message["headers"] = others


# -- uploads ------------------------------------------------------------------------------------------
class UploadRegistry:
    """Paths Gradio stored for each client's uploads, for an hour. Bounded in all (`max_entries`) and
    per client (`max_per_client`), so one client cannot push everyone else's uploads out."""

    def __init__(self, ttl_seconds: float = 3600, max_entries: int = 100_000, max_per_client: int = 64) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.max_per_client = max_per_client
        self._lock = threading.Lock()
        self._paths: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()
        self._by_client: dict[str, deque[str]] = {}

    def add(self, paths: Iterable[str], keys: frozenset[str]) -> None:
        if not keys:  # nobody to tie them to: no call can use them anyway
            return
        now, client = time.monotonic(), min(keys)
        with self._lock:
            mine = self._by_client.setdefault(client, deque())
            for path in paths:
                # The same file uploaded by two clients lands on one path: both may use it.
                known = self._paths.pop(path, (now, frozenset()))[1]
                self._paths[path] = (now, known | keys)
                mine.append(path)
                if len(mine) > self.max_per_client:
                    self._paths.pop(mine.popleft(), None)
            while len(self._paths) > self.max_entries:
                self._paths.popitem(last=False)

    def owned(self, path: str, keys: frozenset[str]) -> bool:
        with self._lock:
            entry = self._paths.get(path)
        return entry is not None and time.monotonic() - entry[0] < self.ttl and bool(entry[1] & keys)


def client_keys(scope: Scope) -> frozenset[str]:
    """What ties an upload to the request that uses it: the visitor cookie or the sign-in cookie (not the
    address: people behind one address must not use each other's uploads)."""
    cookies = request_cookies(scope)
    return frozenset(f"{name}:{cookies[name]}" for name in (VISITOR_COOKIE, SESSION_COOKIE) if cookies.get(name))


def _file_references(data: Any) -> Iterable[dict]:
    """Every dict in the request data that names a file (Gradio reads `path` and `url` of any of them)."""
    if isinstance(data, dict):
        if "path" in data or "url" in data:
            yield data
        for value in data.values():
            yield from _file_references(value)
    elif isinstance(data, list):
        for value in data:
            yield from _file_references(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# The JSON each input component takes (None is always allowed: Gradio passes it on as "no value").
_ACCEPTS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "textbox": ("text", lambda v: isinstance(v, str)),
    "dropdown": ("a choice", lambda v: isinstance(v, str) or _is_number(v)),
    "slider": ("a number", _is_number),
    "number": ("a number", _is_number),
    "checkbox": ("true or false", lambda v: isinstance(v, bool)),
    "file": ("uploaded files", lambda v: isinstance(v, list | dict)),
}


def _rule(component: Any) -> tuple[str, Callable[[Any], bool]] | None:
    kind = component.get_block_name()
    choices = getattr(component, "choices", None)
    if kind == "dropdown" and choices and not getattr(component, "allow_custom_value", False):
        values = {c[1] if isinstance(c, tuple | list) else c for c in choices}
        return "one of the offered choices", lambda v: isinstance(v, str | int | float) and v in values
    return _ACCEPTS.get(kind)


def _input_rules(fn: Any) -> list[tuple[str, Callable[[Any], bool]] | None]:
    return [_rule(component) for component in fn.inputs]


class InputGuard:
    def __init__(self, app: ASGIApp, blocks: Any, registry: UploadRegistry | None = None,
                 max_body_bytes: int = 256_000) -> None:
        self.app = app
        self.registry = registry or UploadRegistry()
        self.max_body_bytes = max_body_bytes
        self.rules_by_index = {index: _input_rules(fn) for index, fn in blocks.fns.items()}
        self.rules_by_name = {str(fn.api_name).lstrip("/"): _input_rules(fn) for fn in blocks.fns.values()
                              if fn.api_name}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if UPLOAD_ROUTE.match(path):
            await self._upload(scope, receive, send)
        elif DATA_ROUTES.match(path):
            await self._call(scope, receive, send)
        elif path.startswith(API_PREFIX) and not OTHER_POSTS.match(path):
            await _refuse(send, 404, "Not found.")
        else:
            await self.app(scope, receive, send)

    async def _upload(self, scope: Scope, receive: Any, send: Any) -> None:
        keys = client_keys(scope)
        status: list[int] = []
        body = bytearray()

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and len(body) < 1_000_000:
                body.extend(message.get("body", b""))
                if not message.get("more_body") and status and status[0] == 200:
                    try:
                        paths = json.loads(bytes(body))
                    except ValueError:
                        paths = []
                    if isinstance(paths, list):
                        self.registry.add([p for p in paths if isinstance(p, str)], keys)
            await send(message)

        await self.app(scope, receive, capture)

    async def _call(self, scope: Scope, receive: Any, send: Any) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(send, 413, f"The request is larger than {self.max_body_bytes // 1000} kB.")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = self._check(scope, body)
        if problem:
            log.info("refused a call to %s: %s", scope["path"], problem.split(":")[0])
            await _refuse(send, 400, problem)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _check(self, scope: Scope, body: bytes) -> str | None:
        try:
            payload = json.loads(body)
        except ValueError:
            return "The request body is not valid JSON."
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            return "The request needs a JSON object with a `data` list."
        data = payload["data"]
        name = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        # The page names the function by index (queue/join, and run/predict for unqueued events).
        if scope["path"].rstrip("/").endswith("/queue/join") or name == "predict":
            index = payload.get("fn_index")
            rules = self.rules_by_index.get(index) if isinstance(index, int) else None
        else:
            rules = self.rules_by_name.get(name)
        if rules is None:
            return "There is no such endpoint."
        if len(data) != len(rules):
            return f"This endpoint takes {len(rules)} input value(s); got {len(data)}."
        for position, (value, rule) in enumerate(zip(data, rules, strict=True), start=1):
            if rule is not None and value is not None and not rule[1](value):
                return f"Input {position} must be {rule[0]}."
        keys = client_keys(scope)
        for ref in _file_references(data):
            path = ref.get("path")
            if not isinstance(path, str) or not self.registry.owned(path, keys):
                return "A file in the request was not uploaded by you; upload it again."
        return None


# -- the anonymous visitor ----------------------------------------------------------------------------
VISITOR_MAX_AGE = 86400  # the anonymous allowance is per day


class VisitorCookie:
    """Give each browser an opaque random id (HttpOnly, a day long): anonymous visitors keep their
    allowance and their images across page reloads. Pure ASGI, so streamed responses pass untouched."""

    def __init__(self, app: Any, same_site: str = "lax") -> None:
        self.app = app
        self.same_site = same_site.capitalize()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        cookies = request_cookies(scope)
        if scope["type"] != "http" or VISITOR_COOKIE in cookies:
            await self.app(scope, receive, send)
            return
        token = secrets.token_urlsafe(24)
        _set_cookies(scope, {**cookies, VISITOR_COOKIE: token})  # this request already counts as the visitor
        # Secure where the site is HTTPS; SameSite=None (which needs Secure) only inside a Space's iframe.
        secure = "; Secure" if is_https(scope) or self.same_site == "None" else ""

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", f"{VISITOR_COOKIE}={token}; Path=/; Max-Age={VISITOR_MAX_AGE}; "
                                             f"HttpOnly; SameSite={self.same_site}{secure}")
            await send(message)

        await self.app(scope, receive, send_with_cookie)
