"""How a job ends: its images checked, stored and paid for, or its reservation released, exactly once.

`complete` runs the per-job half of the request path after the pipeline call: image safety per image →
write the files (their ids noted on the job first, so a crash cannot orphan them) → one transaction
that records the images, makes room, settles the payer, writes the history and usage rows and ends the
job. `fail` releases the reservation and ends the job in one transaction. Both end the job only if it
is still where the caller expects it (`JobStore.end`); if something else ended it first (a cancel, the
recovery of an expired lease), the transaction rolls back and nothing is paid or refunded twice.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nanobanana.errors import GenerationCancelled, NanobananaError, ServiceError, outcome_of
from nanobanana.generation import GenerationResult
from nanobanana.provenance import Origin
from nanobanana.safety.gate import all_blocked_error
from nanobanana.service.db import utcnow
from nanobanana.service.images import settings_text
from nanobanana.service.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job, JobStore
from nanobanana.service.payment import AllowancePayer, CreditsPayer, Payer, Reservation
from nanobanana.service.usage import UsageEvent

if TYPE_CHECKING:
    from nanobanana.service.build import Services

log = logging.getLogger(__name__)


class _AlreadyEnded(Exception):
    """Raised inside a settlement transaction to roll it back: the job had ended meanwhile."""


@dataclass
class Completed:
    """What `complete` made of one job (the waiter in this process gets it without a database read)."""

    image_ids: list[str]
    kept: list[int]  # which of the job's generated images these are
    blocked: int
    charged: int
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def cancelled_by_owner() -> GenerationCancelled:
    """How a job its owner cancelled while it ran ends (one queued ends before it starts: see `Studio`)."""
    return GenerationCancelled("Cancelled; nothing was charged.")


def user_message(exc: BaseException) -> str:
    if isinstance(exc, NanobananaError):
        return str(exc)
    return f"Something went wrong on our side ({type(exc).__name__}); nothing was charged. Try again."


class Settlement:
    def __init__(self, services: Services, jobs: JobStore) -> None:
        self.services = services
        self.jobs = jobs

    def payer(self, job: Job) -> Payer:
        s = self.services
        if job.payer == "credits":
            return CreditsPayer(s.ledger, s.cost_rule, job.owner.owner_key)
        return AllowancePayer(s.allowance, None)

    @staticmethod
    def reservation(job: Job) -> Reservation:
        return Reservation(job.id, job.num_images, job.per_image)

    def _event(self, job: Job, outcome: str, timings: dict[str, float]) -> UsageEvent:
        settings = job.settings
        event = UsageEvent(mode=settings.get("mode", ""), model=settings.get("model", self.services.generator.model_id),
                           aspect_ratio=settings.get("aspect_ratio", ""), steps=job.steps,
                           num_images=job.num_images, outcome=outcome)
        event.timings = {**settings.get("timings", {}), **timings,
                         "total": _seconds_between(job.created_at, utcnow())}
        return event

    def origin(self, job: Job, result: GenerationResult) -> Origin:
        """What the images' manifests say made them; an edit's inputs are named by their pixels' hash."""
        parents = self.jobs.load_inputs(job) if job.inputs else ()
        return Origin(mode=result.settings.mode.value, model_id=result.model_id, parents=tuple(parents),
                      prompt=result.settings.prompt)

    # -- success ---------------------------------------------------------------------------------------
    def complete(self, job: Job, result: GenerationResult, worker: str, *, batch_images: int,
                 run_seconds: float) -> Completed | BaseException:
        """Check, store and pay for one job's images and end it; returns what it made, or the error it
        ended with (already settled as a failure)."""
        s = self.services
        timings: dict[str, float] = {"queue": _seconds_between(job.created_at, job.claimed_at),
                                     "generate": run_seconds}
        files: list = []
        try:
            t = time.perf_counter()
            verdicts = s.safety.image_verdicts(result.images)
            kept = [i for i, verdict in enumerate(verdicts) if verdict.allowed]
            timings["image_safety"] = time.perf_counter() - t
            if not kept:
                raise all_blocked_error(verdicts, result.settings.mode)
            t = time.perf_counter()
            ids = [secrets.token_urlsafe(24) for _ in kept]
            self.jobs.set_pending_files(job.id, worker, ids)
            stamp = s.provenance.stamp(self.origin(job, result))
            settings = result.settings.to_dict()
            settings["model"] = result.model_id
            texts = None
            if job.owner.is_account and s.accounts.get(job.owner.owner_key).embed_settings:
                texts = [settings_text(result.settings.prompt, settings, result.seeds[i], result.model_id)
                         for i in kept]
            files = s.images.write_files([result.images[i] for i in kept], ids=ids, texts=texts, stamp=stamp)
            payer, reservation = self.payer(job), self.reservation(job)
            settings["provenance"] = stamp.record()
            charged = payer.charged(reservation, len(kept))
            blocked = len(result.images) - len(kept)
            messages = list(result.warnings)
            if blocked:
                messages.append(f"{blocked} of the {len(result.images)} images made {'were' if blocked > 1 else 'was'} "
                                f"withheld by the image filter (the result, not your prompt) {payer.withheld_note}")
            with s.db.transaction() as conn:
                if self.jobs.cancel_asked(conn, job.id):  # its owner cancelled while it was being checked
                    raise cancelled_by_owner()
                s.images.record(conn, job.owner, files, request_id=job.id, prompt=result.settings.prompt,
                                settings=settings, seeds=[result.seeds[i] for i in kept])
                eviction = s.images.make_room(conn, job.owner, keep=[f.id for f in files])
                if eviction.message():
                    messages.append(eviction.message())
                payer.settle(reservation, len(kept), conn)
                if payer.account_id is not None:
                    s.generation_log.record(
                        conn, payer.account_id, request_id=job.id, prompt=result.settings.prompt,
                        settings=settings, model=result.model_id, outcome="ok", images=len(kept), charged=charged,
                    )
                timings["store"] = time.perf_counter() - t
                event = self._event(job, "ok", timings)
                event.images_stored, event.images_blocked = len(kept), blocked
                s.usage.record(event, conn)
                done = Completed([f.id for f in files], kept, blocked, charged, messages, event.timings)
                if not self.jobs.end(conn, job.id, SUCCEEDED, worker=worker, outcome="ok", result={
                    "images": done.image_ids, "blocked": blocked, "charged": charged, "messages": messages,
                    "timings": event.timings,
                    "generation": {k: v for k, v in result.to_dict().items() if k != "settings"},
                }, batch_images=batch_images, run_seconds=run_seconds):
                    raise _AlreadyEnded
        except _AlreadyEnded:
            s.images.remove_files(f.id for f in files)
            self.jobs.remove_inputs(job.id)
            return ServiceError("This request was ended elsewhere (cancelled or recovered); nothing was charged.")
        except BaseException as exc:
            s.images.remove_files(f.id for f in files)
            self.fail(job, exc, worker=worker, timings=timings, batch_images=batch_images, run_seconds=run_seconds)
            if not isinstance(exc, Exception):
                raise
            return exc
        s.usage.observe(event)
        s.images.remove_files(eviction.ids)
        payer.after_commit(reservation, len(kept))
        self.jobs.remove_inputs(job.id)
        return done

    # -- failure, cancel, recovery ------------------------------------------------------------------
    def fail(self, job: Job, exc: BaseException, *, worker: str | None = None, from_states=(RUNNING,),
             expired_only: bool = False, timings: dict[str, float] | None = None,
             batch_images: int | None = None, run_seconds: float | None = None) -> bool:
        """Release the job's reservation and end it as failed (or cancelled); False if it had already
        ended. Never raises for the job's own error; logs what it could not do."""
        s = self.services
        outcome = outcome_of(exc)
        state = CANCELLED if outcome == "cancelled" else FAILED
        if not isinstance(exc, NanobananaError) and isinstance(exc, Exception):
            log.error("request failed unexpectedly (%s)", type(exc).__name__, exc_info=exc)
        payer, reservation = self.payer(job), self.reservation(job)
        event = self._event(job, outcome, timings or {})
        for with_history in (True, False):  # the history row is the one part a failure may go without
            try:
                with s.db.transaction() as conn:
                    if not self.jobs.end(conn, job.id, state, worker=worker, from_states=from_states,
                                         outcome=outcome, error=type(exc).__name__, message=user_message(exc),
                                         batch_images=batch_images, run_seconds=run_seconds,
                                         lease_expired=expired_only):
                        raise _AlreadyEnded
                    try:
                        payer.release(reservation, outcome, conn)
                    except NanobananaError:
                        log.info("no reservation to release for a %s request (account deleted?)", outcome)
                    if with_history and payer.account_id is not None and s.accounts.exists(payer.account_id, conn):
                        s.generation_log.record(
                            conn, payer.account_id, request_id=job.id, prompt=job.prompt,
                            settings={k: v for k, v in job.settings.items() if k != "timings"},
                            model=job.settings.get("model", s.generator.model_id), outcome=outcome, images=0,
                            charged=0,
                        )
                    s.usage.record(event, conn)
                break
            except _AlreadyEnded:
                return False
            except Exception:
                log.exception("could not settle a failed request%s", "" if with_history else " (even without "
                              "its history row)")
                if not with_history:
                    return False
        s.usage.observe(event)
        s.images.remove_files(job.pending_files)
        self.jobs.remove_inputs(job.id)
        return True


def _seconds_between(start: Any, end: Any) -> float:
    if start is None or end is None:
        return 0.0
    return max(0.0, (end - start).total_seconds())

