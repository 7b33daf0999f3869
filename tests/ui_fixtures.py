"""Helpers for the UI tests: a test safety filter, the app on a free port, and a small OpenID provider.

The provider is a real OAuth2 authorization-code + OpenID Connect server on 127.0.0.1 (RS256 id_tokens
signed with joserfc, discovery, JWKS, userinfo and a GitHub-style /user API): the app's authlib client
talks to it over HTTP exactly as it would to Google or GitHub.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Module level: FastAPI resolves the provider's (string) annotations against these globals.
from fastapi import FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from nanobanana.safety import Verdict

BLOCKED_WORD = "forbiddenword"
BLOCKED_COLOUR = (255, 0, 255)  # an image whose corner pixel is exactly this is refused




class WordFilter:
    """A test safety filter: refuses prompts with BLOCKED_WORD, images with a BLOCKED_COLOUR corner."""

    def check_prompt(self, text: str) -> Verdict:
        if BLOCKED_WORD in text.lower():
            reason = f"This prompt was refused: it contains the test word {BLOCKED_WORD!r}."
            return Verdict.block("test", 1.0, reason)
        return Verdict.allow()

    def check_image(self, image: Any) -> Verdict:
        if image.convert("RGB").getpixel((0, 0)) == BLOCKED_COLOUR:
            return Verdict.block("test", 1.0, "This image was refused by the (test) image filter.")
        return Verdict.allow()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An ASGI app served by uvicorn in a daemon thread on 127.0.0.1."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def build_test_app(generator, data_dir: Path, *, allowance: int = 3, signup_grant: int = 50,
                   ui_overrides: dict[str, Any] | None = None):
    """A studio on `generator` with a temp data folder and the test filter, and the app around it."""
    from nanobanana.service.build import build_studio
    from nanobanana.web.app import create_app
    from nanobanana.web.config import load_ui_config

    environ = {
        "NANOBANANA_SERVICE__ALLOWANCE__ANONYMOUS_IMAGES_PER_DAY": str(allowance),
        "NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": str(signup_grant),
        "HF_HUB_OFFLINE": "1",
    }
    studio = build_studio(environ, generator=generator, safety=WordFilter(), data_dir=data_dir,
                          start_sweeper=False)
    config = load_ui_config({}).model_copy(update=ui_overrides or {})
    return studio, create_app(studio, config, environ)


def session_cookie(base_url: str, path: str = "/login/huggingface") -> str:
    """Sign in through a login route (following redirects by hand) and return the `session` cookie value.

    The cookie is marked Secure, so httpx would not send it back over http: it is carried explicitly.
    """
    import httpx

    cookies: dict[str, str] = {}
    url = base_url + path
    with httpx.Client(follow_redirects=False, timeout=30) as client:
        for _ in range(10):
            header = "; ".join(f"{k}={v}" for k, v in cookies.items())
            response = client.get(url, headers={"Cookie": header} if header else {})
            for raw in response.headers.get_list("set-cookie"):
                name, _, rest = raw.partition("=")
                cookies[name.strip()] = rest.split(";")[0]
            if response.status_code not in (301, 302, 303, 307, 308):
                break
            url = urllib.parse.urljoin(url, response.headers["location"])
    return cookies["session"]


# -- a small OpenID Connect provider ----------------------------------------------------------------
@dataclass
class ProviderUser:
    sub: str = "g-1001"
    email: str = "ada@example.org"
    name: str = "Ada Lovelace"
    login: str = "ada"


@dataclass
class OpenIDProvider:
    """Authorization code flow with id_tokens, for one registered client."""

    client_id: str = "nanobanana-test"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    user: ProviderUser = field(default_factory=ProviderUser)
    codes: dict[str, dict] = field(default_factory=dict)
    tokens: dict[str, ProviderUser] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)

    def app(self, issuer: str):
        from joserfc import jwt
        from joserfc.jwk import KeySet, RSAKey

        key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "userinfo_endpoint": f"{issuer}/userinfo",
                "jwks_uri": f"{issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }

        @app.get("/jwks")
        def jwks():
            return KeySet([key]).as_dict(private=False)

        @app.get("/authorize")
        def authorize(request: Request):
            q = request.query_params
            if q.get("client_id") != self.client_id or q.get("response_type") != "code":
                raise HTTPException(400, "bad client or response type")
            code = secrets.token_urlsafe(16)
            # The person "approves" at once: this provider has a single user.
            self.codes[code] = {"redirect_uri": q["redirect_uri"], "nonce": q.get("nonce"),
                                "scope": q.get("scope", "")}
            target = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q.get("state")})
            return RedirectResponse(target, status_code=302)

        @app.post("/token")
        async def token(request: Request, grant_type: str = Form(...), code: str = Form(...),
                        redirect_uri: str = Form(...), authorization: str | None = Header(None)):
            form = await request.form()
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            if authorization and authorization.lower().startswith("basic "):
                import base64

                raw = base64.b64decode(authorization.split()[1]).decode()
                client_id, client_secret = (urllib.parse.unquote(p) for p in raw.split(":", 1))
            if (client_id, client_secret) != (self.client_id, self.client_secret):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            grant = self.codes.pop(code, None)
            if grant_type != "authorization_code" or grant is None or grant["redirect_uri"] != redirect_uri:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            access = secrets.token_urlsafe(16)
            self.tokens[access] = self.user
            now = int(time.time())
            claims = {"iss": issuer, "sub": self.user.sub, "aud": self.client_id, "iat": now,
                      "exp": now + 300, "email": self.user.email, "name": self.user.name}
            if grant["nonce"]:
                claims["nonce"] = grant["nonce"]
            body = {"access_token": access, "token_type": "Bearer", "expires_in": 300,
                    "scope": grant["scope"]}
            if "openid" in grant["scope"].split():
                body["id_token"] = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, key)
            self.issued.append(access)
            return body

        def bearer(authorization: str | None) -> ProviderUser:
            token = (authorization or "").removeprefix("Bearer ").removeprefix("bearer ")
            if token not in self.tokens:
                raise HTTPException(401, "bad token")
            return self.tokens[token]

        @app.get("/userinfo")
        def userinfo(authorization: str | None = Header(None)):
            user = bearer(authorization)
            return {"sub": user.sub, "email": user.email, "name": user.name}

        @app.get("/user")  # GitHub's API shape
        def github_user(authorization: str | None = Header(None)):
            user = bearer(authorization)
            return {"id": int(user.sub.split("-")[-1]), "login": user.login, "name": user.name, "email": None}

        @app.get("/user/emails")
        def github_emails(authorization: str | None = Header(None)):
            user = bearer(authorization)
            return [{"email": user.email, "primary": True, "verified": True}]

        return app
