"""Privacy rights and promises: export, deletion, anonymous usage rows, the policy page, service updates."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import zipfile
from datetime import timedelta

import pytest

from nanobanana.service.accounts import Identity, OAuthProfileData
from nanobanana.service.build import build_studio
from nanobanana.service.db import images, utcnow
from tests.helpers import all_rows, files_under, make_studio, request, service_config

ZELDA = OAuthProfileData("huggingface", "hf-777123", "zelda-quokka", "zelda.quokka@example.org")
PROMPT = "a periwinkle dodecahedron"


def download(studio, identity, export) -> io.BytesIO:
    """The zip as its owner downloads it."""
    found = studio.export_download(identity, export.name)
    assert found is not None
    return io.BytesIO(b"".join(found[1]))


def test_export_contains_profile_ledger_history_and_every_image(studio):
    account = studio.sign_in(ZELDA)
    first = studio.generate(request(PROMPT, num_images=2), account.identity)
    studio.generate(request("circles red1", num_images=2), account.identity)  # one withheld, refunded
    export = studio.export(account.identity)
    assert (studio.services.images.exports_dir / export.name).is_file()
    with zipfile.ZipFile(download(studio, account.identity, export)) as z:
        names = set(z.namelist())
        profile = json.loads(z.read("profile.json"))
        ledger_json = json.loads(z.read("ledger.json"))
        ledger_csv = list(csv.DictReader(io.StringIO(z.read("ledger.csv").decode())))
        history = json.loads(z.read("history.json"))
        listed = json.loads(z.read("images.json"))
        stored = studio.list_images(account.identity)
        for image in stored:
            assert z.read(f"images/{image.id}.png") == studio.image_path(account.identity, image.id).read_bytes()
    assert {"profile.json", "ledger.csv", "ledger.json", "history.json", "images.json"} <= names
    assert len([n for n in names if n.startswith("images/")]) == len(stored) == 3
    assert profile["email"] == ZELDA.email and profile["username"] == ZELDA.username
    assert profile["balance"] == studio.account_summary(account.identity).balance
    assert [e["kind"] for e in ledger_json] == ["grant", "charge", "charge", "refund"]
    assert [int(r["delta"]) for r in ledger_csv] == [e["delta"] for e in ledger_json]
    assert [h["prompt"] for h in history] == [PROMPT, "circles red1"]
    assert history[0]["settings"]["steps"] == 1 and history[0]["request_id"] == first.request_id
    assert {i["prompt"] for i in listed} == {PROMPT, "circles red1"}


def test_an_anonymous_visitor_can_export_their_images(studio):
    visitor = Identity.anonymous("session-x", "198.51.100.4")
    studio.generate(request(PROMPT), visitor)
    with zipfile.ZipFile(download(studio, visitor, studio.export(visitor))) as z:
        assert len([n for n in z.namelist() if n.startswith("images/")]) == 1
        assert "198.51.100.4" not in json.dumps([z.read(n).decode() for n in z.namelist() if n.endswith(".json")])


def test_images_zip_holds_only_my_images(studio):
    me, other = Identity.anonymous("s1"), Identity.anonymous("s2")
    mine = studio.generate(request("a circle", num_images=2), me).images
    studio.generate(request("a circle"), other)
    with zipfile.ZipFile(download(studio, me, studio.images_zip(me))) as z:
        assert {n for n in z.namelist() if n.endswith(".png")} == {f"images/{i.id}.png" for i in mine}


def test_deleting_an_account_leaves_nothing_tied_to_it_in_the_database_or_the_data_folder(studio):
    account = studio.sign_in(ZELDA)
    studio.set_updates_opt_in(account.identity, True)
    result = studio.generate(request(PROMPT, num_images=2), account.identity)
    with pytest.raises(Exception):  # noqa: B017 - a blocked prompt still leaves ledger rows
        studio.generate(request("forbidden words"), account.identity)
    studio.export(account.identity)
    studio.images_zip(account.identity)
    visitor = Identity.anonymous("someone-else")
    kept = studio.generate(request("a circle"), visitor).images[0]

    studio.delete_account(account.identity)

    secrets_of_zelda = [account.id, ZELDA.username, ZELDA.email, ZELDA.provider_user_id, PROMPT,
                        result.request_id, *(i.id for i in result.images)]
    rows = all_rows(studio.services.db.engine)
    flat = json.dumps(rows, default=str)
    for secret in secrets_of_zelda:
        assert secret not in flat, secret
    for path in files_under(studio.services.data_dir):  # the database file and its log included
        data = path.read_bytes()
        for secret in secrets_of_zelda:
            assert secret.encode() not in data, (secret, path.name)
    assert studio.image_path(visitor, kept.id).is_file()  # other people's data stays
    assert len(rows["usage"]) == 3  # anonymous usage rows carry no identity and stay


def test_usage_rows_hold_no_identity_no_prompt_and_no_address(studio):
    account = studio.sign_in(ZELDA)
    visitor = Identity.anonymous("session-secret-123", "203.0.113.99")
    studio.generate(request(PROMPT), account.identity)
    studio.generate(request(PROMPT), visitor)
    with pytest.raises(Exception):  # noqa: B017
        studio.generate(request(f"forbidden {PROMPT}"), visitor)
    rows = studio.services.usage.rows()
    assert len(rows) == 3
    allowed = {"id", "hour", "mode", "model", "aspect_ratio", "steps", "num_images", "outcome", "timings",
               "total_seconds", "generation_seconds"}
    assert set(rows[0]) == allowed
    flat = json.dumps(rows, default=str)
    for secret in [account.id, ZELDA.username, ZELDA.email, "session-secret-123", visitor.owner_key,
                   "203.0.113.99", "periwinkle", "dodecahedron"]:
        assert secret not in flat
    for row in rows:
        assert row["hour"].minute == row["hour"].second == row["hour"].microsecond == 0


def test_the_client_address_is_never_written_to_disk(studio):
    visitor = Identity.anonymous("session-9", "203.0.113.77")
    studio.generate(request("a circle"), visitor)
    studio.export(visitor)
    for path in files_under(studio.services.data_dir):
        assert b"203.0.113.77" not in path.read_bytes()
        assert b"session-9" not in path.read_bytes()


def test_anonymous_prompts_expire_with_their_images(studio):
    visitor = Identity.anonymous("session-1")
    studio.generate(request(PROMPT), visitor)
    studio.services.images.sweep(now=utcnow() + timedelta(hours=1, minutes=1))
    flat = json.dumps(all_rows(studio.services.db.engine), default=str)
    assert "periwinkle" not in flat and list(studio.services.images.images_dir.iterdir()) == []


def test_the_policy_states_the_configured_values(data_dir, fast_generator):
    studio = make_studio(
        data_dir, fast_generator,
        credits={"signup_grant": 37},
        allowance={"anonymous_images_per_day": 4},
        storage={"anonymous_expiry_hours": 3, "account_expiry_hours": 120, "account_max_images": 77},
        privacy={"contact": "dpo@quokka.example", "operator_name": "Quokka Labs"},
    )
    try:
        policy = studio.policy_markdown()
    finally:
        studio.close()
    for expected in ["**37 credits**", "**4 images per day**", "**3 hours**", "**5 days**", "**77 images",
                     "dpo@quokka.example", "Quokka Labs", "Data shared with third parties: none",
                     "Analytics: off", "prompts are checked by a safety filter"]:
        assert expected in policy, expected
    assert "has not named its operator" not in policy


def test_until_the_operator_is_named_the_policy_says_so_in_a_banner(studio):
    policy = studio.policy_markdown()
    assert policy.splitlines()[2].startswith("> **This instance has not named its operator yet.**")


def test_the_policy_says_when_analytics_email_or_a_filter_is_on_or_off(data_dir, fast_generator):
    class PromptFilterOff:
        prompt_filter = None  # what SafetyChecker holds when configs/safety.yaml switches it off

        def check_prompt(self, text):
            raise AssertionError("not called in this test")

        def check_image(self, image):
            raise AssertionError("not called in this test")

    config = service_config(data_dir, smtp={"host": "mail.quokka.example", "from_address": "n@quokka.example"})
    studio = build_studio({"GRADIO_ANALYTICS_ENABLED": "True"}, generator=fast_generator,
                          safety=PromptFilterOff(), config=config, start_sweeper=False)
    try:
        policy = studio.policy_markdown()
    finally:
        studio.close()
    assert "Analytics: on" in policy and "Gradio's usage analytics" in policy
    assert "mail.quokka.example" in policy
    assert "the prompt safety filter is turned off" in policy


def test_the_background_sweeper_removes_expired_images(studio):
    visitor = Identity.anonymous("session-1")
    studio.generate(request("a circle"), visitor)
    with studio.services.db.transaction() as c:
        c.execute(images.update().values(expires_at=utcnow() - timedelta(seconds=1)))
    studio.start_sweeper(interval=0.05)
    deadline = time.monotonic() + 5
    while list(studio.services.images.images_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(studio.services.images.images_dir.iterdir()) == []
    assert all_rows(studio.services.db.engine)["images"] == []


def test_the_first_start_creates_the_data_folder_and_database_with_no_manual_step(tmp_path, fast_generator):
    target = tmp_path / "fresh" / "data"
    studio = build_studio({"NANOBANANA_DATA_DIR": str(target)}, generator=fast_generator,
                          safety=lambda: None, start_sweeper=False)
    try:
        assert studio.services.data_dir == target.resolve() and (target / "nanobanana.service.db").is_file()
        with studio.services.db.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    finally:
        studio.close()


def test_prometheus_metrics_come_from_a_private_registry(studio):
    # (The web app serves this text at /metrics; tests/web/test_api.py fetches it over HTTP.)
    studio.generate(request("a circle"), Identity.anonymous("s"))
    text = studio.metrics_text().decode()
    assert 'nanobanana_requests_total{mode="text-to-image",outcome="ok"} 1.0' in text
    assert "nanobanana_generation_seconds_bucket" in text


def test_old_exports_and_history_past_its_retention_are_swept(studio):
    account = studio.sign_in(ZELDA)
    studio.generate(request(PROMPT), account.identity)
    export = studio.services.images.exports_dir / studio.export(account.identity).name
    stale = time.time() - studio.services.config.storage.export_expiry_minutes * 60 - 5
    os.utime(export, (stale, stale))
    assert studio.sweep().exports == 1 and not export.exists()
    retention = studio.services.config.privacy.history_retention_days
    assert studio.services.generation_log.sweep(now=utcnow() + timedelta(days=retention + 1)) == 1
    assert studio.services.privacy.history.for_account(account.id) == []


def test_a_restart_sweeps_what_expired_while_the_service_was_down(data_dir, fast_generator):
    first = make_studio(data_dir, fast_generator)
    first.generate(request("a circle"), Identity.anonymous("s"))
    with first.services.db.transaction() as c:
        c.execute(images.update().values(expires_at=utcnow() - timedelta(seconds=1)))
    first.close()
    second = make_studio(data_dir, fast_generator)
    try:
        assert list(second.services.images.images_dir.iterdir()) == []
        assert all_rows(second.services.db.engine)["images"] == []
    finally:
        second.close()
