"""A new user's walkthrough in a real Chromium (Debian's, driven by Playwright; never `playwright install`).

Open the page, see the prebuilt library, draw the similarity heatmap and the map. Screenshots of every step go to
test-artifacts/ (look at them). Still to add (issue #3): move an arithmetic weight slider in the browser and see
the numbers change, and start a tiny tuning job from the Tune tab; both are covered through the API in
tests/test_ui_analysis.py and tests/test_ui_library_tune.py meanwhile.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(app_url, artifacts, tmp_path_factory):
    if not shutil.which("chromium") and not shutil.which("/usr/bin/chromium"):
        pytest.fail("Debian chromium is missing: apt-get install chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    url, _ = app_url
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=ARGS,
            viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        yield page
        context.close()


def shot(page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"walkthrough-{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def visible(page, selector: str):
    return page.locator(selector).locator("visible=true")


def test_walkthrough(page, app_url, artifacts):
    _, state = app_url
    page.get_by_text("Prompt Arithmetic Studio").first.wait_for()
    shot(page, artifacts, "01-open")

    # Library: the prebuilt items are listed
    open_tab(page, "Library")
    prebuilt = [i for i in state.library.items() if i.source == "prebuilt"]
    assert prebuilt, "the prebuilt library must be attached"
    page.get_by_text(prebuilt[0].id).locator("visible=true").first.wait_for()
    shot(page, artifacts, "02-library")

    # Similarity: the heatmap is drawn
    open_tab(page, "Similarity")
    page.get_by_role("button", name="Draw heatmap").click()
    visible(page, ".js-plotly-plot .heatmaplayer").first.wait_for()
    shot(page, artifacts, "03-similarity")

    # Map: points are drawn
    open_tab(page, "Map")
    page.get_by_role("button", name="Draw map").click()
    visible(page, ".js-plotly-plot .scatterlayer .point").first.wait_for()
    assert visible(page, ".js-plotly-plot .scatterlayer .point").count() >= 4
    shot(page, artifacts, "04-map")
