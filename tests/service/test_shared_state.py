"""State two replicas share through the database: the anonymous allowance and the sign-in cookie key.

Two studios on one database stand for two web replicas (SQLite file, then PostgreSQL).
"""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest

from nanobanana.errors import AllowanceExhausted
from nanobanana.service.accounts import Identity
from nanobanana.web import auth
from nanobanana.web.config import load_ui_config
from tests.helpers import all_rows, make_studio, request


@pytest.fixture
def replicas(data_dir, fast_generator, database_url):
    a = make_studio(data_dir, fast_generator, database_url=database_url, allowance={"anonymous_images_per_day": 4})
    b = make_studio(data_dir, fast_generator, database_url=database_url, allowance={"anonymous_images_per_day": 4})
    yield a, b
    a.close()
    b.close()


def test_the_allowance_is_one_count_whichever_replica_answers(replicas):
    a, b = replicas
    visitor = Identity.anonymous("session-a", "203.0.113.5")
    a.generate(request(num_images=3), visitor)
    assert a.allowance_left(visitor) == b.allowance_left(visitor) == 1
    with pytest.raises(AllowanceExhausted):
        b.generate(request(num_images=2), visitor)
    same_address = Identity.anonymous("session-b", "203.0.113.5")
    assert b.allowance_left(same_address) == 1


def test_the_allowance_survives_a_restart(data_dir, fast_generator):
    studio = make_studio(data_dir, fast_generator, allowance={"anonymous_images_per_day": 4})
    visitor = Identity.anonymous("session-a")
    studio.generate(request(num_images=3), visitor)
    studio.close()
    again = make_studio(data_dir, fast_generator, allowance={"anonymous_images_per_day": 4})
    try:
        assert again.allowance_left(visitor) == 1
    finally:
        again.close()


def test_withheld_images_are_given_back_by_the_replica_that_ran_the_job(data_dir, fast_generator, database_url):
    web = make_studio(data_dir, fast_generator, database_url=database_url, start_worker=False,
                      jobs={"worker": "none"}, allowance={"anonymous_images_per_day": 4})
    worker = make_studio(data_dir, fast_generator, database_url=database_url, allowance={"anonymous_images_per_day": 4})
    try:
        visitor = Identity.anonymous("session-a")
        job = web.submit(request("a square red1", num_images=2), visitor)  # the second image is withheld
        assert web.allowance_left(visitor) == 2  # held while it runs
        view = web.await_job(visitor, job, timeout=60)
        assert view.finished_at is not None and view.blocked == 1
        assert web.allowance_left(visitor) == worker.allowance_left(visitor) == 3
    finally:
        web.close()
        worker.close()


def test_no_session_id_or_address_is_stored_in_clear(replicas):
    a, _ = replicas
    a.generate(request(num_images=1), Identity.anonymous("session-secret-id", "198.51.100.23"))
    text = repr(all_rows(a.services.db.engine))
    assert "session-secret-id" not in text and "198.51.100.23" not in text
    import hashlib

    for plain in ("address:198.51.100.23", "address\x00198.51.100.23", "198.51.100.23"):
        assert hashlib.sha256(plain.encode()).hexdigest() not in text  # keyed, not a plain hash


@pytest.mark.postgres
def test_two_replicas_reserving_at_once_never_give_more_than_the_allowance(data_dir, fast_generator, postgres_url):
    a = make_studio(data_dir, fast_generator, database_url=postgres_url, start_worker=False,
                    jobs={"worker": "none", "max_open_per_person": 100}, allowance={"anonymous_images_per_day": 5})
    b = make_studio(data_dir, fast_generator, database_url=postgres_url, start_worker=False,
                    jobs={"worker": "none", "max_open_per_person": 100}, allowance={"anonymous_images_per_day": 5})
    visitor = Identity.anonymous("session-a", "203.0.113.5")
    accepted, refused = [], []
    start = threading.Barrier(10)

    def submit(studio):
        start.wait()
        try:
            accepted.append(studio.submit(request(num_images=1), visitor))
        except AllowanceExhausted:
            refused.append(1)

    threads = [threading.Thread(target=submit, args=(s,)) for s in [a, b] * 5]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(accepted) == 5 and len(refused) == 5
        assert a.allowance_left(visitor) == b.allowance_left(visitor) == 0
    finally:
        a.close()
        b.close()


def test_the_sweeper_forgets_past_days(data_dir, fast_generator):
    studio = make_studio(data_dir, fast_generator)
    try:
        allowance = studio.services.allowance
        visitor = Identity.anonymous("session-a", "203.0.113.5")
        allowance._clock = lambda: date.today() - timedelta(days=1)
        allowance.reserve(visitor, 2, "yesterday")
        allowance._clock = date.today
        allowance.reserve(visitor, 1, "today")
        studio.sweep()
        rows = all_rows(studio.services.db.engine)
        assert [r["request_id"] for r in rows["allowance_holds"]] == ["today"]
        assert len(rows["allowance_usage"]) == 2 and {r["day"] for r in rows["allowance_usage"]} == {date.today()}
    finally:
        studio.close()


def test_replicas_without_a_configured_secret_sign_cookies_with_one_shared_key(replicas):
    a, b = replicas
    config = load_ui_config({})
    secrets = [auth.session_secret(config, {}, shared=lambda s=s: s.services.db.instance_secret("session-cookie"))
               for s in (a, b)]
    assert secrets[0] == secrets[1] and len(secrets[0]) == 64
    assert auth.session_secret(config.model_copy(update={"session_secret": "from-config"}), {},
                               shared=lambda: b"x") == "from-config"


def test_the_recorded_totals_in_the_metrics_read_the_same_on_every_replica(replicas):
    a, b = replicas
    visitor = Identity.anonymous("session-m")
    a.generate(request(num_images=2), visitor)
    b.generate(request(num_images=1), visitor)
    for studio in (a, b):
        text = studio.metrics_text().decode()
        assert 'nanobanana_requests_recorded{mode="text-to-image",outcome="ok"} 2.0' in text
        assert "nanobanana_images_recorded 3.0" in text
