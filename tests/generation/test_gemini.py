"""The Gemini provider (`provider: gemini`) against a local server speaking the Gemini API's wire format
(tests/gemini_server.py), through Google's own google-genai SDK pointed at it with `remote.base_url`.
No network: what a real key and Google's real answers do could not be checked here."""

from __future__ import annotations

import base64
import io
import logging

import pytest
from PIL import Image

from nanobanana.errors import GenerationFailed, ImageBlocked, ModelLoadError, PromptBlocked
from nanobanana.generation import GenerationRequest, Generator, Mode, load_generation_config
from tests.gemini_server import (
    Answer,
    GeminiServer,
    blocked_prompt_answer,
    error_answer,
    finished_without_image,
    image_answer,
)

KEY = "test-key-0123456789-never-logged"


def gemini_generator(url: str, name: str = "gemini-3.1-flash-image", **remote) -> Generator:
    config = load_generation_config(environ={"NANOBANANA_MODEL": name})
    options = {"base_url": url, "timeout_seconds": 5, "deadline_seconds": 10, "backoff_seconds": 0.05, **remote}
    model = config.model.model_copy(update={"remote": config.model.remote.model_copy(update=options)})
    limits = config.limits.model_copy(update={"max_input_images": 14})
    return Generator(config.model_copy(update={"model": model, "limits": limits}))


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with GeminiServer() as running:
        yield running


@pytest.fixture
def gemini(server):
    return gemini_generator(server.url)


def decoded(part: dict) -> Image.Image:
    data = part["inlineData"]["data"]  # the SDK sends URL-safe base64 without padding
    return Image.open(io.BytesIO(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))))


def test_an_image_in_the_answer_is_the_result_and_the_request_says_what_was_planned(server, gemini):
    result = gemini.generate(GenerationRequest("a banana spaceship", aspect_ratio="16:9", size="2K", seed=5))
    assert len(result.images) == 1 and result.images[0].size == (48, 32)
    sent = server.requests[0]
    assert sent["path"].endswith("/models/gemini-3.1-flash-image-preview:generateContent")
    assert sent["headers"]["x-goog-api-key"] == KEY
    config = sent["json"]["generationConfig"]
    assert config["responseModalities"] == ["IMAGE"] and config["seed"] == 5
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert server.parts()[0] == {"text": "a banana spaceship"}
    assert result.settings.size == "2K" and result.settings.pipeline == "remote-text-to-image"


def test_each_image_is_one_call_with_its_own_seed(server, gemini):
    result = gemini.generate(GenerationRequest("a cat", num_images=3, seed=40))
    assert len(result.images) == 3 and result.seeds == [40, 41, 42]
    assert [r["json"]["generationConfig"]["seed"] for r in server.requests] == [40, 41, 42]


def test_several_reference_images_are_sent_as_parts_after_the_instruction(server, gemini):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (40, 30), c) for c in colours]
    gemini.generate(GenerationRequest("put them together", mode=Mode.EDIT, images=images, aspect_ratio="1:1"))
    parts = server.parts()
    assert parts[0] == {"text": "put them together"}
    assert [decoded(p).convert("RGB").getpixel((0, 0)) for p in parts[1:]] == colours


def test_the_ui_offers_exactly_the_models_ratios_and_sizes(gemini):
    cfg = gemini.config.model
    assert [s.ratio for s in gemini.sizes()] == cfg.aspect_ratios
    assert {"1:4", "4:1", "1:8", "8:1"} <= set(cfg.aspect_ratios) and cfg.size_labels == ["512", "1K", "2K", "4K"]
    assert gemini.modes() == [Mode.TEXT_TO_IMAGE, Mode.EDIT]
    with pytest.raises(Exception, match="Size '8K' is not offered"):
        gemini.plan(GenerationRequest("a cat", size="8K"))
    with pytest.raises(Exception, match="not offered"):
        gemini.plan(GenerationRequest("a cat", aspect_ratio="9:21"))


def test_more_reference_images_than_the_model_takes_are_refused_before_any_call(server, monkeypatch):
    older = gemini_generator(server.url, "gemini-2.5-flash-image")
    images = [Image.new("RGB", (16, 16))] * 4
    with pytest.raises(Exception, match="at most 3"):
        older.plan(GenerationRequest("combine", mode=Mode.EDIT, images=images))
    assert server.requests == []


def test_a_model_with_one_size_sends_no_image_size(server):
    older = gemini_generator(server.url, "gemini-2.5-flash-image")
    older.generate(GenerationRequest("a cat", aspect_ratio="4:5"))
    assert server.requests[0]["json"]["generationConfig"]["imageConfig"] == {"aspectRatio": "4:5"}


def test_a_blocked_prompt_is_a_prompt_refusal_never_an_empty_success(server, gemini):
    server.answers.append(blocked_prompt_answer("PROHIBITED_CONTENT"))
    with pytest.raises(PromptBlocked, match=r"Google refused this prompt.*PROHIBITED_CONTENT.*nothing was charged"):
        gemini.generate(GenerationRequest("something"))


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_OTHER"])
def test_an_image_refused_by_google_is_an_image_refusal(server, gemini, reason):
    server.answers.append(finished_without_image(reason))
    with pytest.raises(ImageBlocked, match="No image was made: Google") as caught:
        gemini.generate(GenerationRequest("something"))
    assert caught.value.verdict.category == "provider"


def test_an_answer_with_no_candidates_is_an_image_refusal(server, gemini):
    server.answers.append(Answer(body={"candidates": []}))
    with pytest.raises(ImageBlocked, match="without an image"):
        gemini.generate(GenerationRequest("something"))


def test_one_refused_image_of_several_is_dropped_and_said_so(server, gemini):
    server.answers += [image_answer(), finished_without_image("IMAGE_SAFETY"), image_answer()]
    result = gemini.generate(GenerationRequest("cats", num_images=3, seed=1))
    assert len(result.images) == 2 and result.seeds == [1, 3]
    assert any("1 of 3 images were not made" in w and "not charged" in w for w in result.warnings)


def test_429_then_success_is_retried_with_backoff(server, gemini):
    server.answers += [error_answer(429, "RESOURCE_EXHAUSTED", "Quota exceeded"),
                       error_answer(503, "UNAVAILABLE", "Overloaded"), image_answer()]
    result = gemini.generate(GenerationRequest("a cat"))
    assert len(result.images) == 1 and len(server.requests) == 3


def test_429_until_the_deadline_fails_cleanly(server):
    gemini = gemini_generator(server.url, max_attempts=3)
    server.default = lambda: error_answer(429, "RESOURCE_EXHAUSTED", "Quota exceeded")
    with pytest.raises(GenerationFailed, match=r"busy or failing \(429 RESOURCE_EXHAUSTED\).*nothing was charged"):
        gemini.generate(GenerationRequest("a cat"))
    assert len(server.requests) == 3


def test_a_timeout_then_success_is_retried(server):
    gemini = gemini_generator(server.url, timeout_seconds=0.3)
    server.answers.append(Answer(body={}, delay=1.0))
    assert len(gemini.generate(GenerationRequest("a cat")).images) == 1


def test_a_timeout_fails_cleanly(server):
    gemini = gemini_generator(server.url, timeout_seconds=0.3, deadline_seconds=0.8)
    server.default = lambda: Answer(body={}, delay=1.0)
    with pytest.raises(GenerationFailed, match=r"did not answer within 0.3 s; nothing was charged"):
        gemini.generate(GenerationRequest("a cat"))
    assert len(server.requests) >= 2  # retried while the deadline allowed


def test_a_malformed_body_fails_cleanly(server, gemini):
    server.answers.append(Answer(body=b"<html>not json"))
    with pytest.raises(GenerationFailed, match="could not be read; nothing was charged"):
        gemini.generate(GenerationRequest("a cat"))


def test_an_undecodable_image_fails_cleanly(server, gemini):
    server.answers.append(Answer(body={"candidates": [{"content": {"parts": [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"not a png").decode()}}]},
        "finishReason": "STOP"}]}))
    with pytest.raises(GenerationFailed, match="could not be decoded"):
        gemini.generate(GenerationRequest("a cat"))


def test_a_refused_key_says_what_to_check_and_never_shows_the_key(server, gemini, caplog):
    server.answers.append(error_answer(403, "PERMISSION_DENIED", "API key not valid."))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GenerationFailed, match="GEMINI_API_KEY") as caught:
        gemini.generate(GenerationRequest("a cat"))
    assert KEY not in str(caught.value) and KEY not in caplog.text and KEY not in repr(gemini.load().base)


def test_without_a_key_the_model_does_not_load_and_says_which_variable(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="set GEMINI_API_KEY in the environment"):
        gemini_generator("http://127.0.0.1:9").load()


def test_gemini_names_the_providers_default_model():
    config = load_generation_config(environ={"NANOBANANA_MODEL": "gemini"})
    assert config.model.name == "gemini-3.1-flash-image" and config.model.provider == "gemini"


def test_the_page_offers_each_ratio_at_each_size_and_a_choice_says_both(gemini):
    from nanobanana.generation import split_choice
    from nanobanana.web.presenters import ratio_choices

    choices = ratio_choices(gemini.all_sizes())
    cfg = gemini.config.model
    assert len(choices) == len(cfg.aspect_ratios) * len(cfg.sizes)
    values = [value for _, value in choices]
    assert values[: len(cfg.aspect_ratios)] == cfg.aspect_ratios  # the default size (1K) needs no suffix
    assert "8:1@4K" in values and "1:1@512" in values
    assert split_choice("8:1@4K") == ("8:1", "4K") and split_choice("16:9") == ("16:9", None)
    label = dict((v, k) for k, v in choices)["16:9@2K"]
    assert label.startswith("16:9 · 2K · about ")


def test_a_config_that_prices_sizes_it_does_not_have_is_refused():
    from nanobanana.generation.config import ModelConfig

    base = {"name": "g", "source": "g", "provider": "gemini", "remote": {"model": "g"}, "sizes": {"1K": 1024}}
    with pytest.raises(ValueError, match="sizes the model does not have"):
        ModelConfig(**base, credits_per_image={"1K": 1, "2K": 2})
    with pytest.raises(ValueError, match="needs a `remote:` section"):
        ModelConfig(name="g", source="g", provider="gemini")
    with pytest.raises(ValueError, match="not of the form W:H"):
        ModelConfig(name="g", source="g", aspect_ratios=["wide"])


def test_the_price_of_an_image_follows_its_size_label_at_any_ratio():
    from nanobanana.generation import model_config_from_reference
    from nanobanana.service.config import CreditsConfig
    from nanobanana.service.ledger import CostRule

    rule = CostRule.for_model(CreditsConfig(), model_config_from_reference("gemini-3.1-flash-image"))
    assert [rule.per_image(w, h, 1) for w, h in [(512, 512), (1376, 768), (2048, 2048), (1536, 12288)]] == \
        [5, 7, 11, 16]


def test_progress_counts_images_and_cancel_stops_before_the_next_call(server, gemini):
    import threading

    from nanobanana.errors import GenerationCancelled

    cancel, seen = threading.Event(), []

    def on_step(step: int, total: int) -> None:
        seen.append((step, total))
        cancel.set()

    with pytest.raises(GenerationCancelled):
        gemini.generate(GenerationRequest("cats", num_images=3), on_step=on_step, cancel=cancel)
    assert seen == [(1, 3)] and len(server.requests) == 1
