"""Generation jobs in the database: submitted, served in fair turns, leased by a worker, ended once.

A job is one person's request from submission until it ends (queued → running → succeeded | failed |
cancelled). It holds the request's reservation; `Settlement` settles or releases it in the same
transaction that ends the job, and only the worker holding the job (or the recovery of an expired lease)
can end a running one, so whatever ends a job, it is settled exactly once.

Fair turns: a new job's `turn` is one more than its owner's last one, and never behind the turn being
served now. Served in (turn, created_at) order, that is round-robin across owners: a person with a long
queue delays someone else by at most one batch, and it works unchanged with several workers on one
database, since the order lives in the rows.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Connection

from nanobanana.errors import JobLimitReached, JobNotFound
from nanobanana.generation import Mode, Plan, Settings
from nanobanana.service.blobs import Blobs, LocalBlobs
from nanobanana.service.config import JobsConfig
from nanobanana.service.db import Database, jobs, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
OPEN_STATES = (QUEUED, RUNNING)
PROMPT_FIELDS = ("prompt", "negative_prompt")
# A claimed job handed back to the line, its turn kept (a stopping worker's, or one whose claim expired).
BACK_IN_LINE = {"state": QUEUED, "worker": None, "claimed_at": None, "started_at": None, "lease_until": None,
                "step": 0}
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # also a folder name under jobs/: nothing a path is made of
INPUTS_GRACE_SECONDS = 600  # an input folder without its row may belong to a submission in progress


def check_job_id(job_id: object) -> str:
    """A job id as we accept them (our own, or a caller's request id): letters, digits, - and _."""
    from nanobanana.errors import InvalidRequest

    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise InvalidRequest("A request id must be 1 to 32 letters, digits, '-' or '_'.")
    return job_id
ENDED_STATES = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Owner:
    """Whom a job's rows belong to, as stored (`Identity` answers the same questions for a live caller)."""

    kind: str
    owner_key: str

    @property
    def is_account(self) -> bool:
        return self.kind == "account"

    @property
    def key(self) -> str:
        return self.owner_key


@dataclass(frozen=True)
class Job:
    id: str
    owner: Owner
    state: str
    turn: int
    batch_key: str
    payer: str
    num_images: int
    per_image: int
    steps: int
    settings: dict[str, Any]
    inputs: int
    created_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    lease_until: datetime | None
    cancel_requested: bool
    step: int
    total_steps: int
    pending_files: list[str]
    outcome: str | None
    error: str | None
    message: str | None
    result: dict[str, Any]
    page: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def prompt(self) -> str:
        return str(self.settings.get("prompt", ""))

    def plan_settings(self) -> Settings:
        data = {k: v for k, v in self.settings.items() if k in Settings.__dataclass_fields__}
        data["seeds"] = data.get("seeds", ())
        for name in PROMPT_FIELDS:
            data.setdefault(name, "")  # an ended job no longer has them
        data["mode"], data["seeds"] = Mode(data["mode"]), tuple(data["seeds"])
        return Settings(**data)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.settings.get("warnings", ()))


def _job(row: sa.Row) -> Job:
    return Job(
        id=row.id, owner=Owner(row.owner_kind, row.owner_key), state=row.state, turn=int(row.turn),
        batch_key=row.batch_key, payer=row.payer, num_images=int(row.num_images), per_image=int(row.per_image),
        steps=int(row.steps), settings=dict(row.settings or {}), inputs=int(row.inputs or 0),
        created_at=row.created_at, claimed_at=row.claimed_at, started_at=row.started_at,
        finished_at=row.finished_at, worker=row.worker, lease_until=row.lease_until,
        cancel_requested=bool(row.cancel_requested), step=int(row.step or 0), total_steps=int(row.total_steps or 0),
        pending_files=list(row.pending_files or []), outcome=row.outcome, error=row.error, message=row.message,
        result=dict(row.result or {}), page=row.page,
    )


def _without_quotes(result: dict[str, Any], prompts: list[str]) -> dict[str, Any]:
    """A job's result without the messages that quote its prompt (a truncation notice does)."""
    quoted = [p[:40] for p in prompts if len(p) >= 4]

    def clean(messages: Any) -> list[str]:
        return [m for m in messages or [] if not any(q in str(m) for q in quoted)]

    out = dict(result)
    out["messages"] = clean(result.get("messages"))
    if isinstance(result.get("generation"), dict):
        out["generation"] = {**result["generation"], "warnings": clean(result["generation"].get("warnings"))}
    return out


def batch_key(plan: Plan, model_id: str) -> str:
    """Jobs with the same key can share one pipeline call: same model, mode, pipeline, size, steps,
    guidance, scheduler and strength (prompts, negative prompts, seeds and image counts may differ).
    A job with more than one input image runs alone, and so does a job for a remote model (each image is
    its own API call there, and one job's refusal must not end another's)."""
    s = plan.settings
    if len(plan.images) > 1 or s.pipeline.startswith("remote"):
        return f"alone:{secrets.token_hex(8)}"
    parts = [model_id, s.mode.value, s.pipeline, f"{s.width}x{s.height}", str(s.steps), f"{s.guidance:g}",
             s.scheduler, "" if s.strength is None else f"{s.strength:g}", str(len(plan.images))]
    return json.dumps(parts)[:255]


def pick_batch(queue: Sequence[Job], max_images: int) -> list[Job]:
    """The next batch from a queue in serving order: its head, then every later compatible job that
    still fits in `max_images` (a head larger than that runs alone)."""
    if not queue:
        return []
    head = queue[0]
    batch, images = [head], head.num_images
    for job in queue[1:]:
        if job.batch_key == head.batch_key and images + job.num_images <= max_images:
            batch.append(job)
            images += job.num_images
    return batch


@dataclass(frozen=True)
class Place:
    """Where a queued job stands: jobs ahead of it and the image-steps they (and the running ones) need."""

    ahead: int
    work_ahead: int  # image-steps in front of it, the running batch's remaining ones included


class JobStore:
    """The jobs table, its input images under `<data_dir>/jobs/`, and the queries the worker needs."""

    def __init__(self, db: Database, config: JobsConfig, data_dir: Path, blobs: Blobs | None = None) -> None:
        self.db = db
        self.config = config
        # `<data_dir>/jobs/<id>/<n>.png`, or `jobs/<id>/<n>.png` in the shared object store: a worker on
        # another machine reads a job's inputs from there.
        self.input_blobs = blobs if blobs is not None else LocalBlobs(data_dir / "jobs")
        self.inputs_dir = self.input_blobs.root if isinstance(self.input_blobs, LocalBlobs) else None

    # -- submitting ---------------------------------------------------------------------------------
    def add(self, conn: Connection, *, job_id: str, owner: Owner, plan: Plan, key: str, payer: str,
            per_image: int, page: str | None = None, model: str = "", timings: dict[str, float] | None = None
            ) -> int:
        """Insert a queued job in the caller's transaction (the one that reserves its cost); returns its
        turn. Raises `JobLimitReached` when the owner already has `max_open_per_person` open jobs."""
        mine = (jobs.c.owner_kind == owner.kind, jobs.c.owner_key == owner.owner_key)
        if conn.dialect.name == "postgresql":  # one submission per person at a time: the cap and turns hold
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": owner.owner_key})
        open_now = conn.execute(
            sa.select(sa.func.count()).select_from(jobs).where(*mine, jobs.c.state.in_(OPEN_STATES))
        ).scalar_one()
        cap = self.config.max_open_per_person
        if open_now >= cap:
            raise JobLimitReached(
                f"You already have {open_now} requests waiting or running (at most {cap} at a time). "
                "Wait for one to finish or cancel one, then try again."
            )
        serving = conn.execute(
            sa.select(sa.func.max(jobs.c.turn)).where(jobs.c.claimed_at.is_not(None))
        ).scalar()
        # The owner's last turn: open jobs and ones that were served (not those cancelled while waiting).
        last = conn.execute(sa.select(sa.func.max(jobs.c.turn)).where(
            *mine, sa.or_(jobs.c.state.in_(OPEN_STATES), jobs.c.claimed_at.is_not(None)))).scalar()
        turn = max(int(serving or 0), -1 if last is None else int(last) + 1)
        settings = plan.settings.to_dict()
        settings["warnings"] = list(plan.warnings)
        settings["model"] = model
        settings["timings"] = timings or {}
        conn.execute(jobs.insert().values(
            id=check_job_id(job_id), owner_kind=owner.kind, owner_key=owner.owner_key, page=page, state=QUEUED,
            turn=turn, model=model[:255],
            batch_key=key, payer=payer, num_images=plan.settings.num_images, per_image=per_image,
            steps=plan.settings.steps, settings=settings, inputs=len(plan.images), created_at=utcnow(),
            cancel_requested=False, step=0, total_steps=plan.settings.steps,
        ))
        return turn

    def save_inputs(self, job_id: str, images: Iterable[Image.Image]) -> None:
        """Keep a job's input images until it ends, so any worker (or this one after a restart) can run it.
        Raises `FileExistsError` when some exist: that id is someone's job already."""
        if self.input_blobs.list(f"{check_job_id(job_id)}/"):
            raise FileExistsError(job_id)
        for i, image in enumerate(images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=1)
            self.input_blobs.put(f"{job_id}/{i}.png", buffer.getvalue())

    def load_inputs(self, job: Job) -> tuple[Image.Image, ...]:
        loaded = []
        for i in range(job.inputs):
            with Image.open(io.BytesIO(self.input_blobs.get(f"{job.id}/{i}.png"))) as image:
                image.load()
                loaded.append(image.copy())
        return tuple(loaded)

    def remove_inputs(self, job_id: str) -> None:
        self.input_blobs.delete([b.key for b in self.input_blobs.list(f"{check_job_id(job_id)}/")])

    # -- reading ------------------------------------------------------------------------------------
    def get(self, job_id: str, conn: Connection | None = None) -> Job | None:
        with self.db.transaction(conn) as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return _job(row) if row else None

    def owned(self, owner: Owner, job_id: str) -> Job:
        """One of this owner's jobs; `JobNotFound` for anything else."""
        job = self.get(job_id) if isinstance(job_id, str) and len(job_id) <= 64 else None
        if job is None or job.owner != owner:
            raise JobNotFound("There is no such request (it may have ended a while ago).")
        return job

    def of_owner(self, owner: Owner, *, page: str | None = None, open_only: bool = False,
                 limit: int = 50) -> list[Job]:
        query = sa.select(jobs).where(jobs.c.owner_kind == owner.kind, jobs.c.owner_key == owner.owner_key)
        if page is not None:
            query = query.where(jobs.c.page == page)
        if open_only:
            query = query.where(jobs.c.state.in_(OPEN_STATES))
        with self.db.transaction() as c:
            rows = c.execute(query.order_by(jobs.c.created_at.desc()).limit(limit)).all()
        return [_job(r) for r in rows]

    def queued(self, model: str | None = None, limit: int = 500) -> list[Job]:
        """Queued jobs in serving order (for one model, when given)."""
        query = sa.select(jobs).where(jobs.c.state == QUEUED)
        if model is not None:
            query = query.where(jobs.c.model == model[:255])
        with self.db.transaction() as c:
            rows = c.execute(query.order_by(jobs.c.turn, jobs.c.created_at, jobs.c.id).limit(limit)).all()
        return [_job(r) for r in rows]

    def place(self, job: Job) -> Place:
        """How many queued jobs are served before `job`, and the work in front of it."""
        ahead_of = sa.or_(
            jobs.c.turn < job.turn,
            sa.and_(jobs.c.turn == job.turn, jobs.c.created_at < job.created_at),
            sa.and_(jobs.c.turn == job.turn, jobs.c.created_at == job.created_at, jobs.c.id < job.id),
        )
        work = jobs.c.num_images * jobs.c.steps
        with self.db.transaction() as c:
            ahead, queued_work = c.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(work), 0))
                .where(jobs.c.state == QUEUED, ahead_of)
            ).one()
            running = c.execute(
                sa.select(sa.func.coalesce(sa.func.sum(jobs.c.num_images * (jobs.c.total_steps - jobs.c.step)), 0))
                .where(jobs.c.state == RUNNING)
            ).scalar_one()
        return Place(int(ahead), int(queued_work) + max(0, int(running)))

    def seconds_per_image_step(self, recent: int = 20) -> float | None:
        """The workers' measured speed: pipeline seconds per image and step over the last batches."""
        with self.db.transaction() as c:
            rows = c.execute(
                sa.select(jobs.c.run_seconds, jobs.c.batch_images, jobs.c.steps)
                .where(jobs.c.run_seconds.is_not(None), jobs.c.batch_images > 0)
                .order_by(jobs.c.finished_at.desc()).limit(recent)
            ).all()
        rates = sorted(r.run_seconds / (r.batch_images * max(1, r.steps)) for r in rows)
        return rates[len(rates) // 2] if rates else None

    # -- the worker's side ----------------------------------------------------------------------------
    def claim(self, job_ids: Sequence[str], worker: str) -> list[Job]:
        """Take queued jobs for `worker`; returns those it got (another worker may have been faster)."""
        now = utcnow()
        lease = now + timedelta(seconds=self.config.lease_seconds)
        with self.db.transaction() as c:
            got = list(c.execute(
                jobs.update().where(jobs.c.id.in_(list(job_ids)), jobs.c.state == QUEUED)
                .values(state=RUNNING, worker=worker, claimed_at=now, lease_until=lease)
                .returning(jobs.c.id)
            ).scalars())
            rows = c.execute(sa.select(jobs).where(jobs.c.id.in_(got))).all() if got else []
        order = {job_id: i for i, job_id in enumerate(job_ids)}
        return sorted((_job(r) for r in rows), key=lambda j: order[j.id])

    def mark_started(self, job_ids: Sequence[str], worker: str) -> set[str]:
        """Note that the pipeline call begins; returns the ids still held by `worker`."""
        with self.db.transaction() as c:
            return set(c.execute(
                jobs.update().where(jobs.c.id.in_(list(job_ids)), jobs.c.worker == worker, jobs.c.state == RUNNING)
                .values(started_at=utcnow()).returning(jobs.c.id)
            ).scalars())

    def release(self, batch: Sequence[Job], worker: str) -> int:
        """Hand a batch this worker will not finish (it is stopping) back to the line, turns kept."""
        with self.db.transaction() as c:
            return c.execute(
                jobs.update().where(jobs.c.id.in_([j.id for j in batch]), jobs.c.worker == worker,
                                    jobs.c.state == RUNNING)
                .values(**BACK_IN_LINE)
            ).rowcount

    def set_pending_files(self, job_id: str, worker: str, image_ids: list[str]) -> None:
        """Say which image files are about to be written for a job, so a crash cannot leave them behind."""
        with self.db.transaction() as c:
            c.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.worker == worker)
                      .values(pending_files=image_ids))

    def renew(self, worker: str, job_ids: Iterable[str], progress: dict[str, tuple[int, int]]) -> set[str]:
        """Extend the lease on the jobs this worker is working on and record their progress; returns the
        ids of those whose owner asked to cancel. (Only those: a job it claimed and lost track of must
        expire, so that recovery ends it.)"""
        lease = utcnow() + timedelta(seconds=self.config.lease_seconds)
        ids = list(job_ids)
        with self.db.transaction() as c:
            c.execute(jobs.update().where(jobs.c.worker == worker, jobs.c.state == RUNNING, jobs.c.id.in_(ids))
                      .values(lease_until=lease))
            for job_id, (step, total) in progress.items():
                c.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.worker == worker)
                          .values(step=step, total_steps=total))
            return set(c.execute(
                sa.select(jobs.c.id).where(jobs.c.worker == worker, jobs.c.state == RUNNING, jobs.c.id.in_(ids),
                                           jobs.c.cancel_requested.is_(True))
            ).scalars())

    def end(self, conn: Connection, job_id: str, state: str, *, worker: str | None = None,
            from_states: Sequence[str] = (RUNNING,), outcome: str | None = None, error: str | None = None,
            message: str | None = None, result: dict[str, Any] | None = None, batch_images: int | None = None,
            run_seconds: float | None = None, lease_expired: bool = False) -> bool:
        """End a job in the caller's transaction, if it is still in `from_states` (and held by `worker`,
        when given; with its lease run out, for `lease_expired`). False: something else ended it first (or
        its worker renewed the lease), and the caller must roll back its settlement."""
        query = jobs.update().where(jobs.c.id == job_id, jobs.c.state.in_(list(from_states)))
        if worker is not None:
            query = query.where(jobs.c.worker == worker)
        if lease_expired:
            query = query.where(jobs.c.lease_until < utcnow())
        # An ended job forgets its prompts: the stored images and an account's history keep them, for
        # as long as those are kept and no longer. Messages that quote the prompt go with it.
        settings = conn.execute(sa.select(jobs.c.settings).where(jobs.c.id == job_id)).scalar() or {}
        prompts = [str(settings.get(k) or "") for k in PROMPT_FIELDS]
        scrubbed = {k: v for k, v in settings.items() if k not in (*PROMPT_FIELDS, "warnings")}
        if result is not None:
            result = _without_quotes(result, prompts)
        done = conn.execute(query.values(
            state=state, finished_at=utcnow(), lease_until=None, outcome=outcome, error=error,
            message=message, result=result, batch_images=batch_images, run_seconds=run_seconds,
            pending_files=None, settings=scrubbed,
        )).rowcount
        return bool(done)

    def cancel_asked(self, conn: Connection, job_id: str) -> bool:
        """In the settling transaction: did the owner ask to cancel this running job?"""
        return bool(conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar())

    def request_cancel(self, job_id: str) -> None:
        with self.db.transaction() as c:
            c.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.state == RUNNING)
                      .values(cancel_requested=True))

    def expired(self) -> list[Job]:
        """Running jobs whose worker stopped renewing its lease: its process died."""
        with self.db.transaction() as c:
            rows = c.execute(
                sa.select(jobs).where(jobs.c.state == RUNNING, jobs.c.lease_until < utcnow())
            ).all()
        return [_job(r) for r in rows]

    def requeue(self, job: Job) -> bool:
        """Put a claimed job that never started back in line, keeping its turn."""
        with self.db.transaction() as c:
            return bool(c.execute(
                jobs.update().where(jobs.c.id == job.id, jobs.c.state == RUNNING, jobs.c.started_at.is_(None),
                                    jobs.c.lease_until < utcnow())
                .values(**BACK_IN_LINE)
            ).rowcount)

    # -- upkeep ---------------------------------------------------------------------------------------
    def sweep(self, now: datetime | None = None) -> int:
        """Forget ended jobs after `keep_finished_minutes` (accounts keep their history elsewhere)."""
        cutoff = (now or utcnow()) - timedelta(minutes=self.config.keep_finished_minutes)
        with self.db.transaction() as c:
            ended = list(c.execute(sa.select(jobs.c.id).where(
                jobs.c.state.in_(ENDED_STATES), jobs.c.finished_at < cutoff)).scalars())
            if ended:
                c.execute(jobs.delete().where(jobs.c.id.in_(ended)))
        for job_id in ended:
            self.remove_inputs(job_id)
        # Input folders of jobs that no longer exist (a crash between ending a job and removing them); a
        # young one may belong to a submission whose row is not committed yet.
        with self.db.transaction() as c:
            known = set(c.execute(sa.select(jobs.c.id)).scalars())
        cutoff = time.time() - INPUTS_GRACE_SECONDS
        stray = [b.key for b in self.input_blobs.list() if b.key.split("/", 1)[0] not in known and b.modified < cutoff]
        self.input_blobs.delete(stray)
        if self.inputs_dir is not None:  # folders left empty
            for folder in self.inputs_dir.iterdir():
                if folder.is_dir() and folder.name not in known and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
        return len(ended)

    def delete_owner(self, owner: Owner, conn: Connection) -> list[str]:
        """Remove every job of this owner (caller's transaction); returns their ids (for input folders)."""
        mine = (jobs.c.owner_kind == owner.kind, jobs.c.owner_key == owner.owner_key)
        ids = list(conn.execute(sa.select(jobs.c.id).where(*mine)).scalars())
        conn.execute(jobs.delete().where(*mine))
        return ids
