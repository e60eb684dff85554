"""Make docs/app.png: the app on the shipped model after a sweep and one generation, as Debian's
Chromium (the browser the tests drive) shows it.

    .venv/bin/python benchmarks/screenshot.py     # starts `python app.py` like benchmarks/app.py

The app runs with a throw-away database, so the picture shows only what this script generated.
"""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from app import served_app  # benchmarks/app.py, beside this file

OUT = Path(__file__).resolve().parent.parent / "docs" / "app.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PROMPT = "Write a short review of a small Italian restaurant you visited last week."
WAIT_MS = 600_000


def main() -> None:
    with served_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.set_default_timeout(WAIT_MS)
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("Model ready", timeout=WAIT_MS)
        page.fill("#prompt textarea", PROMPT)
        page.click("#sweep")  # clp over the 0.5 grid: six weightings in one batch
        expect(page.locator("#hypervolume")).to_contain_text("clp", timeout=WAIT_MS)
        page.click("#generate")
        expect(page.locator("#scores .js-plotly-plot")).to_be_visible(timeout=WAIT_MS)
        time.sleep(2)  # plotly draws after the data arrives
        page.evaluate("window.scrollTo(0, 0)")
        time.sleep(0.5)
        page.screenshot(path=OUT)
        browser.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
