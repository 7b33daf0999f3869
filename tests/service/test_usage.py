"""Anonymous usage statistics: aggregates by day, by setting and by outcome; replicas share one schema."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nanobanana.config import REPO_ROOT
from nanobanana.service.accounts import Identity
from nanobanana.service.db import Database
from tests.helpers import head_revision, request


def test_stats_count_requests_error_rates_and_generation_times_by_day_setting_and_outcome(studio):
    visitor = Identity.anonymous("s", "192.0.2.1")
    studio.generate(request("a circle", aspect_ratio="16:9"), visitor)
    studio.generate(request("a circle", num_images=2), visitor)
    for prompt in ("fail", "forbidden"):
        with pytest.raises(Exception):  # noqa: B017
            studio.generate(request(prompt), visitor)
    stats = studio.stats()
    assert stats.requests == 4
    [day] = stats.by_day.to_dict("records")
    assert (day["requests"], day["ok"], day["images"]) == (4, 2, 3)
    assert day["error_rate"] == 0.25  # the model failure; a blocked prompt is not an error
    assert day["p50_generation_s"] is not None and day["p95_generation_s"] >= day["p50_generation_s"]
    outcomes = dict(zip(stats.by_outcome["outcome"], stats.by_outcome["requests"], strict=True))
    assert outcomes == {"ok": 2, "error:GenerationFailed": 1, "blocked_prompt": 1}
    assert set(stats.by_setting["aspect_ratio"]) == {"16:9", "1:1"}


def test_stats_of_an_empty_service_say_zero(studio):
    assert studio.stats().requests == 0


OPEN = (
    "import sys, pathlib; from nanobanana.service.db import Database; "
    "Database.open(sys.argv[1] or None, pathlib.Path(sys.argv[2]))"
)


def test_replicas_starting_at_once_migrate_the_database_once(data_dir, database_url):
    # Separate processes, like replicas; each imports only the database module.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    replicas = [subprocess.Popen([sys.executable, "-c", OPEN, database_url or "", str(data_dir)], env=env,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for replica in replicas:
        _, err = replica.communicate(timeout=120)
        assert replica.returncode == 0, err
    db = Database.open(database_url, data_dir)
    with db.engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [head_revision()]
    db.dispose()


def test_an_edit_refused_before_it_is_queued_is_counted_once(studio):
    from nanobanana.errors import InvalidImage
    from nanobanana.generation import Mode

    studio.record_refusal(Mode.EDIT, InvalidImage("That file is not an image."))
    stats = studio.stats()
    assert stats.requests == 1
    assert stats.by_outcome.to_dict("records")[0]["outcome"] == "invalid_request"
    assert set(stats.by_setting["mode"]) == {"edit"}
