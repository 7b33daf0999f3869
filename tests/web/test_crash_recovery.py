"""`kill -9` of the real app in the middle of a batch, then a restart on the same data folder.

The app runs the bundled model (`python app.py`, as a person starts it). Three signed-in requests of four
50-step images are sent at once: two share the first pipeline call, the third waits. The process is
killed while that call runs. After the restart every reservation is settled, the balance equals the
ledger, no file lacks its row (or the other way round), the interrupted requests show as failed in the
account's history and cost nothing, and the one that was still waiting runs.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.live_app import join, signed_in, start_app, stop_app

pytestmark = pytest.mark.slow

ENV = {
    "NANOBANANA_SESSION_SECRET": "crash-test-secret",
    "NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": "40",
    "NANOBANANA_SERVICE__JOBS__LEASE_SECONDS": "2",
    "NANOBANANA_SERVICE__JOBS__MAX_BATCH_IMAGES": "8",
    "NANOBANANA_SERVICE__JOBS__BATCH_WAIT_MS": "500",
}


def rows(engine: sa.Engine, sql: str) -> list[dict]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.text(sql))]


def wait_for(condition, timeout: float, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def test_a_killed_app_settles_every_reservation_after_a_restart(tmp_path):
    root = tmp_path / "app"
    env = {**ENV, "NANOBANANA_MODEL": "bundled"}
    live = start_app(root, env)
    engine = sa.create_engine(f"sqlite:///{live.data_dir / 'nanobanana.service.db'}")
    try:
        client = signed_in(live)
        for prompt in ("a red circle", "a blue square", "a green triangle"):
            joined = join(client, live, "generate", [prompt, "1:1", 4, "", 50, 1.5, 0, True, ""])
            assert joined.status_code == 200, joined.text
        def mid_batch() -> list[dict]:
            if len(rows(engine, "SELECT id FROM jobs")) < 3:
                return []
            return rows(engine, "SELECT id FROM jobs WHERE state = 'running' AND started_at IS NOT NULL")

        running = wait_for(mid_batch, timeout=120)
        os.kill(live.process.pid, signal.SIGKILL)
        live.process.wait(timeout=10)
        assert len(running) == 2  # the first batch: two requests of four images
        before = rows(engine, "SELECT id, state FROM jobs")
        assert {r["state"] for r in before} == {"running", "queued"}
    finally:
        if live.process.poll() is None:
            live.process.kill()

    live = start_app(root, env)  # same data folder
    try:
        wait_for(lambda: not rows(engine, "SELECT id FROM jobs WHERE state IN ('queued', 'running')"),
                 timeout=120, every=0.2)
        jobs = {r["id"]: r for r in rows(engine, "SELECT * FROM jobs")}
        interrupted = {r["id"] for r in running}
        assert {jobs[i]["state"] for i in interrupted} == {"failed"}
        assert {jobs[i]["outcome"] for i in interrupted} == {"interrupted"}
        (waiting,) = set(jobs) - interrupted
        assert jobs[waiting]["state"] == "succeeded"  # the request still in line ran after the restart

        (account,) = rows(engine, "SELECT id, balance FROM accounts")
        ledger = rows(engine, "SELECT delta, kind, request_id FROM ledger")
        assert account["balance"] == sum(r["delta"] for r in ledger) == 40 - 4
        for job_id in interrupted:  # charged, then refunded in full: exactly once each
            assert sorted(r["kind"] for r in ledger if r["request_id"] == job_id) == ["charge", "refund"]
            assert sum(r["delta"] for r in ledger if r["request_id"] == job_id) == 0
        history = {r["request_id"]: r for r in rows(engine, "SELECT * FROM generations")}
        assert {(history[i]["outcome"], history[i]["charged"]) for i in interrupted} == {("interrupted", 0)}
        assert history[waiting]["outcome"] == "ok"

        stored = {r["id"] for r in rows(engine, "SELECT id FROM images")}
        files = {p.stem for p in (live.data_dir / "images").iterdir()}
        assert files == stored and len(stored) == 4  # no orphan file, no row without its file
        assert list((live.data_dir / "jobs").iterdir()) == []
        assert "recovered an interrupted job" in live.log_text()
    finally:
        stop_app(live)
        engine.dispose()
