"""The root of Nanobanana's exceptions.

Every error we raise on purpose derives from `NanobananaError`, and its message is written for the person
who will read it in the UI or on the command line: what went wrong and what to do next. Each concern
(generation, safety, credits, storage, ...) defines its own subclasses beside its code.
"""


class NanobananaError(Exception):
    """An error whose message can be shown to a user as-is."""


class ConfigError(NanobananaError):
    """A configuration file or environment variable is missing or invalid."""
