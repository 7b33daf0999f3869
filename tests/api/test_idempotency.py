"""Idempotency-Key: a retry returns the same job and says so; parallel retries are charged once; the same
key with another body is refused; keys expire."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from nanobanana.service.db import idempotency_keys, ledger, utcnow

pytestmark = pytest.mark.slow
BODY = {"prompt": "a green star on the left, black background", "steps": 2, "seed": 11}


def charges(live_api, account_id: str) -> list:
    with live_api.studio.services.db.engine.connect() as conn:
        return list(conn.execute(sa.select(ledger.c.request_id).where(ledger.c.account_id == account_id,
                                                                        ledger.c.kind == "charge")).scalars())


def test_a_retry_with_the_same_key_returns_the_same_job_and_says_it_was_replayed(live_api):
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    key = {"Idempotency-Key": secrets.token_hex(8)}
    first = c.post("/v1/images", params={"wait": 30}, json=BODY, headers=key)
    again = c.post("/v1/images", params={"wait": 30}, json=BODY, headers=key)
    assert first.json()["id"] == again.json()["id"]
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert charges(live_api, account.id) == [first.json()["id"]]


def test_parallel_retries_are_charged_once(live_api):
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    key = {"Idempotency-Key": secrets.token_hex(8)}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: c.post("/v1/images", json=BODY, headers=key), range(8)))
    assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7
    assert charges(live_api, account.id) == list(ids)
    job = c.get(f"/v1/jobs/{ids.pop()}", params={"wait": 30}).json()
    assert c.get("/v1/account").json()["balance"] == account.balance - job["result"]["charged"]


def test_the_same_key_with_another_request_is_refused(live_api):
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    key = {"Idempotency-Key": secrets.token_hex(8)}
    c.post("/v1/images", json=BODY, headers=key)
    refused = c.post("/v1/images", json={**BODY, "seed": 12}, headers=key)
    assert refused.status_code == 422 and refused.json()["outcome"] == "idempotency_mismatch"
    assert len(charges(live_api, account.id)) == 1


def test_a_refused_first_request_leaves_the_key_free_for_a_corrected_retry(live_api):
    poor = live_api.account(credits=1)
    c = live_api.client(live_api.key(poor))
    key = {"Idempotency-Key": secrets.token_hex(8)}
    assert c.post("/v1/images", json={**BODY, "num_images": 2}, headers=key).status_code == 402
    assert c.post("/v1/images", json={**BODY, "num_images": 1}, headers=key).status_code in (200, 202)


def test_an_expired_key_makes_a_new_job(live_api):
    c = live_api.client(live_api.key())
    key = secrets.token_hex(8)
    first = c.post("/v1/images", json=BODY, headers={"Idempotency-Key": key}).json()["id"]
    with live_api.studio.services.db.engine.begin() as conn:  # as if `api.idempotency_hours` had passed
        conn.execute(idempotency_keys.update().where(idempotency_keys.c.key == key)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    second = c.post("/v1/images", json=BODY, headers={"Idempotency-Key": key})
    assert second.json()["id"] != first and "idempotent-replayed" not in second.headers


def test_keys_belong_to_their_owner(live_api):
    key = {"Idempotency-Key": secrets.token_hex(8)}
    mine = live_api.client(live_api.key()).post("/v1/images", json=BODY, headers=key).json()["id"]
    theirs = live_api.client(live_api.key()).post("/v1/images", json=BODY, headers=key)
    assert theirs.json()["id"] != mine and "idempotent-replayed" not in theirs.headers
