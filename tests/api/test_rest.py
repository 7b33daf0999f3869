"""The REST API under /v1, called as scripts call it: httpx against the app on 127.0.0.1.

Every route's happy path and its errors (as application/problem+json), keys (revocation at once, other
accounts' things answer 404), the rate limit, anonymous calls, images served byte for byte.
"""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from tests.api.conftest import ALLOWANCE
from tests.fakes import BLOCKED_WORD

pytestmark = pytest.mark.slow
PROMPT = "a red triangle on a white background"
PROBLEM = "application/problem+json"


def png(colour=(255, 255, 255), size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def made(c, **body) -> dict:
    """POST /v1/images and wait for the end; returns the job."""
    response = c.post("/v1/images", params={"wait": 30}, json={"prompt": PROMPT, "steps": 2, **body})
    assert response.status_code == 200, response.text
    return response.json()


def declared_too_large(url: str) -> bytes:
    """A POST that declares a gigabyte body and sends none: refused before anything is read."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")
        return s.recv(200)


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["detail"] and "Traceback" not in body["detail"]
    return body


# -- the schema ---------------------------------------------------------------------------------------
def test_the_openapi_schema_lists_every_route_with_examples(live_api):
    schema = live_api.client().get("/v1/openapi.json").json()
    routes = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert routes >= {("/images", "post"), ("/images/{image_id}", "get"), ("/jobs", "get"), ("/jobs/{job_id}", "get"),
                      ("/jobs/{job_id}", "delete"), ("/account", "get"), ("/account/ledger", "get"),
                      ("/account/export", "get"), ("/account", "delete")}
    submit = schema["paths"]["/images"]["post"]
    assert set(submit["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert submit["requestBody"]["content"]["application/json"]["examples"]
    assert schema["components"]["schemas"]["JobOut"]["examples"]
    assert schema["components"]["schemas"]["Problem"]["examples"]
    assert schema["servers"] == [{"url": "/v1"}]


# -- making images ------------------------------------------------------------------------------------
def test_a_waited_request_returns_the_result_and_the_stored_bytes_unchanged(live_api):
    key = live_api.key()
    c = live_api.client(key)
    job = made(c, seed=7, num_images=2)
    assert job["state"] == "succeeded" and job["result"]["charged"] == 2 and job["error"] is None
    images = job["result"]["images"]
    assert [i["seed"] for i in images] == [7, 8] or len({i["seed"] for i in images}) == 2
    response = c.get(images[0]["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, no-store"
    stored = live_api.data_dir / "images" / f"{images[0]['id']}.png"
    assert response.content == stored.read_bytes()  # as stored: a signature added at store time survives


def test_a_request_without_wait_is_accepted_and_polled_to_its_end(live_api):
    c = live_api.client(live_api.key())
    response = c.post("/v1/images", json={"prompt": PROMPT, "steps": 2})
    assert response.status_code in (200, 202)
    location = response.headers["location"]
    assert location == f"/v1/jobs/{response.json()['id']}"
    job = c.get(location, params={"wait": 30}).json()
    assert job["state"] == "succeeded" and len(job["result"]["images"]) == 1
    assert job["id"] in [j["id"] for j in c.get("/v1/jobs").json()]


def test_edits_take_base64_images_and_multipart_uploads(live_api):
    c = live_api.client(live_api.key())
    encoded = base64.b64encode(png()).decode()
    job = made(c, prompt="a blue circle", images=[encoded], strength=0.6)
    assert job["state"] == "succeeded"
    response = c.post("/v1/images", params={"wait": 30}, data={"prompt": "a blue circle", "steps": "2"},
                      files=[("images", ("white.png", png(), "image/png"))])
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "succeeded"


def test_an_image_that_is_not_an_image_is_refused_and_not_charged(live_api):
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    not_an_image = base64.b64encode(b"nope").decode()
    body = problem(c.post("/v1/images", json={"prompt": "a blue circle", "images": [not_an_image]}), 422)
    assert body["error"] == "InvalidImage"
    body = problem(c.post("/v1/images", json={"prompt": "a blue circle", "images": ["not base64!"]}), 422)
    assert "base64" in body["detail"]
    assert live_api.studio.services.ledger.balance(account.id) == account.balance


def test_edits_refused_before_the_queue_are_counted_in_the_stats_once_each(live_api):
    def refused_edits() -> int:
        stats = live_api.studio.stats()
        if not stats.requests:
            return 0
        rows = stats.by_setting
        return int(rows.loc[rows["mode"] == "edit", "requests"].sum() - rows.loc[rows["mode"] == "edit", "ok"].sum())

    c = live_api.client(live_api.key())
    before = refused_edits()
    problem(c.post("/v1/images", json={"prompt": "a blue circle", "images": [base64.b64encode(b"nope").decode()]}),
            422)
    problem(c.post("/v1/images", json={"prompt": "a blue circle", "images": ["not base64!"]}), 422)
    assert refused_edits() == before + 2


def test_cancel_takes_a_queued_job_out_of_line_and_refunds_it(live_api):
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    worker = live_api.studio.worker
    worker.stop()  # nothing runs: the job stays in line
    live_api.studio.worker = None
    try:
        job = c.post("/v1/images", json={"prompt": PROMPT, "steps": 2}).json()
        assert job["state"] == "queued" and job["place_in_line"] >= 1
        cancelled = c.delete(f"/v1/jobs/{job['id']}").json()
        assert cancelled["state"] == "cancelled" and cancelled["error"]["outcome"] == "cancelled"
    finally:
        live_api.studio.start_worker()
    assert c.get("/v1/account").json()["balance"] == account.balance


# -- errors -------------------------------------------------------------------------------------------
def test_refusals_are_problems_with_our_message_and_outcome(live_api):
    poor = live_api.account(credits=1)
    c = live_api.client(live_api.key(poor))
    body = problem(c.post("/v1/images", json={"prompt": PROMPT, "num_images": 3, "steps": 2}), 402)
    assert body["outcome"] == "insufficient_credits" and "balance is 1" in body["detail"]
    body = problem(c.post("/v1/images", json={"prompt": f"a {BLOCKED_WORD} here", "steps": 2}), 422)
    assert body["outcome"] == "blocked_prompt"
    body = problem(c.post("/v1/images", json={"prompt": PROMPT, "num_images": 0}), 422)
    assert "num_images" in body["detail"]
    problem(c.post("/v1/images", json={"prompt": PROMPT, "colour": "red"}), 422)  # unknown field
    problem(c.post("/v1/images", content=b"{not json", headers={"content-type": "application/json"}), 422)
    problem(c.post("/v1/images", content=b"prompt=x", headers={"content-type": "text/plain"}), 415)
    assert declared_too_large(live_api.url).startswith(b"HTTP/1.1 413")
    problem(c.get("/v1/jobs/nope"), 404)
    problem(c.get("/v1/nothing/here"), 404)
    problem(c.put("/v1/account"), 405)
    problem(c.get("/v1/jobs/x", params={"wait": -1}), 422)
    assert live_api.studio.services.ledger.balance(poor.id) == 1  # nothing charged on the way


def test_a_failure_of_ours_is_a_generic_problem(live_api, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(live_api.studio, "account_summary", broken)
    body = problem(live_api.client(live_api.key()).get("/v1/account"), 500)
    assert "secret internal detail" not in body["detail"] and "nothing was charged" in body["detail"]


# -- keys ---------------------------------------------------------------------------------------------
def test_a_key_cannot_see_another_accounts_jobs_images_or_ledger(live_api):
    mine, theirs = live_api.client(live_api.key()), live_api.client(live_api.key())
    job = made(mine)
    image = job["result"]["images"][0]
    problem(theirs.get(f"/v1/jobs/{job['id']}"), 404)  # 404, not 403: ids do not leak
    problem(theirs.delete(f"/v1/jobs/{job['id']}"), 404)
    problem(theirs.get(image["url"]), 404)
    assert job["id"] not in [e["request_id"] for e in theirs.get("/v1/account/ledger").json()]
    assert job["id"] in [e["request_id"] for e in mine.get("/v1/account/ledger").json()]
    problem(live_api.client().get(image["url"]), 404)  # nor can an anonymous caller


def test_a_revoked_key_stops_working_at_once(live_api):
    account = live_api.account()
    key = live_api.key(account)
    c = live_api.client(key)
    assert c.get("/v1/account").status_code == 200
    live_api.studio.revoke_api_key(account.identity, key.record.id)
    body = problem(c.get("/v1/account"), 401)
    assert body["outcome"] == "invalid_api_key"
    assert c.get("/v1/account").headers["www-authenticate"].startswith("Bearer")


def test_keys_are_stored_hashed_with_name_created_and_last_used(live_api):
    import sqlalchemy as sa

    from nanobanana.service.db import api_keys

    account = live_api.account()
    key = live_api.key(account, name="nightly script")
    with live_api.studio.services.db.engine.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key.record.id)).one()
    assert key.key not in str(tuple(row)) and row.prefix == key.key[:10] and row.last_used_at is None
    live_api.client(key).get("/v1/account")
    listed = live_api.studio.api_keys(account.identity)[0]
    assert listed.name == "nightly script" and listed.created_at and listed.last_used_at is not None


def test_a_bad_or_malformed_key_is_refused(live_api):
    problem(live_api.client("nb_not-a-real-key").get("/v1/account"), 401)
    problem(live_api.client().get("/v1/account", headers={"Authorization": "Basic abc"}), 401)
    body = problem(live_api.client().get("/v1/account/ledger"), 401)  # anonymous: no ledger
    assert body["outcome"] == "api_key_required"


def test_each_key_is_rate_limited_with_retry_after(live_api):
    c = live_api.client(live_api.key())
    statuses = [c.get("/v1/account") for _ in range(45)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "45 calls at once went through a burst of 30"
    assert int(limited[0].headers["retry-after"]) >= 1 and limited[0].json()["outcome"] == "rate_limited"
    assert live_api.client(live_api.key()).get("/v1/account").status_code == 200  # another key is not held up


# -- anonymous calls ----------------------------------------------------------------------------------
def test_anonymous_calls_get_the_anonymous_allowance_only(live_api):
    c = live_api.client()
    account = c.get("/v1/account").json()
    assert account["kind"] == "anonymous" and account["allowance_per_day"] == ALLOWANCE
    body = problem(c.post("/v1/images", json={"prompt": PROMPT, "num_images": ALLOWANCE + 1, "steps": 2}), 422)
    assert "num_images" in body["detail"] or body["outcome"] == "insufficient_credits"
    job = made(c)
    assert job["result"]["charged"] == 0
    assert c.get(job["result"]["images"][0]["url"]).status_code == 200  # the same visitor (cookie) sees it
    body = problem(c.post("/v1/images", json={"prompt": PROMPT, "webhook_url": "http://127.0.0.1:9/x"}), 401)
    assert "API key" in body["detail"]


def test_anonymous_calls_can_be_turned_off(live_api, monkeypatch):
    callers = live_api.callers()
    monkeypatch.setattr(callers, "config", callers.config.model_copy(update={"anonymous": "none"}))
    body = problem(live_api.client().get("/v1/account"), 401)
    assert body["outcome"] == "api_key_required"
    assert live_api.client(live_api.key()).get("/v1/account").status_code == 200


# -- the account --------------------------------------------------------------------------------------
def test_account_and_ledger_agree_with_the_balance(live_api):
    account = live_api.account()
    c = live_api.client(live_api.key(account))
    made(c)
    me = c.get("/v1/account").json()
    ledger = c.get("/v1/account/ledger").json()
    assert me["kind"] == "account" and me["username"] == account.username
    assert me["balance"] == ledger[0]["balance_after"] == sum(e["delta"] for e in ledger)
    assert len(c.get("/v1/account/ledger", params={"limit": 1}).json()) == 1


def test_export_then_delete_account_removes_its_keys(live_api):
    import zipfile

    account = live_api.account()
    key = live_api.key(account, name="to be deleted")
    c = live_api.client(key)
    made(c)
    export = c.get("/v1/account/export")
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(export.content)).namelist()
    assert {"profile.json", "ledger.csv", "api_keys.json", "images.json"} <= set(names)
    assert key.key not in zipfile.ZipFile(io.BytesIO(export.content)).read("api_keys.json").decode()
    time.sleep(0.2)
    assert not list((live_api.data_dir / "exports").glob("*")), "the export zip is removed once sent"
    problem(c.delete("/v1/account"), 422)  # confirm=DELETE is required
    assert c.delete("/v1/account", params={"confirm": "DELETE"}).json() == {"deleted": True}
    assert live_api.studio.services.api_keys.list(account.id) == []
    problem(c.get("/v1/account"), 401)
