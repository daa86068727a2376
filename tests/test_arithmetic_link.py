"""A shared Arithmetic link, opened in a real Chromium (Debian's, driven by Playwright) on the app served on 127.0.0.1.

The link names a combination that is not the tab's default (another origin, a negative weight, TIES, another density,
one task, another sample): opening it must show the Arithmetic tab with exactly that combination, which the tab's
own "Link to this combination" then writes back unchanged; a link naming a missing item says so. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from conftest import chromium_page
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    with chromium_page(tmp_path_factory.mktemp("chromium-link-profile")) as page:
        yield page


def shared_combination(state) -> tuple[str, list[str]]:
    """The last prebuilt origin with TPVs of two tasks: not the tab's default (the lowest seed)."""
    vectors = [v for v in state.library.items(kind="vector", model=state.model_name) if v.source == "prebuilt"]
    by_origin: dict[str, dict[str, str]] = {}
    for vector in vectors:
        by_origin.setdefault(vector.origin_id, {}).setdefault(vector.task, vector.id)
    usable = [(o, list(t.values())[:2]) for o, t in by_origin.items() if len(t) >= 2]
    if len(usable) < 2:
        pytest.skip("needs a prebuilt library with two tasks on two origins (set STUDIO_PREBUILT)")
    return usable[-1]


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_a_shared_link_reopens_the_arithmetic_tab_on_its_combination(browser_page, app_url, artifacts):
    page = browser_page
    url, state = app_url
    origin_id, vector_ids = shared_combination(state)
    task = state.library.get(vector_ids[1]).task
    link = (f"{url}?tab=arithmetic&origin={origin_id}&vectors={vector_ids[0]}:0.35,{vector_ids[1]}:-0.5"
            f"&method=ties&density=0.3&tasks={task}&limit=48")
    page.goto(link)
    page.get_by_text("Opened from a shared link").locator("visible=true").first.wait_for()
    assert page.get_by_role("tab", name="Arithmetic").get_attribute("aria-selected") == "true"
    weights = page.locator('input[aria-label^="number input for weight of"]').locator("visible=true")
    assert weights.count() == 2
    # opening the tab also refreshes its lists, racing the link (its labels may show the page's default for a
    # moment); what settles must be the link's combination
    for k, (vector_id, weight) in enumerate(zip(vector_ids, ("0.35", "-0.5"))):
        expect(weights.nth(k)).to_have_attribute("aria-label", re.compile(re.escape(vector_id)), timeout=15_000)
        assert weights.nth(k).input_value() == weight
    page.wait_for_timeout(1500)  # and stays so once the events of opening have run
    assert [weights.nth(k).get_attribute("aria-label").rsplit(" ", 1)[-1] for k in range(2)] == vector_ids
    page.screenshot(path=str(artifacts / "arithmetic-link-opened.png"), full_page=True)
    # what the page now holds, as the browser sends it: the tab's own link names the same combination
    page.get_by_role("button", name="Link to this combination").click()
    box = page.locator("#arithmetic-link textarea, #arithmetic-link input").first
    page.wait_for_function("(box) => box.value.startsWith('http')", arg=box.element_handle())
    made = box.input_value()
    assert made.startswith(url) and query(made) == query(link), (made, link)

    page.goto(f"{url}?tab=arithmetic&origin={origin_id}&vectors=v-000000000000:1")
    page.get_by_text("this link cannot be opened: no library item 'v-000000000000'").first.wait_for()
    page.screenshot(path=str(artifacts / "arithmetic-link-unknown.png"), full_page=True)
