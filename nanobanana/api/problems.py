"""Errors as `application/problem+json` (RFC 9457): our message as `detail`, our outcome code beside it.

    {"type": "about:blank", "title": "Payment Required", "status": 402,
     "detail": "This needs 4 credit(s) and your balance is 1. ...", "outcome": "insufficient_credits",
     "error": "InsufficientCredits"}

The status follows the error's kind; anything that is not one of ours is a generic 500 whose detail
names nothing internal (it is logged with its traceback).
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

from nanobanana import errors
from nanobanana.errors import NanobananaError, outcome_of

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
GENERIC = "Something went wrong on our side; nothing was charged. Please try again in a moment."

# Most specific first: the first class an error is an instance of decides its status.
STATUS: list[tuple[type[BaseException], int]] = [
    (errors.RateLimited, 429),
    (errors.JobLimitReached, 429),
    (errors.InvalidApiKey, 401),
    (errors.ApiKeyRequired, 401),
    (errors.SignInRequired, 401),
    (errors.ApiKeyNotFound, 404),
    (errors.JobNotFound, 404),
    (errors.ImageNotFound, 404),
    (errors.UnknownUser, 404),
    (errors.IdempotencyKeyInFlight, 409),
    (errors.DuplicateRequest, 409),
    (errors.InsufficientCredits, 402),
    (errors.AllowanceExhausted, 402),
    (errors.RequestTooLarge, 413),
    (errors.UnsupportedContentType, 415),
    (errors.SafetyBlocked, 422),
    (errors.InvalidRequest, 422),
    (errors.GenerationCancelled, 409),
    (errors.ModelLoadError, 503),
    (errors.StorageUnavailable, 503),
]


def status_of(exc: BaseException) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem(status: int, detail: str, *, outcome: str | None = None, error: str | None = None,
            **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail}
    if outcome:
        body["outcome"] = outcome
    if error:
        body["error"] = error
    return {**body, **extra}


def describe(exc: BaseException) -> dict[str, Any]:
    """The problem object of one of our errors (also what a failed job's `error` holds)."""
    if isinstance(exc, NanobananaError):
        return problem(status_of(exc), str(exc), outcome=outcome_of(exc), error=type(exc).__name__)
    return problem(500, GENERIC, outcome="error")


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE, headers=headers)


def error_response(exc: BaseException) -> JSONResponse:
    """The response for an exception raised by a route."""
    if isinstance(exc, NanobananaError):
        log.info("API request refused: %s", type(exc).__name__)
    else:
        log.error("unexpected error in an API route (%s)", type(exc).__name__, exc_info=exc)
    body = describe(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, errors.JobLimitReached):
        headers["Retry-After"] = "5"
    if body["status"] == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="nanobanana"'
    return problem_response(body, headers)
