"""A small OpenID Connect provider for the sign-in tests.

A real OAuth2 authorization-code + OpenID Connect server on 127.0.0.1 (RS256 id_tokens signed with
joserfc, discovery, JWKS, userinfo and a GitHub-style /user API): the app's authlib client talks to it
over HTTP exactly as it would to Google or GitHub. Serve `OpenIDProvider().app(issuer)` with
`tests.helpers.Server`.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from dataclasses import dataclass, field

# Module level: FastAPI resolves the provider's (string) annotations against these globals.
from fastapi import FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse


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
