"""The Arithmetic tab's wiring, without a server: its events keep the inputs the API page names (handlers read the
form back by name, ``arithmetic.split_form``), ZeroGPU sizes a call from the same names, and a missing reference
accuracy (``live.item_accuracies``) is scored by one visitor while the others wait for it."""

from __future__ import annotations

import threading
import time

import gradio as gr
import pytest

from studio.ui import arithmetic

FORM = ["origin_id", "vector_ids", "method", "density", "tasks", "limit", "w1", "w2", "w3", "w4", "w5", "w6"]


def form(tasks, limit, weights=(1.0,) * 6) -> list:
    return ["o", ["v"], "weighted_sum", 0.5, tasks, limit, *weights]


@pytest.fixture(scope="module")
def events(tiny_llama_dir, tmp_path_factory) -> dict:
    """The Arithmetic tab's events by api_name, built on an empty library for the tiny model."""
    from studio.library import Library
    from studio.ui.common import AppState

    state = AppState(Library(tmp_path_factory.mktemp("wiring") / "lib"), model_name=str(tiny_llama_dir))
    with gr.Blocks() as page:
        with gr.Tab("Arithmetic") as tab:
            arithmetic.build(state, tab, page)
    return {fn.api_name: fn for fn in page.fns.values() if fn.api_name}


def test_the_events_name_their_inputs_and_the_sweep_tracks_its_progress(events):
    """The names the API page shows (and keyword calls of gradio_client use) are the form's, then the event's own;
    Gradio fills in the sweep's progress tracker after them."""
    expected = {"arithmetic_eval": [*FORM, "session"], "arithmetic_save": [*FORM, "name", "session"],
                "arithmetic_link": [*FORM, "page_url"], "arithmetic_sweep": [*FORM, "sweep", "sweep_examples"]}
    for api_name, names in expected.items():
        assert events[api_name].input_parameter_names == names, api_name
        assert len(events[api_name].inputs) == len(names)
    assert events["arithmetic_sweep"].tracks_progress and not events["arithmetic_eval"].tracks_progress


def test_the_form_is_read_back_by_name():
    values = [*form(["mr"], 32, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), "coefficient", 8, "progress"]
    read, own = arithmetic.split_form(values)
    assert (read.origin_id, read.tasks, read.limit) == ("o", ["mr"], 32)
    assert read.weights == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] and own == ("coefficient", 8, "progress")
    assert list(arithmetic.FORM_PARAMETERS) == FORM


@pytest.mark.parametrize("tasks", [["mr"], ["mr", "tweets"], [], None])
@pytest.mark.parametrize("limit", [16, 1000, "many"])
def test_gpu_calls_are_sized_as_before(tasks, limit):
    """The sizes the index-reading lambdas gave: 10 s + 0.02 s per example and task for a live evaluation, 15 s +
    25 prompts x 0.01 s per example and task for a sweep (no tasks chosen yet: sized for two)."""
    count = max(1, len(tasks or [2, 2]))
    whole = limit if isinstance(limit, int) else 128
    assert arithmetic.evaluation_seconds(*form(tasks, limit), None) == 10 + 0.02 * whole * count
    for extra in (("coefficient", limit), ("grid", limit, gr.Progress())):  # the progress tracker comes last
        assert arithmetic.sweep_seconds(*form(tasks, 16), *extra) == 15 + 0.01 * 25 * whole * count


def test_a_missing_item_accuracy_is_scored_once_for_every_visitor():
    from studio.live import item_accuracies

    calls = []

    def score(item_ids: list[str], task: str, limit: int) -> list[float]:
        calls.append((tuple(item_ids), task, limit))
        time.sleep(0.2)  # the other visitor arrives meanwhile and waits
        return [0.5 + k / 10 for k in range(len(item_ids))]

    wanted = {"mr": ["o-wiring-a", "p-wiring-b", "o-wiring-a"]}
    assert item_accuracies(wanted, 17) == {}  # nothing known, nothing scored without a scorer
    found: list[dict] = []
    visitors = [threading.Thread(target=lambda: found.append(item_accuracies(wanted, 17, score))) for _ in range(2)]
    for visitor in visitors:
        visitor.start()
    for visitor in visitors:
        visitor.join()
    assert calls == [(("o-wiring-a", "p-wiring-b"), "mr", 17)]  # each item once, in one call
    assert found == [{("o-wiring-a", "mr"): 0.5, ("p-wiring-b", "mr"): 0.6}] * 2
    assert item_accuracies(wanted, 17) == found[0] and item_accuracies(wanted, 18) == {}  # kept per sample size
