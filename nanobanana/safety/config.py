"""`configs/safety.yaml` as a validated pydantic model."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nanobanana.config import load_section
from nanobanana.safety.types import CATEGORIES, Category

# The labels NudeNet's 320n detector can return.
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SemanticConfig(_Strict):
    """The sentence-embedding layer of the prompt filter."""

    enabled: bool = True
    # Block a category when the prompt's similarity to its examples reaches this value ...
    thresholds: dict[Category, float] = Field(
        default_factory=lambda: {
            "sexual": 0.50,
            "sexual_minors": 0.50,
            "violence": 0.50,
            "hate": 0.50,
            "self_harm": 0.50,
            "illegal": 0.50,
        }
    )
    # ... and beats its similarity to every safe example by this margin.
    margin: float = Field(default=0.10, ge=-1.0, le=1.0)
    # With a minor term in the prompt, this sexual similarity is enough for sexual_minors.
    minor_sexual_threshold: float = Field(default=0.40, ge=0.0, le=1.0)
    # Extra sexual similarity needed in a classical-art context when allow_classical_nudity is on.
    classical_extra: float = Field(default=0.10, ge=0.0, le=1.0)
    batch_size: int = Field(default=32, ge=1, le=1024)

    @field_validator("thresholds")
    @classmethod
    def _all_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for category, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {category} must be between 0 and 1, got {threshold}")
        return value


class PromptConfig(_Strict):
    """The prompt filter (applied to the positive prompt and to edit instructions, not negative prompts)."""

    enabled: bool = True
    # Allow nudity in a classical or fine-art context (statues, museum paintings); explicit sex never.
    allow_classical_nudity: bool = True
    # More terms per category and more harmless phrases, as regular expressions over normalised text.
    extra_terms: dict[Category, list[str]] = Field(default_factory=dict)
    allow_phrases: list[str] = Field(default_factory=list)
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)

    @field_validator("allow_phrases")
    @classmethod
    def _phrases_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            _check_regex(pattern)
        return value

    @field_validator("extra_terms")
    @classmethod
    def _terms_compile(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for patterns in value.values():
            for pattern in patterns:
                _check_regex(pattern)
        return value


class NudeNetConfig(_Strict):
    enabled: bool = True
    blocking_labels: list[str] = Field(
        default_factory=lambda: [
            "FEMALE_GENITALIA_EXPOSED",
            "MALE_GENITALIA_EXPOSED",
            "FEMALE_BREAST_EXPOSED",
            "BUTTOCKS_EXPOSED",
            "ANUS_EXPOSED",
        ]
    )
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("blocking_labels")
    @classmethod
    def _known_labels(cls, value: list[str]) -> list[str]:
        unknown = [label for label in value if label not in NUDENET_LABELS]
        if unknown:
            raise ValueError(f"unknown NudeNet label(s) {unknown}; known labels: {', '.join(NUDENET_LABELS)}")
        return value


class OpenNSFWConfig(_Strict):
    enabled: bool = True
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)


class HubClassifierConfig(_Strict):
    """An optional transformers image-classification model (a hub id or a local folder)."""

    model: str | None = None
    # Which of the model's labels are unsafe, and the category each one blocks as.
    unsafe_labels: dict[str, Category] = Field(
        default_factory=lambda: {"nsfw": "sexual", "porn": "sexual", "hentai": "sexual"}
    )
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    device: str = "cpu"

    @field_validator("unsafe_labels")
    @classmethod
    def _lower_case(cls, value: dict[str, str]) -> dict[str, str]:
        return {label.lower(): category for label, category in value.items()}  # the model's labels are lowered


class SmallImageConfig(_Strict):
    """Stricter evidence for NudeNet on small images (a 64 px model's output, as the bundled model's was).

    Upscaled to its 320 px input, a 64 px picture of pale round shapes reads as exposed breasts to NudeNet
    (up to 0.73 on harmless edits; `python -m eval image-fp`), so below `below_side` NudeNet alone blocks only
    from `nudenet_threshold`, or from its usual threshold when open-nsfw supports it with `opennsfw_support`.
    Images at least `below_side` on their short side keep the plain rule.
    """

    below_side: int = Field(default=128, ge=0, le=4096)  # 0 switches the small-image rule off
    nudenet_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    opennsfw_support: float = Field(default=0.3, ge=0.0, le=1.0)


class ImageConfig(_Strict):
    """The image filter: blocks when NudeNet OR open-nsfw OR the hub classifier says so."""

    enabled: bool = True
    nudenet: NudeNetConfig = Field(default_factory=NudeNetConfig)
    small_images: SmallImageConfig = Field(default_factory=SmallImageConfig)
    opennsfw: OpenNSFWConfig = Field(default_factory=OpenNSFWConfig)
    hub: HubClassifierConfig = Field(default_factory=HubClassifierConfig)


class SafetyConfig(_Strict):
    """Everything in `configs/safety.yaml`."""

    prompt: PromptConfig = Field(default_factory=PromptConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)


def load_safety_config(environ: Mapping[str, str] | None = None) -> SafetyConfig:
    """Read `configs/safety.yaml` plus `NANOBANANA_SAFETY__...` overrides (e.g.
    `NANOBANANA_SAFETY__PROMPT__ENABLED=false`)."""
    return load_section("safety", SafetyConfig, environ=environ)


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc


__all__ = [
    "CATEGORIES",
    "HubClassifierConfig",
    "ImageConfig",
    "NudeNetConfig",
    "OpenNSFWConfig",
    "PromptConfig",
    "SafetyConfig",
    "SemanticConfig",
    "SmallImageConfig",
    "load_safety_config",
]
