"""The one request path of Nanobanana: the service the UI, the CLI, notebooks and eval all call.

    studio = build_studio()
    result = studio.generate(GenerationRequest("a red circle"), Identity.anonymous(session_id))

`Studio.generate` reads top to bottom: plan → reserve (the person's `Payer`: credits or the free
allowance) → prompt safety → generate → image safety per image → store → usage row → settle. Whatever
fails, the reservation is released, an anonymous usage row says why, and no half-written rows or orphan
files stay behind. The parts live in `Services` (see `build.py`); this module only composes them into
one person's actions. Operator actions are in `operations.py`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from nanobanana.errors import NanobananaError, ServiceError, SignInRequired, outcome_of
from nanobanana.generation import AspectSize, GenerationRequest, GenerationResult, Limits, Plan
from nanobanana.safety.gate import all_blocked_error
from nanobanana.service.accounts import Account, AccountSummary, Identity, OAuthProfileData
from nanobanana.service.announcements import Announcement
from nanobanana.service.images import StoredImage, SweepReport
from nanobanana.service.ledger import LedgerEntry
from nanobanana.service.payment import AllowancePayer, CreditsPayer, Payer, Quote, Reservation
from nanobanana.service.policy import policy_markdown
from nanobanana.service.usage import UsageEvent, UsageStats

if TYPE_CHECKING:
    from nanobanana.service.build import Services

log = logging.getLogger(__name__)

__all__ = ["Quote", "Studio", "StudioInfo", "StudioResult"]


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


@dataclass(frozen=True)
class StudioInfo:
    """What a front end shows about this studio: the model's options, the limits and the retention."""

    model_id: str
    model_name: str
    sizes: list[AspectSize]
    schedulers: list[str]
    limits: Limits
    max_prompt_tokens: int | None  # what the text encoder reads (minus its begin/end markers); None: no limit
    max_steps: int
    defaults: Any  # the model's default settings (steps, guidance, strength, aspect ratio)
    supports_negative_prompt: bool
    supports_guidance: bool
    anonymous_expiry_hours: float
    account_expiry_hours: float
    anonymous_images_per_day: int


@dataclass
class _Attempt:
    """One request on its way through `Studio.generate`: what is held for it and what it measured."""

    identity: Identity
    payer: Payer
    request_id: str
    event: UsageEvent
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    reservation: Reservation | None = None

    def lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = now - since
        return now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": time.perf_counter() - self.started}


class Studio:
    """One person's actions on the service, composed once (see `build_studio`) from `Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- who pays -----------------------------------------------------------------------------------
    def payer(self, identity: Identity) -> Payer:
        s = self.services
        if identity.is_account:
            return CreditsPayer(s.ledger, s.cost_rule, identity.key)
        return AllowancePayer(s.allowance, identity)

    # -- the request path -------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest | Plan,
        identity: Identity,
        *,
        request_id: str | None = None,
        on_step: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> StudioResult:
        """Run one request (or an already made `Plan`) for one person. Raises `NanobananaError`s whose
        messages fit the UI as-is: `InvalidRequest`, `InsufficientCredits`, `AllowanceExhausted`,
        `PromptBlocked`, `ImageBlocked` (every image withheld), `GenerationFailed`, `GenerationCancelled`,
        `DuplicateRequest`, `ServiceError`.
        """
        s = self.services
        attempt = _Attempt(identity, self.payer(identity), request_id or secrets.token_urlsafe(16),
                           UsageEvent.for_request(request, s.generator.model_id))
        try:
            # 1. Plan: nothing is reserved for a request the model would refuse.
            t = time.perf_counter()
            if identity.is_account:
                s.accounts.get(identity.key)  # a deleted account cannot keep generating
            plan = request if isinstance(request, Plan) else s.generator.plan(request)
            settings = plan.settings
            attempt.event.describe(settings)
            t = attempt.lap("validate", t)

            # 2. Reserve the cost before spending any compute.
            attempt.reservation = attempt.payer.reserve(
                attempt.request_id, settings.width, settings.height, settings.steps, settings.num_images,
                description=f"{settings.num_images} image(s) {settings.width}×{settings.height}, "
                            f"{settings.steps} steps",
            )
            t = attempt.lap("reserve", t)

            # 3. Prompt safety (and uploaded images, before any compute is spent on them).
            s.safety.check_prompt(settings.prompt)
            s.safety.check_uploads(list(plan.images))
            t = attempt.lap("prompt_safety", t)

            # 4. Generate.
            result = s.generator.run(plan, on_step=on_step, cancel=cancel)
            t = attempt.lap("generate", t)
            gen = result.timings
            attempt.timings["pipeline"] = gen.text_encoding + gen.denoising + gen.decoding

            # 5. Image safety, per image.
            verdicts = s.safety.image_verdicts(result.images)
            kept = [i for i, verdict in enumerate(verdicts) if verdict.allowed]
            t = attempt.lap("image_safety", t)
            if not kept:
                raise all_blocked_error(verdicts)

            # 6-8. Store, write the usage row and settle: files first, then one transaction.
            stored, eviction, balance = self._store_and_settle(attempt, result, kept)
            attempt.lap("store", t)
        except BaseException as exc:
            self._fail(attempt, exc)
            if isinstance(exc, NanobananaError) or not isinstance(exc, Exception):
                raise
            log.error("request failed unexpectedly (%s)", type(exc).__name__, exc_info=exc)
            raise ServiceError(
                f"Something went wrong on our side ({type(exc).__name__}); nothing was charged. Try again."
            ) from exc

        blocked = len(result.images) - len(kept)
        messages = list(result.warnings)
        if blocked:
            messages.append(f"{blocked} image{'s were' if blocked > 1 else ' was'} withheld by the safety "
                            f"filter {attempt.payer.withheld_note}")
        if eviction.message():
            messages.append(eviction.message())
        attempt.timings["total"] = time.perf_counter() - attempt.started
        return StudioResult(
            request_id=attempt.request_id,
            images=stored,
            blocked=blocked,
            generation=result,
            charged=attempt.payer.charged(attempt.reservation, len(kept)),
            balance=balance,
            allowance_left=attempt.payer.allowance_left(),
            messages=messages,
            timings=attempt.timings,
        )

    def _store_and_settle(self, attempt: _Attempt, result: GenerationResult, kept: list[int]):
        s, payer, reservation = self.services, attempt.payer, attempt.reservation
        settings = result.settings.to_dict()
        settings["model"] = result.model_id
        encode_started = time.perf_counter()
        files = s.images.write_files([result.images[i] for i in kept])
        attempt.timings["write_files"] = time.perf_counter() - encode_started
        try:
            with s.db.transaction() as conn:
                stored = s.images.record(
                    conn, attempt.identity, files, request_id=attempt.request_id, prompt=result.settings.prompt,
                    settings=settings, seeds=[result.seeds[i] for i in kept],
                )
                eviction = s.images.make_room(conn, attempt.identity, keep=[f.id for f in files])
                payer.settle(reservation, len(kept), conn)
                balance = payer.balance(conn)
                if payer.account_id is not None:
                    s.generation_log.record(
                        conn, payer.account_id, request_id=attempt.request_id, prompt=result.settings.prompt,
                        settings=settings, model=result.model_id, outcome="ok", images=len(kept),
                        charged=payer.charged(reservation, len(kept)),
                    )
                attempt.event.outcome = "ok"
                attempt.event.images_stored, attempt.event.images_blocked = len(kept), len(result.images) - len(kept)
                attempt.event.timings = attempt.total()
                s.usage.record(attempt.event, conn)
        except BaseException:
            s.images.remove_files(f.id for f in files)
            raise
        s.usage.observe(attempt.event)
        s.images.remove_files(eviction.ids)
        payer.after_commit(reservation, len(kept))
        return stored, eviction, balance

    def _fail(self, attempt: _Attempt, exc: BaseException) -> None:
        """Release what was reserved and write the usage row of a failed request; never raises."""
        outcome = outcome_of(exc)
        if attempt.reservation is not None:
            try:
                attempt.payer.release(attempt.reservation, outcome)
            except Exception:  # the account may have been deleted meanwhile
                log.exception("could not release the reservation of a failed request")
        try:
            attempt.event.outcome = outcome
            attempt.event.timings = attempt.total()
            self.services.usage.record(attempt.event)
        except Exception:
            log.exception("could not record the usage row of a failed request")

    def quote(self, identity: Identity, aspect_ratio: str | None = None, num_images: int = 1,
              steps: int | None = None) -> Quote:
        """What a request with these settings would cost this person, and whether they can afford it.
        (The price does not depend on the prompt, so nothing is tokenised.)"""
        width, height, images, steps = self.services.generator.output_size(aspect_ratio, num_images, steps)
        return self.payer(identity).quote(width, height, steps, images)

    def info(self) -> StudioInfo:
        s = self.services
        model = s.generator.config.model
        tokens = s.generator.load().max_prompt_tokens
        return StudioInfo(
            model_id=s.generator.model_id, model_name=model.name, sizes=s.generator.sizes(),
            schedulers=s.generator.schedulers(), limits=s.generator.config.limits, max_steps=model.max_steps,
            max_prompt_tokens=tokens - 2 if tokens else None,  # as plan.fit_prompt counts them
            defaults=model.defaults, supports_negative_prompt=model.supports_negative_prompt,
            supports_guidance=model.supports_guidance,
            anonymous_expiry_hours=s.config.storage.anonymous_expiry_hours,
            account_expiry_hours=s.config.storage.account_expiry_hours,
            anonymous_images_per_day=s.config.allowance.anonymous_images_per_day,
        )

    # -- accounts ---------------------------------------------------------------------------------
    def sign_in(self, profile: OAuthProfileData) -> Account:
        """The account for this sign-in, created on the first one: with the sign-up grant, unless this
        person deleted an account here within `privacy.closed_account_days`."""
        found = self.services.accounts.find_by_provider(profile.provider, str(profile.provider_user_id))
        if found is not None:
            return found
        try:
            with self.services.db.transaction() as conn:
                account = self.services.accounts.create(profile, conn)
                returning = self.services.sessions.was_closed(profile.provider, str(profile.provider_user_id), conn)
                if self.services.config.credits.signup_grant and not returning:
                    self.services.ledger.grant(
                        account.id, self.services.config.credits.signup_grant, "sign-up grant", conn,
                        request_id="signup"
                    )
                return self.services.accounts.get(account.id, conn)
        except IntegrityError:
            # The same person signed in twice at once; the other sign-in created the account.
            found = self.services.accounts.find_by_provider(profile.provider, str(profile.provider_user_id))
            if found is None:
                raise
            return found

    def signed_in(self, profile: OAuthProfileData) -> Identity | None:
        """The account of a sign-in if it exists; never creates one (for routes outside the page)."""
        found = self.services.accounts.find_by_provider(profile.provider, str(profile.provider_user_id))
        return found.identity if found is not None else None

    @property
    def sign_in_hours(self) -> float:
        return self.services.config.privacy.sign_in_hours

    @property
    def sign_in_sessions(self) -> Any:
        """The server-side sign-in sessions (the web layer checks every request against them)."""
        return self.services.sessions

    def _account(self, identity: Identity) -> Account:
        if not identity.is_account:
            raise SignInRequired("Sign in to use this.")
        return self.services.accounts.get(identity.key)

    def account_summary(self, identity: Identity) -> AccountSummary | None:
        if not identity.is_account:
            return None
        a = self._account(identity)
        return AccountSummary(a.username, a.balance, a.updates_opt_in, a.created_at, a.email)

    def allowance_left(self, identity: Identity) -> int:
        """Anonymous images left today (0 for accounts, who use credits)."""
        return 0 if identity.is_account else self.services.allowance.left(identity)

    def ledger(self, identity: Identity) -> list[LedgerEntry]:
        return self.services.ledger.history(self._account(identity).id)

    def set_updates_opt_in(self, identity: Identity, opt_in: bool) -> None:
        self.services.accounts.set_updates_opt_in(self._account(identity).id, opt_in)

    def announcements(self, identity: Identity) -> list[Announcement]:
        """Service updates for this person: none unless signed in and opted in."""
        if not identity.is_account:
            return []
        return self.services.announcements.for_account(self._account(identity))

    # -- images -----------------------------------------------------------------------------------
    def list_images(self, identity: Identity) -> list[StoredImage]:
        return self.services.images.list(identity)

    def image(self, identity: Identity, image_id: str) -> StoredImage:
        """One of this person's stored images; `ImageNotFound` for anything else."""
        return self.services.images.get(identity, image_id)

    def image_path(self, identity: Identity, image_id: str) -> Path:
        """The file of one of this person's images; `ImageNotFound` for anything else."""
        return self.services.images.path(identity, image_id)

    def delete_image(self, identity: Identity, image_id: str) -> None:
        self.services.images.delete(identity, image_id)

    def images_zip(self, identity: Identity) -> Path:
        """All my images (with their settings) as a zip under the data folder's exports/ (short-lived)."""
        return self.services.privacy.images_zip(identity)

    # -- privacy ----------------------------------------------------------------------------------
    def export(self, identity: Identity) -> Path:
        """The privacy export: one zip with everything stored about this person."""
        return self.services.privacy.export(identity)

    def delete_account(self, identity: Identity) -> None:
        """Delete every row and file tied to this person and end all their sign-in sessions; only a keyed
        hash of the sign-in stays, for `privacy.closed_account_days` (no second sign-up grant)."""
        account = self._account(identity)
        self.services.sessions.close_all(account.provider, account.provider_user_id)
        self.services.sessions.remember_closed(account.provider, account.provider_user_id)
        self.services.privacy.delete_account(identity)

    def warm_up(self) -> None:
        """Load the model and the safety models at start-up rather than on the first click."""
        self.services.generator.load()
        self.services.safety.warm_up()

    def export_path(self, identity: Identity, name: str) -> Path | None:
        """One of this person's export or "download all" zips by file name, while it is kept."""
        return self.services.images.export_file(identity, name)

    def policy_markdown(self) -> str:
        return policy_markdown(
            self.services.config, environ=self.services.environ,
            prompt_filter=self.services.safety.prompt_filter, image_filter=self.services.safety.image_filter,
        )

    # -- the service's own upkeep and figures ----------------------------------------------------
    def stats(self) -> UsageStats:
        return self.services.usage.stats()

    def sweep(self) -> SweepReport:
        """Delete expired images, files, exports and history rows."""
        report = self.services.images.sweep()
        history = self.services.generation_log.sweep()
        self.services.sessions.sweep()
        return SweepReport(report.images, report.files, report.exports, history)

    def metrics_text(self) -> bytes:
        """This studio's Prometheus metrics as text (served at `/metrics` by the web app)."""
        return self.services.usage.metrics_text()

    def start_sweeper(self, interval: float | None = None) -> None:
        """Sweep every `interval` seconds (default: `storage.sweep_interval_seconds`) in a daemon thread."""
        interval = self.services.config.storage.sweep_interval_seconds if interval is None else interval
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
        self.services.db.dispose()

