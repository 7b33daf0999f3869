"""Generation workers on Ray Serve (`jobs.worker: ray`): the model runs on a Ray cluster, the web stays out.

    web process (N of them)                         Ray cluster (GPU machines)
    ─────────────────────────                       ─────────────────────────────────────────
    Studio.submit → jobs table (fair turns)
    RayDispatcher: picks the next batch   ──handle──▶ GenerationWorker replica (Serve deployment):
      (the same `pick_batch` as the local            claims the jobs (one replica per job), holds
      worker), calls `run(job_ids)`                  their lease, Generator.run_batch, Settlement
    Studio.wait: follows the job row     ◀──────────  (images to the shared store, rows, credits)

The deployment is one small class around the same `Worker.run` the local worker uses: batching is the job
layer's own grouping (compatible jobs in fair order, up to `jobs.max_batch_images`), so a Serve request
is one batch and `@serve.batch` is not needed. Replicas, `ray_actor_options`, `autoscaling_config`
(`min_replicas: 0` scales to zero when idle) and `max_ongoing_requests` come from `jobs.ray.deployment`.

Everything a job needs travels through the database and the object store, never through Ray: a replica
that dies mid-batch stops renewing its jobs' lease, and any web process's recovery ends them (refunded)
or puts them back in line; a web process that dies leaves its jobs running on the cluster, and their
owner sees the result from any other replica. Gradio stays outside Ray (`GradioIngress` does not support
Gradio's queue).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nanobanana.service.config import RayConfig, ServiceConfig
from nanobanana.service.jobs import Job
from nanobanana.service.worker import Worker

if TYPE_CHECKING:
    from nanobanana.service.build import Services
    from nanobanana.service.jobs import JobStore
    from nanobanana.service.settlement import Settlement
    from nanobanana.service.worker import LocalJobs

log = logging.getLogger(__name__)

DEPLOYMENT = "GenerationWorker"
# What a replica needs from the deployer's environment: our settings, the object store's credentials,
# offline switches. Nothing else is copied.
ENV_PREFIXES = ("NANOBANANA_", "AWS_", "HF_", "GRADIO_", "TOKENIZERS_", "OMP_NUM_THREADS")


def replica_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIXES)}


# -- the cluster side ---------------------------------------------------------------------------------------
class GenerationWorker:
    """One Serve replica: the model loaded once, and a `Worker` that runs the batches it is handed."""

    def __init__(self, config_json: str, environ: dict[str, str]) -> None:
        os.environ.update(environ)
        from nanobanana.service.build import build_studio

        config = ServiceConfig.model_validate_json(config_json)
        self.studio = build_studio(config=config, start_sweeper=False, start_worker=False)
        self.studio.warm_up(model=True)
        s = self.studio.services
        self.worker = Worker(s, s.jobs, self.studio.settlement, self.studio.local)
        self.worker.start(take_jobs=False)  # the lease heartbeat; batches come from `run`
        self._one_batch = threading.Lock()  # one batch at a time on this replica's model
        log.info("generation replica %s ready (model %s)", self.worker.id, s.generator.model_id)

    def _run(self, job_ids: list[str]) -> dict[str, Any]:
        with self._one_batch:
            batch = self.worker.jobs.claim(job_ids, self.worker.id)  # none: another replica took them
            started = time.perf_counter()
            if batch:
                self.worker.run(batch)
            return {"worker": self.worker.id, "claimed": [j.id for j in batch],
                    "seconds": time.perf_counter() - started}

    async def run(self, job_ids: list[str]) -> dict[str, Any]:
        """Claim these queued jobs, run them as one pipeline call and settle each; returns what it ran."""
        return await asyncio.to_thread(self._run, list(job_ids))

    def check_health(self) -> None:
        if not any(t.is_alive() for t in self.worker._threads):
            raise RuntimeError("the lease heartbeat stopped")

    def __del__(self) -> None:  # scaled down or shut down: hand back what was not started
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop()


def application(config: ServiceConfig, environ: Mapping[str, str] | None = None) -> Any:
    """The Serve application: `GenerationWorker` with the options of `jobs.ray.deployment`."""
    from ray import serve

    options = config.jobs.ray.deployment.options()
    deployment = serve.deployment(GenerationWorker, name=DEPLOYMENT, **options)
    return deployment.bind(config.model_dump_json(), replica_environ(environ))


def app_builder(args: dict[str, str]) -> Any:
    """For `serve deploy deploy/serve-config.yaml`: the app from configs/service.yaml and the environment."""
    from nanobanana.service.config import load_service_config

    return application(load_service_config())


def connect(ray: RayConfig) -> None:
    """Join the cluster as a client driver (the web process runs no Ray tasks itself)."""
    import ray as ray_module

    if not ray_module.is_initialized():
        ray_module.init(address=ray.address, namespace=ray.namespace, logging_level=logging.WARNING,
                        log_to_driver=False, include_dashboard=False)


def deploy(config: ServiceConfig, environ: Mapping[str, str] | None = None) -> Any:
    """Deploy (or update) the worker application on the cluster; returns its handle."""
    from ray import serve

    connect(config.jobs.ray)
    serve.start(proxy_location="Disabled")  # handles only: no HTTP proxy on the cluster
    return serve.run(application(config, environ), name=config.jobs.ray.app_name, route_prefix=None)


# -- the web side -------------------------------------------------------------------------------------------
class RayDispatcher(Worker):
    """Runs in each web process instead of the local worker: picks batches in fair order and hands them to
    the deployment through its handle; recovers the jobs of replicas whose lease ran out."""

    runs_model = False  # the replicas have it

    def __init__(self, services: Services, jobs: JobStore, settlement: Settlement, local: LocalJobs | None = None,
                 handle: Any = None) -> None:
        super().__init__(services, jobs, settlement, local)
        self.ray = services.config.jobs.ray
        self._handle = handle
        self._inflight: set[str] = set()

    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            connect(self.ray)
            self._handle = serve.get_app_handle(self.ray.app_name)
        return self._handle

    def start(self, take_jobs: bool = True) -> None:
        if self._threads:
            return
        self.recover()
        for i in range(self.ray.dispatchers):
            thread = threading.Thread(target=self._dispatch_loop, name=f"nanobanana-dispatch-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads = []

    def cancel(self, job_id: str) -> None:
        return None  # the replica running it reads the cancel from the job row at its next heartbeat

    def _queued(self) -> list[Job]:
        with self._lock:
            inflight = set(self._inflight)
        return [job for job in super()._queued() if job.id not in inflight]

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_recovery > self.config.lease_seconds:
                    self.recover()
                batch = self._pick()
                if not batch:
                    self._wake.wait(self.config.poll_seconds)
                    continue
                self._send(batch)
            except Exception:
                log.exception("the Ray dispatcher hit an error; it goes on")
                self._stop.wait(1.0)

    def _send(self, batch: list[Job]) -> None:
        ids = [job.id for job in batch]
        with self._lock:
            self._inflight.update(ids)
        try:
            self.handle().run.remote(ids).result(timeout_s=self.ray.call_timeout_seconds)
        except Exception as exc:
            # A replica that died mid-batch: its jobs keep their lease until it runs out, then the next
            # recovery ends them (refunded) or puts them back in line. Nothing is settled from here.
            log.warning("a batch sent to Ray Serve failed (%s); its jobs are recovered when their lease "
                        "runs out", type(exc).__name__)
            self._stop.wait(min(1.0, self.config.poll_seconds))
        finally:
            with self._lock:
                self._inflight.difference_update(ids)
