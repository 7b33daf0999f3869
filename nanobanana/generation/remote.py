"""A remote model behind the same `Generator`: Google's Gemini image models ("Nano Banana") through the
official `google-genai` SDK.

The service cannot tell it from a local pipeline: plans are made and priced the same way, our prompt and
image filters still run, jobs queue and settle the same way. What differs is kept here:

- each image is one `generate_content` call (the prompt, then the reference images, as parts), with the
  plan's aspect ratio and size in `image_config` and the image's seed;
- a refusal is never an empty success: `prompt_feedback.block_reason` raises `PromptBlocked`; an image
  finish reason (`IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`, `NO_IMAGE`, ...) or an answer without an
  image withholds that image (refunded like one our filter withholds) and `ImageBlocked` when none is
  left; the worker then releases the reservation;
- 429 and 5xx answers and timeouts are retried with exponential backoff and jitter while the deadline
  allows; anything else (a refused key, a malformed answer) fails at once, and nothing is charged;
- the API key is read from the environment variable the config names, handed to the SDK only, and never
  logged, stored or put into a message.
"""

from __future__ import annotations

import io
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from nanobanana.errors import GenerationCancelled, GenerationFailed, ImageBlocked, ModelLoadError, PromptBlocked
from nanobanana.generation.config import ModelConfig
from nanobanana.generation.types import GenerationResult, StageTimings

log = logging.getLogger(__name__)

# What each refusal means to the person; anything else unknown reads as a generic refusal.
PROMPT_BLOCKS = {
    "SAFETY": "its safety filter",
    "PROHIBITED_CONTENT": "its rules on prohibited content",
    "BLOCKLIST": "its list of blocked terms",
    "IMAGE_SAFETY": "its image safety filter (an uploaded image)",
    "JAILBREAK": "its protection against prompts that try to get round its rules",
    "MODEL_ARMOR": "its prompt protection",
    "OTHER": "its policies",
}
IMAGE_REFUSALS = {
    "IMAGE_SAFETY": "Google's image safety filter withheld it",
    "IMAGE_PROHIBITED_CONTENT": "Google withheld it as prohibited content",
    "IMAGE_RECITATION": "Google withheld it because it resembled existing material too closely",
    "IMAGE_OTHER": "Google withheld it",
    "NO_IMAGE": "Google answered without an image",
    "SAFETY": "Google's safety filter withheld it",
    "PROHIBITED_CONTENT": "Google withheld it as prohibited content",
    "RECITATION": "Google withheld it because it resembled existing material too closely",
    "BLOCKLIST": "Google's list of blocked terms withheld it",
    "SPII": "Google withheld it as sensitive personal information",
}
RETRIED_STATUS = {408, 429, 500, 502, 503, 504}


class _ImageWithheld(Exception):
    """One image was refused by the provider (the rest of the request goes on)."""


@dataclass(frozen=True)
class _Call:
    """One image to ask for."""

    prompt: str
    images: tuple[Image.Image, ...]
    aspect_ratio: str
    size: str
    seed: int


def load_remote(config: ModelConfig, environ: dict[str, str] | None = None):
    """A `LoadedModel` whose "pipelines" are a `GeminiProvider`; raises `ModelLoadError` without a key."""
    from nanobanana.generation.loader import LoadedModel

    started = time.perf_counter()
    provider = GeminiProvider.from_environment(config, environ)
    return LoadedModel(
        config=config, base=provider, image_to_image=None,
        edit=provider if config.edit_max_images else None, device="remote", dtype=None,  # type: ignore[arg-type]
        base_resolution=config.sizes[config.default_size_label] if config.sizes else (config.base_resolution or 1024),
        size_multiple=config.size_multiple or 16, prompt_room=None, load_seconds=time.perf_counter() - started,
    )


class GeminiProvider:
    """Runs plans on a Gemini image model (see the module docstring). Safe to share between threads."""

    def __init__(self, config: ModelConfig, api_key: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        from google import genai
        from google.genai import types

        assert config.remote is not None
        self.config = config
        self.remote = config.remote
        self._sleep = sleep
        options = types.HttpOptions(
            base_url=self.remote.base_url, timeout=int(self.remote.timeout_seconds * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),  # retries are ours: they know the deadline
        )
        self._client = genai.Client(api_key=api_key, http_options=options)

    @classmethod
    def from_environment(cls, config: ModelConfig, environ: dict[str, str] | None = None) -> GeminiProvider:
        assert config.remote is not None
        environ = os.environ if environ is None else environ
        key = environ.get(config.remote.api_key_env, "").strip()
        if not key:
            raise ModelLoadError(
                f"The model {config.name} runs on Google's Gemini API and needs an API key: set "
                f"{config.remote.api_key_env} in the environment (never in a config file)."
            )
        return cls(config, key)

    def __repr__(self) -> str:  # never the key
        return f"GeminiProvider({self.remote.model})"

    # -- the batch -------------------------------------------------------------------------------------
    def run_batch(self, plans: list[Any], *, model_id: str, on_step: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None, started: float | None = None) -> list[GenerationResult]:
        """One result per plan (remote jobs run alone: see `jobs.batch_key`). Each image is one call;
        a withheld image is dropped and said so; `ImageBlocked` when all are."""
        started = time.perf_counter() if started is None else started
        results = []
        for plan in plans:
            s = plan.settings
            total = s.num_images
            images, seeds, refusals = [], [], []
            for i, seed in enumerate(s.seeds):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled("Generation was cancelled.")
                size = s.size if self.remote.sends_image_size else ""
                call = _Call(s.prompt, tuple(plan.images), s.aspect_ratio, size, seed)
                try:
                    images.append(self._image(call, cancel))
                    seeds.append(seed)
                except _ImageWithheld as refusal:
                    refusals.append(str(refusal))
                if on_step is not None:
                    on_step(i + 1, total)
            if not images:
                raise _all_withheld(refusals)
            warnings = list(plan.warnings)
            if refusals:
                warnings.append(f"{len(refusals)} of {total} images were not made ({refusals[0]}); they were "
                                "not charged.")
            seconds = time.perf_counter() - started
            results.append(GenerationResult(images=images, seeds=seeds, settings=s, model_id=model_id,
                                            timings=StageTimings(denoising=seconds, total=seconds),
                                            warnings=warnings))
        return results

    # -- one image -------------------------------------------------------------------------------------
    def _image(self, call: _Call, cancel: threading.Event | None) -> Image.Image:
        response = self._with_retries(call, cancel)
        return _read_image(response)

    def _request(self, call: _Call) -> tuple[list[Any], Any]:
        from google.genai import types

        parts: list[Any] = [types.Part.from_text(text=call.prompt)]
        for image in call.images:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            parts.append(types.Part.from_bytes(data=buffer.getvalue(), mime_type="image/png"))
        image_config = types.ImageConfig(aspect_ratio=call.aspect_ratio, image_size=call.size or None)
        config = types.GenerateContentConfig(response_modalities=["IMAGE"], image_config=image_config,
                                             seed=call.seed % 2**31, candidate_count=1)
        return [types.Content(role="user", parts=parts)], config

    def _with_retries(self, call: _Call, cancel: threading.Event | None) -> Any:
        from google.genai import errors

        contents, config = self._request(call)
        deadline = time.monotonic() + self.remote.deadline_seconds
        delay = self.remote.backoff_seconds
        for attempt in range(1, self.remote.max_attempts + 1):
            try:
                return self._client.models.generate_content(model=self.remote.model, contents=contents,
                                                            config=config)
            except errors.APIError as exc:
                code = int(getattr(exc, "code", 0) or 0)
                if code not in RETRIED_STATUS:
                    raise GenerationFailed(_api_message(exc, self.config)) from None
                reason = f"{code} {exc.status or ''}".strip()
            except Exception as exc:  # the SDK's transport (httpx) errors, or an answer it could not parse
                if not _is_timeout(exc):
                    log.warning("Gemini answer unusable (%s)", type(exc).__name__)
                    raise GenerationFailed(
                        "Google's image service sent an answer that could not be read; nothing was charged. "
                        "Try again."
                    ) from None
                reason = "timeout"
            wait = delay * (1 + random.random() * 0.25)
            if attempt == self.remote.max_attempts or time.monotonic() + wait >= deadline:
                break
            log.info("Gemini call %d failed (%s); retrying in %.1fs", attempt, reason, wait)
            if cancel is not None and cancel.wait(wait):
                raise GenerationCancelled("Generation was cancelled.")
            if cancel is None:
                self._sleep(wait)
            delay *= 2
        if reason == "timeout":
            raise GenerationFailed(
                f"Google's image service did not answer within {self.remote.timeout_seconds:g} s; nothing was "
                "charged. Try again later."
            )
        raise GenerationFailed(
            f"Google's image service is busy or failing ({reason}) and did not recover within "
            f"{self.remote.deadline_seconds:g} s; nothing was charged. Try again later."
        )


def _is_timeout(exc: BaseException) -> bool:
    """The SDK's transport may be httpx or its fork httpx2: go by the exception's family name."""
    return isinstance(exc, TimeoutError) or any(
        cls.__name__ == "TimeoutException" or cls.__name__.endswith("Timeout") for cls in type(exc).__mro__)


def _api_message(exc: Any, config: ModelConfig) -> str:
    code = int(getattr(exc, "code", 0) or 0)
    if code in (401, 403):
        assert config.remote is not None
        return (f"Google refused this service's API key ({code}); nothing was charged. The operator must check "
                f"{config.remote.api_key_env}.")
    detail = " ".join(str(getattr(exc, "message", "") or "").split())[:300]
    return f"Google refused the request ({code} {getattr(exc, 'status', '') or ''}): {detail} Nothing was charged."


def _read_image(response: Any) -> Image.Image:
    """The image in an answer, or why there is none (`PromptBlocked`, `_ImageWithheld`, `GenerationFailed`)."""
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None) if feedback is not None else None
    if block:
        name = getattr(block, "value", str(block))
        raise _prompt_blocked(name, getattr(feedback, "block_reason_message", None))
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        raise _ImageWithheld("Google answered without an image")
    candidate = candidates[0]
    parts = getattr(getattr(candidate, "content", None), "parts", None) or []
    for part in parts:
        data = getattr(getattr(part, "inline_data", None), "data", None)
        if data:
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    return image.convert("RGB")
            except Exception:
                raise GenerationFailed(
                    "Google's image service sent an image that could not be decoded; nothing was charged."
                ) from None
    reason = getattr(candidate, "finish_reason", None)
    name = getattr(reason, "value", str(reason)) if reason is not None else "NO_IMAGE"
    raise _ImageWithheld(IMAGE_REFUSALS.get(name, f"Google finished without an image ({name})"))


def _prompt_blocked(reason: str, detail: str | None) -> PromptBlocked:
    from nanobanana.safety.types import Verdict

    why = PROMPT_BLOCKS.get(reason, "its policies")
    message = f"Google refused this prompt under {why} ({reason}); nothing was charged. Rephrase it and try again."
    return PromptBlocked(Verdict(allowed=False, category="provider", score=1.0, reason=message))


def _all_withheld(refusals: list[str]) -> ImageBlocked:
    from nanobanana.safety.types import Verdict

    first = refusals[0] if refusals else "Google answered without an image"
    message = f"No image was made: {first}. Nothing was charged; try another prompt."
    return ImageBlocked(Verdict(allowed=False, category="provider", score=1.0, reason=message))
