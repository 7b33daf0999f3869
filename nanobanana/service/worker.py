"""The job worker: takes queued jobs in fair order, runs compatible ones as one pipeline call, and ends
each through `Settlement`.

By default one worker thread runs next to the app (`jobs.worker: local`). It

- picks the next batch: the first job in (turn, created_at) order and every later queued job with the
  same batch key, up to `max_batch_images` images. When the worker was idle and that leaves room, it waits
  up to `batch_wait_ms` after the first job arrived, so that requests sent together run together;
- claims the batch with a conditional update, so two workers on one database never run the same job;
- renews a lease on its running jobs from a heartbeat thread, which also records progress and picks up
  cancels asked for by other processes. A cancelled job in a shared batch loses only its own images; a
  batch whose jobs are all cancelled stops at the next denoising step;
- recovers at start and every lease period: running jobs whose lease expired (their process died) are
  failed and their reservations released, or put back in line if their pipeline call never started.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from nanobanana.errors import GenerationCancelled, GenerationFailed, JobInterrupted
from nanobanana.generation import Plan
from nanobanana.service.db import utcnow
from nanobanana.service.jobs import Job, JobStore, pick_batch
from nanobanana.service.settlement import Completed, Settlement, cancelled_by_owner

if TYPE_CHECKING:
    from nanobanana.service.build import Services

log = logging.getLogger(__name__)


@dataclass
class _Local:
    """A job submitted in this process: its plan (inputs decoded once) and how it is going."""

    plan: Plan
    step: tuple[int, int] = (0, 0)
    ended: Completed | BaseException | None = None
    kept_images: list[Any] = field(default_factory=list)


class LocalJobs:
    """Jobs submitted in this process, so their waiters hear of progress and ends without polling."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Local] = {}
        self._changed = threading.Condition()

    def add(self, job_id: str, plan: Plan) -> bool:
        """Follow a job submitted here; False if one with this id is followed already (a retry)."""
        with self._changed:
            if job_id in self._jobs:
                return False
            self._jobs[job_id] = _Local(plan)
            return True

    def plan(self, job_id: str) -> Plan | None:
        local = self._jobs.get(job_id)
        return local.plan if local else None

    def get(self, job_id: str) -> _Local | None:
        return self._jobs.get(job_id)

    def progress(self, job_ids: list[str], step: int, total: int) -> None:
        with self._changed:
            for job_id in job_ids:
                if job_id in self._jobs:
                    self._jobs[job_id].step = (step, total)
            self._changed.notify_all()

    def ended(self, job_id: str, outcome: Completed | BaseException, images: list[Any] | None = None) -> None:
        with self._changed:
            local = self._jobs.get(job_id)
            if local is not None:
                local.ended, local.kept_images = outcome, images or []
            self._changed.notify_all()

    def forget(self, job_id: str) -> None:
        with self._changed:
            self._jobs.pop(job_id, None)

    def wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)


class Worker:
    """Runs queued jobs in this process (see the module docstring)."""

    runs_model = True  # the model is loaded in this process

    def __init__(self, services: Services, jobs: JobStore, settlement: Settlement, local: LocalJobs | None = None
                 ) -> None:
        self.services = services
        self.jobs = jobs
        self.settlement = settlement
        self.local = local or LocalJobs()
        self.config = services.config.jobs
        self.id = f"{socket.gethostname()[:30]}-{os.getpid()}-{secrets.token_hex(4)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_leases = threading.Event()  # set last: leases are renewed until everything is handed back
        self._threads: list[threading.Thread] = []
        # Batches whose images are being checked and stored, while the next batch runs on the model.
        self._finishing: queue.Queue | None = None
        self._finishing_ids: set[str] = set()
        self._lock = threading.Lock()
        self._running: list[str] = []  # ids of the batch being run
        self._cancelled: set[str] = set()
        self._cancel_batch = threading.Event()
        self._progress: dict[str, tuple[int, int]] = {}
        self._last_recovery = 0.0

    # -- life -----------------------------------------------------------------------------------------
    def start(self, take_jobs: bool = True) -> None:
        """Recover, then run the loop that takes jobs, the lease heartbeat and the finisher.
        `take_jobs=False` (a Ray Serve replica, which is handed its batches): the heartbeat only; each
        batch is finished before `run` returns."""
        if self._threads:
            return
        self.recover()
        threads: tuple = (("nanobanana-lease", self._heartbeat),)
        if take_jobs:
            self._finishing = queue.Queue(maxsize=2)
            threads += (("nanobanana-worker", self._loop), ("nanobanana-finisher", self._finisher))
        for name, target in threads:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10) -> None:
        """Stop taking jobs. The batch on the model is interrupted and its jobs go back in line (another
        worker, or this one after a restart, runs them); batches already made are finished first."""
        self._stop.set()
        self._wake.set()
        self._cancel_batch.set()
        threads = {thread.name: thread for thread in self._threads}
        if "nanobanana-worker" in threads:
            threads["nanobanana-worker"].join(timeout=timeout)
        if self._finishing is not None and "nanobanana-finisher" in threads:
            self._finishing.put(None)  # after what is still being finished
            threads["nanobanana-finisher"].join(timeout=timeout)
        self._stop_leases.set()
        if "nanobanana-lease" in threads:
            threads["nanobanana-lease"].join(timeout=timeout)
        self._threads = []
        self._finishing = None

    def wake(self) -> None:
        """A job was queued in this process: look now rather than at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop a job this worker is running (its owner asked): its images are dropped."""
        with self._lock:
            if job_id in self._running:
                self._cancelled.add(job_id)
                if set(self._running) <= self._cancelled:
                    self._cancel_batch.set()

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_recovery > self.config.lease_seconds:
                    self.recover()
                if not self.run_once():
                    self._wake.wait(self.config.poll_seconds)
            except Exception:
                log.exception("the job worker hit an error; it goes on")
                self._stop.wait(1.0)

    def run_once(self) -> list[Job]:
        """Claim the next batch and run it; returns it (empty: nothing was queued)."""
        batch = self._next_batch()
        if batch:
            self.run(batch)
        return batch

    def _next_batch(self) -> list[Job]:
        batch = self._pick()
        return self.jobs.claim([j.id for j in batch], self.id) if batch else []

    def _queued(self) -> list[Job]:
        return self.jobs.queued(model=self.services.generator.model_id)

    def _pick(self) -> list[Job]:
        """The next batch in fair order, not yet claimed (after the batch window, when there is room)."""
        self._wake.clear()
        if self._stop.is_set():
            return []
        batch = pick_batch(self._queued(), self.config.max_batch_images)
        if not batch:
            return []
        # A batch with room, whose first job has just arrived: let requests sent at the same time join it.
        window = self.config.batch_wait_ms / 1000
        deadline = time.monotonic() + window - (utcnow() - batch[0].created_at).total_seconds()
        while sum(j.num_images for j in batch) < self.config.max_batch_images and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wake.clear()
            self._wake.wait(left)
            batch = pick_batch(self._queued(), self.config.max_batch_images) or batch
        if self._stop.is_set():
            return []
        return batch

    def run(self, batch: list[Job]) -> None:
        """Run one claimed batch as one pipeline call and end each of its jobs."""
        log.info("worker %s runs a batch of %d job(s): %s", self.id, len(batch), " ".join(j.id for j in batch))
        plans: list[Plan] = []
        runnable: list[Job] = []
        for job in batch:
            try:
                plans.append(self.local.plan(job.id) or Plan(job.plan_settings(), self.jobs.load_inputs(job),
                                                             job.warnings))
                runnable.append(job)
            except Exception as exc:  # its inputs are gone (a data folder restored without them)
                self.settlement.fail(job, exc, worker=self.id)
                self._end(job, exc)
        if not runnable:
            return
        ids = [job.id for job in runnable]
        with self._lock:
            self._running, self._cancelled = ids, set()
            if not self._stop.is_set():
                self._cancel_batch.clear()
        try:
            # Only jobs still ours: one held past its lease may have been recovered and run elsewhere.
            started = self.jobs.mark_started(ids, self.id)
            kept = [(job, plan) for job, plan in zip(runnable, plans, strict=True) if job.id in started]
            if not kept:
                return
            runnable, plans = [job for job, _ in kept], [plan for _, plan in kept]
            images = sum(job.num_images for job in runnable)
            self._execute(runnable, plans, images)
        finally:
            with self._lock:
                self._running = []
                for job_id in ids:
                    self._progress.pop(job_id, None)

    def _execute(self, batch: list[Job], plans: list[Plan], images: int) -> None:
        def on_step(step: int, total: int) -> None:
            with self._lock:
                for job in batch:
                    self._progress[job.id] = (step, total)
            self.local.progress([job.id for job in batch], step, total)

        started = time.perf_counter()
        try:
            results = self.services.generator.run_batch(plans, on_step=on_step, cancel=self._cancel_batch)
        except GenerationFailed:
            if len(batch) == 1 or self._cancel_batch.is_set():
                self._fail_all(batch, sys.exc_info()[1], images, time.perf_counter() - started)
                return
            # One request can break a shared call (a prompt that trips the model): each runs alone, so
            # only that one fails.
            log.warning("a batch of %d requests failed; running each alone", len(batch))
            for job, plan in zip(batch, plans, strict=True):
                self._execute([job], [plan], job.num_images)
            return
        except GenerationCancelled as exc:
            if self._stop.is_set():  # the worker is stopping, nobody cancelled: back in line
                handed_back = self.jobs.release(batch, self.id)
                log.info("stopping: %d job(s) went back in line", handed_back)
                return
            self._fail_all(batch, exc, images, time.perf_counter() - started)
            return
        except BaseException as exc:
            self._fail_all(batch, exc, images, time.perf_counter() - started)
            if not isinstance(exc, Exception):
                raise
            return
        seconds = time.perf_counter() - started
        cancelled = set(self._cancelled)
        finishing = self._finishing
        if finishing is not None:  # the worker thread goes on to the next batch meanwhile
            with self._lock:
                self._finishing_ids.update(job.id for job in batch)
            finishing.put((batch, results, cancelled, images, seconds))
        else:
            self._finish(batch, results, cancelled, images, seconds)

    def _finisher(self) -> None:
        assert self._finishing is not None
        finishing = self._finishing
        while (item := finishing.get()) is not None:
            batch = item[0]
            try:
                self._finish(*item)
            except BaseException:  # the finisher must outlive any one batch
                log.exception("could not finish a batch")
            finally:
                with self._lock:
                    self._finishing_ids.difference_update(job.id for job in batch)

    def _finish(self, batch: list[Job], results: list[Any], cancelled: set[str], images: int,
                seconds: float) -> None:
        """Image safety, storage and settlement, per job; the smallest first (a one-image request that
        shared a call with a four-image one is not kept waiting for its checks)."""
        for job, result in sorted(zip(batch, results, strict=True), key=lambda pair: pair[0].num_images):
            try:
                if job.id in cancelled:
                    reason = cancelled_by_owner()
                    self.settlement.fail(job, reason, worker=self.id, batch_images=images, run_seconds=seconds)
                    self._end(job, reason)
                    continue
                outcome = self.settlement.complete(job, result, self.id, batch_images=images, run_seconds=seconds)
                kept = [result.images[i] for i in outcome.kept] if isinstance(outcome, Completed) else []
                self._end(job, outcome, kept)
            except Exception as exc:  # one job's trouble ends that job, not the rest of its batch
                log.exception("could not finish a job")
                self.settlement.fail(job, exc, worker=self.id, batch_images=images, run_seconds=seconds)
                self._end(job, exc)

    def _fail_all(self, batch: list[Job], exc: BaseException | None, images: int, seconds: float) -> None:
        for job in batch:
            reason = cancelled_by_owner() if job.id in self._cancelled else exc
            self.settlement.fail(job, reason, worker=self.id, batch_images=images, run_seconds=seconds)
            self._end(job, reason)

    def _end(self, job: Job, outcome: Completed | BaseException, images: list[Any] | None = None) -> None:
        self.local.ended(job.id, outcome, images)

    # -- leases ---------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        every = min(1.0, self.config.lease_seconds / 3)
        while not self._stop_leases.wait(every):
            with self._lock:
                running = list(self._running)
                progress = {k: v for k, v in self._progress.items() if k in running}
                held = set(running) | self._finishing_ids
            if not held:
                continue
            try:
                asked = self.jobs.renew(self.id, held, progress)
            except Exception:
                log.exception("could not renew the job lease")
                continue
            for job_id in asked & set(running):
                self.cancel(job_id)

    def recover(self) -> int:
        """End the jobs of workers that stopped renewing their lease; returns how many were handled."""
        self._last_recovery = time.monotonic()
        handled = 0
        for job in self.jobs.expired():
            if job.started_at is None:
                handled += self.jobs.requeue(job)
                continue
            interrupted = JobInterrupted(
                "This request was interrupted (the server restarted or a worker stopped) before it finished; "
                "nothing was charged. Please send it again."
            )
            if self.settlement.fail(job, interrupted, expired_only=True):
                handled += 1
                log.warning("recovered an interrupted job (its worker's lease ran out %s ago)",
                            timedelta(seconds=int((utcnow() - job.lease_until).total_seconds())))
        return handled
