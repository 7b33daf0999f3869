"""Webhooks: signed the Standard Webhooks way (checked with its reference library), retried with the same
webhook-id until the target answers 2xx and then never again; private targets refused unless allowed."""

from __future__ import annotations

import threading
import time

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from nanobanana.errors import WebhookTargetRefused
from nanobanana.service.webhooks import check_target
from tests.helpers import Server

pytestmark = pytest.mark.slow
BODY = {"prompt": "a red circle", "steps": 2}


class Receiver:
    """A webhook target on 127.0.0.1 that answers with `statuses` in turn (then 200) and keeps every call."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

        async def hook(request: Request) -> PlainTextResponse:
            body = await request.body()
            with self.lock:
                self.calls.append((dict(request.headers), body))
                status = self.statuses.pop(0) if self.statuses else 200
            return PlainTextResponse("ok", status_code=status)

        self.server = Server(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))

    def __enter__(self) -> Receiver:
        self.server.__enter__()
        self.url = self.server.url + "/hook"
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

    def wait_for(self, n: int, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while len(self.calls) < n and time.time() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= n, f"{len(self.calls)} of {n} deliveries arrived"


def test_a_job_end_is_posted_signed_and_retried_until_taken(live_api):
    key = live_api.key()
    with Receiver([500, 503]) as receiver:
        c = live_api.client(key)
        job = c.post("/v1/images", json={**BODY, "webhook_url": receiver.url}).json()
        receiver.wait_for(3)
        time.sleep(1.5)  # well past the retry waits (0.3 s): nothing more comes after the 200
        assert len(receiver.calls) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.calls}
    assert len(ids) == 1  # one message, tried three times
    for headers, body in receiver.calls:
        event = Webhook(key.webhook_secret).verify(body, headers)  # the reference check: raises if forged
        assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"]
        assert event["data"]["result"]["images"][0]["url"].startswith("/v1/images/")
    delivery = live_api.studio.services.webhooks.of_job(job["id"])[0]
    assert delivery.state == "delivered" and delivery.attempts == 3 and delivery.last_status == 200


def test_a_tampered_delivery_does_not_verify(live_api):
    key = live_api.key()
    with Receiver([]) as receiver:
        live_api.client(key).post("/v1/images", json={**BODY, "webhook_url": receiver.url})
        receiver.wait_for(1)
    headers, body = receiver.calls[0]
    with pytest.raises(Exception):  # noqa: B017 - the library's own verification error
        Webhook(key.webhook_secret).verify(body.replace(b"succeeded", b"failed"), headers)
    with pytest.raises(Exception):  # noqa: B017
        Webhook(live_api.key().webhook_secret).verify(body, headers)  # another key's secret


def test_the_keys_own_url_is_used_and_a_failed_job_is_posted_too(live_api):
    with Receiver([]) as receiver:
        key = live_api.key(live_api.account(credits=0), webhook_url=receiver.url)
        c = live_api.client(key)
        assert c.post("/v1/images", json=BODY).status_code == 402  # refused before a job: nothing to post
        time.sleep(0.5)
        assert receiver.calls == []
    with Receiver([]) as receiver:
        key = live_api.key(webhook_url=receiver.url)
        job = live_api.client(key).post("/v1/images", json={**BODY, "seed": 1}).json()
        receiver.wait_for(1)
        event = Webhook(key.webhook_secret).verify(*reversed(receiver.calls[0]))
        assert event["data"]["id"] == job["id"]


def test_retries_stop_when_they_run_out(live_api):
    key = live_api.key()
    with Receiver([500] * 10) as receiver:
        job = live_api.client(key).post("/v1/images", json={**BODY, "webhook_url": receiver.url}).json()
        receiver.wait_for(4)  # the first try and three retries (api.webhooks.retry_seconds here)
        time.sleep(1.5)
        assert len(receiver.calls) == 4
    delivery = live_api.studio.services.webhooks.of_job(job["id"])[0]
    assert delivery.state == "failed" and delivery.last_status == 500


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/x", "http://192.168.0.10/x",
    "http://172.16.5.4/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[fe80::1]/x",
    "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0/x", "http://224.0.0.1/x", "http://2130706433/x",
])
def test_private_loopback_and_link_local_targets_are_refused(url):
    with pytest.raises(WebhookTargetRefused, match="private, loopback or link-local"):
        check_target(url, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.org/x", "http://user:pw@example.org/x", "javascript:alert(1)",
                                 "http://", "http://example.org/#frag", "x" * 3000])
def test_urls_that_are_not_plain_http_targets_are_refused(url):
    with pytest.raises(WebhookTargetRefused):
        check_target(url, allow_private=True)


def test_a_refused_target_is_a_problem_before_anything_is_charged(live_api, monkeypatch):
    webhooks = live_api.studio.services.webhooks
    monkeypatch.setattr(webhooks, "config", webhooks.config.model_copy(update={"allow_private_targets": False}))
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    refused = c.post("/v1/images", json={**BODY, "webhook_url": "http://127.0.0.1:9/hook"})
    assert refused.status_code == 422 and refused.json()["outcome"] == "webhook_refused"
    assert c.get("/v1/account").json()["balance"] == account.balance
