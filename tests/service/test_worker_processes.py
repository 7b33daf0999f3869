"""Two worker processes (`python -m nanobanana worker`) on one PostgreSQL database never run a job twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from nanobanana.config import REPO_ROOT
from nanobanana.service.accounts import OAuthProfileData
from tests.helpers import make_studio, request

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def start_worker(name: str, env: dict, tmp_path) -> tuple[subprocess.Popen, object]:
    log = (tmp_path / f"{name}.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "nanobanana", "worker"], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    return process, log


def test_two_worker_processes_share_one_queue_and_never_run_a_job_twice(postgres_url, tmp_path, generator,
                                                                         tiny_model_dir):
    data_dir = tmp_path / "data"
    # The submitting side (a web replica with `jobs.worker: none`): plans, reserves and queues only.
    studio = make_studio(data_dir, generator, database_url=postgres_url, start_worker=False,
                         jobs={"worker": "none", "max_open_per_person": 100})
    env = {
        **os.environ, "NANOBANANA_DATABASE_URL": postgres_url, "NANOBANANA_DATA_DIR": str(data_dir),
        "NANOBANANA_MODEL": str(tiny_model_dir), "NANOBANANA_SERVICE__JOBS__MAX_BATCH_IMAGES": "2",
        "NANOBANANA_SERVICE__JOBS__BATCH_WAIT_MS": "0", "NANOBANANA_SERVICE__JOBS__POLL_SECONDS": "0.05",
        "NANOBANANA_SERVICE__STORAGE__SWEEP_INTERVAL_SECONDS": "0", "HF_HUB_OFFLINE": "1",
    }
    workers = [start_worker(name, env, tmp_path) for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 180
        while not all("is taking jobs" in (tmp_path / f"{n}.log").read_text() for n in ("a", "b")):
            assert all(p.poll() is None for p, _ in workers), (tmp_path / "a.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)

        people = [studio.sign_in(OAuthProfileData("local", str(i), f"person{i}")) for i in range(3)]
        submitted = {}
        for i in range(30):
            person = people[i % 3]
            job = studio.submit(request(f"a circle {i}", steps=2, num_images=1 + i % 2), person.identity)
            submitted[job] = person

        engine = studio.services.db.engine
        deadline = time.monotonic() + 180
        while True:
            with engine.connect() as c:
                open_jobs = c.execute(
                    sa.text("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")).scalar()
            if not open_jobs:
                break
            assert time.monotonic() < deadline, f"{open_jobs} jobs still open"
            time.sleep(0.1)
    finally:
        for process, log in workers:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            log.close()

    ran = Counter()
    batches_per_worker = Counter()
    for name in ("a", "b"):
        for line in (tmp_path / f"{name}.log").read_text().splitlines():
            found = re.search(r"runs a batch of \d+ job\(s\): (.*)$", line)
            if found:
                batches_per_worker[name] += 1
                ran.update(found.group(1).split())
    assert set(ran) == set(submitted) and set(ran.values()) == {1}  # every job ran, and only once
    assert batches_per_worker["a"] and batches_per_worker["b"]  # both took their share

    with engine.connect() as c:
        states = Counter(c.execute(sa.text("SELECT state FROM jobs")).scalars())
        images_per_job = Counter(c.execute(sa.text("SELECT request_id FROM images")).scalars())
        charges = Counter(c.execute(sa.text("SELECT request_id FROM ledger WHERE kind = 'charge'")).scalars())
        refunds = c.execute(sa.text("SELECT count(*) FROM ledger WHERE kind = 'refund'")).scalar()
    assert states == {"succeeded": 30}
    assert set(charges.values()) == {1} and set(charges) == set(submitted) and refunds == 0
    for job_id in submitted:
        assert images_per_job[job_id] == studio.services.jobs.get(job_id).num_images
    for person in people:
        ledger = studio.services.ledger
        assert ledger.balance(person.id) == ledger.ledger_sum(person.id)
    studio.close()
