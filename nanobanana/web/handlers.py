"""One decorator for every page handler: who is asking, and errors as messages.

    @handler
    def history(self, identity: Identity, request: gr.Request): ...

Gradio injects `gr.OAuthProfile` and `gr.Request` by type hint, so the decorated function shows Gradio a
signature with `profile` and `request` where the handler asked for `identity`; the wrapper turns them into
an `Identity` (via `self.identity`) and any failure into a `gr.Error` (see `user_error`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

import gradio as gr

from nanobanana.errors import NanobananaError

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong on our side; nothing was charged. Please try again in a moment."


def user_error(exc: BaseException) -> gr.Error:
    """A readable message for any failure: ours as written (logged as one line: its kind, never the prompt
    or the message), anything else generic (logged with its traceback). Gradio prints neither again."""
    if isinstance(exc, gr.Error):
        log.info("request refused: %s", type(exc).__name__)
        exc.print_exception = False
        return exc
    if isinstance(exc, NanobananaError):
        log.info("request refused: %s", type(exc).__name__)
        return gr.Error(str(exc), print_exception=False)
    log.error("unexpected error in a UI handler (%s)", type(exc).__name__, exc_info=exc)
    return gr.Error(GENERIC_ERROR, print_exception=False)


def handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    hints = typing.get_type_hints(fn)
    original = inspect.signature(fn)
    params = [p for p in original.parameters.values() if p.name not in ("identity", "request", "progress")]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params.append(inspect.Parameter("profile", kind, default=None, annotation=gr.OAuthProfile | None))
    params.append(inspect.Parameter("request", kind, default=None, annotation=gr.Request))
    if "progress" in original.parameters:
        params.append(original.parameters["progress"])
    shown = original.replace(parameters=params)
    wants_request = "request" in original.parameters

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = shown.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        profile, request = arguments.pop("profile"), arguments["request"]
        if not wants_request:
            del arguments["request"]
        try:
            return fn(**arguments, identity=self.identity(profile, request))
        except Exception as exc:
            raise user_error(exc) from None

    wrapper.__signature__ = shown  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{name: hint for name, hint in hints.items() if name in shown.parameters},
        "profile": gr.OAuthProfile | None,
        "request": gr.Request,
    }
    return wrapper
