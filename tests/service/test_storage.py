"""Temporary image storage: owner-only access, validated ids, expiry, quotas, no orphan files.

Runs on SQLite and (marked `postgres`) on PostgreSQL.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from PIL import Image

from nanobanana.errors import ImageNotFound
from nanobanana.service.accounts import Identity
from nanobanana.service.config import StorageConfig
from nanobanana.service.db import Database, utcnow
from nanobanana.service.images import ORPHAN_GRACE_SECONDS, ImageStore
from tests.helpers import files_under

ALICE = Identity.account("a" * 32)
BOB = Identity.account("b" * 32)
VISITOR = Identity.anonymous("session-1", "10.0.0.1")


@pytest.fixture
def db(data_dir, database_url):
    database = Database.open(database_url, data_dir)
    yield database
    database.dispose()


@pytest.fixture
def store(db, data_dir):
    return ImageStore(db, data_dir, StorageConfig(account_max_images=3, anonymous_max_images=2,
                                                  account_max_bytes=10_000_000))


def save(store: ImageStore, who: Identity, n: int = 1, prompt: str = "a red circle", request_id: str = "r"):
    files = store.write_files([Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(n)])
    with store.db.transaction() as conn:
        stored = store.record(conn, who, files, request_id=request_id, prompt=prompt,
                              settings={"steps": 1}, seeds=list(range(n)))
        eviction = store.make_room(conn, who, keep=[f.id for f in files])
    store.remove_files(eviction.ids)
    return stored, eviction


def test_a_stored_image_is_listed_and_readable_by_its_owner(store):
    [image], _ = save(store, ALICE)
    assert [i.id for i in store.list(ALICE)] == [image.id]
    assert store.path(ALICE, image.id).read_bytes().startswith(b"\x89PNG")
    assert len(image.id) >= 32


def test_another_user_can_never_fetch_list_or_delete_an_image_even_with_its_id(store):
    [image], _ = save(store, ALICE)
    for other in (BOB, VISITOR, Identity.anonymous("session-2")):
        assert store.list(other) == []
        with pytest.raises(ImageNotFound):
            store.path(other, image.id)
        with pytest.raises(ImageNotFound):
            store.delete(other, image.id)
    assert store.path(ALICE, image.id).is_file()


def test_an_anonymous_visitor_is_told_apart_by_session_not_address(store):
    [image], _ = save(store, VISITOR)
    same_address = Identity.anonymous("session-2", "10.0.0.1")
    with pytest.raises(ImageNotFound):
        store.path(same_address, image.id)
    assert store.path(Identity.anonymous("session-1", "192.168.1.1"), image.id).is_file()


@pytest.mark.parametrize(
    "bad_id",
    ["../nanobanana.service.db", "..%2f..%2fetc%2fpasswd", "/etc/passwd", "a/../../b" * 4, "", ".", "x" * 31,
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.png", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x00"],
)
def test_malformed_and_path_traversal_ids_are_refused(store, bad_id):
    save(store, ALICE)
    with pytest.raises(ImageNotFound):
        store.path(ALICE, bad_id)
    with pytest.raises(ImageNotFound):
        store.delete(ALICE, bad_id)


def test_deleting_an_image_removes_its_row_and_file(store):
    [image], _ = save(store, ALICE)
    path = store.path(ALICE, image.id)
    store.delete(ALICE, image.id)
    assert not path.exists() and store.list(ALICE) == []


def test_after_a_sweep_no_expired_file_remains_on_disk(store, db):
    save(store, VISITOR, 2)
    [fresh], _ = save(store, ALICE)
    later = utcnow() + timedelta(hours=2)  # past the anonymous 1 hour, within the account's 7 days
    report = store.sweep(now=later)
    assert report.images == 2 and report.files == 2
    on_disk = {p.stem for p in store.images_dir.iterdir()}
    assert on_disk == {fresh.id}
    assert store.sweep(now=utcnow() + timedelta(days=8)).images == 1
    assert list(store.images_dir.iterdir()) == []


def test_expired_images_are_not_served_even_before_the_sweep(store):
    [image], _ = save(store, ALICE)
    from nanobanana.service.db import images

    with store.db.transaction() as c:
        c.execute(images.update().values(expires_at=utcnow() - timedelta(seconds=1)))
    assert store.list(ALICE) == []
    with pytest.raises(ImageNotFound):
        store.path(ALICE, image.id)


def test_at_the_count_limit_the_oldest_images_expire_first_and_the_user_is_told(store):
    first, _ = save(store, ALICE, 2, request_id="r1")
    time.sleep(0.01)
    second, eviction = save(store, ALICE, 2, request_id="r2")
    assert eviction.ids and set(eviction.ids) <= {i.id for i in first}
    assert "expired early to make room" in eviction.message()
    kept = {i.id for i in store.list(ALICE)}
    assert len(kept) == 3 and {i.id for i in second} <= kept
    assert {p.stem for p in store.images_dir.iterdir()} == kept


def test_the_byte_limit_is_enforced_too(db, data_dir):
    [one], _ = save(ImageStore(db, data_dir, StorageConfig()), ALICE, 1, request_id="r1")
    store = ImageStore(db, data_dir, StorageConfig(account_max_bytes=one.bytes * 3 // 2))
    _, eviction = save(store, ALICE, 1, request_id="r2")
    assert len(eviction.ids) == 1 and len(store.list(ALICE)) == 1


def test_files_of_a_failed_transaction_are_removed(store):
    files = store.write_files([Image.new("RGB", (8, 8))])
    with pytest.raises(RuntimeError), store.db.transaction() as conn:
        store.record(conn, ALICE, files, request_id="r", prompt="p", settings={}, seeds=[1])
        raise RuntimeError("the commit failed")
    store.remove_files(f.id for f in files)  # what the studio does when the commit fails
    assert store.list(ALICE) == [] and list(store.images_dir.iterdir()) == []


def test_the_sweep_removes_old_orphan_files_but_not_fresh_ones(store):
    orphan = store.images_dir / ("o" * 32 + ".png")
    orphan.write_bytes(b"x")
    fresh_orphan = store.images_dir / ("f" * 32 + ".png")
    fresh_orphan.write_bytes(b"x")
    stale = time.time() - ORPHAN_GRACE_SECONDS - 5
    os.utime(orphan, (stale, stale))
    [kept], _ = save(store, ALICE)
    os.utime(store.path(ALICE, kept.id), (stale, stale))
    store.sweep()
    assert not orphan.exists() and fresh_orphan.exists() and store.path(ALICE, kept.id).exists()


def test_nothing_is_written_outside_the_data_folder(store, data_dir, tmp_path):
    save(store, ALICE, 2)
    assert all(data_dir in p.parents for p in files_under(tmp_path))
