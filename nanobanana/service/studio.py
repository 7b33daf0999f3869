"""The one request path of Nanobanana: the service the UI, the CLI, notebooks and eval all call.

    studio = build_studio()
    result = studio.generate(GenerationRequest("a red circle"), Identity.anonymous(session_id))

Every generation is a job. `Studio.submit` plans the request, checks the prompt, reserves its cost with
the person's `Payer` (credits or the free allowance) and queues the job in the same transaction;
`Studio.wait` follows it (place in line, ETA, steps) to its end; `Studio.generate` is both. The worker
(`worker.py`) runs queued jobs in fair turns and in batches, and `Settlement` ends each one: image safety
per image → store → usage row → settle, or release on failure, exactly once. Whatever fails, no
half-written rows or orphan files stay behind. The parts live in `Services` (see `build.py`); this module
only composes them into one person's actions. Operator actions are in `operations.py`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from nanobanana.errors import (
    DuplicateRequest,
    GenerationCancelled,
    IdempotencyKeyInFlight,
    ImageNotFound,
    InvalidRequest,
    JobNotFound,
    JobStillRunning,
    NanobananaError,
    ServiceError,
    SignInRequired,
    error_named,
    outcome_of,
)
from nanobanana.generation import AspectSize, GenerationRequest, GenerationResult, Limits, Mode, Plan, StageTimings
from nanobanana.provenance import Verdict
from nanobanana.service.accounts import Account, AccountSummary, Identity, OAuthProfileData
from nanobanana.service.announcements import Announcement
from nanobanana.service.api_keys import ApiKey, NewApiKey
from nanobanana.service.images import ExportFile, StoredImage, SweepReport
from nanobanana.service.jobs import QUEUED, RUNNING, SUCCEEDED, Job, Owner, batch_key, check_job_id
from nanobanana.service.ledger import LedgerEntry
from nanobanana.service.payment import AllowancePayer, CreditsPayer, Payer, Quote, Reservation
from nanobanana.service.policy import policy_markdown
from nanobanana.service.settlement import Settlement, user_message
from nanobanana.service.usage import UsageEvent, UsageStats
from nanobanana.service.worker import LocalJobs, Worker

if TYPE_CHECKING:
    from nanobanana.service.build import Services

log = logging.getLogger(__name__)

__all__ = ["ApiCaller", "JobStatus", "JobView", "Quote", "Studio", "StudioInfo", "StudioResult", "Submitted"]


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
    example_prompts: list[str] = field(default_factory=list)  # prompts the model draws well (may be empty)
    contact: str = ""  # the operator's contact from the privacy policy (where to ask for credits, too)


@dataclass(frozen=True)
class JobStatus:
    """Where one of my requests stands, as the page shows it while I wait."""

    id: str
    state: str
    place: int | None  # 1 = next; None unless queued
    eta_seconds: float | None  # until it is done, from the workers' measured speed; None: not known yet
    step: int
    total_steps: int
    message: str | None = None

    def describe(self) -> str:
        if self.state == QUEUED:
            where = "next in line" if self.place == 1 else f"{_ordinal(self.place or 1)} in line"
            eta = f" · about {_duration(self.eta_seconds)}" if self.eta_seconds is not None else ""
            return f"Waiting: {where}{eta}"
        if self.state == RUNNING:
            return f"Generating: step {self.step} of {self.total_steps}" if self.step else "Starting"
        return self.message or self.state.capitalize()


@dataclass(frozen=True)
class JobView:
    """One of my jobs as a script sees it: where it stands and, once ended, what it made or why it failed."""

    status: JobStatus
    mode: str
    num_images: int
    created_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: NanobananaError | None  # what a failed or cancelled job ended with
    images: list[StoredImage]  # a succeeded job's images that are still kept
    blocked: int
    charged: int
    seeds: list[int]
    messages: list[str]


@dataclass(frozen=True)
class Submitted:
    """A job a script submitted; `replayed`: an earlier call with the same idempotency key made it."""

    job_id: str
    replayed: bool = False


@dataclass(frozen=True)
class ApiCaller:
    """Who calls the API: an account through one of its keys, or an anonymous visitor (`key` None)."""

    identity: Identity
    key: ApiKey | None = None


IN_FLIGHT_WAIT_SECONDS = 10  # a retry waits this long for the first call with its idempotency key


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{round(seconds / 60)} min"


class Studio:
    """One person's actions on the service, composed once (see `build_studio`) from `Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.local = LocalJobs()
        self.settlement = Settlement(services, services.jobs)
        self.worker: Worker | None = None
        self._speed_cache: float | None = None
        self._speed_at = -1e9

    def start_worker(self) -> Worker:
        """Run queued jobs in this process (a worker thread; see `worker.py`), or hand them to the Ray Serve
        deployment (`jobs.worker: ray`; see `ray_worker.py`). Recovers first."""
        if self.worker is None:
            if self.services.config.jobs.worker == "ray":
                from nanobanana.service.ray_worker import RayDispatcher

                self.worker = RayDispatcher(self.services, self.services.jobs, self.settlement, self.local)
            else:
                self.worker = Worker(self.services, self.services.jobs, self.settlement, self.local)
            self.worker.start()
        return self.worker

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
        on_status: Callable[[JobStatus], None] | None = None,
        cancel: threading.Event | None = None,
        page: str | None = None,
    ) -> StudioResult:
        """Submit one request (or an already made `Plan`) for one person and wait for it. Raises
        `NanobananaError`s whose messages fit the UI as-is: `InvalidRequest`, `InsufficientCredits`,
        `AllowanceExhausted`, `JobLimitReached`, `PromptBlocked`, `ImageBlocked` (every image withheld),
        `GenerationFailed`, `GenerationCancelled`, `JobInterrupted`, `DuplicateRequest`, `ServiceError`.
        """
        job_id = self.submit(request, identity, request_id=request_id, page=page)
        return self.wait(identity, job_id, on_step=on_step, on_status=on_status, cancel=cancel)

    def submit(self, request: GenerationRequest | Plan, identity: Identity, *, request_id: str | None = None,
               page: str | None = None, follow: bool = True) -> str:
        """Plan, check and queue a request, its cost reserved; returns the job id. Raises as `generate`
        does for what is wrong before any compute is spent. `follow=False`: nobody in this process waits
        on it for sure (an API call), so this process keeps no record of it in memory."""
        s = self.services
        job_id = request_id or secrets.token_urlsafe(16)
        event = UsageEvent.for_request(request, s.generator.model_id)
        timings: dict[str, float] = {}
        started = t = time.perf_counter()
        reserved: tuple[Payer, Reservation] | None = None
        saved_inputs = followed = False
        try:
            check_job_id(job_id)
            # 1. Plan: nothing is reserved for a request the model would refuse.
            if identity.is_account:
                s.accounts.get(identity.key)  # a deleted account cannot keep generating
            plan = request if isinstance(request, Plan) else s.generator.plan(request)
            settings = plan.settings
            event.describe(settings)
            timings["validate"] = time.perf_counter() - t
            t = time.perf_counter()

            # 2. Prompt safety (and uploaded images), before anything is reserved or queued.
            s.safety.check_prompt(settings.prompt)
            s.safety.check_uploads(list(plan.images))
            timings["prompt_safety"] = time.perf_counter() - t
            t = time.perf_counter()

            # 3. Reserve the cost and queue the job in one transaction: no charge without its job.
            payer = self.payer(identity)
            owner = Owner(identity.kind, identity.owner_key)
            if plan.images:
                try:
                    s.jobs.save_inputs(job_id, plan.images)
                except FileExistsError:
                    raise DuplicateRequest("This request was already sent (same request id).") from None
                saved_inputs = True
            # Before the commit: this process's worker may take it at once.
            followed = self.local.add(job_id, plan) if follow else False
            with s.db.transaction() as conn:
                reservation = payer.reserve(
                    job_id, settings.width, settings.height, settings.steps, settings.num_images,
                    description=f"{settings.num_images} image(s) {settings.width}×{settings.height}, "
                                f"{settings.steps} steps", conn=conn,
                )
                reserved = (payer, reservation)
                timings["reserve"] = time.perf_counter() - t
                s.jobs.add(conn, job_id=job_id, owner=owner, plan=plan, key=batch_key(plan, s.generator.model_id),
                           payer="credits" if identity.is_account else "allowance",
                           per_image=reservation.per_image, page=page,
                           timings={**timings, "submit": time.perf_counter() - started},
                           model=s.generator.model_id)
        except BaseException as exc:
            if reserved is not None and not identity.is_account:
                reserved[0].release(reserved[1], outcome_of(exc))  # in memory: the rollback did not undo it
            if saved_inputs:
                s.jobs.remove_inputs(job_id)
            if followed:
                self.local.forget(job_id)
            self._record_failure(event, exc, {**timings, "total": time.perf_counter() - started})
            if isinstance(exc, NanobananaError) or not isinstance(exc, Exception):
                raise
            log.error("request failed unexpectedly (%s)", type(exc).__name__, exc_info=exc)
            raise ServiceError(
                f"Something went wrong on our side ({type(exc).__name__}); nothing was charged. Try again."
            ) from exc
        if self.worker is not None:
            self.worker.wake()
        return job_id

    def record_refusal(self, mode: Mode, exc: BaseException) -> None:
        """Count a request that a front end refused before it reached `submit` (an unreadable upload, no
        image to edit) in the usage statistics, like any other refused request; never raises."""
        event = UsageEvent(mode=mode.value, model=self.services.generator.model_id, aspect_ratio="auto",
                           steps=None, num_images=1)
        # Nothing ran: it is the request's fault (an "invalid_request") unless the error names its own outcome.
        outcome = exc.outcome if isinstance(exc, NanobananaError) else None
        self._record_failure(event, exc if outcome else InvalidRequest(str(exc)), {})

    def _record_failure(self, event: UsageEvent, exc: BaseException, timings: dict[str, float]) -> None:
        """The usage row of a request refused before it was queued; never raises."""
        try:
            event.outcome, event.timings = outcome_of(exc), timings
            self.services.usage.record(event)
            self.services.usage.observe(event)
        except Exception:
            log.exception("could not record the usage row of a failed request")

    def wait(self, identity: Identity, job_id: str, *, on_step: Callable[[int, int], None] | None = None,
             on_status: Callable[[JobStatus], None] | None = None, cancel: threading.Event | None = None,
             timeout: float | None = None) -> StudioResult:
        """Follow one of my jobs to its end: `on_status` hears its place in line and ETA (about once a
        second), `on_step` each denoising step; setting `cancel` cancels it. Returns its result or raises
        the error it ended with."""
        s = self.services
        owner = Owner(identity.kind, identity.owner_key)
        deadline = None if timeout is None else time.monotonic() + timeout
        checked, step, cancel_sent = 0.0, (0, 0), False
        job = s.jobs.owned(owner, job_id)
        # This process's worker tells its waiters at once; a job run elsewhere is followed in the database.
        every = 1.0 if getattr(self.worker, "runs_model", False) else 0.25
        while True:
            local = self.local.get(job_id)
            if local is not None and local.ended is not None:
                break
            if local is None or time.monotonic() - checked >= every:
                job, checked = s.jobs.owned(owner, job_id), time.monotonic()
                if not job.is_open:
                    break
                if on_status is not None:
                    on_status(self._status(job))
                if (local is None or not local.step[0]) and job.step and (job.step, job.total_steps) != step:
                    step = (job.step, job.total_steps)
                    if on_step is not None:
                        on_step(*step)
            if local is not None and local.step != step and local.step[0]:
                step = local.step
                if on_step is not None:
                    on_step(*step)
            if cancel is not None and cancel.is_set() and not cancel_sent:
                self.cancel(identity, job_id)
                cancel_sent = True
            if deadline is not None and time.monotonic() > deadline:
                raise JobStillRunning(f"Request {job_id} has not finished yet; ask again later.")
            self.local.wait(0.25)
        job = s.jobs.get(job_id)  # as it ended (the row read in the loop may be older)
        try:
            return self._result(identity, job, local)
        finally:
            self.local.forget(job_id)

    def _result(self, identity: Identity, job: Job | None, local: Any) -> StudioResult:
        s = self.services
        ended_here = local.ended if local is not None else None
        if isinstance(ended_here, BaseException):
            if isinstance(ended_here, NanobananaError) or not isinstance(ended_here, Exception):
                raise ended_here
            raise ServiceError(user_message(ended_here)) from ended_here
        if job is None or job.state != SUCCEEDED:
            raise error_named(job.error if job else None, job.message if job else "This request was lost.")
        done = job.result
        images = [s.images.get(identity, image_id) for image_id in done.get("images", [])]
        generation = dict(done.get("generation", {}))
        if ended_here is not None:
            # This process's own record keeps what the row no longer does (messages quoting the prompt).
            generation["warnings"] = list(local.plan.warnings)
            pictures, messages = local.kept_images, list(ended_here.messages)
        else:
            pictures = [s.images.load(identity, image.id) for image in images]
            messages = list(done.get("messages", []))
        result = GenerationResult(
            images=pictures, seeds=list(generation.get("seeds", [])),
            settings=local.plan.settings if local is not None else job.plan_settings(),
            model_id=generation.get("model_id", s.generator.model_id),
            timings=StageTimings(**generation.get("timings", {})), warnings=list(generation.get("warnings", [])),
        )
        payer = self.payer(identity)
        return StudioResult(
            request_id=job.id, images=images, blocked=int(done.get("blocked", 0)), generation=result,
            charged=int(done.get("charged", 0)), balance=payer.balance(), allowance_left=payer.allowance_left(),
            messages=messages, timings=dict(done.get("timings", {})),
        )

    def cancel(self, identity: Identity, job_id: str) -> JobStatus:
        """Cancel one of my jobs: a queued one leaves the line at once, a running one stops at its next
        step (in a shared batch only its images are dropped); its reservation is released."""
        s = self.services
        job = s.jobs.owned(Owner(identity.kind, identity.owner_key), job_id)
        if job.state == QUEUED:
            cancelled = GenerationCancelled("Cancelled before it started; nothing was charged.")
            if self.settlement.fail(job, cancelled, from_states=(QUEUED,)):
                self.local.ended(job_id, cancelled)
            job = s.jobs.get(job_id) or job
        if job.state == RUNNING:
            s.jobs.request_cancel(job_id)
            if self.worker is not None:
                self.worker.cancel(job_id)
        return self._status(job)

    def cancel_page(self, identity: Identity, page: str) -> int:
        """Cancel my open jobs sent from one page (the page's Cancel button); returns how many."""
        owner = Owner(identity.kind, identity.owner_key)
        open_jobs = self.services.jobs.of_owner(owner, page=page, open_only=True)
        for job in open_jobs:
            self.cancel(identity, job.id)
        return len(open_jobs)

    def job_status(self, identity: Identity, job_id: str) -> JobStatus:
        return self._status(self.services.jobs.owned(Owner(identity.kind, identity.owner_key), job_id))

    def jobs(self, identity: Identity, limit: int = 50) -> list[Job]:
        """My recent requests, newest first (ended ones are kept `jobs.keep_finished_minutes`)."""
        return self.services.jobs.of_owner(Owner(identity.kind, identity.owner_key), limit=limit)

    def _status(self, job: Job) -> JobStatus:
        place = eta = None
        if job.state == QUEUED:
            where = self.services.jobs.place(job)
            place = where.ahead + 1
            rate = self._speed()
            if rate is not None:
                eta = (where.work_ahead + job.num_images * job.steps) * rate
        elif job.state == RUNNING and job.total_steps:
            rate = self._speed()
            if rate is not None:
                eta = job.num_images * max(0, job.total_steps - job.step) * rate
        return JobStatus(job.id, job.state, place, eta, job.step, job.total_steps, job.message)

    def _speed(self) -> float | None:
        now = time.monotonic()
        if now - self._speed_at > 2.0:
            self._speed_cache, self._speed_at = self.services.jobs.seconds_per_image_step(), now
        return self._speed_cache

    def quote(self, identity: Identity, aspect_ratio: str | None = None, num_images: int = 1,
              steps: int | None = None, size: str | None = None) -> Quote:
        """What a request with these settings would cost this person, and whether they can afford it.
        (The price does not depend on the prompt, so nothing is tokenised.) `size`: a remote model's."""
        width, height, images, steps = self.services.generator.output_size(aspect_ratio, num_images, steps, size)
        return self.payer(identity).quote(width, height, steps, images)

    def info(self) -> StudioInfo:
        s = self.services
        model = s.generator.config.model
        tokens = s.generator.load().prompt_room
        return StudioInfo(
            model_id=s.generator.model_id, model_name=model.name, sizes=s.generator.all_sizes(),
            schedulers=s.generator.schedulers(), limits=s.generator.config.limits, max_steps=model.max_steps,
            max_prompt_tokens=tokens,  # as plan.fit_prompt counts them
            defaults=model.defaults, supports_negative_prompt=model.supports_negative_prompt,
            supports_guidance=model.supports_guidance,
            anonymous_expiry_hours=s.config.storage.anonymous_expiry_hours,
            account_expiry_hours=s.config.storage.account_expiry_hours,
            anonymous_images_per_day=s.config.allowance.anonymous_images_per_day,
            example_prompts=list(model.example_prompts),
            contact=s.config.privacy.contact,
        )

    # -- scripts and agents (the API) ---------------------------------------------------------------
    def submit_job(self, request: GenerationRequest, identity: Identity, *, idempotency_key: str | None = None,
                   fingerprint: str = "", webhook: tuple[ApiKey, str] | None = None) -> Submitted:
        """`submit` for a script: with an idempotency key a retry gets the first call's job (charged once;
        the same key with another `fingerprint` is refused); `webhook` (key, URL) posts the job's end there.
        Nothing is queued or charged when the URL is refused."""
        s = self.services
        if webhook is not None:
            s.webhooks.check(webhook[1])
        if idempotency_key is None:
            submitted = Submitted(self.submit(request, identity, follow=False))
        else:
            submitted = self._submit_once(request, identity, idempotency_key, fingerprint)
        if webhook is not None and not submitted.replayed:
            s.webhooks.register(submitted.job_id, Owner(identity.kind, identity.owner_key), webhook[0].id, webhook[1])
        return submitted

    def _submit_once(self, request: GenerationRequest, identity: Identity, key: str, fingerprint: str) -> Submitted:
        s = self.services
        owner = Owner(identity.kind, identity.owner_key)
        deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
        while True:
            claim = s.idempotency.claim(owner, key, fingerprint)
            if not claim.replayed:
                try:
                    return Submitted(self.submit(request, identity, request_id=claim.job_id, follow=False))
                except BaseException:
                    s.idempotency.release(owner, key, claim.job_id)  # refused: a corrected retry may use the key
                    raise
            if s.jobs.get(claim.job_id) is not None:
                return Submitted(claim.job_id, replayed=True)
            if claim.age_seconds > IN_FLIGHT_WAIT_SECONDS * 6:
                raise JobNotFound("The request sent with this Idempotency-Key ended a while ago and is no longer "
                                  "kept; send a new request with a new key.")
            if time.monotonic() > deadline:
                raise IdempotencyKeyInFlight("The first request with this Idempotency-Key is still being "
                                             "submitted; retry in a few seconds.")
            time.sleep(0.05)

    def job_view(self, identity: Identity, job_id: str) -> JobView:
        """One of my jobs with its result or error; `JobNotFound` for anyone else's."""
        job = self.services.jobs.owned(Owner(identity.kind, identity.owner_key), job_id)
        return self.describe_job(job, identity)

    def describe_job(self, job: Job, identity: Identity | None = None) -> JobView:
        """A job as `job_view` shows it (the webhook sender calls this for ended jobs of accounts)."""
        identity = identity or Identity.account(job.owner.key)
        done = job.result
        images = []
        for image_id in done.get("images", []) if job.state == SUCCEEDED else []:
            try:
                images.append(self.services.images.get(identity, image_id))
            except ImageNotFound:
                continue  # deleted or expired since
        error = None
        if job.error is not None:
            error = error_named(job.error, job.message or "")
        return JobView(
            status=self._status(job), mode=str(job.settings.get("mode", "")), num_images=job.num_images,
            created_at=job.created_at, finished_at=job.finished_at, outcome=job.outcome, error=error, images=images,
            blocked=int(done.get("blocked", 0)), charged=int(done.get("charged", 0)),
            seeds=[image.seed for image in images], messages=list(done.get("messages", [])),
        )

    def await_job(self, identity: Identity, job_id: str, timeout: float) -> JobView:
        """`job_view` after waiting up to `timeout` seconds for the job to end."""
        self.services.jobs.owned(Owner(identity.kind, identity.owner_key), job_id)  # JobNotFound first
        if timeout > 0:
            with contextlib.suppress(NanobananaError):  # not ended yet, or ended with an error: the view says which
                self.wait(identity, job_id, timeout=timeout)
        return self.job_view(identity, job_id)

    def api_caller(self, key: str) -> ApiCaller:
        """The account behind an API key (`InvalidApiKey` for an unknown or revoked one)."""
        record = self.services.api_keys.resolve(key)
        return ApiCaller(Identity.account(record.account_id), record)

    def create_api_key(self, identity: Identity, name: str, webhook_url: str | None = None) -> NewApiKey:
        """A new key for my account: the key and its webhook secret are in the answer and nowhere else."""
        account = self._account(identity)
        if webhook_url:
            self.services.webhooks.check(webhook_url)
        return self.services.api_keys.create(account.id, name, webhook_url or None)

    def api_keys(self, identity: Identity) -> list[ApiKey]:
        return self.services.api_keys.list(self._account(identity).id)

    def revoke_api_key(self, identity: Identity, key_id: str) -> ApiKey:
        return self.services.api_keys.revoke(self._account(identity).id, key_id)

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
        return AccountSummary(a.username, a.balance, a.updates_opt_in, a.created_at, a.email, a.embed_settings)

    def allowance_left(self, identity: Identity) -> int:
        """Anonymous images left today (0 for accounts, who use credits)."""
        return 0 if identity.is_account else self.services.allowance.left(identity)

    def ledger(self, identity: Identity) -> list[LedgerEntry]:
        return self.services.ledger.history(self._account(identity).id)

    def set_updates_opt_in(self, identity: Identity, opt_in: bool) -> None:
        self.services.accounts.set_updates_opt_in(self._account(identity).id, opt_in)

    def set_embed_settings(self, identity: Identity, embed: bool) -> None:
        """Opt in (or out) of the prompt and settings written into my new PNG files."""
        self.services.accounts.set_embed_settings(self._account(identity).id, embed)

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

    def image_bytes(self, identity: Identity, image_id: str) -> bytes:
        """The PNG of one of this person's images; `ImageNotFound` for anything else."""
        return self.services.images.read(identity, image_id)

    def image_path(self, identity: Identity, image_id: str) -> Path:
        """The file of one of this person's images on local storage; `ImageNotFound` for anything else."""
        return self.services.images.path(identity, image_id)

    def image_picture(self, identity: Identity, image_id: str) -> Any:
        """One of this person's images, decoded (to edit it further); `ImageNotFound` for anything else."""
        return self.services.images.load(identity, image_id)

    def delete_image(self, identity: Identity, image_id: str) -> None:
        self.services.images.delete(identity, image_id)

    def images_zip(self, identity: Identity) -> ExportFile:
        """All my images (with their settings) as a zip under the data folder's exports/ (short-lived)."""
        return self.services.privacy.images_zip(identity)

    # -- privacy ----------------------------------------------------------------------------------
    def export(self, identity: Identity) -> ExportFile:
        """The privacy export: one zip with everything stored about this person."""
        return self.services.privacy.export(identity)

    def delete_account(self, identity: Identity) -> None:
        """Delete every row and file tied to this person and end all their sign-in sessions; only a keyed
        hash of the sign-in stays, for `privacy.closed_account_days` (no second sign-up grant)."""
        account = self._account(identity)
        for job in self.jobs(identity, limit=1000):
            if job.is_open:
                self.cancel(identity, job.id)
        self.services.sessions.close_all(account.provider, account.provider_user_id)
        self.services.sessions.remember_closed(account.provider, account.provider_user_id)
        self.services.privacy.delete_account(identity)

    def warm_up(self, model: bool | None = None) -> None:
        """Load the model and the safety models at start-up rather than on the first click. The model only
        where jobs run (`model=None`: when this process has a local worker; a web replica whose jobs run
        on Ray or in worker processes never loads it)."""
        if model if model is not None else getattr(self.worker, "runs_model", False):
            self.services.generator.load()
        self.services.safety.warm_up()

    def forget_export(self, identity: Identity, name: str) -> None:
        """Delete one of this person's zips now (the API hands the export over once)."""
        self.services.images.remove_exports(identity, name)

    def export_download(self, identity: Identity, name: str) -> tuple[ExportFile, Iterator[bytes]] | None:
        """One of this person's export or "download all" zips by file name and its bytes, while it is kept."""
        return self.services.images.export_chunks(identity, name)

    def policy_markdown(self) -> str:
        return policy_markdown(
            self.services.config, environ=self.services.environ,
            prompt_filter=self.services.safety.prompt_filter, image_filter=self.services.safety.image_filter,
            model=self.services.generator.config.model, cost_rule=self.services.cost_rule,
            marks=self.services.provenance.describe(),
        )

    def verify_image(self, data: bytes) -> Verdict:
        """Which AI marks an image file carries ("Check an image"); nothing of it is stored."""
        return self.services.provenance.verify(data)

    # -- the service's own upkeep and figures ----------------------------------------------------
    def stats(self) -> UsageStats:
        return self.services.usage.stats()

    def sweep(self) -> SweepReport:
        """Delete expired images, files, exports and history rows."""
        jobs = self.services.jobs.sweep()
        report = self.services.images.sweep()
        history = self.services.generation_log.sweep()
        self.services.sessions.sweep()
        self.services.idempotency.sweep()
        self.services.webhooks.sweep()
        self.services.allowance.sweep()
        return SweepReport(report.images, report.files, report.exports, history, jobs)

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
        self.services.webhooks.stop()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None
        self.services.db.dispose()

