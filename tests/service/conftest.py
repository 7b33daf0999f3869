"""Fixtures for the service tests (pytest finds them by name; do not import them).

Real parts throughout: a SQLite file (or a fresh PostgreSQL database), a temp data folder, the tiny
model. Two stand-ins from tests/fakes.py: `WordFilter`, a safety filter that blocks a test word and red
images (fast, deterministic), and `FastGenerator`, the tiny model's own validation with a quick fake
pipeline and injectable failures, for tests that run hundreds of requests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fakes import FastGenerator, WordFilter
from tests.helpers import make_studio

POSTGRES_URL = os.environ.get("NANOBANANA_TEST_POSTGRES_URL")


# -- databases --------------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "nb_test") -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards; skips without
    NANOBANANA_TEST_POSTGRES_URL. Shared by the per-test fixture and the cluster tests' module fixtures."""
    if not POSTGRES_URL:
        pytest.skip("NANOBANANA_TEST_POSTGRES_URL is not set (see .ci/start-postgres.sh)")
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (skips without NANOBANANA_TEST_POSTGRES_URL)."""
    with fresh_postgres_database() as url:
        yield url


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
