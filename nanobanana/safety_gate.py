"""How the request path uses the safety filters: the configured checker, switched only by configuration.

The default filter is `nanobanana.safety.SafetyChecker`. Any object with `check_prompt(text)` and
`check_image(pil)` returning a verdict (something with `.allowed`, and ideally `.category`/`.reason`)
works, which keeps tests fast. A filter that is configured on but cannot be loaded stops start-up:
the filters are never silently off.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from PIL import Image

from nanobanana.errors import ConfigError, NanobananaError
from nanobanana.service_config import SafetyConfig

try:  # the safety module's own exceptions, so callers can catch one class wherever it was raised
    from nanobanana.safety import ImageBlocked, PromptBlocked
except ImportError:  # pragma: no cover - only until nanobanana.safety exists

    class PromptBlocked(NanobananaError):  # type: ignore[no-redef]
        """The prompt was refused by the safety filter."""

    class ImageBlocked(NanobananaError):  # type: ignore[no-redef]
        """Every generated image was withheld by the safety filter."""


class SafetyFilter(Protocol):
    def check_prompt(self, text: str) -> Any: ...

    def check_image(self, image: Image.Image) -> Any: ...


def _blocked(cls: type[Exception], message: str) -> Exception:
    try:
        return cls(message)
    except TypeError:  # pragma: no cover - a differently shaped constructor
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        return error


def default_checker_factory() -> Callable[[], SafetyFilter]:
    """A factory for `nanobanana.safety.SafetyChecker` (loaded on first use), or a `ConfigError`."""
    if importlib.util.find_spec("nanobanana.safety") is None:
        raise ConfigError(
            "The safety filters are on (configs/service.yaml: safety) but nanobanana.safety is not "
            "installed. Install it, pass a filter to build_studio(safety=...), or turn the filters off "
            "explicitly (the policy page will say so)."
        )

    def make() -> SafetyFilter:
        from nanobanana.safety import SafetyChecker

        return SafetyChecker()

    return make


class SafetyGate:
    """The prompt and image checks of one studio, honouring `safety.prompt_filter` / `image_filter`."""

    def __init__(
        self, config: SafetyConfig, checker: SafetyFilter | Callable[[], SafetyFilter] | None
    ) -> None:
        self.config = config
        self._checker = checker
        self._lock = threading.Lock()
        if (config.prompt_filter or config.image_filter) and checker is None:
            self._checker = default_checker_factory()

    @property
    def checker(self) -> SafetyFilter:
        if callable(self._checker) and not hasattr(self._checker, "check_prompt"):
            with self._lock:
                if callable(self._checker) and not hasattr(self._checker, "check_prompt"):
                    self._checker = self._checker()
        return self._checker  # type: ignore[return-value]

    @property
    def prompt_filter(self) -> bool:
        return self.config.prompt_filter

    @property
    def image_filter(self) -> bool:
        return self.config.image_filter

    def check_prompt(self, *texts: str) -> None:
        """Raise `PromptBlocked` if any text is refused."""
        if not self.prompt_filter:
            return
        for text in texts:
            if not text:
                continue
            verdict = self.checker.check_prompt(text)
            if not getattr(verdict, "allowed", True):
                reason = getattr(verdict, "reason", None) or getattr(verdict, "category", None)
                raise _blocked(
                    PromptBlocked,
                    "This prompt was refused by the safety filter"
                    + (f" ({reason})" if reason else "")
                    + ". Nothing was charged; rephrase it and try again.",
                )

    def blocked_images(self, pictures: Sequence[Image.Image]) -> list[int]:
        """Indices of images the filter withholds."""
        if not self.image_filter:
            return []
        return [i for i, picture in enumerate(pictures)
                if not getattr(self.checker.check_image(picture), "allowed", True)]


def all_blocked_error(count: int) -> Exception:
    return _blocked(
        ImageBlocked,
        f"The safety filter withheld {'the image' if count == 1 else f'all {count} images'}; "
        "nothing was charged. Try a different prompt.",
    )
