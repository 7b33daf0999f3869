"""Credits: the ledger is the truth, charges never overdraw, retries never charge twice.

Runs on SQLite and (marked `postgres`) on PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from nanobanana.errors import CreditsError, InsufficientCredits, InvalidAdjustment
from nanobanana.service.accounts import Accounts, OAuthProfileData
from nanobanana.service.config import CreditsConfig
from nanobanana.service.db import Database
from nanobanana.service.ledger import CostRule, Ledger
from tests.helpers import head_revision


@pytest.fixture
def db(data_dir, database_url):
    database = Database.open(database_url, data_dir)
    yield database
    database.dispose()


@pytest.fixture
def account_id(db) -> str:
    with db.transaction() as conn:
        return Accounts(db).create(OAuthProfileData("local", "1", "maria"), conn).id


def test_new_database_has_every_table_at_the_newest_migration(db):
    tables = set(sa.inspect(db.engine).get_table_names())
    expected = {"accounts", "ledger", "images", "generations", "usage", "announcements", "alembic_version"}
    assert expected <= tables
    with db.engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()


def test_opening_twice_migrates_once_and_keeps_data(db, account_id, data_dir, database_url):
    Ledger(db).grant(account_id, 5, "test")
    again = Database.open(database_url, data_dir)
    assert Ledger(again).balance(account_id) == 5
    again.dispose()


def test_balance_equals_the_sum_of_the_ledger_after_every_kind_of_movement(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 10, "sign-up grant")
    ledger.charge(account_id, 4, "r1", "2 images")
    ledger.refund(account_id, 2, "r1", "1 image blocked")
    ledger.adjust(account_id, -3, "correction")
    assert ledger.balance(account_id) == ledger.ledger_sum(account_id) == 5
    assert [(e.kind, e.delta, e.balance_after) for e in ledger.history(account_id)] == [
        ("grant", 10, 10), ("charge", -4, 6), ("refund", 2, 8), ("adjust", -3, 5)
    ]
    assert ledger.history(account_id)[1].request_id == "r1"


def test_a_charge_larger_than_the_balance_is_refused_and_changes_nothing(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 3, "grant")
    with pytest.raises(InsufficientCredits, match="balance is 3"):
        ledger.charge(account_id, 4, "r1", "too much")
    assert ledger.balance(account_id) == 3
    assert len(ledger.history(account_id)) == 1


def test_charging_the_same_request_id_twice_charges_once(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 10, "grant")
    first = ledger.charge(account_id, 4, "same", "x")
    second = ledger.charge(account_id, 4, "same", "x")
    assert not first.replayed and second.replayed
    assert ledger.balance(account_id) == 6


def test_a_request_is_refunded_at_most_once_and_never_more_than_it_was_charged(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 10, "grant")
    ledger.charge(account_id, 4, "r", "x")
    ledger.refund(account_id, 4, "r", "failed")
    ledger.refund(account_id, 4, "r", "failed again")
    assert ledger.balance(account_id) == 10
    ledger.charge(account_id, 2, "r2", "x")
    with pytest.raises(CreditsError):
        ledger.refund(account_id, 3, "r2", "too much")
    with pytest.raises(CreditsError):
        ledger.refund(account_id, 1, "never-charged", "no charge")


def test_an_adjustment_cannot_take_the_balance_below_zero(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 2, "grant")
    with pytest.raises(InvalidAdjustment):
        ledger.adjust(account_id, -3, "too much")
    assert ledger.balance(account_id) == ledger.ledger_sum(account_id) == 2


def test_parallel_charges_never_overdraw(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 25, "grant")
    start = threading.Barrier(16)

    def attempt(i: int) -> bool:
        if i < 16:
            start.wait()
        try:
            ledger.charge(account_id, 2, f"req-{i}", "parallel")
            return True
        except InsufficientCredits:
            return False

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(60)))
    assert sum(results) == 12  # 25 // 2
    assert ledger.balance(account_id) == ledger.ledger_sum(account_id) == 1


def test_parallel_retries_of_one_request_charge_once(db, account_id):
    ledger = Ledger(db)
    ledger.grant(account_id, 10, "grant")
    with ThreadPoolExecutor(8) as pool:
        charges = list(pool.map(lambda _: ledger.charge(account_id, 3, "retried", "x"), range(8)))
    assert sum(not c.replayed for c in charges) == 1
    assert ledger.balance(account_id) == ledger.ledger_sum(account_id) == 7


@pytest.mark.parametrize(
    ("width", "height", "steps", "expected"),
    [(1024, 1024, 8, 2), (512, 512, 8, 1), (1024, 1024, 16, 4), (2048, 1024, 8, 4), (64, 64, 1, 1)],
)
def test_the_cost_scales_with_pixels_and_steps(width, height, steps, expected):
    rule = CostRule(CreditsConfig(per_image=2, reference_pixels=1024 * 1024, reference_steps=8))
    assert rule.per_image(width, height, steps) == expected


def test_the_migrations_create_exactly_the_schema_the_code_declares(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from nanobanana.service.db import metadata

    with db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), metadata) == []
