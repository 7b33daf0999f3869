"""Webhooks: a signed POST to the caller's URL when one of their jobs ends, retried until it is taken.

Signed the Standard Webhooks way (https://www.standardwebhooks.com): headers `webhook-id` (the same on
every retry, so receivers can drop duplicates), `webhook-timestamp` (Unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`, the secret being the
API key's `whsec_...` (see `api_keys.py`).

A delivery row is written when the job is submitted (state `waiting`). A sender thread, in every process
that serves the API, fixes its body when the job ends (`pending`) and posts it; any 2xx ends it
(`delivered`), anything else is retried after each wait in `api.webhooks.retry_seconds`, then given up
(`failed`). Several processes may run senders on one database: each try is claimed with a conditional
update first.

Targets: http(s) only, no credentials in the URL, and, unless the operator sets
`api.webhooks.allow_private_targets`, never an address that is private, loopback, link-local, multicast
or reserved. The name is resolved when the URL is given and again at each try, and the request goes to
the address that was checked (the name kept for Host and TLS), so a name that changes its address
between the check and the call reaches nothing new.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from nanobanana.errors import WebhookTargetRefused
from nanobanana.service.api_keys import ApiKeys
from nanobanana.service.config import WebhooksConfig
from nanobanana.service.db import Database, utcnow, webhook_deliveries
from nanobanana.service.db import jobs as jobs_table
from nanobanana.service.jobs import ENDED_STATES, Job, JobStore, Owner

log = logging.getLogger(__name__)

WAITING, PENDING, DELIVERED, FAILED = "waiting", "pending", "delivered", "failed"
MAX_URL_CHARS = 2000


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value for one message (Standard Webhooks, scheme v1)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the address it is called at."""

    url: str
    host: str
    address: str

    def request_url(self) -> str:
        """The URL with the checked address in place of the name."""
        parts = urllib.parse.urlsplit(self.url)
        ip = ipaddress.ip_address(self.address)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    def host_header(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return parts.netloc


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified or not address.is_global)


def check_target(url: object, allow_private: bool = False) -> Target:
    """A URL we will post to, with the address to use; `WebhookTargetRefused` says why not."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise WebhookTargetRefused(f"A webhook URL must be an http(s) URL of at most {MAX_URL_CHARS} characters.")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookTargetRefused("The webhook URL is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetRefused("A webhook URL must start with http:// or https:// and name a host.")
    if parts.username or parts.password:
        raise WebhookTargetRefused("A webhook URL may not carry a user name or password.")
    if parts.fragment:
        raise WebhookTargetRefused("A webhook URL may not have a #fragment.")
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise WebhookTargetRefused(f"The webhook host {host!r} could not be found.") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private and not all(_public(a) for a in addresses):
        raise WebhookTargetRefused(
            f"The webhook host {host!r} is on a private, loopback or link-local address; this server only "
            "calls public addresses."
        )
    return Target(url, host, str(addresses[0]))


@dataclass(frozen=True)
class Delivery:
    id: str
    job_id: str
    owner: Owner
    api_key_id: str
    url: str
    state: str
    attempts: int
    next_attempt_at: Any
    payload: str | None
    last_status: int | None
    last_error: str | None
    created_at: Any
    finished_at: Any

    def to_dict(self) -> dict:
        return {"id": self.id, "job_id": self.job_id, "url": self.url, "state": self.state,
                "attempts": self.attempts, "last_status": self.last_status, "last_error": self.last_error,
                "created_at": self.created_at.isoformat() + "Z",
                "finished_at": self.finished_at.isoformat() + "Z" if self.finished_at else None}


def _delivery(row: sa.Row) -> Delivery:
    return Delivery(id=row.id, job_id=row.job_id, owner=Owner(row.owner_kind, row.owner_key),
                    api_key_id=row.api_key_id, url=row.url, state=row.state, attempts=int(row.attempts),
                    next_attempt_at=row.next_attempt_at, payload=row.payload, last_status=row.last_status,
                    last_error=row.last_error, created_at=row.created_at, finished_at=row.finished_at)


class Webhooks:
    """Delivery rows, and the sender thread that posts them (`start`)."""

    def __init__(self, db: Database, jobs: JobStore, api_keys: ApiKeys, config: WebhooksConfig) -> None:
        self.db = db
        self.jobs = jobs
        self.api_keys = api_keys
        self.config = config
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._payload: Callable[[Job], dict] | None = None

    def check(self, url: str) -> str:
        """A URL the caller may use (raises `WebhookTargetRefused`)."""
        return check_target(url, self.config.allow_private_targets).url

    def register(self, job_id: str, owner: Owner, api_key_id: str, url: str) -> str:
        """Send this job's end to `url` (checked beforehand with `check`); returns the delivery id."""
        delivery_id = "msg_" + secrets.token_urlsafe(18)
        with self.db.transaction() as c:
            c.execute(webhook_deliveries.insert().values(
                id=delivery_id, job_id=job_id, owner_kind=owner.kind, owner_key=owner.owner_key,
                api_key_id=api_key_id, url=url, state=WAITING, attempts=0, next_attempt_at=None, payload=None,
                created_at=utcnow(),
            ))
        self._wake.set()
        return delivery_id

    def of_job(self, job_id: str) -> list[Delivery]:
        with self.db.transaction() as c:
            rows = c.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.job_id == job_id)
                             .order_by(webhook_deliveries.c.created_at)).all()
        return [_delivery(r) for r in rows]

    def of_owner(self, owner: Owner) -> list[Delivery]:
        with self.db.transaction() as c:
            rows = c.execute(sa.select(webhook_deliveries).where(
                webhook_deliveries.c.owner_kind == owner.kind, webhook_deliveries.c.owner_key == owner.owner_key)
                .order_by(webhook_deliveries.c.created_at)).all()
        return [_delivery(r) for r in rows]

    def delete_owner(self, owner: Owner, conn) -> int:
        return conn.execute(webhook_deliveries.delete().where(
            webhook_deliveries.c.owner_kind == owner.kind, webhook_deliveries.c.owner_key == owner.owner_key)).rowcount

    # -- the sender -----------------------------------------------------------------------------------
    def start(self, payload: Callable[[Job], dict]) -> None:
        """Send deliveries in a daemon thread; `payload(job)` is the body's `data` (the job as the API
        shows it)."""
        self._payload = payload
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="nanobanana-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_seconds + 5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("the webhook sender hit an error; it goes on")
            self._wake.wait(self.config.poll_seconds)
            self._wake.clear()

    def run_once(self) -> int:
        """Fix the bodies of deliveries whose job ended, then post those due; returns how many were tried."""
        self._prepare()
        tried = 0
        for delivery in self._due():
            if self._stop.is_set():
                break
            if self._claim(delivery):
                self._attempt(delivery)
                tried += 1
        return tried

    def _prepare(self) -> None:
        with self.db.transaction() as c:
            rows = c.execute(
                sa.select(webhook_deliveries.c.id, webhook_deliveries.c.job_id)
                .select_from(webhook_deliveries.outerjoin(jobs_table, jobs_table.c.id == webhook_deliveries.c.job_id))
                .where(webhook_deliveries.c.state == WAITING)
                .where(sa.or_(jobs_table.c.id.is_(None), jobs_table.c.state.in_(ENDED_STATES)))
            ).all()
        for row in rows:
            now = utcnow()
            job = self.jobs.get(row.job_id)
            if job is None:  # the job is gone (its owner deleted it, or it was swept long ago)
                values: dict[str, Any] = {"state": FAILED, "finished_at": now, "last_error": "the job is gone"}
            else:
                assert self._payload is not None
                event = {"type": f"job.{job.state}", "timestamp": now.isoformat() + "Z", "data": self._payload(job)}
                values = {"state": PENDING, "payload": json.dumps(event, separators=(",", ":")),
                          "next_attempt_at": now}
            with self.db.transaction() as c:
                c.execute(webhook_deliveries.update().where(webhook_deliveries.c.id == row.id,
                                                            webhook_deliveries.c.state == WAITING).values(**values))

    def _due(self) -> list[Delivery]:
        with self.db.transaction() as c:
            rows = c.execute(sa.select(webhook_deliveries).where(
                webhook_deliveries.c.state == PENDING, webhook_deliveries.c.next_attempt_at <= utcnow())
                .order_by(webhook_deliveries.c.next_attempt_at).limit(50)).all()
        return [_delivery(r) for r in rows]

    def _claim(self, delivery: Delivery) -> bool:
        """Hold this try for this process (another sender skips it until the hold runs out)."""
        hold = utcnow() + timedelta(seconds=self.config.timeout_seconds * 2 + 5)
        with self.db.transaction() as c:
            return bool(c.execute(webhook_deliveries.update().where(
                webhook_deliveries.c.id == delivery.id, webhook_deliveries.c.state == PENDING,
                webhook_deliveries.c.next_attempt_at == delivery.next_attempt_at,
            ).values(next_attempt_at=hold)).rowcount)

    def _attempt(self, delivery: Delivery) -> None:
        attempts = delivery.attempts + 1
        status, error = self._post(delivery)
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if status is not None and 200 <= status < 300:
            values.update(state=DELIVERED, finished_at=now, next_attempt_at=None)
        elif attempts > len(self.config.retry_seconds):
            values.update(state=FAILED, finished_at=now, next_attempt_at=None)
            log.info("gave up a webhook delivery after %d tries", attempts)
        else:
            values["next_attempt_at"] = now + timedelta(seconds=self.config.retry_seconds[attempts - 1])
        with self.db.transaction() as c:
            c.execute(webhook_deliveries.update().where(webhook_deliveries.c.id == delivery.id).values(**values))

    def _post(self, delivery: Delivery) -> tuple[int | None, str | None]:
        if self.api_keys.get(delivery.api_key_id) is None:
            return None, "the API key was revoked"
        try:
            target = check_target(delivery.url, self.config.allow_private_targets)
        except WebhookTargetRefused as exc:
            return None, str(exc)[:255]
        body = delivery.payload or "{}"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json", "user-agent": "Nanobanana-Webhooks/1",
            "host": target.host_header(), "webhook-id": delivery.id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.api_keys.webhook_secret(delivery.api_key_id), delivery.id, timestamp, body),
        }
        extensions = {"sni_hostname": target.host} if target.url.startswith("https:") else {}
        try:
            with httpx.Client(timeout=self.config.timeout_seconds, follow_redirects=False, trust_env=False) as client:
                response = client.post(target.request_url(), content=body.encode(), headers=headers,
                                       extensions=extensions)
            return response.status_code, None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}"[:255]

    def sweep(self) -> int:
        cutoff = utcnow() - timedelta(days=self.config.keep_days)
        with self.db.transaction() as c:
            return c.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.state.in_([DELIVERED, FAILED]), webhook_deliveries.c.finished_at < cutoff)
            ).rowcount
