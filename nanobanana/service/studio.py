"""The one request path of Nanobanana: the service the UI, the CLI, notebooks and eval all call.

    studio = build_studio()
    result = studio.generate(GenerationRequest("a red circle"), Identity.anonymous(session_id))

`Studio.generate` reads top to bottom: validate → reserve credits or allowance → prompt safety →
generate → image safety per image → store → usage row → settle. Whatever fails, the reservation is
released, an anonymous usage row says why, and no half-written rows or orphan files stay behind.
Each concern lives in its own module (identity, credits, allowance, storage, history, usage,
privacy, announcements, safety_gate); this module only composes them.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from nanobanana.errors import NanobananaError
from nanobanana.generation import GenerationRequest, GenerationResult, Generator, InvalidRequest
from nanobanana.safety.gate import ImageBlocked, PromptBlocked, SafetyFilter, SafetyGate, all_blocked_error
from nanobanana.service.accounts import (
    Account,
    Accounts,
    AccountSummary,
    Identity,
    OAuthProfileData,
    SignInRequired,
)
from nanobanana.service.allowance import Allowance, AllowanceExhausted
from nanobanana.service.announcements import Announcement, Announcements, AnnounceReport
from nanobanana.service.config import ServiceConfig, load_service_config
from nanobanana.service.db import Database
from nanobanana.service.generation_log import History
from nanobanana.service.images import ImageNotFound, ImageStore, StoredImage, SweepReport
from nanobanana.service.ledger import CostRule, DuplicateRequest, InsufficientCredits, Ledger, LedgerEntry
from nanobanana.service.privacy import Privacy, policy_markdown
from nanobanana.service.sessions import SignInSessions
from nanobanana.service.usage import UsageEvent, UsageRecorder, UsageStats, error_outcome

log = logging.getLogger(__name__)

__all__ = [
    "AllowanceExhausted",
    "DuplicateRequest",
    "Identity",
    "ImageBlocked",
    "ImageNotFound",
    "InsufficientCredits",
    "InvalidRequest",
    "OAuthProfileData",
    "PromptBlocked",
    "Quote",
    "ServiceError",
    "SignInRequired",
    "Studio",
    "StudioResult",
    "build_studio",
]


class ServiceError(NanobananaError):
    """Something failed on our side; the request was not charged."""


@dataclass
class Quote:
    """What a request would cost this person, and whether they can afford it now."""

    cost: int  # credits (accounts) or images of the allowance (anonymous)
    per_image: int
    num_images: int
    affordable: bool
    message: str
    balance: int | None = None
    allowance_left: int | None = None


@dataclass
class StudioResult:
    request_id: str
    images: list[StoredImage]  # only images that passed the image filter and were stored
    blocked: int  # dropped by the image filter (refunded)
    generation: GenerationResult  # seeds, settings, timings, warnings
    charged: int  # credits charged after settlement (0 for anonymous)
    balance: int | None  # after settlement (accounts)
    allowance_left: int | None  # anonymous
    messages: list[str] = field(default_factory=list)  # user-facing notes
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of the request path


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, PromptBlocked):
        return "blocked_prompt"
    if isinstance(exc, ImageBlocked):
        return "blocked_image"
    if isinstance(exc, InsufficientCredits | AllowanceExhausted):
        return "insufficient_credits"
    if isinstance(exc, InvalidRequest | DuplicateRequest):
        return "invalid_request"
    if isinstance(exc, ServiceError) and exc.__cause__ is not None:
        return error_outcome(exc.__cause__)
    return error_outcome(exc)


class Studio:
    """Composed once (see `build_studio`) from the configuration; the one request path."""

    def __init__(
        self,
        config: ServiceConfig,
        db: Database,
        generator: Generator,
        safety: SafetyGate,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.data_dir: Path = config.data_dir  # type: ignore[assignment]
        self.db = db
        self.generator = generator
        self.safety = safety
        self.environ = os.environ if environ is None else environ
        self.cost_rule = CostRule(config.credits)
        self.accounts = Accounts(db)
        self.ledger_service = Ledger(db)
        self.allowance = Allowance(config.allowance.anonymous_images_per_day)
        self.storage = ImageStore(db, self.data_dir, config.storage)
        self.history = History(db, config.privacy.history_retention_days)
        self.usage = UsageRecorder(db)
        self.privacy = Privacy(db, self.accounts, self.ledger_service, self.storage, self.history)
        self.announcer = Announcements(db, self.accounts, config.smtp, config.privacy.operator_name)
        self.sessions = SignInSessions(db, config.privacy.sign_in_hours, config.privacy.closed_account_days)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- the request path -------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        identity: Identity,
        *,
        request_id: str | None = None,
        on_step: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> StudioResult:
        """Run one request for one person. Raises `NanobananaError`s whose messages fit the UI as-is:
        `InvalidRequest`, `InsufficientCredits`, `AllowanceExhausted`, `PromptBlocked`, `ImageBlocked`
        (every image withheld), `GenerationFailed`, `GenerationCancelled`, `DuplicateRequest`, `ServiceError`.
        """
        started = time.perf_counter()
        request_id = request_id or secrets.token_urlsafe(16)
        timings: dict[str, float] = {}
        mode = getattr(request.mode, "value", str(request.mode))
        event = UsageEvent(
            mode=mode, model=self.generator.model_id, aspect_ratio=str(request.aspect_ratio or "auto"),
            steps=request.steps if isinstance(request.steps, int) else None,
            num_images=request.num_images if isinstance(request.num_images, int) else 0,
        )
        reserved: int | None = None  # credits (accounts) or images (anonymous) held for this request
        per_image = 0

        def lap(stage: str, since: float) -> float:
            now = time.perf_counter()
            timings[stage] = now - since
            return now

        try:
            # 1. Validate: nothing is reserved for a request the model would refuse.
            t = time.perf_counter()
            if identity.is_account:
                self.accounts.get(identity.key)  # a deleted account cannot keep generating
            settings = self.generator.plan(request).settings
            event.mode, event.aspect_ratio = settings.mode.value, settings.aspect_ratio
            event.steps, event.num_images = settings.steps, settings.num_images
            per_image = self.cost_rule.per_image(settings.width, settings.height, settings.steps)
            t = lap("validate", t)

            # 2. Reserve the cost before spending any compute.
            if identity.is_account:
                charge = self.ledger_service.charge(
                    identity.key, per_image * settings.num_images, request_id,
                    reason=f"{settings.num_images} image(s) {settings.width}×{settings.height}, "
                           f"{settings.steps} steps",
                )
                if charge.replayed:
                    raise DuplicateRequest(
                        "This request was already sent (same request id); it was charged once. "
                        "Its images are in your gallery."
                    )
                reserved = charge.amount
            else:
                self.allowance.reserve(identity, settings.num_images, request_id)
                reserved = settings.num_images
            t = lap("reserve", t)

            # 3. Prompt safety (and uploaded images, before any compute is spent on them).
            self.safety.check_prompt(settings.prompt)
            self.safety.check_uploads(request.images or [])
            t = lap("prompt_safety", t)

            # 4. Generate.
            result = self.generator.generate(request, on_step=on_step, cancel=cancel)
            t = lap("generate", t)
            gen = result.timings
            timings["pipeline"] = gen.text_encoding + gen.denoising + gen.decoding

            # 5. Image safety, per image.
            verdicts = self.safety.blocked_images(result.images)
            kept = [i for i, verdict in enumerate(verdicts) if verdict.allowed]
            withheld = len(verdicts) - len(kept)
            t = lap("image_safety", t)
            if not kept:
                raise all_blocked_error(verdicts)

            # 6-8. Store, write the usage row and settle: files first, then one transaction.
            stored, eviction, balance = self._store_and_settle(
                identity, request_id, result, kept, per_image, reserved, event, timings, started
            )
            lap("store", t)
        except BaseException as exc:
            self._fail(identity, request_id, reserved, exc, event, timings, started)
            if isinstance(exc, NanobananaError) or not isinstance(exc, Exception):
                raise
            log.error("request failed unexpectedly (%s)", type(exc).__name__, exc_info=exc)
            raise ServiceError(
                f"Something went wrong on our side ({type(exc).__name__}); nothing was charged. Try again."
            ) from exc

        blocked = withheld
        messages = list(result.warnings)
        if blocked:
            messages.append(
                f"{blocked} image{'s were' if blocked > 1 else ' was'} withheld by the safety filter "
                + ("and refunded." if identity.is_account else "and not counted against your allowance.")
            )
        if eviction.message():
            messages.append(eviction.message())
        timings["total"] = time.perf_counter() - started
        return StudioResult(
            request_id=request_id,
            images=stored,
            blocked=blocked,
            generation=result,
            charged=per_image * len(kept) if identity.is_account else 0,
            balance=balance,
            allowance_left=None if identity.is_account else self.allowance.left(identity),
            messages=messages,
            timings=timings,
        )

    def _store_and_settle(
        self, identity, request_id, result, kept, per_image, reserved, event, timings, started
    ):
        settings = result.settings.to_dict()
        settings["model"] = result.model_id
        encode_started = time.perf_counter()
        files = self.storage.write_files([result.images[i] for i in kept])
        timings["write_files"] = time.perf_counter() - encode_started
        refund = per_image * (len(result.images) - len(kept)) if identity.is_account else 0
        balance = None
        try:
            with self.db.transaction() as conn:
                stored = self.storage.record(
                    conn, identity, files, request_id=request_id, prompt=result.settings.prompt,
                    settings=settings, seeds=[result.seeds[i] for i in kept],
                )
                eviction = self.storage.make_room(conn, identity, keep=[f.id for f in files])
                if identity.is_account:
                    if refund:
                        self.ledger_service.refund(
                            identity.key, refund, request_id, "images withheld by the safety filter", conn
                        )
                    balance = self.ledger_service.balance(identity.key, conn)
                    self.history.record(
                        conn, identity.key, request_id=request_id, prompt=result.settings.prompt,
                        settings=settings, model=result.model_id, outcome="ok", images=len(kept),
                        charged=(reserved or 0) - refund,
                    )
                event.outcome = "ok"
                event.images_stored, event.images_blocked = len(kept), len(result.images) - len(kept)
                event.timings = {**timings, "total": time.perf_counter() - started}
                self.usage.record(event, conn)
        except BaseException:
            self.storage.remove_files(f.id for f in files)
            raise
        self.usage.observe(event)
        self.storage.remove_files(eviction.ids)
        if not identity.is_account:
            self.allowance.release(request_id, len(result.images) - len(kept))
            self.allowance.settle(request_id)
        return stored, eviction, balance

    def _fail(self, identity, request_id, reserved, exc, event, timings, started) -> None:
        """Release what was reserved and write the usage row of a failed request; never raises."""
        if reserved is not None:
            try:
                if identity.is_account:
                    self.ledger_service.refund(
                        identity.key, reserved, request_id, f"refund: {_outcome(exc)}"
                    )
                else:
                    self.allowance.release(request_id)
                    self.allowance.settle(request_id)
            except Exception:  # the account may have been deleted meanwhile
                log.exception("could not release the reservation of a failed request")
        try:
            event.outcome = _outcome(exc)
            event.timings = {**timings, "total": time.perf_counter() - started}
            self.usage.record(event)
        except Exception:
            log.exception("could not record the usage row of a failed request")

    def quote(self, request: GenerationRequest, identity: Identity) -> Quote:
        """The cost of `request` for this person and whether they can afford it (validates the request)."""
        settings = self.generator.plan(request).settings
        n = settings.num_images
        if identity.is_account:
            per_image = self.cost_rule.per_image(settings.width, settings.height, settings.steps)
            balance = self.ledger_service.balance(identity.key)
            cost = per_image * n
            ok = cost <= balance
            message = (
                f"{cost} credit(s) ({per_image} per image); your balance is {balance}."
                if ok else
                f"This needs {cost} credit(s) and your balance is {balance}: ask for fewer or smaller "
                "images or fewer steps, or ask the operator for more credits."
            )
            return Quote(cost, per_image, n, ok, message, balance=balance)
        left = self.allowance.left(identity)
        ok = n <= left
        message = (
            f"Free: {left} of {self.config.allowance.anonymous_images_per_day} images left today."
            if ok else
            f"{left} free image(s) left today; sign in to use credits, or come back tomorrow."
        )
        return Quote(n, 1, n, ok, message, allowance_left=left)

    # -- accounts ---------------------------------------------------------------------------------
    def sign_in(self, profile: OAuthProfileData) -> Account:
        """The account for this sign-in, created on the first one: with the sign-up grant, unless this
        person deleted an account here within `privacy.closed_account_days`."""
        found = self.accounts.find_by_provider(profile.provider, str(profile.provider_user_id))
        if found is not None:
            return found
        try:
            with self.db.transaction() as conn:
                account = self.accounts.create(profile, conn)
                returning = self.sessions.was_closed(profile.provider, str(profile.provider_user_id), conn)
                if self.config.credits.signup_grant and not returning:
                    self.ledger_service.grant(
                        account.id, self.config.credits.signup_grant, "sign-up grant", conn,
                        request_id="signup"
                    )
                return self.accounts.get(account.id, conn)
        except IntegrityError:
            # The same person signed in twice at once; the other sign-in created the account.
            found = self.accounts.find_by_provider(profile.provider, str(profile.provider_user_id))
            if found is None:
                raise
            return found

    def signed_in(self, profile: OAuthProfileData) -> Identity | None:
        """The account of a sign-in if it exists; never creates one (for routes outside the page)."""
        found = self.accounts.find_by_provider(profile.provider, str(profile.provider_user_id))
        return found.identity if found is not None else None

    def _account(self, identity: Identity) -> Account:
        if not identity.is_account:
            raise SignInRequired("Sign in to use this.")
        return self.accounts.get(identity.key)

    def account_summary(self, identity: Identity) -> AccountSummary | None:
        if not identity.is_account:
            return None
        a = self._account(identity)
        return AccountSummary(a.username, a.balance, a.updates_opt_in, a.created_at, a.email)

    def allowance_left(self, identity: Identity) -> int:
        """Anonymous images left today (0 for accounts, who use credits)."""
        return 0 if identity.is_account else self.allowance.left(identity)

    def ledger(self, identity: Identity) -> list[LedgerEntry]:
        return self.ledger_service.history(self._account(identity).id)

    def set_updates_opt_in(self, identity: Identity, opt_in: bool) -> None:
        self.accounts.set_updates_opt_in(self._account(identity).id, opt_in)

    def announcements(self, identity: Identity) -> list[Announcement]:
        """Service updates for this person: none unless signed in and opted in."""
        if not identity.is_account:
            return []
        return self.announcer.for_account(self._account(identity))

    def announce(self, text: str) -> AnnounceReport:
        """Operator: post a service update (shown in the app; e-mailed when SMTP is configured)."""
        return self.announcer.post(text)

    # -- images -----------------------------------------------------------------------------------
    def list_images(self, identity: Identity) -> list[StoredImage]:
        return self.storage.list(identity)

    def image_path(self, identity: Identity, image_id: str) -> Path:
        """The file of one of this person's images; `ImageNotFound` for anything else."""
        return self.storage.path(identity, image_id)

    def delete_image(self, identity: Identity, image_id: str) -> None:
        self.storage.delete(identity, image_id)

    def images_zip(self, identity: Identity) -> Path:
        """All my images (with their settings) as a zip under the data folder's exports/ (short-lived)."""
        return self.privacy.images_zip(identity)

    # -- privacy ----------------------------------------------------------------------------------
    def export(self, identity: Identity) -> Path:
        """The privacy export: one zip with everything stored about this person."""
        return self.privacy.export(identity)

    def delete_account(self, identity: Identity) -> None:
        """Delete every row and file tied to this person and end all their sign-in sessions; only a keyed
        hash of the sign-in stays, for `privacy.closed_account_days` (no second sign-up grant)."""
        account = self._account(identity)
        self.sessions.close_all(account.provider, account.provider_user_id)
        self.sessions.remember_closed(account.provider, account.provider_user_id)
        self.privacy.delete_account(identity)

    def warm_up(self) -> None:
        """Load the model and the safety models at start-up rather than on the first click."""
        self.generator.load()
        self.safety.warm_up()

    def export_path(self, identity: Identity, name: str) -> Path | None:
        """One of this person's export or "download all" zips by file name, while it is kept."""
        return self.storage.export_file(identity, name)

    def policy_markdown(self) -> str:
        return policy_markdown(
            self.config, environ=self.environ,
            prompt_filter=self.safety.prompt_filter, image_filter=self.safety.image_filter,
        )

    # -- operations -------------------------------------------------------------------------------
    def stats(self) -> UsageStats:
        return self.usage.stats()

    def sweep(self) -> SweepReport:
        """Delete expired images, files, exports and history rows."""
        report = self.storage.sweep()
        history = self.history.sweep()
        self.sessions.sweep()
        return SweepReport(report.images, report.files, report.exports, history)

    def metrics_app(self) -> Any:
        """An ASGI app serving this studio's Prometheus metrics (mount it at `/metrics`)."""
        return self.usage.asgi_app()

    def metrics_text(self) -> bytes:
        """The same metrics as Prometheus text (content type: `self.usage.content_type`)."""
        return self.usage.metrics_text()

    def start_sweeper(self, interval: float | None = None) -> None:
        """Sweep every `interval` seconds (default: `storage.sweep_interval_seconds`) in a daemon thread."""
        interval = self.config.storage.sweep_interval_seconds if interval is None else interval
        if interval <= 0 or self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:
                    log.exception("sweep failed")

        self._sweeper = threading.Thread(target=loop, name="nanobanana-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None
        self.db.dispose()


def build_studio(
    environ: Mapping[str, str] | None = None,
    *,
    generator: Generator | None = None,
    safety: SafetyFilter | Callable[[], SafetyFilter] | None = None,
    data_dir: Path | None = None,
    database_url: str | None = None,
    config: ServiceConfig | None = None,
    start_sweeper: bool = True,
) -> Studio:
    """Compose the studio from `configs/service.yaml` (+ environment): open and migrate the database,
    sweep once, and start the background sweeper. `safety` defaults to `nanobanana.safety.SafetyChecker`.
    """
    environ = os.environ if environ is None else environ
    config = config or load_service_config(environ)
    updates: dict[str, Any] = {}
    if data_dir is not None:
        updates["data_dir"] = Path(data_dir).resolve()
    if database_url is not None:
        updates["database_url"] = database_url
    config = config.model_copy(update=updates)
    gate = SafetyGate(safety)
    db = Database.open(config.database_url, config.data_dir)  # type: ignore[arg-type]
    studio = Studio(config, db, generator or Generator(), gate, environ=environ)
    studio.sweep()
    if start_sweeper:
        studio.start_sweeper()
    return studio
