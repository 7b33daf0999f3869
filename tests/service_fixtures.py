"""Fixtures and test parts for the service tests (import them: `from tests.service_fixtures import *`).

Real parts throughout: a SQLite file (or a fresh PostgreSQL database), a temp data folder, the tiny
model. Two stand-ins: a safety filter that blocks a test word and red images (fast, deterministic), and
`FastGenerator`, the tiny model's own validation with a quick fake pipeline and injectable failures,
for tests that run hundreds of requests.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from nanobanana.errors import GenerationCancelled, GenerationFailed
from nanobanana.generation import GenerationRequest, GenerationResult, Generator, StageTimings
from nanobanana.safety import Verdict
from nanobanana.service.config import ServiceConfig, load_service_config
from nanobanana.service.db import metadata

POSTGRES_URL = os.environ.get("NANOBANANA_TEST_POSTGRES_URL")
BLOCK_WORD = "forbidden"
RED = (255, 0, 0)




class WordFilter:
    """Blocks prompts containing BLOCK_WORD and images whose top-left pixel is pure red."""

    def __init__(self) -> None:
        self.prompts_checked: list[str] = []
        self.images_checked = 0
        self._lock = threading.Lock()

    def check_prompt(self, text: str) -> Verdict:
        with self._lock:
            self.prompts_checked.append(text)
        if BLOCK_WORD in text.lower():
            return Verdict.block("test", 1.0, "This prompt uses a word blocked in tests.")
        return Verdict.allow()

    def check_image(self, image: Image.Image) -> Verdict:
        with self._lock:
            self.images_checked += 1
        if image.convert("RGB").getpixel((0, 0)) == RED:
            return Verdict.block("test", 1.0, "Red images are blocked in tests.")
        return Verdict.allow()


class FastGenerator(Generator):
    """The tiny model's real validation (`plan`) with a fake pipeline that takes `seconds`.

    Image i is red (blocked by `WordFilter`) when the prompt contains `red{i}` or `allred`. A request
    whose prompt contains `fail` raises `GenerationFailed`, like a model crash would.
    """

    def __init__(self, real: Generator, seconds: float = 0.0) -> None:
        super().__init__(real.config)
        self._model = real.load()
        self.seconds = seconds
        self.calls = 0

    def run(self, plan, *, on_step=None, cancel=None, load_seconds: float = 0.0) -> GenerationResult:
        s = plan.settings
        self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)
        if "fail" in s.prompt:
            raise GenerationFailed("The model failed while generating (injected failure).")
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("Generation was cancelled.")
        images = []
        for i in range(s.num_images):
            red = "allred" in s.prompt or f"red{i}" in s.prompt
            images.append(Image.new("RGB", (s.width, s.height), RED if red else (90, 90, 90 + i)))
        return GenerationResult(images, list(s.seeds), s, self.model_id, StageTimings(denoising=self.seconds,
                                total=self.seconds), list(plan.warnings))


def service_config(data_dir: Path, database_url: str | None = None, **sections) -> ServiceConfig:
    """configs/service.yaml with no environment overrides, pointed at `data_dir`, sections updated."""
    config = load_service_config(environ={})
    updates: dict = {"data_dir": data_dir, "database_url": database_url}
    for name, values in sections.items():
        updates[name] = getattr(config, name).model_copy(update=values)
    return config.model_copy(update=updates)


def make_studio(data_dir: Path, generator: Generator, *, database_url: str | None = None, safety=None,
                real_safety: bool = False, **sections):
    """A studio on `data_dir`; the safety filter is `safety`, a new `WordFilter`, or (`real_safety`) the
    default `nanobanana.safety.SafetyChecker`."""
    from nanobanana.service.build import build_studio

    config = service_config(data_dir, database_url, **sections)
    if not real_safety:
        safety = safety or WordFilter()
    return build_studio({}, generator=generator, safety=safety, config=config, start_sweeper=False)


# -- databases --------------------------------------------------------------------------------------
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (skips without NANOBANANA_TEST_POSTGRES_URL)."""
    if not POSTGRES_URL:
        pytest.skip("NANOBANANA_TEST_POSTGRES_URL is not set (see .ci/start-postgres.sh)")
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"nb_test_{secrets.token_hex(6)}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str | None:
    """None (the default SQLite file in the data folder), then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def fast_generator(generator) -> FastGenerator:
    return FastGenerator(generator)


@pytest.fixture
def word_filter() -> WordFilter:
    return WordFilter()


@pytest.fixture
def studio(data_dir, fast_generator, word_filter):
    """The full request path on SQLite, with the fast generator and the word filter."""
    s = make_studio(data_dir, fast_generator, safety=word_filter)
    yield s
    s.close()


@pytest.fixture
def real_studio(data_dir, generator, word_filter):
    """The real tiny model behind the full request path (SQLite)."""
    s = make_studio(data_dir, generator, safety=word_filter)
    yield s
    s.close()


def all_rows(engine: sa.Engine) -> dict[str, list[dict]]:
    """Every row of every table of ours, for tests that look for leftovers."""
    with engine.connect() as c:
        return {t.name: [dict(r._mapping) for r in c.execute(sa.select(t))] for t in metadata.sorted_tables}


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def request(prompt: str = "a red circle", **kwargs) -> GenerationRequest:
    kwargs.setdefault("steps", 1)
    return GenerationRequest(prompt, **kwargs)


Signer = Callable[..., object]


def head_revision() -> str:
    """The newest migration's revision id (what a fresh or upgraded database must be at)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from nanobanana.service.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()
