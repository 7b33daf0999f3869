"""The job layer: batches of compatible jobs, fair turns, cancel, the per-person cap and recovery."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from nanobanana.errors import GenerationCancelled, JobInterrupted, JobLimitReached
from nanobanana.service.accounts import Identity, OAuthProfileData
from nanobanana.service.db import jobs, utcnow
from nanobanana.service.jobs import Owner
from nanobanana.service.worker import Worker
from tests.helpers import make_studio, request

MARIA = OAuthProfileData("huggingface", "1001", "maria", "maria@example.org")
OMAR = OAuthProfileData("github", "2002", "omar", None)


def worker_of(studio) -> Worker:
    """A worker the test drives by hand (`run_once`), sharing the studio's in-process job list."""
    return Worker(studio.services, studio.services.jobs, studio.settlement, studio.local)


def drain(worker: Worker) -> list[list[str]]:
    """Run every queued job; returns the job ids of each batch in the order they ran."""
    batches = []
    while batch := worker.run_once():
        batches.append([job.id for job in batch])
    return batches


def state_of(studio, job_id: str) -> str:
    return studio.services.jobs.get(job_id).state


def assert_ledger_is_the_truth(studio, account_id: str) -> None:
    assert studio.services.ledger.balance(account_id) == studio.services.ledger.ledger_sum(account_id) >= 0


@pytest.fixture
def queued_studio(data_dir, fast_generator):
    """A studio whose jobs wait until the test runs them; no wait window, batches of up to 8 images."""
    s = make_studio(data_dir, fast_generator, start_worker=False,
                    jobs={"batch_wait_ms": 0, "max_batch_images": 8, "max_open_per_person": 8})
    yield s
    s.close()


# -- batching -------------------------------------------------------------------------------------------
def test_only_compatible_jobs_share_a_pipeline_call(queued_studio, fast_generator):
    maria = queued_studio.sign_in(MARIA).identity
    a = queued_studio.submit(request("a circle", steps=2), maria)
    b = queued_studio.submit(request("a square", steps=2, num_images=3), maria)
    c = queued_studio.submit(request("a star", steps=3), maria)  # other steps
    d = queued_studio.submit(request("a moon", steps=2, aspect_ratio="16:9"), maria)  # other size
    e = queued_studio.submit(request("a sun", steps=2, num_images=4), maria)  # would make 8: still fits
    f = queued_studio.submit(request("a cloud", steps=2), maria)  # the batch is full
    batches = drain(worker_of(queued_studio))
    assert batches == [[a, b, e], [c], [d], [f]]
    assert fast_generator.batches[0] == ["a circle", "a square", "a sun"]
    for job_id in (a, b, c, d, e, f):
        assert state_of(queued_studio, job_id) == "succeeded"
    result = queued_studio.wait(maria, b)
    assert len(result.images) == 3 and result.charged == 3


def test_a_seed_gives_the_same_pixels_alone_or_in_a_batch(data_dir, generator):
    studio = make_studio(data_dir, generator, start_worker=False, jobs={"batch_wait_ms": 0})
    try:
        maria = studio.sign_in(MARIA).identity
        worker = worker_of(studio)
        alone = studio.submit(request("a red circle", steps=3, seed=11), maria)
        drain(worker)
        first = studio.submit(request("a blue square", steps=3, seed=5, negative_prompt="green"), maria)
        same = studio.submit(request("a red circle", steps=3, seed=11), maria)
        third = studio.submit(request("two yellow stars", steps=3, seed=99, num_images=2), maria)
        assert drain(worker) == [[first, same, third]]
        pixels = [np.asarray(studio.wait(maria, job).generation.images[0], dtype=np.int16)
                  for job in (alone, same)]
        assert np.abs(pixels[0] - pixels[1]).max() <= 2
        seeds = [image.seed for image in studio.wait(maria, third).images]
        assert seeds == [99, 100]
    finally:
        studio.close()


def test_a_request_that_breaks_a_shared_call_fails_alone(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    ok = queued_studio.submit(request("a circle"), maria.identity)
    bad = queued_studio.submit(request("fail now"), maria.identity)
    drain(worker_of(queued_studio))
    assert (state_of(queued_studio, ok), state_of(queued_studio, bad)) == ("succeeded", "failed")
    assert queued_studio.account_summary(maria.identity).balance == maria.balance - 1
    assert_ledger_is_the_truth(queued_studio, maria.id)


# -- fair turns -----------------------------------------------------------------------------------------
def test_jobs_are_served_round_robin_across_people(data_dir, fast_generator):
    studio = make_studio(data_dir, fast_generator, start_worker=False,
                         jobs={"batch_wait_ms": 0, "max_batch_images": 1})
    try:
        heavy, light = studio.sign_in(MARIA).identity, studio.sign_in(OMAR).identity
        h = [studio.submit(request(f"heavy {i}"), heavy) for i in range(5)]
        worker = worker_of(studio)
        assert worker.run_once()[0].id == h[0]
        l1 = studio.submit(request("light 1"), light)
        l2 = studio.submit(request("light 2"), light)
        order = [batch[0] for batch in drain(worker)]
        assert order == [l1, h[1], l2, h[2], h[3], h[4]]
        # A light client that sends its next request only after the last one came back still gets every
        # other turn: its new job is not behind the whole heavy queue, nor ahead of all of it.
        h2 = [studio.submit(request(f"heavy again {i}"), heavy) for i in range(3)]
        assert worker.run_once()[0].id == h2[0]
        again = studio.submit(request("light 3"), light)
        assert worker.run_once()[0].id == again
        assert [b[0] for b in drain(worker)] == h2[1:]
    finally:
        studio.close()


def test_a_person_may_have_only_so_many_open_jobs(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    for i in range(8):
        queued_studio.submit(request(f"circle {i}"), maria.identity)
    with pytest.raises(JobLimitReached, match="at most 8 at a time"):
        queued_studio.submit(request("one more"), maria.identity)
    assert queued_studio.account_summary(maria.identity).balance == maria.balance - 8  # the 9th: nothing
    omar = queued_studio.sign_in(OMAR).identity
    queued_studio.submit(request("someone else"), omar)  # the cap is per person


def test_what_a_person_can_spend_excludes_what_their_queued_jobs_hold(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    queued_studio.submit(request("circles", num_images=4), maria.identity)
    quote = queued_studio.quote(maria.identity, num_images=1)
    assert quote.balance == maria.balance - 4
    assert_ledger_is_the_truth(queued_studio, maria.id)


def test_a_queued_job_knows_its_place_in_line_and_an_eta(queued_studio):
    maria, omar = queued_studio.sign_in(MARIA).identity, queued_studio.sign_in(OMAR).identity
    queued_studio.submit(request("a circle", steps=4), maria)
    drain(worker_of(queued_studio))  # one measured batch: the speed the ETA uses
    mine = queued_studio.submit(request("a square", steps=4, num_images=2), maria)
    his = queued_studio.submit(request("a star", steps=4), omar)  # his first turn comes before her second
    status = queued_studio.job_status(maria, mine)
    assert (status.state, status.place) == ("queued", 2) and status.eta_seconds is not None
    assert status.describe().startswith("Waiting: 2nd in line · about")
    ahead = queued_studio.job_status(omar, his)
    assert ahead.place == 1 and ahead.eta_seconds < status.eta_seconds


# -- cancel ---------------------------------------------------------------------------------------------
def test_cancelling_a_queued_job_releases_its_reservation_at_once(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    job = queued_studio.submit(request("circles", num_images=3), maria.identity)
    queued_studio.cancel(maria.identity, job)
    assert state_of(queued_studio, job) == "cancelled"
    assert queued_studio.account_summary(maria.identity).balance == maria.balance
    assert [e.kind for e in queued_studio.ledger(maria.identity)] == ["grant", "charge", "refund"]
    assert drain(worker_of(queued_studio)) == []
    with pytest.raises(GenerationCancelled):
        queued_studio.wait(maria.identity, job)
    assert [r["outcome"] for r in queued_studio.services.usage.rows()] == ["cancelled"]


def test_cancelling_a_running_job_stops_it_at_the_next_step_and_drops_only_its_images(data_dir, generator):
    from tests.fakes import FastGenerator

    slow = FastGenerator(generator, seconds=2.0)
    studio = make_studio(data_dir, slow, jobs={"batch_wait_ms": 300})
    try:
        maria = studio.sign_in(MARIA)
        # The cancelled job is the smaller one, whose images are settled first.
        keep = studio.submit(request("a circle", steps=20, num_images=2), maria.identity)
        drop = studio.submit(request("a square", steps=20), maria.identity)
        deadline = time.monotonic() + 10
        while studio.job_status(maria.identity, drop).step < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        studio.cancel(maria.identity, drop)
        with pytest.raises(GenerationCancelled):
            studio.wait(maria.identity, drop)
        assert len(studio.wait(maria.identity, keep).images) == 2  # its batch-mate is unharmed
        assert slow.batches == [["a circle", "a square"]]
        assert studio.account_summary(maria.identity).balance == maria.balance - 2
        assert len(studio.list_images(maria.identity)) == 2

        # Alone in its batch, a cancelled job stops the pipeline call at its next step.
        alone = studio.submit(request("a star", steps=20), maria.identity)
        while studio.job_status(maria.identity, alone).step < 1:
            time.sleep(0.02)
        started = time.monotonic()
        studio.cancel(maria.identity, alone)
        with pytest.raises(GenerationCancelled):
            studio.wait(maria.identity, alone)
        assert time.monotonic() - started < 1.0  # a step is 0.1 s; the whole call would be 2 s
        assert_ledger_is_the_truth(studio, maria.id)
        assert studio.account_summary(maria.identity).balance == maria.balance - 2
    finally:
        studio.close()


def test_nobody_can_cancel_or_read_someone_elses_job(queued_studio):
    from nanobanana.errors import JobNotFound

    maria, omar = queued_studio.sign_in(MARIA).identity, queued_studio.sign_in(OMAR).identity
    job = queued_studio.submit(request("a circle"), maria)
    for action in (queued_studio.cancel, queued_studio.job_status, queued_studio.wait):
        with pytest.raises(JobNotFound):
            action(omar, job)
    with pytest.raises(JobNotFound):
        queued_studio.job_status(Identity.anonymous("someone"), job)
    assert state_of(queued_studio, job) == "queued"


# -- recovery -------------------------------------------------------------------------------------------
def expire(studio, job_id: str, started: bool) -> None:
    """What a worker that died holding `job_id` leaves behind: a lease that has run out."""
    with studio.services.db.transaction() as c:
        c.execute(jobs.update().where(jobs.c.id == job_id).values(
            state="running", worker="dead-worker", claimed_at=utcnow(),
            started_at=utcnow() if started else None, lease_until=utcnow() - timedelta(seconds=1)))


def test_a_job_whose_worker_died_mid_run_is_failed_refunded_and_its_files_removed(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    job = queued_studio.submit(request("circles", num_images=2), maria.identity)
    expire(queued_studio, job, started=True)
    # It died after writing one file and before recording it.
    orphan = "o" * 32
    (queued_studio.services.images.images_dir / f"{orphan}.png").write_bytes(b"\x89PNG half-written")
    with queued_studio.services.db.transaction() as c:
        c.execute(jobs.update().where(jobs.c.id == job).values(pending_files=[orphan]))
    assert worker_of(queued_studio).recover() == 1
    assert state_of(queued_studio, job) == "failed"
    assert queued_studio.services.jobs.get(job).outcome == "interrupted"
    assert list(queued_studio.services.images.images_dir.iterdir()) == []
    assert queued_studio.account_summary(maria.identity).balance == maria.balance
    assert_ledger_is_the_truth(queued_studio, maria.id)
    history = queued_studio.services.generation_log.for_account(maria.id)
    assert [(h.outcome, h.charged) for h in history] == [("interrupted", 0)]
    with pytest.raises(JobInterrupted, match="nothing was charged"):
        queued_studio.wait(maria.identity, job)
    assert worker_of(queued_studio).recover() == 0  # settled once


def test_a_job_claimed_but_never_started_goes_back_in_line_with_its_turn(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    job = queued_studio.submit(request("a circle"), maria.identity)
    expire(queued_studio, job, started=False)
    assert worker_of(queued_studio).recover() == 1
    assert state_of(queued_studio, job) == "queued"
    drain(worker_of(queued_studio))
    assert len(queued_studio.wait(maria.identity, job).images) == 1


def test_a_live_worker_keeps_its_lease_and_is_not_recovered(data_dir, generator):
    from tests.fakes import FastGenerator

    slow = FastGenerator(generator, seconds=2.5)
    studio = make_studio(data_dir, slow, jobs={"lease_seconds": 0.6, "batch_wait_ms": 0})
    try:
        maria = studio.sign_in(MARIA)
        job = studio.submit(request("a circle", steps=5), maria.identity)
        time.sleep(1.2)  # two lease periods: the heartbeat renewed it
        assert worker_of(studio).recover() == 0
        assert len(studio.wait(maria.identity, job).images) == 1
    finally:
        studio.close()


def test_ended_jobs_forget_their_prompts_and_are_swept(queued_studio):
    visitor = Identity.anonymous("visitor-1")
    job = queued_studio.submit(request("a periwinkle circle"), visitor)
    drain(worker_of(queued_studio))
    assert "periwinkle" not in str(queued_studio.services.jobs.get(job).settings)
    queued_studio.services.jobs.sweep(now=utcnow() + timedelta(hours=2))
    assert queued_studio.services.jobs.get(job) is None
    owner = Owner(visitor.kind, visitor.owner_key)
    assert queued_studio.services.jobs.of_owner(owner) == []


def test_account_deletion_removes_its_jobs_and_their_inputs(queued_studio):
    from PIL import Image

    from nanobanana.generation import Mode

    maria = queued_studio.sign_in(MARIA)
    image = Image.new("RGB", (64, 64), (10, 200, 10))
    edit = request("make it blue", mode=Mode.IMAGE_TO_IMAGE, images=[image], steps=4)
    job = queued_studio.submit(edit, maria.identity)
    assert (queued_studio.services.jobs.inputs_dir / job).is_dir()
    queued_studio.delete_account(maria.identity)
    with queued_studio.services.db.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 0
    assert list(queued_studio.services.jobs.inputs_dir.iterdir()) == []


def test_a_job_run_by_another_process_is_followed_through_the_database(data_dir, fast_generator):
    # Two studios on one data folder and database: a web replica that only submits, and a worker.
    web = make_studio(data_dir, fast_generator, start_worker=False, jobs={"worker": "none"})
    worker = make_studio(data_dir, fast_generator, start_worker=True, jobs={"batch_wait_ms": 0})
    try:
        maria = web.sign_in(MARIA)
        steps: list[tuple[int, int]] = []
        result = web.generate(request("a circle", steps=3, num_images=2, seed=3), maria.identity,
                              on_step=lambda step, total: steps.append((step, total)))
        assert [image.seed for image in result.images] == [3, 4] and len(result.generation.images) == 2
        assert result.charged == 2 and result.balance == maria.balance - 2
        assert web.services.jobs.get(result.request_id).worker == worker.worker.id
    finally:
        worker.close()
        web.close()


def test_a_request_id_that_is_not_a_plain_name_is_refused_before_touching_any_file(queued_studio, data_dir):
    from PIL import Image

    from nanobanana.errors import InvalidRequest
    from nanobanana.generation import Mode

    maria = queued_studio.sign_in(MARIA)
    image = Image.new("RGB", (64, 64), (10, 200, 10))
    for bad in ("..", "../images", "a/b", ".", "x" * 33):
        with pytest.raises(InvalidRequest, match="request id"):
            queued_studio.submit(request("a circle", mode=Mode.IMAGE_TO_IMAGE, images=[image], steps=4),
                                 maria.identity, request_id=bad)
    assert (data_dir / "nanobanana.service.db").is_file() and (data_dir / "images").is_dir()
    assert queued_studio.account_summary(maria.identity).balance == maria.balance


def test_a_stopping_worker_puts_its_batch_back_in_line_and_the_next_start_runs_it(data_dir, generator):
    from tests.fakes import FastGenerator

    slow = FastGenerator(generator, seconds=3.0)
    studio = make_studio(data_dir, slow, jobs={"batch_wait_ms": 0})
    maria = studio.sign_in(MARIA)
    job = studio.submit(request("a circle", steps=30), maria.identity)
    while studio.job_status(maria.identity, job).step < 1:
        time.sleep(0.02)
    studio.close()  # a restart, say
    stopped = studio.services.jobs.get(job)
    assert (stopped.state, stopped.started_at, stopped.worker) == ("queued", None, None)
    again = make_studio(data_dir, FastGenerator(generator), jobs={"batch_wait_ms": 0})
    try:
        assert len(again.wait(maria.identity, job).images) == 1
        assert again.account_summary(maria.identity).balance == maria.balance - 1
    finally:
        again.close()


def test_a_worker_runs_only_jobs_for_the_model_it_has_loaded(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    job = queued_studio.submit(request("a circle"), maria.identity)
    with queued_studio.services.db.transaction() as c:
        c.execute(jobs.update().where(jobs.c.id == job).values(model="someone-elses-model"))
    assert worker_of(queued_studio).run_once() == []
    assert state_of(queued_studio, job) == "queued"


def test_a_claimed_job_its_worker_lost_track_of_expires_and_is_recovered(data_dir, fast_generator):
    studio = make_studio(data_dir, fast_generator, start_worker=False, jobs={"lease_seconds": 0.2})
    try:
        maria = studio.sign_in(MARIA)
        job = studio.submit(request("a circle"), maria.identity)
        worker = worker_of(studio)
        assert [j.id for j in studio.services.jobs.claim([job], worker.id)] == [job]
        studio.services.jobs.renew(worker.id, [], {})  # it is not among the jobs the worker works on
        time.sleep(0.3)
        assert worker.recover() == 1 and state_of(studio, job) == "queued"
    finally:
        studio.close()


def test_an_ended_job_keeps_no_message_that_quotes_its_prompt(queued_studio):
    maria = queued_studio.sign_in(MARIA)
    prompt = "a periwinkle circle " + " ".join(f"word{i}" for i in range(40))  # longer than the tokenizer reads
    job = queued_studio.submit(request(prompt), maria.identity)
    drain(worker_of(queued_studio))
    result = queued_studio.wait(maria.identity, job)
    assert any("cut" in m or "token" in m for m in result.messages)  # the person was told (in memory)
    with queued_studio.services.db.engine.connect() as c:
        row = c.execute(sa.select(jobs).where(jobs.c.id == job)).one()
    assert "periwinkle" not in str(dict(row._mapping))


def test_a_visitors_withheld_image_is_given_back_when_another_process_ran_the_job(data_dir, fast_generator):
    web = make_studio(data_dir, fast_generator, start_worker=False, jobs={"worker": "none"})
    worker = make_studio(data_dir, fast_generator, start_worker=True, jobs={"batch_wait_ms": 0})
    try:
        visitor = Identity.anonymous("visitor-7")
        before = web.allowance_left(visitor)
        result = web.generate(request("circles red1", num_images=2), visitor)  # image 1 is withheld
        assert (len(result.images), result.blocked) == (1, 1)
        assert web.allowance_left(visitor) == before - 1
    finally:
        worker.close()
        web.close()
