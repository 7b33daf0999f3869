"""Sign-in: the local development login, and Google/GitHub sign-in run end to end against a small
OpenID Connect provider on 127.0.0.1 (see `tests/web/oidc_provider.py`), plus start-up offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.parse

import httpx
import pytest

from nanobanana.config import REPO_ROOT
from nanobanana.web.config import OAuthProviders, ProviderConfig
from tests.helpers import Server, build_test_app, free_port, session_cookie
from tests.web.oidc_provider import OpenIDProvider

pytestmark = pytest.mark.slow
SECRET = "test-session-secret"


@pytest.fixture(scope="module")
def provider():
    idp = OpenIDProvider()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with Server(idp.app(issuer), port=port):
        idp.issuer = issuer
        yield idp


@pytest.fixture(scope="module")
def app(generator, tmp_path_factory, provider):
    issuer = provider.issuer
    oauth = OAuthProviders(
        google=ProviderConfig(client_id=provider.client_id, client_secret=provider.client_secret,
                              server_metadata_url=f"{issuer}/.well-known/openid-configuration"),
        github=ProviderConfig(client_id=provider.client_id, client_secret=provider.client_secret,
                              authorize_url=f"{issuer}/authorize", access_token_url=f"{issuer}/token",
                              api_base_url=f"{issuer}/", scope="read:user user:email"),
    )
    studio, web = build_test_app(generator, tmp_path_factory.mktemp("ui-auth-data"),
                                 ui_overrides={"oauth": oauth, "session_secret": SECRET})
    with Server(web) as server:
        server.studio = studio
        yield server
    studio.close()


def account_text(app, cookie: str) -> str:
    from gradio_client import Client

    c = Client(app.url, headers={"Cookie": f"session={cookie}"}, verbose=False, download_files=False)
    return c.predict(api_name="/account")[0]


def sign_in_steps(app, path: str) -> tuple[list[str], str]:
    """Follow the redirect dance by hand (the Secure cookie is carried explicitly); the hosts visited
    and the final session cookie."""
    cookies: dict[str, str] = {}
    visited: list[str] = []
    url = app.url + path
    with httpx.Client(follow_redirects=False, timeout=30) as client:
        for _ in range(10):
            visited.append(url)
            here = urllib.parse.urlparse(url)
            header = "; ".join(f"{k}={v}" for k, v in cookies.items())
            send = {"Cookie": header} if header and url.startswith(app.url) else {}
            response = client.get(url, headers=send)
            if here.netloc == urllib.parse.urlparse(app.url).netloc:
                for raw in response.headers.get_list("set-cookie"):
                    name, _, rest = raw.partition("=")
                    cookies[name.strip()] = rest.split(";")[0]
            if response.status_code not in (302, 303, 307):
                assert response.status_code == 200, response.text
                break
            url = urllib.parse.urljoin(url, response.headers["location"])
    return visited, cookies.get("session", "")


def test_hugging_face_button_signs_in_as_the_dev_profile_without_a_token(app):
    assert "Sign in with Hugging Face" in httpx.get(app.url + "/config", timeout=30).text
    assert "**local-dev**" in account_text(app, session_cookie(app.url))
    account = app.studio.services.accounts.find_by_provider("local", "local-dev")
    assert account is not None and account.balance == 50


def test_google_sign_in_runs_the_openid_redirect_dance(app, provider):
    visited, cookie = sign_in_steps(app, "/login/google")
    assert any(u.startswith(provider.issuer + "/authorize") for u in visited)
    assert any("/login/google/callback?code=" in u for u in visited)
    assert "**ada**" in account_text(app, cookie) and "ada@example.org" in account_text(app, cookie)
    assert app.studio.services.accounts.find_by_provider("google", "g-1001").username == "ada"


def test_github_sign_in_reads_the_user_api(app, provider):
    _, cookie = sign_in_steps(app, "/login/github")
    account = app.studio.services.accounts.find_by_provider("github", "1001")
    assert account is not None and account.email == "ada@example.org"
    assert f"**{account.username}**" in account_text(app, cookie)


def test_a_forged_callback_is_refused_readably(app):
    response = httpx.get(app.url + "/login/google/callback?code=stolen&state=made-up", timeout=30)
    assert response.status_code == 400 and "try again" in response.text


def forged_cookie(secret: str, session_id: str | None = None) -> str:
    """A session cookie claiming to be "mallory", signed the way Gradio's SessionMiddleware signs."""
    import base64
    import json

    from itsdangerous import TimestampSigner

    from nanobanana.web.auth import session_entry, userinfo

    session = {"oauth_info": session_entry(userinfo("huggingface", "666", "mallory"))}
    if session_id:
        session["nb_sid"] = session_id
    key = hashlib.sha256((secret + "-v4").encode()).hexdigest()
    return TimestampSigner(key).sign(base64.b64encode(json.dumps(session).encode())).decode()


def test_a_cookie_signed_with_gradios_public_default_key_is_not_a_sign_in(app):
    # Off a Space Gradio would sign with sha256("" + "-v4"): anyone could mint sessions.
    assert "Sign in" in account_text(app, forged_cookie(""))
    # The control: the real key and a session the server opened work.
    session_id = app.studio.services.sessions.open("huggingface", "666")
    assert "**mallory**" in account_text(app, forged_cookie(SECRET, session_id))


def test_a_cookie_signed_with_the_real_key_but_never_issued_is_not_a_sign_in(app):
    assert "Sign in" in account_text(app, forged_cookie(SECRET))


def test_logout_ends_the_session(app):
    cookie = session_cookie(app.url)
    response = httpx.get(app.url + "/logout", headers={"Cookie": f"session={cookie}"}, timeout=30)
    cleared = response.cookies.get("session") or ""
    assert response.status_code == 302
    assert "Sign in" in account_text(app, cleared)


def test_app_py_starts_offline_without_a_token(tiny_model_dir, tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))},
        "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "GRADIO_SERVER_PORT": str(port),
        "NANOBANANA_MODEL": str(tiny_model_dir), "NANOBANANA_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # app.py turns it off by itself
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None:
                    pytest.fail(process.stdout.read())
                time.sleep(0.5)
        else:
            pytest.fail("app.py did not answer within 120 s")
        login = httpx.get(url + "/login/huggingface", timeout=10, follow_redirects=False)
        assert login.status_code in (302, 307)
    finally:
        process.terminate()
        process.wait(timeout=20)
    # The policy promises client addresses are never written down: no access log lines in the output.
    output = process.stdout.read()
    assert "Nanobanana on http://" in output
    assert '"GET /' not in output and "127.0.0.1:" not in output.replace(f"http://127.0.0.1:{port}", "")


def test_with_dev_login_off_there_is_no_hugging_face_sign_in_off_a_space(generator, tmp_path):
    from nanobanana.web.config import DevLoginConfig

    studio, web = build_test_app(generator, tmp_path, ui_overrides={"dev_login": DevLoginConfig(enabled=False)})
    try:
        with Server(web) as server:
            page = httpx.get(server.url + "/config", timeout=30).text
            assert "Sign in with Hugging Face" not in page
            login = httpx.get(server.url + "/login/huggingface", timeout=30, follow_redirects=False)
            assert login.status_code == 404
    finally:
        studio.close()
