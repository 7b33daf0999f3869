"""Fixtures for the API tests: the whole app (page, /v1, /mcp) served by uvicorn on 127.0.0.1, with the
tiny model, a temp data folder and the web tests' word filter; accounts and their keys made through the
studio, as the Account tab makes them.

Webhooks may target 127.0.0.1 here (`allow_private_targets`), and their retries come quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobanana.service.accounts import OAuthProfileData
from nanobanana.service.studio import Studio
from tests.fakes import UIWordFilter
from tests.helpers import Server

ALLOWANCE = 4  # anonymous images a day; every anonymous call here comes from 127.0.0.1
API_ENVIRON = {
    "NANOBANANA_SERVICE__ALLOWANCE__ANONYMOUS_IMAGES_PER_DAY": str(ALLOWANCE),
    "NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": "30",
    "NANOBANANA_SERVICE__API__WEBHOOKS__ALLOW_PRIVATE_TARGETS": "true",
    "NANOBANANA_SERVICE__API__WEBHOOKS__RETRY_SECONDS": "[0.3, 0.3, 0.3]",
    "NANOBANANA_SERVICE__API__WEBHOOKS__POLL_SECONDS": "0.1",
    "NANOBANANA_SERVICE__API__WEBHOOKS__TIMEOUT_SECONDS": "5",
    "NANOBANANA_SERVICE__API__RATE_LIMIT__REQUESTS_PER_MINUTE": "60",
    "NANOBANANA_SERVICE__API__RATE_LIMIT__BURST": "30",
    "HF_HUB_OFFLINE": "1",
}


@dataclass
class LiveApi:
    url: str
    studio: Studio
    web: Any
    data_dir: Path
    _accounts: int = 0

    def account(self, credits: int | None = None) -> Any:
        """A new account (as a first sign-in makes it, with the sign-up grant)."""
        self._accounts += 1
        n = self._accounts
        account = self.studio.sign_in(OAuthProfileData("local", f"api-user-{n}", f"api-user-{n}"))
        if credits is not None and credits != account.balance:
            self.studio.services.ledger.adjust(account.id, credits - account.balance, "test balance")
        return account

    def key(self, account: Any = None, name: str = "test", webhook_url: str | None = None) -> Any:
        """A new key (`.key` the secret, `.record` the stored part) for `account` or a new account."""
        account = account or self.account()
        return self.studio.create_api_key(account.identity, name, webhook_url)

    def client(self, key: Any = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key.key if hasattr(key, 'key') else key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def callers(self) -> Any:
        """The `Callers` of the mounted /v1 app (to change its configuration in a test)."""
        mount = next(r for r in self.web.routes if getattr(r, "path", None) == "/v1")
        return mount.app.state.callers


def start_api(generator, data_dir: Path, environ: dict[str, str] | None = None) -> Iterator[LiveApi]:
    from nanobanana.service.build import build_studio
    from nanobanana.web.app import create_app
    from nanobanana.web.config import load_ui_config

    env = {**API_ENVIRON, **(environ or {})}
    studio = build_studio(env, generator=generator, safety=UIWordFilter(), data_dir=data_dir, start_sweeper=False)
    web = create_app(studio, load_ui_config({}), env)
    try:
        with Server(web) as server:
            yield LiveApi(server.url, studio, web, data_dir)
    finally:
        studio.close()


@pytest.fixture(scope="module")
def live_api(generator, tmp_path_factory) -> Iterator[LiveApi]:
    yield from start_api(generator, tmp_path_factory.mktemp("api-data") / "data")
