"""The "Check an image" box on the real app (`python app.py` on 127.0.0.1, the tiny model): it reads an
upload in memory, answers with the verdict, and keeps nothing; the signing key is never served."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.live_app import call, new_visitor, start_app, stop_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tiny_model_dir, tmp_path_factory):
    live = start_app(tmp_path_factory.mktemp("check"), {"NANOBANANA_MODEL": str(tiny_model_dir)})
    yield live
    stop_app(live)


def upload(c, name: str, data: bytes) -> str:
    response = c.post("/gradio_api/upload", files=[("files", (name, data, "image/png"))])
    assert response.status_code == 200, response.text
    return response.json()[0]


def check(c, live, data: bytes, name: str = "check.png") -> tuple[dict, str]:
    path = upload(c, name, data)
    message = call(c, live, "check_image", [{"path": path, "meta": {"_type": "gradio.FileData"}}])
    return message, path


def test_a_generated_image_checks_as_made_by_ai_and_the_upload_is_not_kept(live):
    c = new_visitor(live)
    made = call(c, live, "generate", ["a red circle", "1:1", 1, "", 2, 1.5, 1, True, ""])
    assert made["success"], made
    url = made["output"]["data"][0][0]["image"]["url"]
    data = c.get(url).content
    before_data = {p for p in live.data_dir.rglob("*") if p.is_file()}
    before = live.files_in_gradio_dir()
    message, path = check(c, live, data)
    assert message["success"], message
    verdict, details = message["output"]["data"]
    assert "Made by AI" in verdict and "signed C2PA manifest" in verdict
    assert "too small for the invisible watermark" in verdict  # the tiny model's 64 px images
    assert details["status"] == "ai_marked" and details["manifest"]["trusted"]
    assert not Path(path).exists() and live.files_in_gradio_dir() - before == set()
    assert {p for p in live.data_dir.rglob("*") if p.is_file()} - before_data == set()


def test_an_unmarked_image_and_a_non_image_get_plain_answers(live):
    c = new_visitor(live)
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (20, 120, 200)).save(buffer, format="PNG")
    message, _ = check(c, live, buffer.getvalue())
    assert message["success"] and "No AI mark found" in message["output"]["data"][0]
    message, path = check(c, live, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "broken.png")
    assert not message["success"] and "not an image we can read" in message["output"]["error"]
    assert "Traceback" not in live.log_text() and not Path(path).exists()


def test_checking_the_same_upload_again_says_it_is_gone_without_a_traceback(live):
    c = new_visitor(live)
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 20, 20)).save(buffer, format="PNG")
    message, path = check(c, live, buffer.getvalue())
    assert message["success"], message
    again = call(c, live, "check_image", [{"path": path, "meta": {"_type": "gradio.FileData"}}])
    assert not again["success"] and "upload is gone" in again["output"]["error"]
    assert "Traceback" not in live.log_text()


def test_the_signing_key_is_not_served(live):
    key = live.data_dir / "provenance" / "signing-key.pem"
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
    c = new_visitor(live)
    for path in (f"/gradio_api/file={key}", f"/gradio_api/file={live.data_dir}/../data/provenance/signing-key.pem",
                 "/files/images/..%2F..%2Fprovenance%2Fsigning-key.pem/x.png", f"/file={key}",
                 "/gradio_api/upload?path=" + str(key)):
        response = c.get(path)
        assert response.status_code >= 400 and b"PRIVATE KEY" not in response.content, path
    # Nor through a file reference in request data: a client may only name its own uploads.
    refused = c.post("/gradio_api/queue/join", json={
        "data": [{"path": str(key), "meta": {"_type": "gradio.FileData"}}], "fn_index": live.fns["check_image"],
        "session_hash": "attacker1", "event_data": None, "trigger_id": None})
    assert refused.status_code == 400 and key.is_file()
