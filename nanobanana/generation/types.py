"""The request and result of one generation: the boundary every caller (UI, CLI, notebooks, eval) uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image


class Mode(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    EDIT = "edit"


@dataclass
class GenerationRequest:
    """What a person asks for. `None` means "the model's default" (steps, guidance) or "random" (seed).

    `aspect_ratio` is one of the model's presets ("1:1", "16:9", ...) or "auto" (image modes: the preset
    closest to the first input image). `size` picks a remote model's output size. `images` are decoded,
    validated PIL images (see `uploads.load_image`).
    """

    prompt: str
    mode: Mode = Mode.TEXT_TO_IMAGE
    negative_prompt: str = ""
    aspect_ratio: str = "1:1"
    num_images: int = 1
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    strength: float = 0.6
    scheduler: str | None = None
    images: list[Image.Image] = field(default_factory=list)
    size: str | None = None  # a remote model's output size ("1K", "2K", ...); None: its default

    def __post_init__(self) -> None:
        if isinstance(self.mode, str) and not isinstance(self.mode, Mode):
            from nanobanana.errors import InvalidRequest

            try:
                self.mode = Mode(self.mode)
            except ValueError:
                allowed = ", ".join(m.value for m in Mode)
                raise InvalidRequest(f"Unknown mode {self.mode!r}; choose one of: {allowed}.") from None


@dataclass(frozen=True)
class Settings:
    """The settings a generation actually ran with, after defaults and validation."""

    mode: Mode
    prompt: str
    negative_prompt: str
    aspect_ratio: str
    width: int
    height: int
    num_images: int
    steps: int
    guidance: float
    strength: float | None
    scheduler: str
    seeds: tuple[int, ...]
    pipeline: str
    size: str = ""  # a remote model's size label ("" for local models: width and height say it all)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mode"] = self.mode.value
        data["seeds"] = list(self.seeds)
        return data


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent per stage. `load` is the one-off model load that this call paid for (0 when warm)."""

    load: float = 0.0
    text_encoding: float = 0.0
    denoising: float = 0.0
    decoding: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]
    settings: Settings
    model_id: str
    timings: StageTimings
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pixels, for JSON."""
        return {
            "model_id": self.model_id,
            "seeds": list(self.seeds),
            "settings": self.settings.to_dict(),
            "timings": self.timings.to_dict(),
            "warnings": list(self.warnings),
        }
