"""Every error Nanobanana raises on purpose, in one tree.

Each message is written for the person who reads it in the UI or on the command line: what went wrong and
what to do next. Each class also carries

- `outcome`: the code the anonymous usage statistics and metrics count it under (`outcome_of`), and
- a builtin base (`ValueError`, `LookupError`, `PermissionError`, ...), so library callers can catch the
  usual way (`except ValueError`) without knowing our names.

The modules that raise them import them from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanobanana.safety.types import Verdict


class NanobananaError(Exception):
    """An error whose message can be shown to a user as-is."""

    outcome: str | None = None  # None: counted as "error:<class name>"


class ConfigError(NanobananaError, ValueError):
    """A configuration file or environment variable is missing or invalid."""


# -- generation -------------------------------------------------------------------------------------------
class InvalidRequest(NanobananaError, ValueError):
    """The request itself is wrong (empty prompt, value out of range, ...)."""

    outcome = "invalid_request"


class InvalidImage(InvalidRequest):
    """An uploaded image is unreadable, too large, or in a format we do not accept."""


class UnknownWords(InvalidRequest):
    """The prompt uses words a closed-vocabulary model (the bundled one) does not know."""


class UnsupportedMode(InvalidRequest):
    """The loaded model cannot do what was asked (for example editing several images at once)."""


class ModelLoadError(NanobananaError, RuntimeError):
    """The configured model could not be loaded."""


class GenerationFailed(NanobananaError, RuntimeError):
    """The model raised while generating; nothing was produced."""


class GenerationCancelled(NanobananaError):
    """The caller cancelled the generation before it finished."""

    outcome = "cancelled"


# -- jobs -------------------------------------------------------------------------------------------------
class JobError(NanobananaError):
    """A problem with a queued or running request."""


class JobLimitReached(JobError, PermissionError):
    """The person already has as many requests waiting as one person may."""

    outcome = "queue_full"


class JobNotFound(JobError, LookupError):
    """No such request for this person (never theirs, or ended long ago)."""


class JobStillRunning(JobError, TimeoutError):
    """A wait for a request ended before the request did; it goes on."""


class JobInterrupted(JobError, RuntimeError):
    """The process running the request stopped (crash, restart) before it finished; nothing was charged."""

    outcome = "interrupted"


# -- safety -----------------------------------------------------------------------------------------------
class SafetyBlocked(NanobananaError, PermissionError):
    """A safety filter refused the input; `.verdict` says why."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


class PromptBlocked(SafetyBlocked):
    """The prompt (or edit instruction) was refused by the prompt filter."""

    outcome = "blocked_prompt"


class ImageBlocked(SafetyBlocked):
    """The image was refused by the image filter."""

    outcome = "blocked_image"


# -- paying: credits and the anonymous allowance ----------------------------------------------------------
class CreditsError(NanobananaError, ValueError):
    """A credit movement that cannot be made."""


class InsufficientCredits(CreditsError):
    """The balance does not cover the request."""

    outcome = "insufficient_credits"


class InvalidAdjustment(CreditsError):
    """An operator's grant or adjustment that makes no sense (zero, negative balance, ...)."""


class AllowanceExhausted(NanobananaError, PermissionError):
    """An anonymous visitor used up today's free images."""

    outcome = "insufficient_credits"


class DuplicateRequest(NanobananaError, ValueError):
    """The same request id was sent again; it was charged (or counted) once."""

    outcome = "invalid_request"


# -- accounts ---------------------------------------------------------------------------------------------
class IdentityError(NanobananaError, ValueError):
    """A problem with who is asking."""


class UnknownUser(IdentityError, LookupError):
    """No account with that username or id."""


class SignInRequired(IdentityError, PermissionError):
    """The action needs a signed-in account."""


class UsernameTaken(IdentityError):
    """Another account already uses that username."""


# -- the API: keys, rate limits, idempotency, webhooks ---------------------------------------------------
class ApiKeyError(IdentityError):
    """A problem with an API key."""


class InvalidApiKey(ApiKeyError, PermissionError):
    """The API key is unknown, revoked, or its account was deleted."""

    outcome = "invalid_api_key"


class ApiKeyRequired(ApiKeyError, PermissionError):
    """The call needs an API key (this instance serves no anonymous API calls, or the route is an account's)."""

    outcome = "api_key_required"


class ApiKeyNotFound(ApiKeyError, LookupError):
    """No such API key for this account."""


class RateLimited(NanobananaError, PermissionError):
    """Too many calls with one key (or from one address) in a short time; `retry_after` says when to retry."""

    outcome = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyKeyReused(InvalidRequest):
    """An idempotency key was sent again with a different request."""

    outcome = "idempotency_mismatch"


class IdempotencyKeyInFlight(NanobananaError, RuntimeError):
    """The first request with this idempotency key is still being submitted; retry in a moment."""

    outcome = "idempotency_in_flight"


class RequestTooLarge(InvalidRequest):
    """A request body over the limit; nothing of it was read further."""


class UnsupportedContentType(InvalidRequest):
    """A request body in a format the route does not take."""


class WebhookTargetRefused(InvalidRequest):
    """A webhook URL we will not call (not http(s), or on a private, loopback or link-local address)."""

    outcome = "webhook_refused"


# -- stored images, privacy, announcements ----------------------------------------------------------------
class StorageError(NanobananaError, OSError):
    """Images could not be stored or read."""


class ImageNotFound(StorageError, LookupError):
    """No such image for this person (never theirs, deleted or expired)."""


class StorageUnavailable(StorageError):
    """The object store cannot be reached (or refuses our credentials): nothing was stored or charged."""


class PrivacyError(NanobananaError, RuntimeError):
    """An export or deletion could not be completed."""


class AnnouncementError(NanobananaError, ValueError):
    """An announcement that cannot be posted."""


# -- provenance (C2PA Content Credentials and the invisible watermark) ----------------------------------------
class ProvenanceError(NanobananaError, RuntimeError):
    """Images could not be marked (no signing key, a signer that failed): nothing is stored unmarked."""


class UnreadableFile(NanobananaError, ValueError):
    """A file given to `verify` or the "Check an image" box is not an image we can read."""

    outcome = "invalid_request"


# -- the service ------------------------------------------------------------------------------------------
class DatabaseError(NanobananaError, RuntimeError):
    """The database could not be opened or migrated."""


class ServiceError(NanobananaError, RuntimeError):
    """Something failed on our side; the request was not charged. `__cause__` holds what failed."""

    @property
    def outcome(self) -> str | None:  # type: ignore[override]
        return outcome_of(self.__cause__) if self.__cause__ is not None else None


class OperatorError(NanobananaError, ValueError):
    """An operator command that cannot be carried out as given."""


def error_named(name: str | None, message: str) -> NanobananaError:
    """The error a job ended with, rebuilt from its stored class name and message (for a caller that did
    not run it): the same type where we have it, `ServiceError` otherwise."""
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for c in cls.__subclasses__() for s in subclasses(c))]

    for cls in subclasses(NanobananaError):
        if cls.__name__ == name:
            if issubclass(cls, SafetyBlocked):
                from nanobanana.safety.types import Verdict

                return cls(Verdict(allowed=False, category=None, score=1.0, reason=message))
            return cls(message)
    return ServiceError(message)


def outcome_of(exc: BaseException) -> str:
    """The usage outcome code of any exception: ours carry theirs, anything else is `error:<Type>`."""
    code = exc.outcome if isinstance(exc, NanobananaError) else None
    return code or f"error:{type(exc).__name__}"
