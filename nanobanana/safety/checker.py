"""`SafetyChecker`: the prompt and image filters together, as the service and the UI use them."""

from __future__ import annotations

import logging
import threading

from nanobanana.errors import ImageBlocked, PromptBlocked
from nanobanana.safety.config import SafetyConfig, load_safety_config
from nanobanana.safety.image_filter import ImageFilter, ImageInput
from nanobanana.safety.prompt_filter import PromptFilter
from nanobanana.safety.types import DISABLED_REASON, Verdict

logger = logging.getLogger("nanobanana.safety")


class SafetyChecker:
    """Both filters, built from `configs/safety.yaml` (or the config given).

    A filter switched off in the config (`prompt.enabled` / `image.enabled: false`) lets everything through
    with the reason "filter disabled by configuration" and logs a warning the first time, so it is never
    silently off. Models load on first use and are shared; one checker can serve many threads.
    """

    def __init__(self, config: SafetyConfig | None = None):
        self.config = config if config is not None else load_safety_config()
        self.prompt_filter = PromptFilter(self.config.prompt) if self.config.prompt.enabled else None
        self.image_filter = ImageFilter(self.config.image) if self.config.image.enabled else None
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    def check_prompt(self, text: str) -> Verdict:
        """Check a positive prompt or an edit instruction (not a negative prompt)."""
        if self.prompt_filter is None:
            return self._disabled("prompt")
        return self._logged("prompt", self.prompt_filter.check(text))

    def check_prompts(self, texts: list[str]) -> list[Verdict]:
        """`check_prompt` for many prompts at once (faster: the embeddings are batched)."""
        if self.prompt_filter is None:
            return [self._disabled("prompt") for _ in texts]
        return [self._logged("prompt", v) for v in self.prompt_filter.check_many(texts)]

    def check_image(self, image: ImageInput) -> Verdict:
        """Check an image (PIL image, numpy RGB array or file path) before it is stored or shown."""
        if self.image_filter is None:
            return self._disabled("image")
        return self._logged("image", self.image_filter.check(image))

    def ensure_prompt_allowed(self, text: str) -> Verdict:
        """`check_prompt`, raising `PromptBlocked` when the prompt is refused."""
        verdict = self.check_prompt(text)
        if not verdict.allowed:
            raise PromptBlocked(verdict)
        return verdict

    def ensure_image_allowed(self, image: ImageInput) -> Verdict:
        """`check_image`, raising `ImageBlocked` when the image is refused."""
        verdict = self.check_image(image)
        if not verdict.allowed:
            raise ImageBlocked(verdict)
        return verdict

    def warm_up(self) -> None:
        """Load the models now (at start-up) instead of on the first request."""
        if self.prompt_filter is not None:
            self.prompt_filter.warm_up()
        if self.image_filter is not None:
            from PIL import Image

            self.image_filter.check(Image.new("RGB", (64, 64), "white"))

    def _disabled(self, kind: str) -> Verdict:
        with self._warn_lock:
            first = kind not in self._warned
            self._warned.add(kind)
        if first:
            logger.warning(
                "The %s safety filter is disabled by configuration (safety.%s.enabled: false): "
                "everything is allowed through unchecked.",
                kind,
                kind,
            )
        return Verdict.allow(0.0, DISABLED_REASON)

    @staticmethod
    def _logged(kind: str, verdict: Verdict) -> Verdict:
        if not verdict.allowed:
            # The category and score only: prompts and images can be personal.
            logger.info("%s blocked: category=%s score=%.3f", kind, verdict.category, verdict.score)
        return verdict
