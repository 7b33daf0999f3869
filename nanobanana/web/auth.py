"""Sign-in for the app. Every way in ends in `studio.sign_in(OAuthProfileData(...))`.

- On a Space (`SYSTEM=spaces`): Gradio's real Hugging Face OAuth (`gr.LoginButton`).
- Elsewhere, the same button signs in as a configured development profile ("local-dev", provider
  "local"): Gradio's own mock needs an HF token and a call to the hub, and the app must start offline.
- Google and GitHub with authlib, on the FastAPI app that mounts Gradio, when their client id and
  secret are set. Their callbacks write the same session entry Gradio's HF sign-in writes, so every
  handler gets a `gr.OAuthProfile` whichever provider was used, and Gradio's /logout signs out of all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse

from nanobanana.service.accounts import OAuthProfileData
from nanobanana.web.config import DevLoginConfig, ProviderConfig, UIConfig

log = logging.getLogger(__name__)

SESSION_HOURS = 8
PROVIDER_KEY = "nanobanana_provider"  # our extra claim in the session's userinfo: who vouched for it


def on_space(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("SYSTEM") == "spaces"


def userinfo(
    provider: str, user_id: str, username: str, name: str | None = None, email: str | None = None,
    picture: str = "", profile: str = "",
) -> dict[str, Any]:
    """The claims Gradio's `gr.OAuthProfile` reads, plus the provider."""
    return {
        "sub": str(user_id),
        "name": name or username,
        "preferred_username": username,
        "profile": profile,
        "picture": picture,
        "email": email,
        PROVIDER_KEY: provider,
    }


def session_entry(claims: dict[str, Any], access_token: str = "", scope: str = "openid profile",
                  hours: float = SESSION_HOURS) -> dict:
    """What goes into `request.session["oauth_info"]` (the shape Gradio's own sign-in writes)."""
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "scope": scope,
        "expires_at": int(time.time() + hours * 3600),
        "userinfo": claims,
    }


def profile_data(profile: Mapping[str, Any]) -> OAuthProfileData:
    """A `gr.OAuthProfile` (any provider) as the service's sign-in record."""
    return OAuthProfileData(
        provider=str(profile.get(PROVIDER_KEY) or "huggingface"),
        provider_user_id=str(profile.get("sub") or profile.get("preferred_username")),
        username=str(profile.get("preferred_username") or profile.get("name") or "user"),
        email=profile.get("email") or None,
    )


def session_person(claims: Mapping[str, Any]) -> tuple[str, str]:
    """(provider, provider user id) of a session's claims: what a server-side sign-in session belongs to."""
    profile = profile_data(claims)
    return profile.provider, profile.provider_user_id


# -- the session secret ---------------------------------------------------------------------------
def session_secret(config: UIConfig, environ: Mapping[str, str] | None = None,
                   shared: Callable[[], bytes] | None = None) -> str:
    """Gradio signs its session cookie with sha256(OAUTH_CLIENT_SECRET + "-v4"). Off a Space that
    variable is unset, which would make the key public and sessions forgeable; use ours instead:
    `NANOBANANA_SESSION_SECRET`, else `shared()` (a key kept in the database, the same on every replica
    and across restarts), else a random one."""
    environ = os.environ if environ is None else environ
    if on_space(environ) and environ.get("OAUTH_CLIENT_SECRET"):
        return environ["OAUTH_CLIENT_SECRET"]
    if config.session_secret:
        return config.session_secret
    if shared is not None:
        return shared().hex()
    log.info("No session secret configured: using a random one (sign-ins end when the app restarts).")
    return secrets.token_urlsafe(32)


def middleware_key(secret: str) -> str:
    """The key Gradio derives for its SessionMiddleware; ours must match to share the cookie."""
    return hashlib.sha256((secret + "-v4").encode()).hexdigest()


def install_gradio_session(secret: str, dev_login: DevLoginConfig, environ: Mapping[str, str] | None = None):
    """Point `gradio.oauth` at our session secret and, off a Space, at the development sign-in.

    Call before the Gradio app is created (mounting or launching reads both).
    """
    import gradio.oauth as gradio_oauth

    environ = os.environ if environ is None else environ
    gradio_oauth.OAUTH_CLIENT_SECRET = secret
    if on_space(environ):
        return
    original = getattr(gradio_oauth, "_nanobanana_original_mock", gradio_oauth._get_mocked_oauth_info)
    gradio_oauth._nanobanana_original_mock = original

    def mocked_info() -> dict:
        if not dev_login.enabled:
            raise RuntimeError("unreachable: the app shows no Hugging Face button without dev login")
        if dev_login.use_hf_token and environ.get("HF_HUB_OFFLINE", "0") not in {"1", "true", "True"}:
            try:
                info = original()
                info["userinfo"][PROVIDER_KEY] = "huggingface"
                return info
            except Exception as exc:  # no token or no network: fall back to the configured profile
                log.warning("Hugging Face token sign-in unavailable (%s); using the dev profile.", exc)
        claims = userinfo(dev_login.provider, dev_login.user_id, dev_login.username, dev_login.name)
        return session_entry(claims, access_token="local-dev-token")

    gradio_oauth._get_mocked_oauth_info = mocked_info
    # Gradio's warning says the mock needs an HF login; ours does not, so it would only mislead.
    warnings.filterwarnings("ignore", message="Gradio does not support OAuth features outside")


def hf_login_available(config: UIConfig, environ: Mapping[str, str] | None = None) -> bool:
    return on_space(environ) or config.dev_login.enabled


# -- Google and GitHub ----------------------------------------------------------------------------
def enabled_providers(config: UIConfig) -> dict[str, ProviderConfig]:
    return {name: p for name, p in (("google", config.oauth.google), ("github", config.oauth.github))
            if p.enabled}


def _register(oauth: Any, name: str, provider: ProviderConfig) -> None:
    kwargs: dict[str, Any] = {"client_kwargs": {"scope": provider.scope}}
    if provider.server_metadata_url:
        kwargs["server_metadata_url"] = provider.server_metadata_url
    for key in ("authorize_url", "access_token_url", "api_base_url"):
        if getattr(provider, key):
            kwargs[key] = getattr(provider, key)
    oauth.register(name=name, client_id=provider.client_id, client_secret=provider.client_secret, **kwargs)


async def _claims(client: Any, name: str, token: dict) -> dict[str, Any]:
    """The person behind `token`: OpenID claims when the provider gives an id_token, else its user API."""
    info = token.get("userinfo")
    if info:
        email = info.get("email")
        username = info.get("preferred_username") or (email.split("@")[0] if email else info["sub"])
        return userinfo(name, info["sub"], username, info.get("name"), email, info.get("picture", ""))
    response = await client.get("user", token=token)
    response.raise_for_status()
    user = response.json()
    email = user.get("email")
    if not email:
        try:
            emails = (await client.get("user/emails", token=token)).json()
            email = next((e["email"] for e in emails if e.get("primary") and e.get("verified")), None)
        except Exception:  # the e-mail is optional; the scope may not allow it
            email = None
    username = user.get("login") or user.get("name") or str(user["id"])
    return userinfo(name, user["id"], username, user.get("name"), email, user.get("avatar_url", ""),
                    user.get("html_url", ""))


def add_provider_routes(app: FastAPI, config: UIConfig, studio: Any) -> list[str]:
    """`/login/<provider>` and `/login/<provider>/callback` for each configured provider."""
    providers = enabled_providers(config)
    if not providers:
        return []
    from authlib.integrations.starlette_client import OAuth, OAuthError

    oauth = OAuth()
    for name, provider in providers.items():
        _register(oauth, name, provider)

    def callback_url(request: Request, name: str) -> str:
        if config.public_url:
            return config.public_url.rstrip("/") + f"/login/{name}/callback"
        return str(request.url_for(f"{name}_callback"))

    def routes(name: str) -> None:
        client = oauth.create_client(name)

        async def login(request: Request):
            return await client.authorize_redirect(request, callback_url(request, name))

        async def callback(request: Request):
            try:
                token = await client.authorize_access_token(request)
                claims = await _claims(client, name, token)
            except OAuthError as exc:
                log.warning("%s sign-in failed: %s", name, exc)
                return PlainTextResponse(
                    f"Sign-in with {name} failed ({exc.description or exc.error}). Go back and try again.",
                    status_code=400,
                )
            studio.sign_in(profile_data(claims))
            request.session["oauth_info"] = session_entry(claims, scope=name,
                                                          hours=studio.sign_in_hours)
            return RedirectResponse("/", status_code=302)

        # Explicit paths: a /login/{provider} pattern would shadow Gradio's /login/huggingface.
        app.add_api_route(f"/login/{name}", login, methods=["GET"], name=f"{name}_login")
        app.add_api_route(f"/login/{name}/callback", callback, methods=["GET"], name=f"{name}_callback")

    for name in providers:
        routes(name)
    return list(providers)
