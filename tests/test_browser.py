"""A new user's walkthrough in a real Chromium (Debian's, driven by Playwright; never `playwright install`).

Open the page, see the prebuilt library, find the similarity heatmap, the map and the cross-origin chart drawn
without pressing anything, move an arithmetic weight slider and watch the evaluation numbers change (with the
origin and own-prompt marks), start a tiny tuning job and find its prompt in the Library. Screenshots of
every step go to test-artifacts/ (look at them).
"""

from __future__ import annotations

import re

import pytest
from conftest import chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def page(app_url, artifacts, tmp_path_factory):
    url, _ = app_url
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as page:
        page.goto(url)
        yield page


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

    # Similarity: the heatmap is there when the tab opens, before anything is pressed; drawing again works
    open_tab(page, "Similarity")
    visible(page, "#similarity-plot .js-plotly-plot .heatmaplayer").first.wait_for()
    shot(page, artifacts, "03-similarity")
    page.get_by_role("button", name="Draw heatmap").click()
    visible(page, "#similarity-plot .js-plotly-plot .heatmaplayer").first.wait_for()

    # Map: the points are there on opening (the prebuilt library's stored UMAP), and again after drawing
    open_tab(page, "Map")
    visible(page, "#map-plot .js-plotly-plot .scatterlayer .point").first.wait_for()
    assert visible(page, "#map-plot .js-plotly-plot .scatterlayer .point").count() >= 4
    shot(page, artifacts, "04-map")
    page.get_by_role("button", name="Draw map").click()
    visible(page, "#map-plot .js-plotly-plot .scatterlayer .point").first.wait_for()

    # Transfer: the cross-origin chart and its gap vs |tau|/|origin| are there on opening
    open_tab(page, "Transfer")
    visible(page, "#cross-origin-plot .js-plotly-plot .barlayer .point").first.wait_for()
    page.get_by_text("|tau|/|origin|").locator("visible=true").first.wait_for()
    shot(page, artifacts, "04b-transfer")

    # Arithmetic: set the first weight (the slider's number box; leaving it fires the slider's release event, as
    # letting go of the handle does); the live evaluation finishes; a second position changes the predictions
    open_tab(page, "Arithmetic")
    weight = visible(page, 'input[aria-label^="number input for weight of"]').first
    status = page.locator("#arithmetic-status")
    weight.fill("0.5")
    weight.press("Tab")
    expect_text(page, "#arithmetic-status", "Done in")
    visible(page, "#arithmetic-plot .js-plotly-plot .barlayer .point").first.wait_for()
    # the reference marks: the origin alone and each task's own tuned prompt, beside the combination's bars
    visible(page, "#arithmetic-plot .js-plotly-plot .scatterlayer .point").first.wait_for()
    assert "of its own tuned prompt" in status.inner_text()
    first = status.inner_text()
    shot(page, artifacts, "05-arithmetic-first")
    weight.fill("-1.5")
    weight.press("Tab")
    # only an evaluation that follows a finished one reports flips: this waits for the second to finish
    expect_text(page, "#arithmetic-status", "predictions flipped since the previous evaluation")
    second = status.inner_text()
    flipped = int(re.search(r"(\d+) predictions flipped", second).group(1))
    assert flipped > 0 or accuracies(first) != accuracies(second), (first, second)
    shot(page, artifacts, "06-arithmetic-second")

    # Tune: a tiny job from the form; progress shows; the new prompt lands in the Library
    open_tab(page, "Tune")
    for label, value in [("Prompt length (virtual tokens)", 4), ("Steps", 3), ("Batch size (per prompt)", 2),
                         ("Validate every (steps)", 3), ("Validation examples", 8)]:
        box = page.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Tab")
    before = {i.id for i in state.library.items(kind="prompt")}
    page.get_by_role("button", name="Start", exact=True).click()
    expect_text(page, "#tune-status", "added 1 prompt")
    visible(page, "#tune-loss .js-plotly-plot .scatterlayer").first.wait_for()
    shot(page, artifacts, "07-tune")
    new = [i for i in state.library.items(kind="prompt") if i.id not in before]
    assert len(new) == 1 and new[0].task == "mr"
    open_tab(page, "Library")
    page.get_by_text(new[0].id).locator("visible=true").first.wait_for()
    shot(page, artifacts, "08-library-after-tune")
    # leave the shared app as the other tests expect it: only the prebuilt library's prompts
    origin_id = new[0].origin_id
    state.library.delete(new[0].id, cascade=True)
    if state.library.get(origin_id).source == "user" and not state.library.dependents(origin_id):
        state.library.delete(origin_id)


def expect_text(page, selector: str, text: str, timeout_ms: int = 240_000) -> None:
    """Wait until the element's text contains ``text``."""
    page.wait_for_function(
        "([selector, text]) => { const e = document.querySelector(selector); return e && e.innerText.includes(text); }",
        arg=[selector, text], timeout=timeout_ms)


def accuracies(status: str) -> list[tuple[str, str]]:
    """(task, accuracy) pairs of a finished evaluation's status line."""
    done = status[status.index("Done in"):].splitlines()[0]
    return re.findall(r"· (\S+) (\d\.\d{3})", done)
