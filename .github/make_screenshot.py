"""Make the README's screenshot (`.github/screenshot.png`): `python app.py` on the bundled model, one prompt
in headless Chromium at 1280 x 1000, four images.

    .venv/bin/python .github/make_screenshot.py ["a red circle and a blue square on white"]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.live_app import start_app

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OUT = Path(__file__).with_name("screenshot.png")


def main(prompt: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        live = start_app(Path(root), {"NANOBANANA_MODEL": "bundled"})
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(live.url)
                page.wait_for_function("() => document.querySelector('#nb-header')?.innerText.includes('free')")
                page.locator("#nb-prompt textarea").fill(prompt)
                count = page.get_by_label("number input for Number of images")
                count.fill("4")
                count.press("Enter")
                page.locator("#nb-generate").click()
                page.wait_for_function("() => document.querySelectorAll('#nb-gallery img').length >= 4",
                                       timeout=120_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            live.process.terminate()
            live.process.wait(timeout=30)
    print("wrote", OUT)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "a red circle and a blue square on white")
