"""Every path that hands out an image hands out the signed file unchanged: the REST API, MCP, the page's
gallery link, History's download and zip, the privacy export (page and API), and the CLI. Each test reads
a valid C2PA manifest (and, at 256 px, the watermark with the image's own payload) back from what it got.

The app is the whole real one on 127.0.0.1 (page, /v1, /mcp); its generator is the tiny model's fake
pipeline (`FastGenerator`) drawing 256×256 pictures, big enough to carry the watermark.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from nanobanana.cli.main import main
from nanobanana.provenance import Provenance
from nanobanana.provenance.manifest import TRAINED
from nanobanana.provenance.watermark import payload_for
from tests.api.conftest import start_api
from tests.api.test_mcp import data as mcp_data
from tests.api.test_mcp import mcp_call
from tests.fakes import FastGenerator
from tests.helpers import session_cookie
from tests.provenance.conftest import picture

pytestmark = pytest.mark.slow
PROMPT = "a yellow star on a black background"


class Pictures256(FastGenerator):
    """The fake pipeline, drawing a 256×256 picture per seed."""

    def run_batch(self, plans, **kwargs):
        results = super().run_batch(plans, **kwargs)
        for result in results:
            result.images[:] = [picture(seed) for seed in result.seeds]
        return results


@pytest.fixture(scope="module")
def live(generator, tmp_path_factory):
    yield from start_api(Pictures256(generator), tmp_path_factory.mktemp("provenance-data") / "data")


def reader(live) -> Provenance:
    return live.studio.services.provenance


def assert_marked(live, data: bytes, image_id: str | None = None) -> None:
    """Both marks, trusted by this instance, and (given its id) the watermark names this very image."""
    verdict = reader(live).verify(data)
    assert verdict.status == "ai_marked", verdict.to_dict()
    assert verdict.manifest.valid and verdict.manifest.trusted and verdict.manifest.digital_source_type == TRAINED
    assert verdict.manifest.model == live.studio.services.generator.model_id
    assert verdict.watermark.found, verdict.to_dict()
    if image_id is not None:
        assert verdict.watermark.payload == f"NBAI:{payload_for('NBAI', image_id)[4:].hex()}"
        assert data == (live.data_dir / "images" / f"{image_id}.png").read_bytes()  # byte for byte


def zipped_images(content: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return {Path(n).stem: archive.read(n) for n in archive.namelist() if n.endswith(".png")}


def test_the_rest_api_hands_out_the_signed_file(live):
    c = live.client(live.key())
    job = c.post("/v1/images?wait=30", json={"prompt": PROMPT, "steps": 1, "num_images": 2}).json()
    assert job["state"] == "succeeded", job
    for image in job["result"]["images"]:
        response = c.get(image["url"])
        assert response.status_code == 200
        assert_marked(live, response.content, image["id"])


def test_the_rest_privacy_export_holds_the_signed_files(live):
    c = live.client(live.key())
    job = c.post("/v1/images?wait=30", json={"prompt": PROMPT, "steps": 1}).json()
    export = c.get("/v1/account/export")
    assert export.status_code == 200
    images = zipped_images(export.content)
    assert set(images) == {i["id"] for i in job["result"]["images"]}
    for image_id, data in images.items():
        assert_marked(live, data, image_id)


def test_an_mcp_agent_gets_the_signed_file(live):
    key = live.key()
    _, (made,) = mcp_call(live.url, key.key, [("generate_image", {"prompt": PROMPT, "steps": 1, "wait_seconds": 30})])
    image = mcp_data(made)["result"]["images"][0]
    response = httpx.get(live.url + image["url"], headers={"Authorization": f"Bearer {key.key}"}, timeout=30)
    assert_marked(live, response.content, image["id"])


def test_an_edit_says_so_and_names_the_upload_by_hash(live):
    c = live.client(live.key())
    upload = io.BytesIO()
    picture(99).save(upload, format="PNG")
    response = c.post("/v1/images", params={"wait": 30}, data={"prompt": "a blue star", "steps": "2"},
                      files=[("images", ("mine.png", upload.getvalue(), "image/png"))])
    assert response.status_code == 200, response.text
    job = response.json()
    data = c.get(job["result"]["images"][0]["url"]).content
    manifest = reader(live).verify(data).manifest
    assert manifest.valid and manifest.actions == ["c2pa.opened", "c2pa.edited"]
    [ingredient] = manifest.ingredients
    assert ingredient["relationship"] == "parentOf" and ingredient["instance_id"].startswith("sha256:")
    assert b"mine.png" not in data


def _page(live, cookie: str | None = None):
    from gradio_client import Client

    return Client(live.url, headers={"Cookie": f"session={cookie}"} if cookie else None, verbose=False,
                  download_files=False)


def _fetch(client, url: str) -> httpx.Response:
    response = httpx.get(url, headers=client.headers, cookies=client.cookies, timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_the_page_gallery_history_download_and_zip_hand_out_the_signed_files(live):
    page = _page(live, session_cookie(live.url))
    gallery = page.predict(PROMPT, "1:1", 2, "", 1, 4.0, 5, False, "", api_name="/generate")[0]
    ids = []
    for item in gallery:  # the gallery's links: what the browser's download button saves
        url = item["image"]["url"]
        ids.append(url.split("/files/images/")[1].split("/")[0])
        assert_marked(live, _fetch(page, url).content, ids[-1])
    one = page.predict(ids[0], api_name="/download_image")  # History: "Download image"
    assert_marked(live, _fetch(page, one["url"]).content, ids[0])
    everything = page.predict(api_name="/download_all")  # History: "Download all (zip)"
    images = zipped_images(_fetch(page, everything["url"]).content)
    assert set(ids) <= set(images)
    for image_id, data in images.items():
        assert_marked(live, data, image_id)
    export = page.predict(api_name="/export")  # Account: "Download my data"
    images = zipped_images(_fetch(page, export["url"]).content)
    assert set(ids) <= set(images)
    for image_id, data in images.items():
        assert_marked(live, data, image_id)


def test_the_stored_record_says_which_marks_the_images_carry(live):
    c = live.client(live.key())
    job = c.post("/v1/images?wait=30", json={"prompt": PROMPT, "steps": 1}).json()
    [image] = job["result"]["images"]
    stored = next(s for s in _all_stored(live) if s.id == image["id"])
    assert stored.settings["provenance"] == {"c2pa": True, "watermark": "embedded"}


def _all_stored(live):
    import sqlalchemy as sa

    from nanobanana.service.db import images
    from nanobanana.service.images import _stored

    with live.studio.services.db.transaction() as conn:
        return [_stored(r) for r in conn.execute(sa.select(images)).all()]


def test_the_key_files_are_served_by_no_route(live):
    folder = live.data_dir / "provenance"
    assert (folder / "signing-key.pem").is_file()
    secret = (folder / "signing-key.pem").read_bytes()
    c = httpx.Client(base_url=live.url, timeout=30)
    c.get("/config")
    attempts = [
        "/files/images/signing-key/signing-key.png", "/files/images/..%2Fprovenance%2Fsigning-key.pem/a.png",
        "/files/images/../provenance/signing-key.pem", "/files/exports/..%2Fprovenance%2Fsigning-key.pem/a.zip",
        "/files/exports/signing-key.pem/a.zip", f"/gradio_api/file={folder / 'signing-key.pem'}",
        f"/file={folder / 'signing-key.pem'}", f"/gradio_api/file={folder}/../provenance/signing-key.pem",
        "/provenance/signing-key.pem", "/data/provenance/signing-key.pem", "/v1/images/signing-key.pem",
        "/v1/images/..%2F..%2Fprovenance%2Fsigning-key.pem", "/static/../data/provenance/signing-key.pem",
    ]
    for path in attempts:
        response = c.get(path)
        assert response.status_code in (400, 401, 403, 404, 405, 422), (path, response.status_code)
        assert b"PRIVATE KEY" not in response.content and secret not in response.content, path


# -- the command line ---------------------------------------------------------------------------------------
def test_the_cli_writes_and_exports_signed_files_and_verify_reads_them(tmp_path, monkeypatch, capsys,
                                                                        tiny_model_dir):
    monkeypatch.setenv("NANOBANANA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NANOBANANA_MODEL", str(tiny_model_dir))
    monkeypatch.delenv("NANOBANANA_DATABASE_URL", raising=False)
    assert main(["users", "add", "ada"]) == 0
    assert main(["generate", PROMPT, "--steps", "1", "--user", "ada", "--out", str(tmp_path / "mine"),
                 "--json"]) == 0
    assert main(["generate", PROMPT, "--steps", "1", "--out", str(tmp_path / "plain")]) == 0
    assert main(["export", "ada", "--out", str(tmp_path / "ada.zip")]) == 0
    capsys.readouterr()
    exported = tmp_path / "exported.png"
    exported.write_bytes(next(iter(zipped_images((tmp_path / "ada.zip").read_bytes()).values())))
    files = [*sorted((tmp_path / "mine").glob("*.png")), *sorted((tmp_path / "plain").glob("*.png")), exported]
    assert len(files) == 3
    assert main(["verify", *map(str, files)]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for report in reports:  # the tiny model makes 64 px images: the manifest marks them, and says why alone
        assert report["status"] == "ai_marked" and report["manifest"]["valid"] and report["manifest"]["trusted"]
        assert not report["watermark"]["checked"] and "too small" in report["watermark"]["note"]
    meta = json.loads((tmp_path / "plain" / "result.json").read_text())
    assert "too small" in meta["marks"][0]


def test_verify_exit_codes_name_the_worst_file(tmp_path, monkeypatch, capsys, provenance):
    monkeypatch.setenv("NANOBANANA_DATA_DIR", str(provenance.data_dir))
    marked, _ = provenance.mark(picture(1), "y" * 32, __import__("nanobanana.provenance").provenance.Origin())
    files = {"marked.png": marked, "plain.png": _png(picture(2)), "notes.txt": b"hello"}
    tampered = bytearray(marked)
    tampered[len(tampered) // 2] ^= 1
    files["tampered.png"] = bytes(tampered)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    code = lambda *names: main(["verify", *(str(tmp_path / n) for n in names)])  # noqa: E731
    assert code("marked.png") == 0
    assert code("marked.png", "plain.png") == 3
    assert code("marked.png", "plain.png", "notes.txt") == 5
    assert code("notes.txt", "tampered.png", "marked.png") == 4
    assert code("missing.png") == 5
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    statuses = {Path(line["file"]).name: line["status"] for line in lines}
    assert statuses == {"marked.png": "ai_marked", "plain.png": "not_marked", "notes.txt": "unreadable",
                        "tampered.png": "tampered", "missing.png": "unreadable"}
    assert all(str(tmp_path) not in json.dumps(line.get("error", "")) for line in lines)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
