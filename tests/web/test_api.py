"""The app's endpoints, called the way scripts call them: gradio_client against the app on 127.0.0.1.

One app (tiny model, temp data folder, a word-list safety filter) serves the whole module.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from nanobanana.web.app import GENERIC_ERROR
from tests.fakes import BLOCKED_COLOUR, BLOCKED_WORD
from tests.helpers import Server, build_test_app, session_cookie

pytestmark = pytest.mark.slow
ALLOWANCE = 3  # anonymous images a day; every anonymous caller here shares 127.0.0.1's count


@pytest.fixture(scope="module")
def app(generator, tmp_path_factory):
    studio, web = build_test_app(generator, tmp_path_factory.mktemp("ui-api-data"), allowance=ALLOWANCE)
    with Server(web) as server:
        server.studio = studio
        yield server
    studio.close()


def client(app, cookie: str | None = None):
    from gradio_client import Client

    headers = {"Cookie": f"session={cookie}"} if cookie else None
    return Client(app.url, headers=headers, verbose=False, download_files=False)


def fetch(c, url: str) -> httpx.Response:
    """GET one of our file links as this client (its cookies: the files route checks the owner)."""
    return httpx.get(url, headers=c.headers, cookies=c.cookies, timeout=30)


def generate(c, prompt="a red triangle on a white background", ratio="1:1", n=1, seed=7, randomize=False):
    return c.predict(prompt, ratio, n, "", 4, 4.0, seed, randomize, "", api_name="/generate")


@pytest.fixture(scope="module")
def signed_in(app):
    return session_cookie(app.url)


def test_every_action_has_a_named_endpoint(app):
    names = set(client(app).view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/edit", "/quote", "/history", "/download_image", "/download_all", "/delete_image",
            "/account", "/set_updates_opt_in", "/export", "/delete_account", "/stats"} <= names


def test_only_the_prompt_is_required_from_scripts(app):
    gallery = client(app).predict("a red circle", api_name="/generate")[0]
    assert len(gallery) == 1


def test_anonymous_generate_returns_the_image_and_its_seed(app):
    gallery, info, seed, header, note = generate(client(app), seed=1234)  # (the button is not an API output)
    assert len(gallery) == 1 and gallery[0]["caption"] == "seed 1234"
    assert "`1234`" in info and seed == 1234
    assert "free images left today" in header
    assert "left today" in note  # the new quote comes with the result: no second call after a click


def test_the_same_seed_reproduces_the_same_image(app, signed_in):
    c = client(app, signed_in)
    first, second = generate(c, seed=99)[0][0], generate(c, seed=99)[0][0]
    first, second = fetch(c, first["image"]["url"]), fetch(c, second["image"]["url"])
    assert first.status_code == second.status_code == 200
    assert first.content.startswith(b"\x89PNG")
    # The same pixels (up to the invisible watermark, whose payload differs per image id); each file has its
    # own signed C2PA manifest, so the bytes differ.
    a, b = (np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16) for r in (first, second))
    assert a.shape == b.shape and np.abs(a - b).mean() < 2


def test_anonymous_request_beyond_the_allowance_is_refused_with_a_way_out(app):
    with pytest.raises(Exception) as caught:
        generate(client(app), n=ALLOWANCE + 1)
    message = str(caught.value)
    assert "images a day" in message and "sign in" in message


def test_signed_in_generate_charges_credits(app, signed_in):
    c = client(app, signed_in)
    before = c.predict(api_name="/account")[0]
    assert "local-dev" in before
    quote = c.predict("16:9", 2, 4, api_name="/quote")
    assert "2 credit(s)" in quote[0]
    header = generate(c, ratio="16:9", n=2)[3]
    balance_before = int(before.split("balance **")[1].split("**")[0])
    assert f"balance **{balance_before - 2}**" in header
    ledger = c.predict(api_name="/account")[1]
    assert ledger["data"][0][1] == -2  # newest first


class CountingTokenizer:
    """Stands in for the model's tokenizer and counts the calls our planning makes (it asks for the
    ids without special tokens; the pipeline's own encoding does not)."""

    def __init__(self, real):
        self.real = real
        self.plans = 0

    def __call__(self, *args, **kwargs):
        if kwargs.get("add_special_tokens") is False:
            self.plans += 1
        return self.real(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_one_generate_click_plans_the_request_once(app, monkeypatch):
    model = app.studio.services.generator.load()  # planning reads the prompt encoder's tokenizer
    counting = CountingTokenizer(model.prompt_tokenizer)
    monkeypatch.setattr(model, "prompt_tokenizer", counting)
    gallery = generate(client(app, session_cookie(app.url)), seed=5)[0]
    assert len(gallery) == 1
    assert counting.plans == 1  # the prompt is fitted once; the quote that follows tokenises nothing


def test_blocked_prompt_is_refused_readably_and_not_charged(app, signed_in):
    c = client(app, signed_in)
    before = c.predict(api_name="/account")[0]
    with pytest.raises(Exception) as caught:
        generate(c, prompt=f"a {BLOCKED_WORD} on a white background")
    assert "refused" in str(caught.value) and "Traceback" not in str(caught.value)
    assert c.predict(api_name="/account")[0] == before


def upload(tmp_path: Path, name: str, data: bytes):
    from gradio_client import handle_file

    path = tmp_path / name
    path.write_bytes(data)
    return [handle_file(str(path))]


def png(colour=(255, 255, 255), size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_file_that_is_not_an_image_is_refused_readably(app, tmp_path):
    files = upload(tmp_path, "notes.png", b"this is not a picture at all")
    with pytest.raises(Exception) as caught:
        client(app).predict(files, "make it blue", 0.6, 4, 0, True, api_name="/edit")
    assert "not an image we can read" in str(caught.value)


def test_a_blocked_upload_is_refused_readably(app, tmp_path, signed_in):
    files = upload(tmp_path, "pink.png", png(BLOCKED_COLOUR))
    with pytest.raises(Exception) as caught:
        client(app, signed_in).predict(files, "make it blue", 0.6, 4, 0, True, api_name="/edit")
    assert "refused" in str(caught.value)


def test_edit_without_an_edit_pipeline_runs_image_to_image_and_says_so(app, tmp_path, signed_in):
    files = upload(tmp_path, "white.png", png())
    result, note, _ = client(app, signed_in).predict(files, "a red circle", 0.6, 4, 0, True, api_name="/edit")
    assert len(result) == 1
    assert "image-to-image" in note


def test_raw_uploads_are_not_kept_on_the_server(app, tmp_path, signed_in):
    from gradio.utils import get_upload_folder

    files = upload(tmp_path, "keep-me-not-7f3a.png", png((0, 0, 255)))
    client(app, signed_in).predict(files, "a red circle", 0.6, 4, 0, True, api_name="/edit")
    assert not list(Path(get_upload_folder()).glob("*/keep-me-not-7f3a.png"))


def test_history_lists_downloads_zips_and_deletes_my_images(app, tmp_path):
    c = client(app, session_cookie(app.url))
    gallery, table, choice, _, requests = c.predict(api_name="/history")
    assert len(gallery) >= 1 and table["headers"][0] == "prompt"
    assert requests["headers"] == ["sent (UTC)", "state", "images", "note"] and "✅ done" in str(requests["data"])
    image_id = choice["value"]
    one = c.predict(image_id, api_name="/download_image")
    image = fetch(c, one["url"])
    assert image.content.startswith(b"\x89PNG") and one["size"] == len(image.content)
    # Named by prompt and seed, not by a random id; shown inline (the same link is the gallery's image).
    assert re.fullmatch(r'inline; filename="a-[a-z0-9-]+-seed\d+\.png"', image.headers["content-disposition"])
    archive = c.predict(api_name="/download_all")
    assert re.fullmatch(r"nanobanana-images-\d{4}-\d{2}-\d{2}\.zip", archive["orig_name"])
    names = zipfile.ZipFile(io.BytesIO(fetch(c, archive["url"]).content)).namelist()
    assert f"images/{image_id}.png" in names
    after = c.predict(image_id, api_name="/delete_image")[1]
    assert image_id not in [row[-1] for row in after["data"]]


def test_someone_elses_image_cannot_be_downloaded(app):
    mine = client(app, session_cookie(app.url)).predict(api_name="/history")[2]["value"]
    with pytest.raises(Exception) as caught:
        client(app).predict(mine, api_name="/download_image")
    assert "Traceback" not in str(caught.value)


def test_an_unexpected_failure_shows_a_generic_message(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.studio, "quote", broken)
    with pytest.raises(Exception) as caught:
        client(app).predict("1:1", 1, 4, api_name="/quote")
    assert GENERIC_ERROR in str(caught.value) and "secret internal detail" not in str(caught.value)


def test_stats_report_requests_and_causes(app):
    numbers, per_day, timing, causes, popular = client(app).predict(api_name="/stats")
    assert "requests" in numbers and per_day["data"] and timing["data"] and popular["data"]
    assert "blocked_prompt" in [row[0] for row in causes["data"]]


def test_metrics_and_privacy_pages_are_served(app):
    metrics = httpx.get(app.url + "/metrics", timeout=30)
    assert metrics.status_code == 200 and "nanobanana_requests_total" in metrics.text
    policy = httpx.get(app.url + "/privacy", timeout=30)
    assert policy.status_code == 200 and "<h1" in policy.text


def test_progress_follows_the_denoising_steps(app):
    from types import SimpleNamespace

    from nanobanana.web.app import StudioUI
    from nanobanana.web.config import load_ui_config

    calls = []

    def progress(value, desc=None):
        calls.append(value)

    request = SimpleNamespace(cookies={"nb_visitor": "progress-test"}, session_hash="x",
                              client=SimpleNamespace(host="10.9.8.7"))
    ui = StudioUI(app.studio, load_ui_config({}))
    ui.generate("a green star on the left, black background", "1:1", 1, "", 4, 4.0, 0, True, "",
                None, request, progress=progress)
    assert (4, 4) in calls and calls[0] == 0  # "Queued", then the steps


def test_opted_in_accounts_see_announcements(app):
    from gradio_client import Client

    cookie = session_cookie(app.url)
    c = Client(app.url, headers={"Cookie": f"session={cookie}"}, verbose=False)
    app.studio.services.announcements.post("Maintenance on Sunday 10:00 UTC.")
    assert "Maintenance" not in c.predict(api_name="/account")[3]
    assert "Maintenance on Sunday" in c.predict(True, api_name="/set_updates_opt_in")
    assert c.predict(api_name="/account")[2] is True


def test_export_then_delete_account_signs_out_of_everything(app):
    from gradio_client import Client

    cookie = session_cookie(app.url)
    c = Client(app.url, headers={"Cookie": f"session={cookie}"}, verbose=False, download_files=False)
    export = c.predict(api_name="/export")
    assert export["url"].startswith(app.url + "/files/exports/")  # our route, not Gradio's public cache
    names = zipfile.ZipFile(io.BytesIO(fetch(c, export["url"]).content)).namelist()
    assert "profile.json" in names
    with pytest.raises(Exception, match="DELETE"):
        c.predict("no", api_name="/delete_account")
    with pytest.raises(Exception, match="in capitals"):
        c.predict("delete", api_name="/delete_account")
    assert "deleted" in c.predict("DELETE", api_name="/delete_account")
    assert app.studio.services.accounts.find_by_provider("local", "local-dev") is None
    assert fetch(c, export["url"]).status_code == 404




def test_edit_takes_one_of_my_stored_images_and_only_mine(app):
    mine = client(app, session_cookie(app.url))  # a sign-in of its own: another test deletes the account
    import sqlalchemy as sa

    from nanobanana.service.db import accounts

    mine.predict(api_name="/account")  # the sign-in's account exists from its first call
    with app.studio.services.db.engine.connect() as c:
        newest = c.execute(sa.select(accounts.c.id).order_by(accounts.c.created_at.desc())).first()[0]
    app.studio.services.ledger.grant(newest, 10, "test credits")  # a re-created account gets no grant
    generate(mine)
    image_id = mine.predict(api_name="/history")[2]["value"]
    result, note, _ = mine.predict(None, "a blue circle", 0.6, 4, 0, True, image_id, api_name="/edit")
    assert len(result) == 1 and "Ran as" in note

    from gradio_client.exceptions import AppError

    stranger = client(app)  # a visitor without the account's cookie
    with pytest.raises(AppError, match="no such image"):
        stranger.predict(None, "a blue circle", 0.6, 4, 0, True, image_id, api_name="/edit")
    with pytest.raises(AppError, match="Upload at least one image"):
        stranger.predict(None, "a blue circle", 0.6, 4, 0, True, "", api_name="/edit")


def test_at_zero_credits_the_note_says_where_more_come_from_and_offers_the_free_allowance(generator, tmp_path):
    studio, web = build_test_app(generator, tmp_path / "data", allowance=ALLOWANCE, signup_grant=0)
    try:
        with Server(web) as server:
            c = client(server, session_cookie(server.url))
            note, _ = c.predict("1:1", 1, 4, api_name="/quote")  # the cost note and the header
            assert "your balance is 0" in note
            assert "For more credits, write to [privacy@example.org](mailto:privacy@example.org)." in note
            assert f"[sign out](/logout) and use the free allowance: {ALLOWANCE} images left today" in note
            # More than the free allowance covers: no offer that would not work.
            assert "sign out" not in c.predict("1:1", ALLOWANCE + 1, 4, api_name="/quote")[0]
    finally:
        studio.close()

    studio, web = build_test_app(generator, tmp_path / "data2", allowance=0, signup_grant=0,
                                 ui_overrides={"more_credits": "https://shop.example.org/credits"})
    try:
        with Server(web) as server:
            note = client(server, session_cookie(server.url)).predict("1:1", 1, 4, api_name="/quote")[0]
            assert "[Get more credits](https://shop.example.org/credits)." in note and "sign out" not in note
    finally:
        studio.close()
