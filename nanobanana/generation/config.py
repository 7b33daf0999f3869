"""Which model to load and how, plus the limits every request is checked against.

`configs/generation.yaml` names the model (`model:`) and holds `limits:`; `configs/models/<name>.yaml` describes
one model. `NANOBANANA_MODEL` overrides the choice with a config name, a YAML path, a local diffusers
folder or a hub id (a folder or hub id gets the defaults below).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from nanobanana.config import REPO_ROOT, config_dir, load_section, read_yaml, validate
from nanobanana.errors import ConfigError

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


# A provider's name as a model reference means its default model.
PROVIDER_DEFAULTS = {"gemini": "gemini-3.1-flash-image"}


class Defaults(BaseModel):
    steps: int = Field(8, ge=1)
    guidance: float = Field(4.0, ge=0)
    strength: float = Field(0.6, gt=0, le=1)
    aspect_ratio: str = "1:1"


class Speedups(BaseModel):
    """Opt-in switches; all off by default because each trades something (memory, start-up, accuracy)."""

    compile: bool = False
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False


class RemoteConfig(BaseModel):
    """How a remote provider is reached (`provider: gemini`): the key's variable, deadlines and retries.
    The key itself is read from the environment when the provider starts and is never stored or logged."""

    model: str = Field(description="The provider's model id, e.g. gemini-3.1-flash-image-preview.")
    api_key_env: str = "GEMINI_API_KEY"
    base_url: str | None = Field(None, description="Another endpoint speaking the same API (tests, proxies).")
    timeout_seconds: float = Field(120, gt=0, description="One HTTP attempt.")
    deadline_seconds: float = Field(300, gt=0, description="All attempts of one image, retries included.")
    max_attempts: int = Field(4, ge=1)
    backoff_seconds: float = Field(2.0, ge=0, description="First retry delay; doubled each time, with jitter.")
    sends_image_size: bool = Field(True, description="False for a model with one size that takes no image_size.")
    processor: str = Field("Google", description="Who receives prompts and uploads, as the policy names them.")
    watermark: str | None = Field("Google adds its own invisible SynthID watermark to every image.",
                                  description="What the provider marks its images with, for the policy page.")


class ModelConfig(BaseModel):
    name: str
    provider: Literal["diffusers", "gemini"] = Field(
        "diffusers", description="diffusers: a local pipeline; gemini: Google's Gemini API (see `remote`).")
    remote: RemoteConfig | None = None
    source: str = Field(description="A hub id (org/name) or a local folder (relative paths: repo root).")
    revision: str | None = None
    variant: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] | str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    base_pipeline: str = Field("auto", description="'auto' (AutoPipelineForText2Image) or a diffusers class.")
    text_to_image: bool = True
    image_to_image: bool = True
    edit_pipeline: str | None = Field(None, description="A diffusers class built with from_pipe for edits.")
    edit_max_images: int = 1
    supports_negative_prompt: bool = True
    supports_guidance: bool = True
    max_steps: int = Field(50, ge=1)
    base_resolution: int | None = Field(None, description="Side of the square size; None: from the model.")
    size_multiple: int | None = Field(None, description="Width/height granularity; None: from the model.")
    min_short_side: int = 0
    aspect_ratios: list[str] = Field(default_factory=lambda: list(ASPECT_RATIOS),
                                     description="The presets this model offers (remote models: what it takes).")
    sizes: dict[str, int] = Field(default_factory=dict, description="Remote output sizes: label -> side in pixels "
                                  "of the square image (its pixel count); empty: one size, base_resolution.")
    default_size: str | None = None
    credits_per_image: dict[str, int] = Field(default_factory=dict, description="Price per image by size label; "
                                              "empty: the service's cost rule (pixels x steps).")
    max_sequence_length: int | None = Field(None, description="Tokens the prompt's text encoder reads, passed "
                                            "to pipelines that take it (T5, Qwen); None: the tokenizer's own.")
    scheduler: str | None = Field(None, description="A diffusers scheduler class to use instead of the model's.")
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    schedulers: list[str] = Field(default_factory=list, description="Schedulers a user may pick per request.")
    defaults: Defaults = Field(default_factory=Defaults)
    speedups: Speedups = Field(default_factory=Speedups)
    example_prompts: list[str] = Field(default_factory=list, description="Prompts this model draws well.")
    closed_vocabulary: bool = Field(False, description="Refuse prompts with words the tokenizer does not know.")
    vocabulary_hint: str | None = Field(None, description="What a closed-vocabulary model knows, in a sentence.")
    build: dict[str, Any] | None = Field(None, description="Architecture for model_builder (test models).")
    twin: dict[str, Any] | None = Field(None, description="The tiny random twin the tests run (see bundled/twins.py).")
    build_command: str | None = Field(None, description="How to (re)create the local folder when it is missing.")

    @field_validator("scheduler_options")
    @classmethod
    def _plain_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return dict(value)

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, value: list[str]) -> list[str]:
        for ratio in value:
            parts = ratio.split(":")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError(f"aspect ratio {ratio!r} is not of the form W:H")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.provider != "diffusers" and self.remote is None:
            raise ValueError(f"provider {self.provider} needs a `remote:` section (at least its model id).")
        if self.defaults.aspect_ratio not in self.aspect_ratios:
            raise ValueError(f"the default aspect ratio {self.defaults.aspect_ratio} is not in aspect_ratios.")
        if self.sizes and (self.default_size or next(iter(self.sizes))) not in self.sizes:
            raise ValueError(f"default_size {self.default_size!r} is not one of the sizes {list(self.sizes)}.")
        unknown = [label for label in self.credits_per_image if label not in self.sizes]
        if unknown:
            raise ValueError(f"credits_per_image names sizes the model does not have: {unknown}.")
        if self.sizes and self.credits_per_image and set(self.credits_per_image) != set(self.sizes):
            raise ValueError("credits_per_image must price every size in `sizes`.")
        return self

    @property
    def is_remote(self) -> bool:
        return self.provider != "diffusers"

    @property
    def size_labels(self) -> list[str]:
        return list(self.sizes)

    @property
    def default_size_label(self) -> str | None:
        return self.default_size or next(iter(self.sizes), None)

    @property
    def is_local(self) -> bool:
        if self.is_remote:
            return False
        return self.local_path is not None

    @property
    def local_path(self) -> Path | None:
        path = Path(self.source).expanduser()
        if not path.is_absolute():
            path = REPO_ROOT / path
        looks_like_hub_id = self.source.count("/") == 1 and not self.source.startswith((".", "/", "~"))
        if path.exists() or not looks_like_hub_id:
            return path
        return None


class Limits(BaseModel):
    max_prompt_chars: int = Field(2000, ge=1)
    long_prompt: Literal["truncate", "refuse"] = "truncate"
    max_images: int = Field(4, ge=1)
    max_input_images: int = Field(4, ge=1)
    max_upload_bytes: int = Field(20_000_000, ge=1)
    max_upload_pixels: int = Field(40_000_000, ge=1)
    upload_formats: list[str] = Field(default_factory=lambda: ["PNG", "JPEG", "WEBP"])


class GenerationFileConfig(BaseModel):
    model: str = "bundled"
    limits: Limits = Field(default_factory=Limits)
    cpu_threads: int = Field(1, ge=0)


class GenerationConfig(BaseModel):
    model: ModelConfig
    limits: Limits
    # torch's CPU threads for the whole process, set when a model loads on the CPU (0: torch's default).
    # A server runs torch in several threads (the job worker, the prompt filter in request threads); each
    # keeps its own OpenMP team, and on a small CPU they take the cores from each other.
    cpu_threads: int = Field(1, ge=0)


def model_config_from_reference(reference: str, directory: Path | None = None) -> ModelConfig:
    """Resolve a model reference: a config name, a YAML file, a local diffusers folder or a hub id."""
    directory = directory or config_dir()
    reference = PROVIDER_DEFAULTS.get(reference, reference)
    named = directory / "models" / f"{reference}.yaml"
    as_path = Path(reference).expanduser()
    if named.is_file():
        return validate(ModelConfig, read_yaml(named), str(named))
    if as_path.suffix in {".yaml", ".yml"}:
        if not as_path.is_file():
            raise ConfigError(f"Model config {reference} does not exist.")
        return validate(ModelConfig, read_yaml(as_path), str(as_path))
    if as_path.is_dir() or reference.count("/") == 1:
        return ModelConfig(name=as_path.name or reference, source=reference)
    known = sorted(p.stem for p in (directory / "models").glob("*.yaml"))
    raise ConfigError(
        f"Unknown model {reference!r}: use one of {', '.join(known)}, a YAML file, a local diffusers folder "
        "or a Hugging Face hub id (org/name)."
    )


def load_generation_config(environ: Mapping[str, str] | None = None, directory: Path | None = None) -> GenerationConfig:
    environ = os.environ if environ is None else environ
    app = load_section("generation", GenerationFileConfig, environ=environ, directory=directory)
    reference = environ.get("NANOBANANA_MODEL") or app.model
    return GenerationConfig(model=model_config_from_reference(reference, directory), limits=app.limits,
                            cpu_threads=app.cpu_threads)
