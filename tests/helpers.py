"""Plain helpers the tests call (not fixtures): service parts, the app on a free port, signing in.

Service: `service_config`, `make_studio` (real parts on a temp data folder, the `WordFilter` test
double), `request`, `all_rows`, `files_under`, `head_revision`. Web: `free_port`, `Server` (an ASGI app
served by uvicorn on 127.0.0.1), `build_test_app` (a studio and the app around it, with `UIWordFilter`),
`session_cookie`. The OpenID Connect provider the sign-in tests talk to is in tests/web/oidc_provider.py.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from nanobanana.generation import GenerationRequest, Generator
from nanobanana.service.config import ServiceConfig, load_service_config
from nanobanana.service.db import metadata
from tests.fakes import UIWordFilter, WordFilter


# -- the service ------------------------------------------------------------------------------------
def service_config(data_dir: Path, database_url: str | None = None, **sections) -> ServiceConfig:
    """configs/service.yaml with no environment overrides, pointed at `data_dir`, sections updated."""
    config = load_service_config(environ={})
    updates: dict = {"data_dir": data_dir, "database_url": database_url}
    for name, values in sections.items():
        updates[name] = getattr(config, name).model_copy(update=values)
    return config.model_copy(update=updates)


def make_studio(data_dir: Path, generator: Generator, *, database_url: str | None = None, safety=None,
                real_safety: bool = False, start_worker: bool = True, **sections):
    """A studio on `data_dir`; the safety filter is `safety`, a new `WordFilter`, or (`real_safety`) the
    default `nanobanana.safety.SafetyChecker`. `start_worker=False`: jobs stay queued until a test runs
    them (`studio.start_worker()`, or a `Worker` of its own)."""
    from nanobanana.service.build import build_studio

    config = service_config(data_dir, database_url, **sections)
    if not real_safety:
        safety = safety or WordFilter()
    return build_studio({}, generator=generator, safety=safety, config=config, start_sweeper=False,
                        start_worker=start_worker)


def all_rows(engine: sa.Engine) -> dict[str, list[dict]]:
    """Every row of every table of ours, for tests that look for leftovers."""
    with engine.connect() as c:
        return {t.name: [dict(r._mapping) for r in c.execute(sa.select(t))] for t in metadata.sorted_tables}


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def request(prompt: str = "a red circle", **kwargs) -> GenerationRequest:
    kwargs.setdefault("steps", 1)
    return GenerationRequest(prompt, **kwargs)


def head_revision() -> str:
    """The newest migration's revision id (what a fresh or upgraded database must be at)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from nanobanana.service.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


# -- the web app ------------------------------------------------------------------------------------
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
    studio = build_studio(environ, generator=generator, safety=UIWordFilter(), data_dir=data_dir,
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
