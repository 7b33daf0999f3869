"""The Gemini provider through the whole request path: our filters, credits per size, refunds, policy."""

from __future__ import annotations

import pytest

from nanobanana.errors import ImageBlocked, PromptBlocked
from nanobanana.generation import GenerationRequest
from nanobanana.service.accounts import OAuthProfileData
from tests.fakes import BLOCK_WORD
from tests.gemini_server import GeminiServer, blocked_prompt_answer, finished_without_image
from tests.generation.test_gemini import KEY, gemini_generator
from tests.helpers import make_studio

ANA = OAuthProfileData("huggingface", "2002", "ana", "ana@example.org")


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with GeminiServer() as running:
        yield running


@pytest.fixture
def studio(server, tmp_path):
    studio = make_studio(tmp_path / "data", gemini_generator(server.url))
    yield studio
    studio.close()


def test_an_image_is_charged_the_configured_price_of_its_size(studio):
    account = studio.sign_in(ANA)
    result = studio.generate(GenerationRequest("a cat", size="2K", aspect_ratio="16:9"), account.identity)
    assert len(result.images) == 1 and result.charged == 11 and result.balance == account.balance - 11
    assert studio.quote(account.identity, "1:1", 2, None).cost == 2 * 7  # 1K is the default size


def test_our_prompt_filter_runs_before_anything_is_sent_to_google(studio, server):
    account = studio.sign_in(ANA)
    with pytest.raises(PromptBlocked):
        studio.generate(GenerationRequest(f"a {BLOCK_WORD} cat"), account.identity)
    assert server.requests == []


@pytest.mark.parametrize("answer", [blocked_prompt_answer("SAFETY"), finished_without_image("IMAGE_SAFETY")],
                         ids=["blocked prompt", "blocked image"])
def test_a_refusal_by_google_is_refunded(studio, server, answer):
    account = studio.sign_in(ANA)
    server.answers.append(answer)
    with pytest.raises((PromptBlocked, ImageBlocked), match=r"nothing was charged|Nothing was charged"):
        studio.generate(GenerationRequest("a cat"), account.identity)
    assert studio.services.ledger.balance(account.id) == account.balance
    assert studio.services.ledger.ledger_sum(account.id) == account.balance


def test_the_policy_names_google_as_a_processor_and_its_synthid_mark(studio):
    policy = studio.policy_markdown()
    assert "Google, which runs the image model gemini-3.1-flash-image-preview" in policy
    assert "SynthID" in policy and "1K 7 credit(s)" in policy
