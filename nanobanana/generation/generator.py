"""The one place a generation happens: validate → prepare → run the pipeline → post-process.

`Generator` loads the configured model once (lazily) and serialises pipeline calls: diffusers schedulers
keep per-call state, so two calls on one pipeline at the same time would corrupt each other.
"""

from __future__ import annotations

import functools
import inspect
import math
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from nanobanana.errors import NanobananaError
from nanobanana.generation.aspect import AspectSize, all_sizes, closest_ratio, size_for
from nanobanana.generation.config import ASPECT_RATIOS, GenerationConfig, load_generation_config
from nanobanana.generation.errors import (
    GenerationCancelled,
    GenerationFailed,
    InvalidRequest,
    UnsupportedMode,
)
from nanobanana.generation.loader import LoadedModel, load_model
from nanobanana.generation.types import GenerationRequest, GenerationResult, Mode, Settings, StageTimings

StepCallback = Callable[[int, int], None]
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0


@dataclass
class _Plan:
    """A validated request, resolved against the loaded model: what exactly will run."""

    pipe: Any
    pipeline_name: str
    settings: Settings
    call_kwargs: dict[str, Any]
    warnings: list[str]


class _StageClock:
    """Times the text encoders and the VAE decode from inside the pipeline call, via hooks."""

    def __init__(self) -> None:
        self.text_encoding = 0.0
        self.decoding = 0.0

    def reset(self) -> None:
        self.text_encoding = 0.0
        self.decoding = 0.0


def _install_stage_hooks(model: LoadedModel, clock: _StageClock) -> None:
    pipe = model.base
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        encoder = getattr(pipe, name, None)
        if isinstance(encoder, torch.nn.Module):
            starts: list[float] = []
            encoder.register_forward_pre_hook(lambda *_, s=starts: s.append(time.perf_counter()))

            def _done(*_: Any, s: list[float] = starts) -> None:
                clock.text_encoding += time.perf_counter() - s.pop()

            encoder.register_forward_hook(_done)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        decode = vae.decode

        def timed_decode(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return decode(*args, **kwargs)
            finally:
                clock.decoding += time.perf_counter() - started

        vae.decode = timed_decode


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


def _as_int(name: str, value: Any, low: int, high: int) -> int:
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


class Generator:
    """Generates images with the configured diffusers model. Safe to share between threads."""

    def __init__(self, config: GenerationConfig | None = None) -> None:
        self.config = config or load_generation_config()
        self._model: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._clock = _StageClock()

    # -- the model ------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.config.model.name

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def load(self) -> LoadedModel:
        """Load the model if it is not loaded yet; returns it. Raises `ModelLoadError`."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    model = load_model(self.config.model)
                    _install_stage_hooks(model, self._clock)
                    self._model = model
        return self._model

    def sizes(self) -> list[AspectSize]:
        """The ten presets as sizes native to the loaded model."""
        model = self.load()
        return all_sizes(model.base_resolution, model.size_multiple, self.config.model.min_short_side)

    def modes(self) -> list[Mode]:
        """Modes this model supports (edit is always offered: it falls back to image-to-image)."""
        cfg = self.config.model
        modes = [Mode.TEXT_TO_IMAGE] if cfg.text_to_image else []
        if cfg.image_to_image:
            modes.append(Mode.IMAGE_TO_IMAGE)
        if cfg.edit_pipeline or cfg.image_to_image:
            modes.append(Mode.EDIT)
        return modes

    def schedulers(self) -> list[str]:
        return self.load().scheduler_names

    # -- step 1: check inputs ---------------------------------------------------------------------
    def check_request(self, request: GenerationRequest) -> _Plan:
        """Validate a request against the limits and the loaded model; raises `InvalidRequest`."""
        model = self.load()
        cfg, limits = self.config.model, self.config.limits
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
        prompt, truncation = self._fit_prompt(model, prompt, "prompt")
        warnings += truncation
        if negative:
            negative, truncation = self._fit_prompt(model, negative, "negative prompt")
            warnings += truncation
            if not cfg.supports_negative_prompt:
                warnings.append(f"{cfg.name} does not use a negative prompt; it was ignored.")
                negative = ""

        num_images = _as_int("Number of images", request.num_images, 1, limits.max_images)
        steps = _as_int("Steps", cfg.defaults.steps if request.steps is None else request.steps, 1, cfg.max_steps)
        guidance = _as_float(
            "Guidance",
            cfg.defaults.guidance if request.guidance is None else request.guidance,
            0.0,
            MAX_GUIDANCE,
        )
        seed = secrets.randbelow(MAX_SEED - limits.max_images) if request.seed is None else request.seed
        seed = _as_int("Seed", seed, 0, MAX_SEED - num_images + 1)
        seeds = tuple(seed + i for i in range(num_images))

        scheduler = request.scheduler or model.default_scheduler
        if scheduler not in model.scheduler_names:
            raise InvalidRequest(
                f"Scheduler {scheduler!r} is not available for {cfg.name}; choose one of: "
                f"{', '.join(model.scheduler_names)}."
            )

        mode = request.mode
        if mode not in self.modes():
            raise UnsupportedMode(
                f"{cfg.name} cannot do {mode.value}; it supports: {', '.join(m.value for m in self.modes())}."
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
            ratio = closest_ratio(*images[0].size) if images else cfg.defaults.aspect_ratio
        if ratio not in ASPECT_RATIOS:
            raise InvalidRequest(f"Aspect ratio {ratio!r} is not offered; choose one of: {', '.join(ASPECT_RATIOS)}.")
        size = size_for(ratio, model.base_resolution, model.size_multiple, cfg.min_short_side)

        strength: float | None = None
        if mode is Mode.EDIT and model.edit is not None:
            pipe, pipeline_name = model.edit, "edit"
            if len(images) > cfg.edit_max_images:
                raise UnsupportedMode(f"{cfg.name} edits at most {cfg.edit_max_images} image(s) at once.")
        elif mode is Mode.TEXT_TO_IMAGE:
            pipe, pipeline_name = model.base, "text-to-image"
        else:
            if model.image_to_image is None:
                raise UnsupportedMode(f"{cfg.name} has no image-to-image pipeline to edit with.")
            if len(images) > 1:
                raise UnsupportedMode(f"{cfg.name} has no multi-image edit pipeline: upload one image at a time.")
            pipe, pipeline_name = model.image_to_image, "image-to-image"
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
        )
        kwargs = self._call_kwargs(pipe, settings, images, model)
        return _Plan(pipe, pipeline_name, settings, kwargs, warnings)

    def _fit_prompt(self, model: LoadedModel, text: str, what: str) -> tuple[str, list[str]]:
        limit = model.max_prompt_tokens
        tokenizer = getattr(model.base, "tokenizer", None) or getattr(model.base, "tokenizer_2", None)
        if limit is None or tokenizer is None:
            return text, []
        ids = tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
        room = limit - 2  # begin and end markers
        if len(ids) <= room:
            return text, []
        if self.config.limits.long_prompt == "refuse":
            raise InvalidRequest(
                f"The {what} is {len(ids)} tokens long; {self.config.model.name} reads at most {room}. Shorten it."
            )
        kept = tokenizer.decode(ids[:room], skip_special_tokens=True).strip()
        return kept, [f"The {what} was {len(ids)} tokens long; the model reads {room}, so it was cut to: {kept!r}."]

    @staticmethod
    def _call_kwargs(pipe: Any, settings: Settings, images: list[Image.Image], model: LoadedModel) -> dict[str, Any]:
        device = "cpu" if model.device == "mps" else model.device
        kwargs: dict[str, Any] = {
            "prompt": settings.prompt,
            "num_inference_steps": settings.steps,
            "guidance_scale": settings.guidance,
            "num_images_per_prompt": settings.num_images,
            # One generator per image: image i is reproducible alone from seeds[i].
            "generator": [torch.Generator(device).manual_seed(s) for s in settings.seeds],
            "output_type": "pil",
        }
        if settings.negative_prompt:
            kwargs["negative_prompt"] = settings.negative_prompt
        if images:
            fitted = [_fit_image(image, settings.width, settings.height) for image in images]
            kwargs["image"] = fitted[0] if len(fitted) == 1 else fitted
        if settings.strength is not None:
            kwargs["strength"] = settings.strength
        if settings.pipeline != "image-to-image":
            kwargs["width"], kwargs["height"] = settings.width, settings.height
        accepted = _call_parameters(type(pipe))
        return {k: v for k, v in kwargs.items() if k in accepted}

    # -- steps 2-4: run -------------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request. `on_step(step, total)` reports progress; setting `cancel` stops it.

        Raises `InvalidRequest` (nothing ran), `GenerationCancelled` or `GenerationFailed`.
        """
        started = time.perf_counter()
        load_seconds = 0.0
        if not self.is_loaded:
            self.load()
            load_seconds = time.perf_counter() - started
        plan = self.check_request(request)
        model = self.load()
        plan.pipe.scheduler = model.scheduler(plan.settings.scheduler)

        def step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("Generation was cancelled.")
            if on_step is not None:
                on_step(step + 1, getattr(pipe, "_num_timesteps", None) or plan.settings.steps)
            return callback_kwargs

        if "callback_on_step_end" in _call_parameters(type(plan.pipe)):
            plan.call_kwargs["callback_on_step_end"] = step_end

        with self._run_lock:
            self._clock.reset()
            call_started = time.perf_counter()
            try:
                with torch.inference_mode():
                    output = plan.pipe(**plan.call_kwargs)
            except NanobananaError:
                raise
            except torch.OutOfMemoryError as exc:
                raise GenerationFailed(
                    "The model ran out of memory; try fewer images or a smaller aspect ratio."
                ) from exc
            except Exception as exc:
                raise GenerationFailed(f"The model failed while generating ({type(exc).__name__}: {exc}).") from exc
            call_seconds = time.perf_counter() - call_started
            text_seconds, decode_seconds = self._clock.text_encoding, self._clock.decoding

        images = list(output.images)
        timings = StageTimings(
            load=load_seconds,
            text_encoding=text_seconds,
            denoising=max(0.0, call_seconds - text_seconds - decode_seconds),
            decoding=decode_seconds,
            total=time.perf_counter() - started,
        )
        return GenerationResult(
            images=images,
            seeds=list(plan.settings.seeds),
            settings=plan.settings,
            model_id=self.model_id,
            timings=timings,
            warnings=plan.warnings,
        )


@functools.cache
def _call_parameters(pipeline_class: type) -> frozenset[str]:
    """Argument names a pipeline's `__call__` accepts (computed once per class: it is on the hot path)."""
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def _fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop to the target ratio, then resize: the input keeps its proportions."""
    from PIL import ImageOps

    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
