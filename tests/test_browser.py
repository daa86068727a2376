"""A new user's walkthrough in a real Chromium (Debian's, driven by Playwright; never `playwright install`).

Open the page, see the prebuilt library, draw the similarity heatmap and the map, move an arithmetic slider and
watch the numbers change, start a tiny tuning job and find its prompt in the library. Screenshots of every step
go to test-artifacts/ (look at them).
"""

from __future__ import annotations

import re
import shutil
import time

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

    # Arithmetic: moving a slider starts a live evaluation; a second position gives other numbers
    open_tab(page, "Arithmetic")
    weight = page.locator(".block").filter(has_text=re.compile(r"^weight of", re.M)).locator("visible=true")
    slider = weight.locator("input[type=range]").first  # the first TPV's weight (not the density slider)
    slider.scroll_into_view_if_needed()

    def move_and_read(fraction: float, previous: str) -> str:
        """Click the slider track (a real pointer move: Gradio starts the evaluation on release)."""
        box = slider.bounding_box()
        page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        deadline = time.time() + 300
        while time.time() < deadline:
            done = page.get_by_text(re.compile(r"Done in")).locator("visible=true")
            if done.count() and done.first.inner_text() != previous:
                return done.first.inner_text()
            time.sleep(0.5)
        raise AssertionError("the live evaluation did not finish within 300 s of the slider move")

    first = move_and_read(0.6, "")
    shot(page, artifacts, "05-arithmetic-a")
    second = move_and_read(0.1, first)
    shot(page, artifacts, "06-arithmetic-b")
    numbers = [re.findall(r"\d\.\d{3}", text) for text in (first, second)]
    assert numbers[0] and numbers[1], (first, second)
    assert numbers[0] != numbers[1], "moving the slider must change the evaluation"

    # Tune: start a tiny job, watch it, find the prompt in the library
    open_tab(page, "Tune")
    for label, value in [("Steps", "2"), ("Batch size (per prompt)", "2"), ("Validate every (steps)", "1"),
                         ("Validation examples", "8"), ("Prompt length (virtual tokens)", "4")]:
        box = page.get_by_label(label, exact=True).locator("visible=true").first
        box.fill(value)
        box.press("Tab")
    before = {i.id for i in state.library.items(kind="prompt")}
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text(re.compile(r"step \d+ ?/ ?2|Step \d+ ?/ ?2|queued|running", re.I)).first.wait_for()
    shot(page, artifacts, "07-tune-running")
    page.get_by_text(re.compile(r"\bdone\b", re.I)).first.wait_for(timeout=300_000)
    shot(page, artifacts, "08-tune-done")
    new = [i for i in state.library.items(kind="prompt") if i.id not in before]
    assert new, "the tuned prompt must land in the library"
    open_tab(page, "Library")
    page.get_by_text(new[0].id).locator("visible=true").first.wait_for()
    shot(page, artifacts, "09-library-new-prompt")
