"""Test doubles: safety filters with a test word and a test colour, and a fast fake generator.

`WordFilter` (the service tests) blocks BLOCK_WORD and red images; `UIWordFilter` (the web tests) blocks
BLOCKED_WORD and images with a BLOCKED_COLOUR corner, with refusal messages of its own. `FastGenerator`
is the tiny model's own validation with a quick fake pipeline and injectable failures, for tests that
run hundreds of requests.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from PIL import Image

from nanobanana.errors import GenerationCancelled, GenerationFailed
from nanobanana.generation import GenerationResult, Generator, StageTimings
from nanobanana.safety import Verdict

BLOCK_WORD = "forbidden"  # WordFilter's word
RED = (255, 0, 0)  # WordFilter's colour
BLOCKED_WORD = "forbiddenword"  # UIWordFilter's word
BLOCKED_COLOUR = (255, 0, 255)  # UIWordFilter's colour: an image whose corner pixel is exactly this is refused




class WordFilter:
    """Blocks prompts containing `word` (BLOCK_WORD) and images whose top-left pixel is `colour` (pure red).

    Counts what it checked: `prompts_checked` (the texts) and `images_checked`.
    """

    word = BLOCK_WORD
    colour = RED
    prompt_reason = "This prompt uses a word blocked in tests."
    image_reason = "Red images are blocked in tests."

    def __init__(self) -> None:
        self.prompts_checked: list[str] = []
        self.images_checked = 0
        self._lock = threading.Lock()

    def check_prompt(self, text: str) -> Verdict:
        with self._lock:
            self.prompts_checked.append(text)
        if self.word in text.lower():
            return Verdict.block("test", 1.0, self.prompt_reason)
        return Verdict.allow()

    def check_image(self, image: Any) -> Verdict:
        with self._lock:
            self.images_checked += 1
        if image.convert("RGB").getpixel((0, 0)) == self.colour:
            return Verdict.block("test", 1.0, self.image_reason)
        return Verdict.allow()


class UIWordFilter(WordFilter):
    """The web tests' filter: refuses prompts with BLOCKED_WORD, images with a BLOCKED_COLOUR corner."""

    word = BLOCKED_WORD
    colour = BLOCKED_COLOUR
    prompt_reason = f"This prompt was refused: it contains the test word {BLOCKED_WORD!r}."
    image_reason = "This image was refused by the (test) image filter."


class FastGenerator(Generator):
    """The tiny model's real validation (`plan`) with a fake pipeline that takes `seconds`.

    Image i is red (blocked by `WordFilter`) when the prompt contains `red{i}` or `allred`. A request
    whose prompt contains `fail` raises `GenerationFailed`, like a model crash would.
    """

    def __init__(self, real: Generator, seconds: float = 0.0) -> None:
        super().__init__(real.config)
        self._model = real.load()
        self.seconds = seconds
        self.calls = 0
        self.batches: list[list[str]] = []  # the prompts of each pipeline call

    def run_batch(self, plans, *, on_step=None, cancel=None, load_seconds: float = 0.0) -> list[GenerationResult]:
        """One fake pipeline call for the whole batch, `seconds` long, spread over its steps (so progress
        and cancel between steps work as they do on a real pipeline)."""
        self.calls += 1
        self.batches.append([p.settings.prompt for p in plans])
        steps = plans[0].settings.steps
        for step in range(steps):
            if self.seconds:
                time.sleep(self.seconds / steps)
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("Generation was cancelled.")
            if on_step is not None:
                on_step(step + 1, steps)
        if any("fail" in p.settings.prompt for p in plans):
            raise GenerationFailed("The model failed while generating (injected failure).")
        results = []
        for plan in plans:
            s = plan.settings
            images = []
            for i in range(s.num_images):
                red = "allred" in s.prompt or f"red{i}" in s.prompt
                images.append(Image.new("RGB", (s.width, s.height), RED if red else (90, 90, 90 + i)))
            results.append(GenerationResult(images, list(s.seeds), s, self.model_id,
                                            StageTimings(denoising=self.seconds, total=self.seconds),
                                            list(plan.warnings)))
        return results
