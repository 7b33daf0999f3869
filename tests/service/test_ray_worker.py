"""Generation on Ray Serve (`jobs.worker: ray`): a real local Ray head, the worker deployment on it, web
studios outside Ray that hand it batches through a deployment handle, PostgreSQL and SeaweedFS shared.

One deployment serves the whole module (its replicas load the tiny model once), so every test uses its
own people and checks only their jobs.
"""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest
import sqlalchemy as sa

from nanobanana.service.accounts import OAuthProfileData
from nanobanana.service.config import RayConfig, RayDeploymentConfig
from nanobanana.service.db import images, jobs, ledger
from tests.helpers import make_studio, request

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = 4.0


@pytest.fixture(scope="module")
def cluster(ray_head, s3_server, tiny_model_dir, tmp_path_factory):
    """The database, the bucket prefix and the deployed worker app (one replica) for this module."""
    from tests.service.conftest import fresh_postgres_database

    with fresh_postgres_database("nb_ray") as url:
        yield from _deployed(url, ray_head, s3_server, tiny_model_dir, tmp_path_factory)


def _deployed(url, ray_head, s3_server, tiny_model_dir, tmp_path_factory):
    env = {**s3_server.env, "NANOBANANA_MODEL": str(tiny_model_dir), "HF_HUB_OFFLINE": "1",
           "NANOBANANA_SAFETY__PROMPT__SEMANTIC__ENABLED": "false", "NANOBANANA_SAFETY__IMAGE__ENABLED": "false",
           "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    storage = {"location": f"s3://{s3_server.bucket}/r{secrets.token_hex(4)}", "s3_endpoint": s3_server.endpoint}
    ray = RayConfig(address=ray_head.address, app_name=f"nb-{secrets.token_hex(3)}", dispatchers=2,
                    deployment=RayDeploymentConfig(num_replicas=1, ray_actor_options={"num_cpus": 1},
                                                   graceful_shutdown_timeout_s=5))
    settings = {"database_url": url, "storage": storage,
                "jobs": {"worker": "ray", "lease_seconds": LEASE, "poll_seconds": 0.1, "ray": ray,
                         "max_open_per_person": 50}}
    deployer = make_studio(tmp_path_factory.mktemp("deployer"), _generator(), start_worker=False, **_sections(settings))
    from nanobanana.service.ray_worker import deploy

    deploy(deployer.services.config)
    deployer.close()
    try:
        yield settings
    finally:
        from ray import serve

        serve.delete(ray.app_name)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _generator():
    from nanobanana.generation import Generator

    return Generator()  # NANOBANANA_MODEL: the tiny model, as the replicas load it


def _sections(settings: dict) -> dict:
    return {"database_url": settings["database_url"], "storage": settings["storage"], "jobs": settings["jobs"]}


@pytest.fixture
def web(cluster, tmp_path):
    """A web replica: plans and queues here, generation on the cluster."""
    studio = make_studio(tmp_path / "web", _generator(), **_sections(cluster))
    yield studio
    studio.close()


def person(studio, name: str):
    return studio.sign_in(OAuthProfileData("local", f"{name}-{secrets.token_hex(4)}", f"{name}{secrets.token_hex(3)}"))


def ledger_sum(studio, account_id: str) -> int:
    with studio.services.db.transaction() as c:
        return int(c.execute(sa.select(sa.func.coalesce(sa.func.sum(ledger.c.delta), 0))
                             .where(ledger.c.account_id == account_id)).scalar_one())


def worker_of(studio, job_id: str) -> str | None:
    with studio.services.db.transaction() as c:
        return c.execute(sa.select(jobs.c.worker).where(jobs.c.id == job_id)).scalar()


def test_jobs_run_on_the_serve_replica_and_their_images_reach_the_owner(web):
    account = person(web, "ana")
    result = web.generate(request("a blue circle", num_images=2, steps=2), account.identity)
    assert len(result.images) == 2 and result.charged > 0
    assert all(web.image_bytes(account.identity, i.id).startswith(b"\x89PNG") for i in result.images)
    worker = worker_of(web, result.request_id)
    assert worker is not None and f"-{os.getpid()}-" not in worker  # ran in another process: the replica
    assert web.services.ledger.balance(account.id) == ledger_sum(web, account.id)


def test_a_cancel_reaches_the_job_on_the_cluster_and_nothing_is_charged(web):
    account = person(web, "ben")
    before = web.services.ledger.balance(account.id)
    job = web.submit(request("a red square", steps=40), account.identity)
    deadline = time.monotonic() + 60
    while web.services.jobs.get(job).state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    web.cancel(account.identity, job)
    view = web.await_job(account.identity, job, timeout=60)
    assert view.status.state == "cancelled" and view.charged == 0
    assert web.services.ledger.balance(account.id) == before == ledger_sum(web, account.id)


def test_a_replica_killed_mid_batch_loses_no_credits(web):
    account = person(web, "cyd")
    before = web.services.ledger.balance(account.id)
    job = web.submit(request("a green triangle", steps=50, num_images=4), account.identity)
    deadline = time.monotonic() + 60
    while (web.services.jobs.get(job).step or 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(worker_of(web, job).rsplit("-", 2)[1])  # <host>-<pid>-<random>: the replica's process
    os.kill(pid, signal.SIGKILL)
    view = web.await_job(account.identity, job, timeout=LEASE * 6 + 30)
    assert view.status.state == "failed" and view.charged == 0
    assert web.services.ledger.balance(account.id) == before == ledger_sum(web, account.id)
    with web.services.db.transaction() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(images)
                         .where(images.c.request_id == job)).scalar_one() == 0
    # Serve replaces the replica: the next request runs.
    again = web.generate(request("a green triangle", steps=2), account.identity)
    assert len(again.images) == 1


def test_a_web_replica_that_goes_away_leaves_its_jobs_running_and_another_shows_them(cluster, tmp_path):
    first = make_studio(tmp_path / "first", _generator(), **_sections(cluster))
    second = make_studio(tmp_path / "second", _generator(), start_worker=False, **_sections(cluster))
    try:
        account = person(first, "dee")
        job = first.submit(request("a yellow circle", steps=30), account.identity)
        deadline = time.monotonic() + 60
        while first.services.jobs.get(job).state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        first.close()  # its dispatcher stops; the batch goes on on the cluster
        view = second.await_job(account.identity, job, timeout=120)
        assert view.status.state == "succeeded" and len(view.images) == 1
        assert second.image_bytes(account.identity, view.images[0].id).startswith(b"\x89PNG")
        assert second.services.ledger.balance(account.id) == ledger_sum(second, account.id)
    finally:
        first.close()
        second.close()


def test_fair_turns_hold_on_the_cluster(web):
    heavy, light = person(web, "eve"), person(web, "fay")
    heavy_jobs = [web.submit(request(f"a red circle {i}", steps=20, num_images=4), heavy.identity) for i in range(5)]
    light_job = web.submit(request("a blue star", steps=20), light.identity)
    web.await_job(light.identity, light_job, timeout=120)
    light_end = web.services.jobs.get(light_job).finished_at
    heavy_ends = sorted(web.await_job(heavy.identity, j, timeout=180).finished_at for j in heavy_jobs)
    # In turns: the light request waits for at most the heavy batch on the model and the one picked with it.
    assert light_end < heavy_ends[2]


def test_a_deployment_scaled_to_zero_starts_a_replica_for_a_job_and_goes_back_to_zero(cluster, tmp_path):
    from ray import serve

    from nanobanana.service.ray_worker import deploy

    ray = cluster["jobs"]["ray"].model_copy(update={
        "app_name": f"nb-zero-{secrets.token_hex(3)}",
        "deployment": RayDeploymentConfig(ray_actor_options={"num_cpus": 1}, graceful_shutdown_timeout_s=5,
                                          autoscaling_config={"min_replicas": 0, "initial_replicas": 0,
                                                              "max_replicas": 1, "upscale_delay_s": 0,
                                                              "downscale_delay_s": 2}),
    })
    sections = _sections(cluster)
    sections["jobs"] = {**cluster["jobs"], "ray": ray}
    studio = make_studio(tmp_path / "zero", _generator(), start_worker=False, **sections)
    try:
        deploy(studio.services.config)

        def replicas() -> int:
            deployment = serve.status().applications[ray.app_name].deployments["GenerationWorker"]
            return sum(deployment.replica_states.values())

        assert replicas() == 0
        studio.start_worker()
        account = person(studio, "gus")
        result = studio.generate(request("a blue circle", steps=2), account.identity)  # waits for a replica
        assert len(result.images) == 1
        deadline = time.monotonic() + 90
        while replicas() and time.monotonic() < deadline:
            time.sleep(1)
        assert replicas() == 0
    finally:
        studio.close()
        serve.delete(ray.app_name)
