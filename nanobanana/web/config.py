"""The app's configuration: `configs/ui.yaml` plus environment variables, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

from nanobanana.config import load_section

ALIASES = {
    "NANOBANANA_SESSION_SECRET": "session_secret",
    "GOOGLE_CLIENT_ID": "oauth.google.client_id",
    "GOOGLE_CLIENT_SECRET": "oauth.google.client_secret",
    "GITHUB_CLIENT_ID": "oauth.github.client_id",
    "GITHUB_CLIENT_SECRET": "oauth.github.client_secret",
}


class QueueConfig(BaseModel):
    concurrency_limit: int = Field(1, ge=1)
    max_size: int | None = Field(20, ge=1)
    max_threads: int = Field(256, ge=1)


class DevLoginConfig(BaseModel):
    enabled: bool = True
    username: str = "local-dev"
    name: str = "Local Developer"
    user_id: str = "local-dev"
    provider: str = "local"
    use_hf_token: bool = False


class ProviderConfig(BaseModel):
    """One authlib client. OpenID providers give `server_metadata_url`; plain OAuth2 the three URLs."""

    client_id: str | None = None
    client_secret: str | None = None
    server_metadata_url: str | None = None
    authorize_url: str | None = None
    access_token_url: str | None = None
    api_base_url: str | None = None
    scope: str = "openid email profile"

    @property
    def enabled(self) -> bool:
        return bool(self.client_id and self.client_secret)


class OAuthProviders(BaseModel):
    google: ProviderConfig = Field(default_factory=ProviderConfig)
    github: ProviderConfig = Field(default_factory=ProviderConfig)


# Where a Space's requests come from: Hugging Face's proxies, on private addresses in front of the app.
SPACE_PROXIES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.1"]


class UIConfig(BaseModel):
    title: str = "Nanobanana"
    tagline: str = ""
    server_name: str | None = None
    server_port: int | None = Field(None, ge=1, le=65535)
    public_url: str | None = None
    trusted_proxies: list[str] | None = None
    cors_origins: list[str] = Field(default_factory=list)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    mcp_server: bool = False
    session_secret: str | None = None
    dev_login: DevLoginConfig = Field(default_factory=DevLoginConfig)
    oauth: OAuthProviders = Field(default_factory=OAuthProviders)
    examples: list[str] = Field(default_factory=list)
    more_credits: str | None = None  # where people get more credits (a URL or a sentence); None: the contact

    def host(self, environ: Mapping[str, str]) -> str:
        if self.server_name:
            return self.server_name
        if environ.get("GRADIO_SERVER_NAME"):
            return environ["GRADIO_SERVER_NAME"]
        return "0.0.0.0" if environ.get("SYSTEM") == "spaces" else "127.0.0.1"

    def port(self, environ: Mapping[str, str]) -> int:
        return self.server_port or int(environ.get("GRADIO_SERVER_PORT", 7860))

    def proxies(self, environ: Mapping[str, str]) -> list[str]:
        """Peers whose X-Forwarded-For / -Proto are believed: as configured, else (FORWARDED_ALLOW_IPS, as
        uvicorn calls it) the Space's proxies on a Space and nobody elsewhere."""
        if self.trusted_proxies is not None:
            return list(self.trusted_proxies)
        if environ.get("FORWARDED_ALLOW_IPS"):
            return [p.strip() for p in environ["FORWARDED_ALLOW_IPS"].split(",") if p.strip()]
        return list(SPACE_PROXIES) if environ.get("SYSTEM") == "spaces" else []

    def allowed_origins(self, environ: Mapping[str, str]) -> list[str]:
        """Other sites whose pages may call the app with the visitor's cookies: only those listed, plus
        the app's own public URL and, on a Space, its hosts."""
        origins = list(self.cors_origins)
        if self.public_url:
            origins.append(self.public_url)
        origins += [f"https://{h.strip()}" for h in environ.get("SPACE_HOST", "").split(",") if h.strip()]
        return origins


def load_ui_config(environ: Mapping[str, str] | None = None) -> UIConfig:
    return load_section("ui", UIConfig, aliases=ALIASES, environ=os.environ if environ is None else environ)
