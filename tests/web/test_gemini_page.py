"""The page on a Gemini model: it offers exactly the model's ratios at each of its sizes, and prices them."""

from __future__ import annotations

import httpx
import pytest

from tests.gemini_server import GeminiServer
from tests.generation.test_gemini import KEY, gemini_generator
from tests.helpers import Server, build_test_app


@pytest.fixture
def app(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with GeminiServer() as gemini:
        studio, asgi = build_test_app(gemini_generator(gemini.url), tmp_path / "data")
        with Server(asgi) as server:
            server.studio = studio
            yield server
        studio.close()


def test_the_page_offers_the_models_ratios_at_each_size_and_never_shows_the_key(app):
    config = httpx.get(app.url + "/config", timeout=30).text
    for value in ("8:1@4K", "1:8@512", "21:9@2K"):
        assert f'"{value}"' in config
    assert "16:9 \\u00b7 2K \\u00b7 about" in config or "16:9 · 2K · about" in config
    assert KEY not in config and KEY not in httpx.get(app.url + "/", timeout=30).text
    assert "SynthID" in httpx.get(app.url + "/privacy", timeout=30).text


def test_the_generate_button_states_the_price_of_the_chosen_size(app):
    from tests.helpers import session_cookie
    from tests.web.test_api import client

    c = client(app, session_cookie(app.url))
    labels = {choice: str(c.predict(choice, 1, 1, api_name="/quote")[:2]) for choice in ("1:1", "16:9@2K", "8:1@4K")}
    assert "7 credit(s)" in labels["1:1"] and "11 credit(s)" in labels["16:9@2K"] and "16 credit(s)" in labels["8:1@4K"]
