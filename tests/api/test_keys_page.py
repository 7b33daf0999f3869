"""API keys from the Account tab: made (shown once), listed, revoked, through the page's own endpoints and
in a real browser; the key then works (and stops working) on /v1 at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import session_cookie

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


def gradio(url: str, cookie: str):
    from gradio_client import Client

    return Client(url, headers={"Cookie": f"session={cookie}"}, verbose=False)


def test_a_signed_in_person_makes_uses_and_revokes_a_key(live_api):
    page = gradio(live_api.url, session_cookie(live_api.url))
    shown, name, webhook, table, choice = page.predict("my script", "", api_name="/create_api_key")
    key = shown["value"].split()[0] if isinstance(shown, dict) else shown.split()[0]
    assert key.startswith("nb_") and "whsec_" in str(shown) and name == "" and webhook == ""
    assert table["data"][0][0] == "my script" and key not in str(table)
    me = httpx.get(live_api.url + "/v1/account", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert me.status_code == 200 and me.json()["username"] == "local-dev"
    table, _ = page.predict(api_name="/api_keys")
    assert table["data"][0][3] != "never"  # last used: just now
    page.predict(choice["value"], api_name="/revoke_api_key")
    assert httpx.get(live_api.url + "/v1/account", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).status_code == 401


def test_a_visitor_cannot_make_a_key(live_api):
    from gradio_client import Client

    with pytest.raises(Exception, match="Sign in"):
        Client(live_api.url, verbose=False).predict("x", "", api_name="/create_api_key")


def test_a_refused_webhook_url_is_explained(live_api, monkeypatch):
    webhooks = live_api.studio.services.webhooks
    monkeypatch.setattr(webhooks, "config", webhooks.config.model_copy(update={"allow_private_targets": False}))
    with pytest.raises(Exception, match="private, loopback or link-local"):
        gradio(live_api.url, session_cookie(live_api.url)).predict("x", "http://10.0.0.1/hook",
                                                                   api_name="/create_api_key")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")
def test_the_account_tab_shows_a_new_key_once(live_api):
    from playwright.sync_api import sync_playwright

    from tests.web.test_browser import ARGS, ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.set_default_timeout(30_000)
        page.goto(live_api.url + "/")
        page.get_by_role("button", name="Sign in with Hugging Face").click()
        page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('Signed in as')")
        page.get_by_role("tab", name="Account").click()
        page.locator("#nb-key-name input, #nb-key-name textarea").first.fill("from the browser")
        page.locator("#nb-key-create").click()
        secret = page.locator("#nb-key-secret textarea")
        secret.wait_for()
        page.wait_for_function("() => document.querySelector('#nb-key-secret textarea')?.value.startsWith('nb_')")
        key = secret.input_value().split()[0]
        page.wait_for_function("() => document.querySelector('#nb-keys')?.innerText.includes('from the browser')")
        page.screenshot(path=str(ARTIFACTS / "20-account-api-keys.png"), full_page=True)
        browser.close()
    assert httpx.get(live_api.url + "/v1/account", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).status_code == 200
