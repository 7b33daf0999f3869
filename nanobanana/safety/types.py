"""What the safety filters return and raise."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Category = Literal["sexual", "sexual_minors", "violence", "hate", "self_harm", "illegal"]
CATEGORIES: tuple[str, ...] = ("sexual", "sexual_minors", "violence", "hate", "self_harm", "illegal")

ALLOWED_REASON = "No safety concerns were found."
DISABLED_REASON = "filter disabled by configuration"

PROMPT_REASONS = {
    "sexual": "This prompt was blocked: it asks for sexual content or nudity.",
    "sexual_minors": "This prompt was blocked: sexual content involving minors is never allowed.",
    "violence": "This prompt was blocked: it asks for violent or gory content.",
    "hate": "This prompt was blocked: it asks for hateful content that attacks people for who they are.",
    "self_harm": (
        "This prompt was blocked: it depicts or encourages suicide or self-harm. If you are struggling, "
        "please reach out to someone you trust or a local crisis line."
    ),
    "illegal": (
        "This prompt was blocked: it asks for help with illegal activity, such as weapons, drugs, "
        "fraud or forged documents."
    ),
}

# What the image filter saw, as a person reads it in "... what looks like <concern> ...".
IMAGE_CONCERNS = {
    "sexual": "nudity or sexual content",
    "sexual_minors": "sexual content involving minors",
    "violence": "violent or gory content",
    "hate": "hateful symbols or content",
    "self_harm": "self-harm",
    "illegal": "illegal activity",
}

IMAGE_REASONS = {
    category: f"This image was blocked: it appears to show {concern}." for category, concern in IMAGE_CONCERNS.items()
}


@dataclass(frozen=True)
class Verdict:
    """The outcome of one safety check.

    `score` (0..1) is the strongest signal seen, also when the input is allowed; `reason` can be shown to
    the user as-is.
    """

    allowed: bool
    category: str | None  # None when allowed
    score: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def allow(cls, score: float = 0.0, reason: str = ALLOWED_REASON) -> Verdict:
        return cls(allowed=True, category=None, score=_clip(score), reason=reason)

    @classmethod
    def block(cls, category: str, score: float, reason: str) -> Verdict:
        return cls(allowed=False, category=category, score=_clip(score), reason=reason)


def _clip(score: float) -> float:
    return round(min(1.0, max(0.0, float(score))), 4)


