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

from pydantic import BaseModel, Field, field_validator

from nanobanana.config import REPO_ROOT, config_dir, load_section, read_yaml, validate
from nanobanana.errors import ConfigError

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


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


class ModelConfig(BaseModel):
    name: str
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
    scheduler: str | None = Field(None, description="A diffusers scheduler class to use instead of the model's.")
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    schedulers: list[str] = Field(default_factory=list, description="Schedulers a user may pick per request.")
    defaults: Defaults = Field(default_factory=Defaults)
    speedups: Speedups = Field(default_factory=Speedups)
    example_prompts: list[str] = Field(default_factory=list, description="Prompts this model draws well.")
    closed_vocabulary: bool = Field(False, description="Refuse prompts with words the tokenizer does not know.")
    vocabulary_hint: str | None = Field(None, description="What a closed-vocabulary model knows, in a sentence.")
    build: dict[str, Any] | None = Field(None, description="Architecture for model_builder (test models).")
    build_command: str | None = Field(None, description="How to (re)create the local folder when it is missing.")

    @field_validator("scheduler_options")
    @classmethod
    def _plain_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return dict(value)

    @property
    def is_local(self) -> bool:
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
