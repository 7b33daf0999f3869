"""Step 1 of a generation: a request checked against the limits and the loaded model, as a `Plan`.

Planning is pure: it tokenises the prompts once (to fit them to the text encoder), fixes the seeds once
and creates no torch objects, so the service can plan, price and queue a request and the generator runs
exactly that plan later. Every message names the bad value and what is allowed.
"""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from nanobanana.errors import InvalidRequest, UnknownWords, UnsupportedMode
from nanobanana.generation.aspect import AspectSize, closest_ratio, size_for
from nanobanana.generation.config import GenerationConfig
from nanobanana.generation.loader import LoadedModel
from nanobanana.generation.types import GenerationRequest, Mode, Settings

MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0


@dataclass(frozen=True)
class Plan:
    """A validated request resolved against the loaded model: exactly what will run.

    `settings` holds everything the pipeline call needs (prompts as fitted, size, steps, seeds, pipeline);
    `images` the decoded inputs; `warnings` what the person should be told (truncation, fallbacks).
    """

    settings: Settings
    images: tuple[Image.Image, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


def clean_text(text: str, what: str) -> str:
    """Text as a tokenizer can take it: lone surrogates are refused (no keyboard types them; they crash
    tokenizers), other control characters become spaces (tabs and newlines stay)."""
    for position, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            raise InvalidRequest(
                f"The {what} contains an invalid character at position {position + 1} (a lone UTF-16 "
                "surrogate, usually a broken copy-paste); retype or remove it."
            )
    return "".join(" " if unicodedata.category(c) == "Cc" and c not in "\t\n" else c for c in text)


def as_int(name: str, value: Any, low: int, high: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise InvalidRequest(f"{name} must be a whole number between {low} and {high}, not {value!r}.")
    value = int(value)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}; got {value}.")
    return value


def _as_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidRequest(f"{name} must be a number between {low} and {high}, not {value!r}.")
    value = float(value)
    if value > high or value < low or (low_open and value == low):
        bound = f"above {low}" if low_open else f"at least {low}"
        raise InvalidRequest(f"{name} must be {bound} and at most {high}; got {value}.")
    return value


def make_plan(request: GenerationRequest, model: LoadedModel, config: GenerationConfig, modes: list[Mode]) -> Plan:
    """Validate `request` against the limits and the loaded model; raises `InvalidRequest`."""
    cfg, limits = config.model, config.limits
    warnings: list[str] = []

    if not isinstance(request.prompt, str):
        raise InvalidRequest("The prompt must be text.")
    prompt = clean_text(request.prompt, "prompt").strip()
    if not prompt:
        raise InvalidRequest("Write a prompt: describe the image you want (or the edit to make).")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The prompt is {len(prompt)} characters long; the limit is {limits.max_prompt_chars}."
        )
    negative = request.negative_prompt or ""
    if not isinstance(negative, str):
        raise InvalidRequest("The negative prompt must be text.")
    negative = clean_text(negative, "negative prompt").strip()
    if len(negative) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The negative prompt is {len(negative)} characters long; the limit is {limits.max_prompt_chars}."
        )
    prompt, truncation = fit_prompt(model, config, prompt, "prompt")
    warnings += truncation
    if negative:
        negative, truncation = fit_prompt(model, config, negative, "negative prompt")
        warnings += truncation
        if not cfg.supports_negative_prompt:
            warnings.append(f"{cfg.name} does not use a negative prompt; it was ignored.")
            negative = ""

    num_images, steps = check_counts(request.num_images, request.steps, config)
    guidance = _as_float(
        "Guidance",
        cfg.defaults.guidance if request.guidance is None else request.guidance,
        0.0,
        MAX_GUIDANCE,
    )
    if not cfg.supports_guidance and guidance != cfg.defaults.guidance:
        # A guidance-distilled model (SDXL-Turbo, FLUX.1-schnell) must run at its own value: a higher one
        # would switch classifier-free guidance on and double the work for a worse image.
        warnings.append(f"{cfg.name} does not use guidance; it ran at its own setting ({cfg.defaults.guidance:g}).")
        guidance = cfg.defaults.guidance
    seed = secrets.randbelow(MAX_SEED - limits.max_images) if request.seed is None else request.seed
    seed = as_int("Seed", seed, 0, MAX_SEED - num_images + 1)
    seeds = tuple(seed + i for i in range(num_images))

    scheduler = request.scheduler or model.default_scheduler
    if not model.scheduler_names and request.scheduler:
        raise InvalidRequest(f"{cfg.name} has no scheduler to choose.")
    if model.scheduler_names and scheduler not in model.scheduler_names:
        raise InvalidRequest(
            f"Scheduler {scheduler!r} is not available for {cfg.name}; choose one of: "
            f"{', '.join(model.scheduler_names)}."
        )

    mode = request.mode
    if mode not in modes:
        raise UnsupportedMode(
            f"{cfg.name} cannot do {mode.value}; it supports: {', '.join(m.value for m in modes)}."
        )
    images = list(request.images or [])
    if not all(isinstance(image, Image.Image) for image in images):
        raise InvalidRequest("Input images must be decoded images (see nanobanana.generation.load_image).")
    if mode is Mode.TEXT_TO_IMAGE and images:
        raise InvalidRequest("Text-to-image takes no input image; choose image-to-image or edit instead.")
    if mode is not Mode.TEXT_TO_IMAGE and not images:
        raise InvalidRequest(f"{mode.value.capitalize()} needs an input image: upload one.")
    if len(images) > limits.max_input_images:
        raise InvalidRequest(f"Upload at most {limits.max_input_images} images; got {len(images)}.")

    ratio = request.aspect_ratio or "auto"
    if ratio == "auto":
        ratio = closest_ratio(*images[0].size, cfg.aspect_ratios) if images else cfg.defaults.aspect_ratio
    size_label = check_size(request.size, config)
    size = output_size(ratio, model, config, size_label)

    strength: float | None = None
    if mode is Mode.EDIT and model.edit is not None:
        pipeline_name = "edit"
        if len(images) > cfg.edit_max_images:
            raise UnsupportedMode(f"{cfg.name} edits at most {cfg.edit_max_images} image(s) at once.")
    elif mode is Mode.TEXT_TO_IMAGE:
        pipeline_name = "text-to-image"
    else:
        if model.image_to_image is None:
            raise UnsupportedMode(f"{cfg.name} has no image-to-image pipeline to edit with.")
        if len(images) > 1:
            raise UnsupportedMode(f"{cfg.name} has no multi-image edit pipeline: upload one image at a time.")
        pipeline_name = "image-to-image"
        if mode is Mode.EDIT:
            warnings.append(f"{cfg.name} has no instruction-edit pipeline; the edit ran as image-to-image.")
        strength = _as_float(
            "Strength",
            cfg.defaults.strength if request.strength is None else request.strength,
            0.0,
            1.0,
            low_open=True,
        )
        if int(steps * strength) < 1:
            raise InvalidRequest(
                f"With {steps} steps and strength {strength}, no denoising step would run: raise either."
            )

    if cfg.is_remote:  # one API call per image: see `remote.py` and `jobs.batch_key`
        pipeline_name = f"remote-{pipeline_name}"
    settings = Settings(
        mode=mode,
        prompt=prompt,
        negative_prompt=negative,
        aspect_ratio=ratio,
        width=size.width,
        height=size.height,
        num_images=num_images,
        steps=steps,
        guidance=guidance,
        strength=strength,
        scheduler=scheduler,
        seeds=seeds,
        pipeline=pipeline_name,
        size=size_label or "",
    )
    return Plan(settings=settings, images=tuple(images), warnings=tuple(warnings))


def check_counts(num_images: Any, steps: Any, config: GenerationConfig) -> tuple[int, int]:
    """The number of images and the steps, within the limits (steps default to the model's)."""
    cfg = config.model
    return (as_int("Number of images", num_images, 1, config.limits.max_images),
            as_int("Steps", cfg.defaults.steps if steps is None else steps, 1, cfg.max_steps))


def check_size(size: Any, config: GenerationConfig) -> str | None:
    """A remote model's size label (its default when None); local models have one size per ratio."""
    cfg = config.model
    if not cfg.sizes:
        if size not in (None, ""):
            raise InvalidRequest(f"{cfg.name} has one size per aspect ratio; leave the size empty.")
        return None
    if size in (None, ""):
        return cfg.default_size_label
    if size not in cfg.sizes:
        raise InvalidRequest(f"Size {size!r} is not offered by {cfg.name}; choose one of: {', '.join(cfg.sizes)}.")
    return str(size)


def output_size(ratio: str, model: LoadedModel, config: GenerationConfig, size: str | None = None) -> AspectSize:
    """The size a preset makes on this model (`size_for` refuses a ratio that is not offered). A remote
    model's size label sets the pixel count (the provider returns its own exact pixels)."""
    cfg = config.model
    base = cfg.sizes[size] if size else model.base_resolution
    return size_for(ratio, base, model.size_multiple, cfg.min_short_side, cfg.aspect_ratios)


def check_vocabulary(tokenizer: Any, config: GenerationConfig, text: str, ids: list[int]) -> None:
    """A model with a closed vocabulary (the bundled one: a word-level tokenizer) draws nothing for a word
    it does not know: say which, before anything is charged, and what it does draw. (Byte-level BPE
    tokenizers, as every hub model has, never produce the unknown token, so this costs them nothing.)"""
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    if not config.model.closed_vocabulary or unknown_id is None or unknown_id not in ids:
        return
    words = list(dict.fromkeys(w for w in re.findall(r"[\w'-]+", text.lower())
                               if unknown_id in tokenizer(w, add_special_tokens=False)["input_ids"]))
    if not words:
        return
    shown = ", ".join(f"'{w}'" for w in words[:8]) + (" …" if len(words) > 8 else "")
    examples = config.model.example_prompts
    tip = (" Try, for example: " + "; ".join(f"“{e}”" for e in examples[:2]) + ".") if examples else ""
    raise UnknownWords(
        f"{config.model.name} does not know {'this word' if len(words) == 1 else 'these words'}: {shown}. "
        f"{config.model.vocabulary_hint or 'Use words from its vocabulary.'}{tip} Nothing was charged."
    )


def fit_prompt(model: LoadedModel, config: GenerationConfig, text: str, what: str) -> tuple[str, list[str]]:
    """Fit a prompt to the encoder that carries it (see `loader._prompt_tokens`): cut it and say so, or
    refuse it, as `limits.long_prompt` says."""
    room, tokenizer = model.prompt_room, model.prompt_tokenizer
    if tokenizer is None:
        return text, []
    ids = tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
    if what == "prompt":
        check_vocabulary(tokenizer, config, text, ids)
    if room is None or len(ids) <= room:
        return text, []
    if config.limits.long_prompt == "refuse":
        raise InvalidRequest(
            f"The {what} is {len(ids)} tokens long; {config.model.name} reads at most {room}. Shorten it."
        )
    kept = tokenizer.decode(ids[:room], skip_special_tokens=True).strip()
    return kept, [f"The {what} was {len(ids)} tokens long; the model reads {room}, so it was cut to: {kept!r}."]
