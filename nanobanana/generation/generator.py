"""The one place a generation happens: plan (validate, see `plan.py`) → run the pipeline → post-process.

`Generator` loads the configured model once (lazily) and serialises pipeline calls: diffusers schedulers
keep per-call state, so two calls on one pipeline at the same time would corrupt each other.

    plan = generator.plan(GenerationRequest("a red circle"))   # pure: checks, fits prompts, fixes seeds
    result = generator.run(plan)                               # the torch work
    result = generator.generate(request)                       # both, for notebooks and the CLI
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from nanobanana.errors import GenerationCancelled, GenerationFailed, NanobananaError
from nanobanana.generation.aspect import AspectSize, all_sizes
from nanobanana.generation.config import GenerationConfig, load_generation_config
from nanobanana.generation.loader import LoadedModel, load_model, resolve_device
from nanobanana.generation.plan import Plan, check_counts, check_size, make_plan, output_size
from nanobanana.generation.types import GenerationRequest, GenerationResult, Mode, StageTimings

StepCallback = Callable[[int, int], None]


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
                    if self.config.cpu_threads and resolve_device(self.config.model)[0] == "cpu":
                        torch.set_num_threads(self.config.cpu_threads)
                    model = load_model(self.config.model)
                    _install_stage_hooks(model, self._clock)
                    self._model = model
        return self._model

    def sizes(self, size: str | None = None) -> list[AspectSize]:
        """The model's presets as sizes native to it (a remote model: at `size`, default its default)."""
        model, cfg = self.load(), self.config.model
        label = size or cfg.default_size_label
        base = cfg.sizes[label] if label else model.base_resolution
        sizes = all_sizes(base, model.size_multiple, cfg.min_short_side, cfg.aspect_ratios)
        if not label:
            return sizes
        default = label == cfg.default_size_label
        return [dataclasses.replace(s, size=label, is_default_size=default) for s in sizes]

    def all_sizes(self) -> list[AspectSize]:
        """Every (preset, size) the model takes: the presets at each of a remote model's sizes, the
        default size first; the presets alone for a local model."""
        cfg = self.config.model
        labels = [cfg.default_size_label, *(s for s in cfg.size_labels if s != cfg.default_size_label)]
        return [size for label in labels for size in self.sizes(label)] if cfg.sizes else self.sizes()

    def modes(self) -> list[Mode]:
        """Modes this model supports (edit falls back to image-to-image where there is no edit pipeline)."""
        cfg = self.config.model
        modes = [Mode.TEXT_TO_IMAGE] if cfg.text_to_image else []
        if cfg.image_to_image:
            modes.append(Mode.IMAGE_TO_IMAGE)
        if cfg.edit_pipeline or cfg.image_to_image or (cfg.is_remote and cfg.edit_max_images):
            modes.append(Mode.EDIT)
        return modes

    def schedulers(self) -> list[str]:
        return self.load().scheduler_names

    # -- step 1: plan -------------------------------------------------------------------------------
    def plan(self, request: GenerationRequest) -> Plan:
        """Validate a request against the limits and the loaded model; raises `InvalidRequest`."""
        return make_plan(request, self.load(), self.config, self.modes())

    def output_size(self, aspect_ratio: str | None, num_images: int, steps: int | None, size: str | None = None
                    ) -> tuple[int, int, int, int]:
        """(width, height, images, steps) a request with these settings would make, without planning a
        prompt: what a price depends on."""
        model = self.load()
        size = output_size(aspect_ratio or self.config.model.defaults.aspect_ratio, model, self.config,
                           check_size(size, self.config))
        images, steps = check_counts(num_images, steps, self.config)
        return size.width, size.height, images, steps

    @staticmethod
    def _call_kwargs(pipe: Any, plans: list[Plan], model: LoadedModel) -> dict[str, Any]:
        """One pipeline call for plans that share a batch key: a prompt, a negative prompt and a
        `torch.Generator` per image, so image i of a plan has the same pixels alone or in a batch."""
        device = "cpu" if model.device == "mps" else model.device
        first = plans[0].settings
        prompts = [p.settings.prompt for p in plans for _ in range(p.settings.num_images)]
        negatives = [p.settings.negative_prompt for p in plans for _ in range(p.settings.num_images)]
        seeds = [seed for p in plans for seed in p.settings.seeds]
        single = len(plans) == 1
        kwargs: dict[str, Any] = {
            "prompt": first.prompt if single else prompts,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "num_images_per_prompt": first.num_images if single else 1,
            "generator": [torch.Generator(device).manual_seed(s) for s in seeds],
            "output_type": "pil",
        }
        if any(negatives):
            kwargs["negative_prompt"] = first.negative_prompt if single else negatives
        if plans[0].images:
            if single:
                fitted = [_fit_image(image, first.width, first.height) for image in plans[0].images]
                kwargs["image"] = fitted[0] if len(fitted) == 1 else fitted
            else:  # one input image per plan (see `batch_key`), repeated for each of its outputs
                kwargs["image"] = [_fit_image(p.images[0], first.width, first.height)
                                   for p in plans for _ in range(p.settings.num_images)]
        if first.strength is not None:
            kwargs["strength"] = first.strength
        # Always the planned size: FLUX.1's image-to-image otherwise makes 1024² whatever the input (SD's
        # takes the input's size and has no such arguments: they are filtered out below).
        kwargs["width"], kwargs["height"] = first.width, first.height
        # FLUX.1 Kontext rescales any size to `max_area` (1024² by default): ask for the planned one.
        kwargs["max_area"] = first.width * first.height
        if model.config.max_sequence_length:
            kwargs["max_sequence_length"] = model.config.max_sequence_length
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
        """Plan and run one request (see `run`). Raises `InvalidRequest` (nothing ran) too."""
        started = time.perf_counter()
        load_seconds = 0.0
        if not self.is_loaded:
            self.load()
            load_seconds = time.perf_counter() - started
        return self.run(self.plan(request), on_step=on_step, cancel=cancel, load_seconds=load_seconds)

    def run(
        self,
        plan: Plan,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
        load_seconds: float = 0.0,
    ) -> GenerationResult:
        """Run a plan. `on_step(step, total)` reports progress; setting `cancel` stops it.

        Raises `GenerationCancelled` or `GenerationFailed`.
        """
        return self.run_batch([plan], on_step=on_step, cancel=cancel, load_seconds=load_seconds)[0]

    def run_batch(
        self,
        plans: list[Plan],
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
        load_seconds: float = 0.0,
    ) -> list[GenerationResult]:
        """Run plans that share a batch key (see `nanobanana.service.jobs.batch_key`) in one pipeline call;
        one result per plan, each with the batch's timings. Raises `GenerationCancelled` or
        `GenerationFailed` for the whole batch."""
        started = time.perf_counter() - load_seconds
        model = self.load()
        if model.config.is_remote:
            return model.base.run_batch(plans, model_id=self.model_id, on_step=on_step, cancel=cancel,
                                        started=started)
        first = plans[0].settings
        pipe = {"edit": model.edit, "image-to-image": model.image_to_image}.get(first.pipeline, model.base)
        call_kwargs = self._call_kwargs(pipe, plans, model)

        def step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("Generation was cancelled.")
            if on_step is not None:
                on_step(step + 1, getattr(pipe, "_num_timesteps", None) or first.steps)
            return callback_kwargs

        if "callback_on_step_end" in _call_parameters(type(pipe)):
            call_kwargs["callback_on_step_end"] = step_end

        with self._run_lock:
            # The pipelines share one scheduler slot: set it only while no other call runs.
            pipe.scheduler = model.scheduler(first.scheduler)
            self._clock.reset()
            call_started = time.perf_counter()
            try:
                with torch.inference_mode():
                    output = pipe(**call_kwargs)
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
        results, at = [], 0
        for plan in plans:
            n = plan.settings.num_images
            results.append(GenerationResult(
                images=images[at:at + n], seeds=list(plan.settings.seeds), settings=plan.settings,
                model_id=self.model_id, timings=timings, warnings=list(plan.warnings),
            ))
            at += n
        return results


@functools.cache
def _call_parameters(pipeline_class: type) -> frozenset[str]:
    """Argument names a pipeline's `__call__` accepts (computed once per class: it is on the hot path)."""
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def _fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop to the target ratio, then resize: the input keeps its proportions."""
    from PIL import ImageOps

    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
