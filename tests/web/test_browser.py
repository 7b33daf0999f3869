"""A person using the app in a real browser (Debian's Chromium, headless, driven by Playwright).

Screenshots go to test-artifacts/ui/ (git-ignored); the Generate-click-to-image time is written to
test-artifacts/ui/timings.json.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import zipfile
from pathlib import Path

import pytest

from nanobanana.config import REPO_ROOT
from tests.helpers import Server, build_test_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium "
                       "(apt-get install -y chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def app(generator, tmp_path_factory):
    studio, web = build_test_app(generator, tmp_path_factory.mktemp("ui-browser-data"), allowance=3)
    with Server(web) as server:
        server.studio = studio
        yield server
    studio.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app.url + "/")
    page.wait_for_selector("#nb-generate")
    yield page
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def header(page) -> str:
    return page.locator("#nb-header").inner_text()


def generate(page, prompt: str) -> float:
    """Type a prompt, press Generate, wait for the picture; seconds from the click to the image shown."""
    page.locator("#nb-prompt textarea").fill(prompt)
    before = page.eval_on_selector_all("#nb-gallery img", "imgs => imgs.map(i => i.src)")
    started = time.perf_counter()
    page.locator("#nb-generate").click()
    page.wait_for_function(
        "old => { const imgs = [...document.querySelectorAll('#nb-gallery img')];"
        " return imgs.length > 0 && imgs.every(i => !old.includes(i.src) && i.complete && i.naturalWidth > 0); }",
        arg=before, timeout=60_000,
    )
    return time.perf_counter() - started


def one_click(page, button: str, target: Path) -> Path:
    """Press a download button once (no second click on a link) and save what the browser downloads."""
    with page.expect_download() as downloaded:
        page.get_by_role("button", name=button, exact=True).click()
    downloaded.value.save_as(target)
    target.with_suffix(".name").write_text(downloaded.value.suggested_filename)
    return target


def sign_in(page) -> None:
    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('Signed in as')")


def balance(page) -> int:
    return int(re.search(r"balance (\d+) credits", header(page)).group(1))


def test_a_visitor_generates_sees_it_in_gallery_and_history_and_downloads_it(page, tmp_path):
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('free images')")
    assert "3 of 3" in header(page)
    assert "Generate · free (3 left today)" in page.locator("#nb-generate").inner_text()
    seconds = [generate(page, "a red triangle on a white background") for _ in range(2)]
    page.wait_for_function("() => document.querySelector('#nb-seeds').innerText.includes('Seeds')")
    assert "Seeds:" in page.locator("#nb-seeds").inner_text()
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('1 of 3')")
    # 64 px images shown larger are drawn with hard pixel edges, not smoothed.
    page.wait_for_function("() => [...document.querySelectorAll('#nb-gallery img')]"
                           ".every(i => i.style.imageRendering === 'pixelated')")
    shot(page, "01-create-anonymous")
    (ARTIFACTS / "timings.json").write_text(json.dumps(
        {"click_to_image_seconds": [round(s, 2) for s in seconds], "note": "tiny-random model, CPU"}))

    page.get_by_role("tab", name="History").click()
    page.wait_for_function("() => document.querySelectorAll('#nb-history img').length >= 2")
    assert "a red triangle" in page.locator("#nb-history-choice").locator("input").input_value()
    saved = one_click(page, "Download image", tmp_path / "image.png")
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert re.fullmatch(r"a-red-triangle-on-a-white-background-seed\d+\.png", saved.with_suffix(".name").read_text())
    assert page.locator("#nb-history-file a").count() == 1  # and the link stays, to save it again
    shot(page, "02-history-download")

    page.reload()  # the visitor cookie keeps the same anonymous history across page loads
    page.get_by_role("tab", name="History").click()
    page.wait_for_function("() => document.querySelectorAll('#nb-history img').length >= 2")


def test_a_visitor_signs_in_and_sees_the_balance_drop(page):
    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('Signed in as')",
                           timeout=30_000)
    assert "local-dev" in header(page)
    page.wait_for_function("() => document.querySelector('#nb-generate')?.innerText.includes('credit')")
    start = balance(page)
    generate(page, "two blue circles on a yellow background")
    page.wait_for_function(f"() => !document.querySelector('#nb-header')?.innerText.includes('balance {start} ')")
    assert balance(page) == start - 1
    shot(page, "03-signed-in-balance")


def test_too_little_allowance_is_explained_before_the_click(page):
    # The module's allowance is 3 a day: asking for 4 can never be afforded anonymously.
    box = page.get_by_label("number input for Number of images")
    box.fill("4")
    box.press("Enter")
    box.blur()
    shot(page, "04-allowance-gating")
    page.wait_for_function("() => document.querySelector('#nb-cost')?.innerText.includes('sign in')")
    assert "not enough free images" in page.locator("#nb-generate").inner_text()
    assert "free image(s) left today" in page.locator("#nb-cost").inner_text()
    assert page.locator("#nb-generate").is_disabled()
    shot(page, "04-allowance-gating")


def test_a_refused_prompt_shows_a_readable_message(page):
    from tests.fakes import BLOCKED_WORD

    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('Signed in as')")
    page.locator("#nb-prompt textarea").fill(f"a {BLOCKED_WORD} on a white background")
    page.locator("#nb-prompt textarea").press("Enter")  # Enter submits, like the button
    page.get_by_text("This prompt was refused").first.wait_for()
    assert "Traceback" not in page.content()
    page.wait_for_timeout(600)  # let the toast finish fading in
    shot(page, "12-refused-prompt")


def test_a_person_edits_an_upload_and_sees_the_result_beside_it(page, tmp_path):
    from PIL import Image

    source = tmp_path / "square.png"
    picture = Image.new("RGB", (96, 96), "yellow")
    picture.paste((20, 40, 200), (24, 24, 72, 72))
    picture.save(source)
    sign_in(page)  # two edits: more than a visitor's allowance has left by now in this module
    page.get_by_role("tab", name="Edit").click()
    page.locator("#nb-uploads input[type=file]").set_input_files(str(source))
    page.locator("#nb-instruction textarea").fill("a red circle")
    # Like Generate, the Edit button states its cost.
    page.wait_for_function("() => document.querySelector('#nb-edit-run')?.innerText.startsWith('Edit · ')")
    page.locator("#nb-edit-run").click()
    page.wait_for_function("() => document.querySelectorAll('#nb-edit-result img').length === 1",
                           timeout=60_000)
    page.wait_for_function("() => document.querySelector('#nb-edit-note')?.innerText.includes('Ran as')")
    # No preview copy of the upload is made (it would sit in Gradio's public cache); the file list shows it.
    assert "square" in page.locator("#nb-uploads").inner_text()
    assert "image-to-image" in page.locator("#nb-edit-note").inner_text()
    # The result's size is said (a 96 px upload, a 64 px test model), and that the upload was fitted to it.
    assert "Made at 64×64 px" in page.locator("#nb-edit-note").inner_text()
    assert "the upload was scaled and cropped to it" in page.locator("#nb-edit-note").inner_text()
    page.get_by_text("the edit ran as image-to-image").first.wait_for()  # the warning toast (and the note)
    page.wait_for_timeout(600)
    shot(page, "08-edit")

    # The same upload, edited again with another instruction (its file is gone; its copy is not).
    first = page.eval_on_selector_all("#nb-edit-result img", "imgs => imgs.map(i => i.src)")
    page.locator("#nb-instruction textarea").fill("a green square")
    page.locator("#nb-edit-run").click()
    page.wait_for_function(
        "old => { const imgs = [...document.querySelectorAll('#nb-edit-result img')];"
        " return imgs.length === 1 && !old.includes(imgs[0].src); }", arg=first, timeout=60_000)
    assert "no longer here" not in page.content() and "/tmp" not in page.locator("#nb-edit-note").inner_text()


def test_stats_and_privacy_are_readable(page, app):
    page.get_by_role("tab", name="Stats").click()
    page.wait_for_function("() => document.querySelector('#nb-stats')?.innerText.includes('requests')")
    page.wait_for_timeout(1500)  # let the charts draw
    shot(page, "09-stats")
    page.get_by_role("tab", name="Privacy").click()
    shot(page, "10-privacy-tab")
    href = page.get_by_role("link", name="Privacy policy").get_attribute("href")
    assert href == "/privacy"
    page.goto(app.url + href)
    assert page.locator("h1").first.inner_text() == "Privacy policy"
    assert page.locator("#nb-generate").count() == 0  # the standalone page, not the tab
    shot(page, "11-privacy-page")


def test_a_person_exports_their_data_then_deletes_the_account(page, tmp_path, app):
    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('Signed in as')")
    page.get_by_role("tab", name="Account").click()
    page.wait_for_function("() => document.querySelector('#nb-account')?.innerText.includes('member since')")
    assert not page.locator("#nb-export-file").is_visible()  # no empty download box before there is one
    assert "profile.json" in zipfile.ZipFile(one_click(page, "Download my data", tmp_path / "export.zip")).namelist()
    shot(page, "05-account-export")

    page.get_by_role("button", name="Delete my account").click()
    # The confirmation opens right under the button, not below other boxes.
    confirm = page.locator("#nb-delete-confirm >> visible=true").first.bounding_box()
    button = page.locator("#nb-delete >> visible=true").first.bounding_box()
    assert 0 <= confirm["y"] - (button["y"] + button["height"]) < 40
    page.locator("#nb-confirm-text textarea").fill("DELETE")
    shot(page, "06-delete-confirm")
    page.get_by_role("button", name="Yes, delete everything").click()
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('Not signed in')",
                           timeout=30_000)
    assert page.get_by_role("button", name="Sign in with Hugging Face").is_visible()
    assert app.studio.services.accounts.find_by_provider("local", "local-dev") is None
    shot(page, "07-after-delete")


@pytest.fixture(scope="module")
def slow_app(generator, tmp_path_factory):
    """An app whose (fake) model takes 3 s per call: requests have to wait in line."""
    from tests.fakes import FastGenerator

    studio, web = build_test_app(FastGenerator(generator, seconds=3.0), tmp_path_factory.mktemp("ui-queue-data"),
                                 allowance=5)
    with Server(web) as server:
        server.studio = studio
        yield server
    studio.close()


@pytest.mark.parametrize("viewport", [(1280, 1000), (390, 844)], ids=["desktop", "phone"])
def test_a_person_sees_their_place_in_line_and_cancels_without_paying(browser, slow_app, viewport):
    from nanobanana.service.accounts import Identity
    from tests.helpers import request

    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(slow_app.url + "/")
        page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('5 of 5')")
        # Someone else's request is on the model: ours waits behind it.
        other = slow_app.studio.submit(request("someone else's circle", steps=3), Identity.anonymous("other"))
        page.locator("#nb-prompt textarea").fill("a blue square on a white background")
        page.locator("#nb-generate").click()
        page.get_by_text(re.compile(r"Waiting: next in line")).first.wait_for(timeout=10_000)
        shot(page, f"13-queue-place-{viewport[0]}")
        page.locator("#nb-cancel").click()
        page.get_by_text("Cancelled before it started; nothing was charged.").first.wait_for()
        shot(page, f"14-queue-cancelled-{viewport[0]}")
        page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('5 of 5')")
        assert "Error" not in page.locator("#nb-gallery").inner_text()
        slow_app.studio.wait(Identity.anonymous("other"), other)

        # Running: it stops at the next step, and the free image is not used either.
        page.locator("#nb-generate").click()
        page.get_by_text(re.compile(r"Generating")).first.wait_for(timeout=10_000)
        page.locator("#nb-cancel").click()
        page.get_by_text("Cancelled; nothing was charged.").first.wait_for()
        page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('5 of 5')")
    finally:
        context.close()


@contextlib.contextmanager
def own_page(browser, generator, data_dir: Path, allowance: int, viewport: dict | None = None):
    """A page on an app of its own (a fresh allowance: the module's app is shared by many tests)."""
    studio, web = build_test_app(generator, data_dir, allowance=allowance)
    phone = bool(viewport and viewport["width"] < 640)
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 1000}, accept_downloads=True,
                                  is_mobile=phone, has_touch=phone)
    try:
        with Server(web) as server:
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(server.url + "/")
            page.wait_for_selector("#nb-generate")
            yield page, studio
    finally:
        context.close()
        studio.close()


def test_a_refusal_keeps_the_last_result_and_a_success_clears_the_old_error(browser, generator, tmp_path):
    from tests.fakes import BLOCKED_WORD

    with own_page(browser, generator, tmp_path / "data", allowance=5) as (page, _):
        _refusal_keeps_the_result(page, BLOCKED_WORD)


def _refusal_keeps_the_result(page, BLOCKED_WORD: str) -> None:
    page.wait_for_function("() => document.querySelector('#nb-generate')?.innerText.includes('5 left')")
    generate(page, "a red triangle on a white background")
    shown = page.eval_on_selector_all("#nb-gallery img", "imgs => imgs.map(i => i.src)")
    page.locator("#nb-prompt textarea").fill(f"a {BLOCKED_WORD} on a white background")
    page.locator("#nb-generate").click()
    page.get_by_text("This prompt was refused").first.wait_for()
    page.wait_for_timeout(500)
    assert page.eval_on_selector_all("#nb-gallery img", "imgs => imgs.map(i => i.src)") == shown
    assert "Error" not in page.locator("#nb-header").inner_text()
    assert "Error" not in page.locator("#nb-seeds").inner_text()
    shot(page, "15-refusal-keeps-result")
    generate(page, "two blue circles on a yellow background")
    page.wait_for_function("() => !document.body.innerText.includes('This prompt was refused')", timeout=10_000)


def test_enter_does_not_get_past_a_disabled_generate_button(browser, generator, tmp_path):
    with own_page(browser, generator, tmp_path / "data", allowance=1) as (page, studio):
        _enter_is_the_button(page, studio)


def _enter_is_the_button(page, studio) -> None:
    page.wait_for_function("() => document.querySelector('#nb-generate')?.innerText.includes('1 left')")
    generate(page, "a red triangle on a white background")
    page.wait_for_function("() => document.querySelector('#nb-generate')?.disabled === true")
    import sqlalchemy as sa

    from nanobanana.service.db import jobs

    def sent() -> int:
        with studio.services.db.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(jobs)).scalar()

    before, shown = sent(), page.eval_on_selector_all("#nb-gallery img", "imgs => imgs.map(i => i.src)")
    page.locator("#nb-prompt textarea").fill("a green star on the left, black background")
    page.locator("#nb-prompt textarea").press("Enter")
    page.wait_for_timeout(1500)
    assert sent() == before  # nothing was sent
    assert page.eval_on_selector_all("#nb-gallery img", "imgs => imgs.map(i => i.src)") == shown


def test_a_person_iterates_on_a_result_with_edit_this(browser, generator, tmp_path):
    with own_page(browser, generator, tmp_path / "data", allowance=5) as (page, _):
        _iterate(page)


def _iterate(page) -> None:
    generate(page, "a red triangle on a white background")
    page.locator("#nb-edit-this").click()  # no image picked: the first of the last result
    page.wait_for_function("() => document.querySelector('#nb-edit-source-view img')?.naturalWidth > 0")
    assert page.locator("#nb-instruction textarea").is_visible()  # the Edit tab is open
    shot(page, "16-edit-this")
    page.locator("#nb-instruction textarea").fill("a blue circle on a white background")
    page.locator("#nb-edit-run").click()
    page.wait_for_function("() => document.querySelectorAll('#nb-edit-result img').length === 1", timeout=60_000)
    first = page.eval_on_selector_all("#nb-edit-result img", "imgs => imgs.map(i => i.src)")
    page.locator("#nb-edit-again").click()  # the edit's output is the next input, in one click
    page.wait_for_function("src => document.querySelector('#nb-edit-source-view img')?.src.split('/')[5] "
                           "=== src.split('/')[5]", arg=first[0])
    page.locator("#nb-instruction textarea").fill("a green star on a white background")
    page.locator("#nb-edit-run").click()
    page.wait_for_function(
        "old => { const imgs = [...document.querySelectorAll('#nb-edit-result img')];"
        " return imgs.length === 1 && !old.includes(imgs[0].src); }", arg=first, timeout=60_000)
    page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('2 of 5')")
    shot(page, "17-edit-again")


def test_deleting_a_history_image_asks_first_and_keep_it_keeps_it(browser, generator, tmp_path):
    import sqlalchemy as sa

    from nanobanana.service.db import images

    with own_page(browser, generator, tmp_path / "data", allowance=5) as (page, studio):
        def stored() -> int:
            with studio.services.db.engine.connect() as c:
                return c.execute(sa.select(sa.func.count()).select_from(images)).scalar()

        generate(page, "a red triangle on a white background")
        generate(page, "two blue circles on a yellow background")
        page.get_by_role("tab", name="History").click()
        page.wait_for_function("() => document.querySelectorAll('#nb-history img').length === 2")
        page.locator("#nb-history-delete").click()
        confirm = page.locator("#nb-history-confirm >> visible=true").first
        confirm.wait_for()
        assert "two blue circles" in confirm.inner_text() and "cannot be brought back" in confirm.inner_text()
        row = page.locator("#nb-history-choice").bounding_box()  # the row of the Delete button
        assert 0 <= confirm.bounding_box()["y"] - (row["y"] + row["height"]) < 40  # right under it
        shot(page, "18-history-delete-asks")
        page.locator("#nb-history-delete-no").click()
        page.locator("#nb-history-confirm").first.wait_for(state="hidden")
        page.wait_for_timeout(500)
        assert stored() == 2 and page.locator("#nb-history img").count() == 2

        page.locator("#nb-history-delete").click()
        page.locator("#nb-history-delete-yes").click()
        page.wait_for_function("() => document.querySelectorAll('#nb-history img').length === 1")
        assert stored() == 1
        assert "a red triangle" in page.locator("#nb-history-choice input").input_value()


def test_an_account_opts_in_to_settings_in_its_png_files(browser, generator, tmp_path):
    from PIL import Image

    with own_page(browser, generator, tmp_path / "data", allowance=5) as (page, _):
        sign_in(page)
        page.get_by_role("tab", name="Account").click()
        box = page.locator("#nb-embed-settings input")
        box.wait_for()
        assert not box.is_checked()  # off by default
        box.check()
        page.get_by_text("New images will carry their prompt and settings").first.wait_for()
        page.get_by_role("tab", name="Create").click()
        generate(page, "a green star on the left, black background")
        page.get_by_role("tab", name="History").click()
        page.wait_for_function("() => document.querySelectorAll('#nb-history img').length === 1")
        saved = one_click(page, "Download image", tmp_path / "star.png")
        with Image.open(saved) as picture:
            assert picture.text["parameters"].startswith("a green star on the left, black background\n")
            assert "Seed: " in picture.text["parameters"]


def test_on_a_phone_every_tab_is_on_the_bar_and_nothing_is_cut(browser, generator, tmp_path):
    phone = {"width": 390, "height": 844}
    with own_page(browser, generator, tmp_path / "data", allowance=5, viewport=phone) as (page, _):
        tabs = page.eval_on_selector_all("[role=tablist] button", "bs => bs.map(b => b.innerText.trim())")
        assert tabs == ["Create", "Edit", "History", "Account", "Stats", "Privacy"]  # none folded into "…"
        assert not page.get_by_label("More tabs").is_visible()
        assert page.locator("#nb-prompt").bounding_box()["width"] > 300  # the prompt row stacks
        box = page.get_by_label("number input for Number of images")
        box.fill("3")
        box.press("Enter")
        generate(page, "a red triangle on a white background")
        captions = "ls => ls.length > 0 && ls.every(l => l.scrollWidth <= l.clientWidth + 1)"
        assert page.eval_on_selector_all("#nb-gallery .caption-label", captions)  # "seed 1234567890" in full
        shot(page, "19-phone-create")
        for tab in tabs:
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(700)
            # Nothing sticks out sideways (wide tables scroll inside their own box).
            assert page.evaluate("() => document.documentElement.scrollWidth") <= phone["width"] + 1, tab
            shot(page, f"19-phone-{tab.lower()}")
        page.get_by_role("tab", name="History").click()
        page.wait_for_function("() => document.querySelectorAll('#nb-history img').length === 3")
        assert page.eval_on_selector_all("#nb-history .caption-label", captions)
