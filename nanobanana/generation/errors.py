"""Errors of the generation module; each message tells the user what to change."""

from nanobanana.errors import NanobananaError


class InvalidRequest(NanobananaError):
    """The request itself is wrong (empty prompt, value out of range, ...)."""


class InvalidImage(InvalidRequest):
    """An uploaded image is unreadable, too large, or in a format we do not accept."""


class UnsupportedMode(InvalidRequest):
    """The loaded model cannot do what was asked (for example editing several images at once)."""


class ModelLoadError(NanobananaError):
    """The configured model could not be loaded."""


class GenerationFailed(NanobananaError):
    """The model raised while generating; nothing was produced."""


class GenerationCancelled(NanobananaError):
    """The caller cancelled the generation before it finished."""
