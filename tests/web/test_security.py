"""The app attacked as a stranger would: `python app.py` as a real process on 127.0.0.1, raw HTTP.

One test (or a few) per finding of the security review: server files through upload data, cross-site
calls, accounts that come back, bypassed limits, memory and size, images by URL, headers, logs. Raw Gradio
queue calls are used where `gradio_client` would hide the problem.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.live_app import Live, call, join, new_visitor, session_of, set_session, signed_in, start_app, stop_app

pytestmark = pytest.mark.slow
ALLOWANCE = 8
SECRET = "security-test-secret"


@pytest.fixture(scope="module")
def live(tiny_model_dir, tmp_path_factory):
    live = start_app(tmp_path_factory.mktemp("security"), {
        "NANOBANANA_MODEL": str(tiny_model_dir),
        "NANOBANANA_SESSION_SECRET": SECRET,
        "NANOBANANA_SERVICE__ALLOWANCE__ANONYMOUS_IMAGES_PER_DAY": str(ALLOWANCE),
        "NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": "20",
    })
    yield live
    stop_app(live)


def generate_data(prompt="a red circle", n=1) -> list:
    return [prompt, "1:1", n, "", 2, 1.5, 1, True, ""]


def png(size=(64, 64), colour=(255, 255, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(c: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return c.post("/gradio_api/upload", files=[("files", (name, data, "image/png"))])


def file_ref(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def edit_data(files: list[dict], instruction="a red circle", source="") -> list:
    return [files, instruction, 0.6, 2, 0, True, source]


# -- 1. server-side paths in upload data -----------------------------------------------------------------
def test_a_server_path_in_edit_data_is_refused_before_it_is_read(live):
    secret_file = live.data_dir / "nanobanana.service.db"
    before = live.files_in_gradio_dir()
    response = join(new_visitor(live), live, "edit", edit_data([file_ref(str(secret_file))]))
    assert response.status_code == 400 and "not uploaded by you" in response.json()["error"]
    assert secret_file.exists()  # not deleted by the handler
    assert not [p for p in live.files_in_gradio_dir() - before if p.name == secret_file.name]  # not copied


def test_a_special_file_in_edit_data_does_not_freeze_the_server(live):
    started = time.perf_counter()
    response = join(new_visitor(live), live, "edit", edit_data([file_ref("/dev/zero")]))
    assert response.status_code == 400
    assert httpx.get(live.url + "/config", timeout=5).status_code == 200
    assert time.perf_counter() - started < 5


def test_a_url_in_edit_data_is_not_fetched(live):
    response = join(new_visitor(live), live, "edit", edit_data([{"path": "http://127.0.0.1:9/x.png",
                                                                   "url": "http://127.0.0.1:9/x.png"}]))
    assert response.status_code == 400


def test_another_visitors_upload_cannot_be_used_or_deleted(live):
    owner, stranger = new_visitor(live), new_visitor(live)
    path = upload(owner, "mine.png", png()).json()[0]
    response = join(stranger, live, "edit", edit_data([file_ref(path)]))
    assert response.status_code == 400
    assert Path(path).exists()


def test_my_own_upload_edits_and_is_then_removed(live):
    c = new_visitor(live)
    path = upload(c, "mine.png", png()).json()[0]
    message = call(c, live, "edit", edit_data([file_ref(path)]))
    assert message["success"], message
    assert not Path(path).exists()  # read in memory, then removed


@pytest.mark.parametrize("path", ["/gradio_api/stream/abc123", "/gradio_api/component_server",
                                  "/gradio_api/call/v2/generate", "/gradio_api/run-history/connect"])
def test_gradios_other_data_routes_are_closed(live, path):
    # /stream/{event_id} would replace a queued event's data after the checks above.
    response = new_visitor(live).post(path, json={"data": [[file_ref("/dev/zero")], "x", 0.5, 2, 0, True]})
    assert response.status_code == 404


# -- 2. credentialed cross-origin requests -----------------------------------------------------------------
@pytest.mark.parametrize("host", [None, "nanobanana.example.org"])
def test_a_request_from_another_site_is_refused(live, host):
    c = signed_in(live)
    headers = {"Origin": "https://evil.example"} | ({"Host": host} if host else {})
    export = c.post("/gradio_api/queue/join", headers=headers,
                    json={"data": [], "fn_index": live.fns["export"], "session_hash": "x1"})
    assert export.status_code == 403
    assert "access-control-allow-origin" not in export.headers
    preflight = c.options("/gradio_api/queue/join", headers={**headers, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-credentials" not in preflight.headers


def test_a_same_site_request_is_accepted(live):
    c = new_visitor(live)
    response = c.get("/config", headers={"Origin": live.url})
    assert response.status_code == 200


def test_the_session_cookie_is_same_site_lax_and_lasts_as_long_as_the_sign_in(live):
    c = new_visitor(live)
    response = c.get("/login/huggingface")
    while response.status_code in (302, 303, 307) and "session=" not in response.headers.get("set-cookie", ""):
        response = c.get(response.headers["location"].removeprefix(live.url))
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("session=")).lower()
    assert "samesite=lax" in cookie and "secure" in cookie and "httponly" in cookie
    assert "max-age=28800" in cookie  # 8 hours, as the sign-in itself


# -- 3. accounts that come back --------------------------------------------------------------------------
def account_text(c: httpx.Client, live: Live) -> str:
    message = call(c, live, "account", [])
    return message["output"]["data"][0]


def test_a_cookie_replayed_after_sign_out_is_not_signed_in(live):
    c = signed_in(live)
    cookie = session_of(c)
    assert "member since" in account_text(c, live)
    c.get("/logout")
    replay = new_visitor(live)
    set_session(replay, cookie)
    assert "Sign in" in account_text(replay, live)


def test_a_malformed_cookie_header_does_not_revive_an_ended_session(live):
    c = signed_in(live)
    cookie = session_of(c)
    c.get("/logout")
    # Python's cookie parser gives up on a header like this; Starlette's (which the session layer uses) not.
    replay = httpx.Client(base_url=live.url, timeout=60, headers={"Cookie": f"session={cookie}; foo; nb_visitor=v1"})
    assert "Sign in" in account_text(replay, live)


def test_a_deleted_account_is_not_recreated_by_its_cookie_nor_granted_twice(live):
    c = signed_in(live)
    cookie = session_of(c)
    assert "balance **20**" in account_text(c, live)
    message = call(c, live, "delete_account", ["DELETE"])
    assert "deleted" in message["output"]["data"][0]
    replay = new_visitor(live)
    set_session(replay, cookie)
    quote = call(replay, live, "quote", ["1:1", 1, 2])
    assert "free" in quote["output"]["data"][0]["value"]  # anonymous again: the account was not re-created
    assert "Sign in" in account_text(replay, live)
    again = signed_in(live)  # a real new sign-in makes a new account, without the sign-up grant
    assert "balance **0**" in account_text(again, live)
    policy = httpx.get(live.url + "/privacy", timeout=10).text
    assert "30 days" in policy and "keyed hash" in policy


# -- 5. memory and size --------------------------------------------------------------------------------
def test_too_many_huge_uploads_are_refused_before_decoding(live):
    big = io.BytesIO()
    Image.new("L", (6400, 6250)).save(big, format="PNG")  # 40 megapixels, ~40 kB on the wire
    c = new_visitor(live)
    paths = [upload(c, f"big{i}.png", big.getvalue()).json()[0] for i in range(16)]
    before = live.rss_mb()
    message = call(c, live, "edit", edit_data([file_ref(p) for p in paths]))
    assert not message["success"] and "at most 4 images" in message["output"]["error"]
    assert live.rss_mb() - before < 300
    assert not any(Path(p).exists() for p in paths)


def test_an_upload_over_the_size_limit_is_refused_at_the_door(live):
    c = new_visitor(live)
    before = live.files_in_gradio_dir()
    response = upload(c, "huge.png", b"\x89PNG" + os.urandom(21_000_000))
    assert response.status_code == 413
    assert live.files_in_gradio_dir() - before == set()


def test_an_edit_leaves_no_stray_file_in_gradios_folder(live):
    c = new_visitor(live)
    before = live.files_in_gradio_dir()
    path = upload(c, "one.png", png()).json()[0]
    assert call(c, live, "edit", edit_data([file_ref(path)]))["success"]
    assert live.files_in_gradio_dir() - before == set()


def test_a_request_body_over_the_limit_is_refused(live):
    c = new_visitor(live)
    response = join(c, live, "generate", generate_data(prompt="a" * 400_000))
    assert response.status_code == 413


# -- 6. images by URL ----------------------------------------------------------------------------------
def test_an_image_is_served_only_to_its_owner_and_never_cached(live):
    owner = new_visitor(live)
    message = call(owner, live, "generate", generate_data())
    assert message["success"], message
    url = message["output"]["data"][0][0]["image"]["url"]
    assert url.startswith(live.url + "/files/images/")
    mine = owner.get(url.removeprefix(live.url))
    assert mine.status_code == 200 and mine.content.startswith(b"\x89PNG")
    assert mine.headers["cache-control"] == "private, no-store"
    assert httpx.get(url, timeout=10).status_code == 404  # no cookie
    assert new_visitor(live).get(url.removeprefix(live.url)).status_code == 404  # someone else
    assert not [p for p in live.files_in_gradio_dir() if p.suffix in {".png", ".webp"}]


def test_history_delete_refuses_another_visitors_or_an_accounts_image_id(live):
    # The confirmation is the page's; the endpoint behind it is what an attacker calls, with a known id.
    owner = new_visitor(live)
    message = call(owner, live, "generate", generate_data())
    assert message["success"], message
    url = message["output"]["data"][0][0]["image"]["url"].removeprefix(live.url)
    image_id = url.split("/")[3]
    for stranger in (new_visitor(live), signed_in(live)):
        refused = call(stranger, live, "delete_image", [image_id])
        assert not refused["success"] and "no such image" in refused["output"]["error"]
    assert owner.get(url).status_code == 200


# -- 7. headers and leaks ------------------------------------------------------------------------------
def test_pages_carry_the_usual_security_headers(live):
    response = httpx.get(live.url + "/", timeout=10)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["referrer-policy"] == "same-origin"
    assert "strict-transport-security" not in response.headers  # plain http here


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/gradio_api/openapi.json"])
def test_no_schema_or_docs_route_is_published(live, path):
    assert httpx.get(live.url + path, timeout=10).status_code == 404


def test_metrics_have_no_exact_event_times(live):
    text = httpx.get(live.url + "/metrics", timeout=10).text
    assert "nanobanana_requests_total" in text and "_created" not in text


def test_responses_name_no_server_path(live):
    c = new_visitor(live)
    message = call(c, live, "generate", generate_data())
    text = json.dumps(message)
    assert str(live.data_dir) not in text and str(live.gradio_dir) not in text
    missing = call(c, live, "edit", edit_data([file_ref(upload(c, "gone.png", png()).json()[0])]))
    assert missing["success"]  # (the upload path itself is the client's own, returned by /upload)


# -- 8. logs --------------------------------------------------------------------------------------------
def test_expected_errors_log_one_line_without_traceback_or_prompt(live):
    c = new_visitor(live)
    marker = f"zebra{secrets.token_hex(4)}"
    start = len(live.log_text())
    assert not call(c, live, "generate", generate_data(prompt="   "))["success"]
    assert not call(c, live, "generate", generate_data(prompt=f"a decapitated body in a pool of blood {marker}"))[
        "success"]
    refused = join(c, live, "generate", [f"a {marker} circle", "1:1"])  # too few arguments
    assert refused.status_code == 400
    time.sleep(0.5)
    logged = live.log_text()[start:]
    assert "Traceback" not in logged and marker not in logged
    assert "request refused" in logged


def test_a_lone_surrogate_is_refused_with_a_clear_message(live):
    c = new_visitor(live)
    start = len(live.log_text())
    message = call(c, live, "generate", generate_data(prompt="a red \ud800 circle"))
    assert not message["success"] and "invalid character" in message["output"]["error"]
    assert "TypeError" not in live.log_text()[start:]


# -- fuzz -----------------------------------------------------------------------------------------------
def test_a_bounded_fuzz_run_breaks_nothing(live):
    import random

    rng = random.Random(7)
    c = new_visitor(live)
    junk = [None, "", " ", "\x00", "\ud800", "a" * 3000, -1, 2**70, 1e308, float("nan"), True, [], {}, [[]],
            {"path": "/etc/passwd"}, [{"path": "/dev/zero", "meta": {"_type": "gradio.FileData"}}],
            "../../etc/passwd", "<script>alert(1)</script>", "16:9", "9:16", "auto", 0, 4, 50]
    before_files = {p for p in live.data_dir.rglob("*") if p.is_file() and "images" in p.parts}
    rss_before = live.rss_mb()
    statuses: dict[int, int] = {}
    for _ in range(300):
        name = rng.choice(["generate", "edit"])
        width = 9 if name == "generate" else 7
        data = [rng.choice(junk) for _ in range(rng.choice([width, width, width - 1, width + 2, 0]))]
        body = json.dumps({"data": data, "fn_index": live.fns[name], "session_hash": secrets.token_hex(4)},
                          allow_nan=True)
        response = c.post("/gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        assert "Traceback" not in response.text
    assert httpx.get(live.url + "/config", timeout=10).status_code == 200
    time.sleep(2)  # let queued junk finish
    after_files = {p for p in live.data_dir.rglob("*") if p.is_file() and "images" in p.parts}
    # Joined junk that passed the guard runs and fails validation: it may store nothing new but images of
    # valid requests; every file there belongs to a row.
    assert after_files - before_files == set() or all(p.suffix == ".png" for p in after_files)
    assert live.rss_mb() - rss_before < 200
    assert "Traceback" not in live.log_text()
    print("fuzz statuses:", statuses)


# -- 4. the anonymous allowance (last: it uses up what is left of today's allowance) -----------------------
def test_forged_forwarded_addresses_do_not_multiply_the_free_allowance(live):
    made = 0
    for i in range(ALLOWANCE + 3):
        c = new_visitor(live)  # a fresh visitor cookie each time
        c.headers["X-Forwarded-For"] = f"203.0.113.{i + 1}"
        message = call(c, live, "generate", generate_data())
        made += bool(message["success"])
    assert made <= ALLOWANCE


# -- in-process checks (the same app, through its ASGI interface) ------------------------------------------
@pytest.fixture(scope="module")
def in_process(generator, tmp_path_factory):
    from tests.helpers import Server, build_test_app

    studio, web = build_test_app(generator, tmp_path_factory.mktemp("security-in-process"), allowance=5)
    with Server(web) as server:
        server.studio, server.web = studio, web
        yield server
    studio.close()


def test_over_https_the_site_sends_hsts_and_a_secure_visitor_cookie(in_process):
    from starlette.testclient import TestClient

    # Not as a context manager: its lifespan shutdown would stop the running app's queue.
    response = TestClient(in_process.web, base_url="https://nanobanana.example.org").get("/privacy")
    assert response.headers["strict-transport-security"].startswith("max-age=")
    visitor = next(v for v in response.headers.get_list("set-cookie") if v.startswith("nb_visitor="))
    assert "Secure" in visitor and "SameSite=Lax" in visitor


def test_an_expired_image_is_refused_at_once_not_at_the_next_sweep(in_process):
    import sqlalchemy as sa
    from gradio_client import Client

    from nanobanana.service.db import images, utcnow

    c = httpx.Client(base_url=in_process.url, timeout=60)
    c.get("/config")
    gc = Client(in_process.url, headers={"Cookie": f"nb_visitor={c.cookies['nb_visitor']}"}, verbose=False,
                download_files=False)
    gallery = gc.predict("a red circle", "1:1", 1, "", 2, 1.5, 1, False, "", api_name="/generate")[0]
    url = gallery[0]["image"]["url"]
    assert c.get(url.removeprefix(in_process.url)).status_code == 200
    with in_process.studio.services.db.transaction() as conn:
        conn.execute(images.update().values(expires_at=utcnow() - timedelta(seconds=1)))
        assert conn.execute(sa.select(sa.func.count()).select_from(images)).scalar() >= 1
    assert c.get(url.removeprefix(in_process.url)).status_code == 404


def test_forwarded_headers_are_believed_only_from_configured_proxies():
    from nanobanana.web.config import SPACE_PROXIES, load_ui_config

    config = load_ui_config({})
    assert config.proxies({}) == []
    assert config.proxies({"SYSTEM": "spaces"}) == SPACE_PROXIES
    assert config.proxies({"FORWARDED_ALLOW_IPS": "10.1.2.3, 10.1.2.4"}) == ["10.1.2.3", "10.1.2.4"]
    listed = config.model_copy(update={"trusted_proxies": ["192.0.2.10"]})
    assert listed.proxies({"SYSTEM": "spaces"}) == ["192.0.2.10"]


def test_one_client_cannot_push_out_other_clients_uploads():
    from nanobanana.web.middleware import UploadRegistry

    registry = UploadRegistry(max_entries=1000, max_per_client=3)
    registry.add(["/up/mine.png"], frozenset({"nb_visitor:me"}))
    for i in range(50):
        registry.add([f"/up/flood-{i}.png"], frozenset({"nb_visitor:flooder"}))
    assert registry.owned("/up/mine.png", frozenset({"nb_visitor:me"}))
    assert not registry.owned("/up/flood-0.png", frozenset({"nb_visitor:flooder"}))  # its own oldest went
    assert registry.owned("/up/flood-49.png", frozenset({"nb_visitor:flooder"}))
    assert not registry.owned("/up/mine.png", frozenset({"nb_visitor:flooder"}))
