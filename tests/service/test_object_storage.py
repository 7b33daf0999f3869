"""Images, exports and queued jobs' inputs in S3-compatible object storage (a real SeaweedFS on loopback).

Two studios on one database and one bucket stand for two web replicas on two machines: nothing of what
one stores lives on its own disk.
"""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from PIL import Image

from nanobanana.errors import ImageNotFound, StorageUnavailable
from nanobanana.generation import Mode
from nanobanana.service.accounts import Identity, OAuthProfileData
from tests.helpers import all_rows, files_under, make_studio, request

ZELDA = OAuthProfileData("huggingface", "hf-777123", "zelda", "zelda@example.org")


def studio_on_s3(data_dir, generator, s3_storage, **kwargs):
    storage = {k: v for k, v in s3_storage.items() if k != "prefix"}
    return make_studio(data_dir, generator, storage=storage, **kwargs)


@pytest.fixture
def s3_studio(tmp_path, fast_generator, s3_storage):
    s = studio_on_s3(tmp_path / "a", fast_generator, s3_storage)
    yield s
    s.close()


def test_images_go_to_the_bucket_and_not_to_the_data_folder(s3_studio, s3_server, s3_storage):
    account = s3_studio.sign_in(ZELDA)
    result = s3_studio.generate(request(num_images=2), account.identity)
    keys = s3_server.keys(s3_storage["prefix"] + "/")
    assert keys == sorted(f"{s3_storage['prefix']}/images/{i.id}.png" for i in result.images)
    data_dir = s3_studio.services.data_dir
    assert not [p for p in files_under(data_dir) if p.suffix == ".png"]
    png = s3_studio.image_bytes(account.identity, result.images[0].id)
    assert png.startswith(b"\x89PNG")


def test_another_replica_serves_the_image_to_its_owner_and_nobody_else(tmp_path, fast_generator, s3_storage,
                                                                        postgres_url):
    a = studio_on_s3(tmp_path / "a", fast_generator, s3_storage, database_url=postgres_url)
    b = studio_on_s3(tmp_path / "b", fast_generator, s3_storage, database_url=postgres_url)
    try:
        visitor = Identity.anonymous("session-a")
        image = a.generate(request(), visitor).images[0]
        assert b.image_bytes(visitor, image.id) == a.image_bytes(visitor, image.id)
        with pytest.raises(ImageNotFound):
            b.image_bytes(Identity.anonymous("session-b"), image.id)
    finally:
        a.close()
        b.close()


def test_an_edit_runs_from_inputs_kept_in_the_bucket(tmp_path, fast_generator, s3_storage, s3_server):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # one database; two data folders, as on two machines
    web = studio_on_s3(tmp_path / "web", fast_generator, s3_storage, database_url=shared, start_worker=False,
                       jobs={"worker": "none"})
    worker = studio_on_s3(tmp_path / "worker", fast_generator, s3_storage, database_url=shared)
    try:
        visitor = Identity.anonymous("session-a")
        upload = Image.new("RGB", (64, 64), (20, 120, 200))
        job = web.submit(request("a circle", mode=Mode.IMAGE_TO_IMAGE, images=[upload], strength=0.5, steps=2),
                         visitor)
        view = web.await_job(visitor, job, timeout=60)
        assert view.outcome == "ok" and len(view.images) == 1
        assert not [k for k in s3_server.keys(s3_storage["prefix"] + "/") if "/jobs/" in k]  # inputs removed
    finally:
        web.close()
        worker.close()


def test_exports_are_kept_in_the_bucket_and_downloaded_through_the_owner(s3_studio, s3_server, s3_storage):
    account = s3_studio.sign_in(ZELDA)
    images = s3_studio.generate(request(num_images=2), account.identity).images
    export = s3_studio.export(account.identity)
    assert f"{s3_storage['prefix']}/exports/{export.name}" in s3_server.keys(s3_storage["prefix"] + "/")
    assert s3_studio.export_download(Identity.anonymous("x"), export.name) is None
    found = s3_studio.export_download(account.identity, export.name)
    with zipfile.ZipFile(io.BytesIO(b"".join(found[1]))) as z:
        assert {f"images/{i.id}.png" for i in images} <= set(z.namelist())
    assert found[0].size == export.size


def test_deleting_the_account_deletes_every_object_of_it(s3_studio, s3_server, s3_storage):
    account = s3_studio.sign_in(ZELDA)
    s3_studio.generate(request(num_images=2), account.identity)
    s3_studio.export(account.identity)
    s3_studio.images_zip(account.identity)
    visitor = Identity.anonymous("session-other")
    other = s3_studio.generate(request(), visitor).images[0]
    s3_studio.delete_account(account.identity)
    assert s3_server.keys(s3_storage["prefix"] + "/") == [f"{s3_storage['prefix']}/images/{other.id}.png"]


def test_the_sweeper_deletes_expired_and_orphaned_objects(s3_studio, s3_server, s3_storage, monkeypatch):
    visitor = Identity.anonymous("session-a")
    s3_studio.generate(request(), visitor)
    s3_studio.export(visitor)
    s3_studio.services.images.image_blobs.put("o" * 32 + ".png", b"\x89PNG orphan")
    import nanobanana.service.images as images_module

    monkeypatch.setattr(images_module, "ORPHAN_GRACE_SECONDS", -60)
    later = time.time() + s3_studio.services.config.storage.export_expiry_minutes * 60 + 60
    monkeypatch.setattr(images_module.time, "time", lambda: later)
    from datetime import timedelta

    from nanobanana.service.db import utcnow

    report = s3_studio.services.images.sweep(now=utcnow() + timedelta(days=30))
    assert report.images == 1 and report.files == 2 and report.exports == 1
    assert s3_server.keys(s3_storage["prefix"] + "/") == []


def test_the_store_down_gives_a_clear_message_charges_nothing_and_writes_no_row(tmp_path, fast_generator,
                                                                               s3_storage):
    from tests.seaweedfs import SeaweedFS

    with SeaweedFS(tmp_path / "weed") as own:  # its own server: this test stops it
        storage = {**s3_storage, "location": f"s3://{own.bucket}/x", "s3_endpoint": own.endpoint}
        studio = studio_on_s3(tmp_path / "data", fast_generator, storage)
        try:
            account = studio.sign_in(ZELDA)
            before = studio.services.ledger.balance(account.id)
            own.stop()
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as caught:
                studio.generate(request(num_images=2), account.identity)
            assert time.monotonic() - started < 60
            assert "cannot be reached" in str(caught.value) and "nothing was charged" in str(caught.value)
            assert "127.0.0.1" not in str(caught.value)
            assert studio.services.ledger.balance(account.id) == before
            rows = all_rows(studio.services.db.engine)
            assert rows["images"] == [] and rows["generations"][0]["outcome"] != "ok"
        finally:
            studio.close()
