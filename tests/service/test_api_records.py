"""The API's records in the service: keys, idempotency claims and webhook deliveries, on SQLite and
(marked `postgres`) on PostgreSQL. Runs through `Studio` as the API does."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from nanobanana.errors import ApiKeyNotFound, IdempotencyKeyReused, InvalidApiKey, InvalidRequest
from nanobanana.service.accounts import OAuthProfileData
from nanobanana.service.config import WebhooksConfig
from nanobanana.service.db import ledger
from nanobanana.service.webhooks import sign
from tests.helpers import all_rows, head_revision, make_studio, request


@pytest.fixture
def api_studio(data_dir, fast_generator, database_url):
    s = make_studio(data_dir, fast_generator, database_url=database_url,
                    api={"webhooks": WebhooksConfig(allow_private_targets=True)})
    yield s
    s.close()


def account(studio, name="maria"):
    return studio.sign_in(OAuthProfileData("local", name, name))


def test_the_migration_makes_the_api_tables(api_studio):
    with api_studio.services.db.engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
        names = set(sa.inspect(c).get_table_names())
    assert {"api_keys", "idempotency_keys", "webhook_deliveries"} <= names


def test_a_key_resolves_to_its_account_until_revoked(api_studio):
    me = account(api_studio)
    new = api_studio.create_api_key(me.identity, "script")
    assert new.key.startswith("nb_") and new.webhook_secret.startswith("whsec_")
    assert api_studio.api_caller(new.key).identity == me.identity
    api_studio.revoke_api_key(me.identity, new.record.id)
    with pytest.raises(InvalidApiKey):
        api_studio.api_caller(new.key)
    with pytest.raises(ApiKeyNotFound):
        api_studio.revoke_api_key(me.identity, new.record.id)


def test_a_key_needs_a_name_and_keys_are_capped(api_studio):
    me = account(api_studio)
    with pytest.raises(InvalidRequest, match="name"):
        api_studio.create_api_key(me.identity, "  ")
    for n in range(api_studio.services.config.api.max_keys_per_account):
        api_studio.create_api_key(me.identity, f"key {n}")
    with pytest.raises(InvalidRequest, match="at most"):
        api_studio.create_api_key(me.identity, "one too many")


def test_parallel_submissions_with_one_idempotency_key_make_one_job_and_one_charge(api_studio):
    me = account(api_studio)
    key = secrets.token_hex(8)
    with ThreadPoolExecutor(6) as pool:
        submitted = list(pool.map(lambda _: api_studio.submit_job(request(), me.identity, idempotency_key=key,
                                                                  fingerprint="same"), range(6)))
    assert len({s.job_id for s in submitted}) == 1 and sum(not s.replayed for s in submitted) == 1
    with pytest.raises(IdempotencyKeyReused):
        api_studio.submit_job(request(), me.identity, idempotency_key=key, fingerprint="other")
    api_studio.await_job(me.identity, submitted[0].job_id, 30)
    with api_studio.services.db.engine.connect() as c:
        kinds = c.execute(sa.select(ledger.c.kind).where(ledger.c.request_id == submitted[0].job_id)).scalars().all()
    assert kinds == ["charge"]


def test_deleting_the_account_removes_keys_claims_and_deliveries(api_studio):
    me = account(api_studio)
    new = api_studio.create_api_key(me.identity, "script")
    api_studio.submit_job(request(), me.identity, idempotency_key="k1", fingerprint="f",
                          webhook=(new.record, "http://127.0.0.1:9/hook"))
    api_studio.delete_account(me.identity)
    rows = all_rows(api_studio.services.db.engine)
    assert rows["api_keys"] == [] and rows["idempotency_keys"] == [] and rows["webhook_deliveries"] == []


def test_the_signature_is_the_standard_webhooks_one():
    # The example of the Standard Webhooks specification (its reference implementations' test vector).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
