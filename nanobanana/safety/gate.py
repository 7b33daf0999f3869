"""How the request path uses the safety filters.

The default filter is `nanobanana.safety.SafetyChecker` (switched on and off only in
`configs/safety.yaml`, and then it says so in every verdict and on the policy page). Any `SafetyFilter`
(`check_prompt(text)` and `check_image(pil)`, each returning a `Verdict`) works too, which keeps tests fast
and deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from PIL import Image

from nanobanana.errors import ImageBlocked, PromptBlocked
from nanobanana.safety import Verdict
from nanobanana.safety.types import IMAGE_CONCERNS

__all__ = ["SafetyFilter", "SafetyGate", "all_blocked_error", "upload_blocked_error"]


class SafetyFilter(Protocol):
    def check_prompt(self, text: str) -> Verdict: ...

    def check_image(self, image: Image.Image) -> Verdict: ...


def _default_checker() -> SafetyFilter:
    from nanobanana.safety import SafetyChecker

    return SafetyChecker()


class SafetyGate:
    """The prompt and image checks of one studio. The checker is built on first use (it loads models)."""

    def __init__(self, checker: SafetyFilter | Callable[[], SafetyFilter] | None = None) -> None:
        self._checker = checker if checker is not None else _default_checker
        self._lock = threading.Lock()

    @property
    def checker(self) -> SafetyFilter:
        if not hasattr(self._checker, "check_prompt"):
            with self._lock:
                if not hasattr(self._checker, "check_prompt"):
                    self._checker = self._checker()  # type: ignore[operator]
        return self._checker  # type: ignore[return-value]

    def warm_up(self) -> None:
        """Build the checker and load its models now, so the first request does not pay for it."""
        warm = getattr(self.checker, "warm_up", None)
        if callable(warm):
            warm()

    def _enabled(self, name: str) -> bool:
        # A SafetyChecker with a filter switched off in configs/safety.yaml has that attribute set to None.
        return getattr(self.checker, name, True) is not None

    @property
    def prompt_filter(self) -> bool:
        return self._enabled("prompt_filter")

    @property
    def image_filter(self) -> bool:
        return self._enabled("image_filter")

    def check_prompt(self, prompt: str) -> None:
        """Raise `PromptBlocked` if the prompt (or edit instruction) is refused. Negative prompts list what
        the user does not want, so they are not checked."""
        verdict = self.checker.check_prompt(prompt)
        if not verdict.allowed:
            raise PromptBlocked(verdict)

    def check_uploads(self, pictures: Sequence[Image.Image]) -> None:
        """Raise `ImageBlocked` if an uploaded image is refused (before any compute is spent on it)."""
        for picture in pictures:
            verdict = self.checker.check_image(picture)
            if not verdict.allowed:
                raise upload_blocked_error(verdict)

    def image_verdicts(self, pictures: Sequence[Image.Image]) -> list[Verdict]:
        """One verdict per generated image, allowed or not."""
        return [self.checker.check_image(picture) for picture in pictures]


def _concern(verdict: Verdict) -> str:
    return IMAGE_CONCERNS.get(verdict.category or "", "content our policy does not allow")


def upload_blocked_error(verdict: Verdict) -> ImageBlocked:
    """An uploaded image was refused: the message says it was the upload, before anything ran."""
    return ImageBlocked(Verdict.block(
        verdict.category or "other", verdict.score,
        f"Your uploaded image was refused: the image filter saw what looks like {_concern(verdict)} in it. "
        "Nothing was charged; upload a different image.",
    ))


def all_blocked_error(verdicts: Sequence[Verdict], mode: str = "text-to-image") -> ImageBlocked:
    """Every image a request made was withheld: the message says it was the result, not the prompt (or the
    instruction and upload of an edit), that was held back."""
    first = next(v for v in verdicts if not v.allowed)
    n = len(verdicts)
    edit = mode in ("edit", "image-to-image")
    thing = "edited image" if edit else "generated image"
    what = f"The {thing} was withheld" if n == 1 else f"All {n} {thing}s were withheld"
    passed = "Your instruction and upload passed the safety checks" if edit else "Your prompt passed the safety check"
    return ImageBlocked(Verdict.block(
        first.category or "other", first.score,
        f"{what}: the image filter saw what looks like {_concern(first)} in the result. {passed}. "
        f"Nothing was charged; try another seed or a different {'instruction' if edit else 'prompt'}.",
    ))
