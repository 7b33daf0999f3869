"""Abuse prevention: prompt and image safety filters.

Usable alone, e.g. from a notebook::

    from nanobanana.safety import SafetyChecker
    checker = SafetyChecker()                 # reads configs/safety.yaml
    checker.check_prompt("a bloody mary cocktail")   # Verdict(allowed=True, ...)
    checker.check_image(pil_image)

The service filters the positive prompt and edit instructions, never the negative prompt (which lists what
the user does *not* want), and checks every generated or uploaded image before it is stored or shown.
"""

from nanobanana.errors import ImageBlocked, PromptBlocked, SafetyBlocked
from nanobanana.safety.checker import SafetyChecker
from nanobanana.safety.config import SafetyConfig, load_safety_config
from nanobanana.safety.image_filter import ImageFilter
from nanobanana.safety.prompt_filter import PromptFilter
from nanobanana.safety.types import CATEGORIES, Verdict

__all__ = [
    "CATEGORIES",
    "ImageBlocked",
    "ImageFilter",
    "PromptBlocked",
    "PromptFilter",
    "SafetyBlocked",
    "SafetyChecker",
    "SafetyConfig",
    "Verdict",
    "load_safety_config",
]
