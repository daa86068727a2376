"""The rules behind the Similarity, Map and Transfer tabs (which items, how many, which settings) and the refresh
those tabs share: each rule is one function below the UI, and the tabs keep the messages and choices they had.

No model and no app: a small library of random tensors for a made-up model name."""

from __future__ import annotations

import pytest
import torch

from studio import StudioError
from studio.library import Library

MODEL = "made-up-model"


@pytest.fixture
def state(tmp_path):
    """An app state over a library with one origin and, per task, a tuned prompt and its TPV from it."""
    from studio.ui.common import AppState

    state = AppState(Library(tmp_path / "lib"), model_name=MODEL)
    torch.manual_seed(0)
    origin = state.library.add("origin", torch.randn(4, 8), MODEL, name="origin 0", seed=0)
    for task in ("mr", "tweets", "news"):
        prompt = state.library.add("prompt", torch.randn(4, 8), MODEL, task=task, seed=0, origin_id=origin.id)
        state.library.add("vector", torch.randn(4, 8), MODEL, task=task, seed=0, origin_id=origin.id,
                          prompt_id=prompt.id)
    return state


def vector_ids(state) -> list[str]:
    return [v.id for v in state.library.items(kind="vector", model=MODEL)]


# ---- the rules, where they live -------------------------------------------------------------------------------------
def test_similarity_compares_two_or_more_different_items():
    from studio.analysis import compared_ids, compares_vectors

    assert compared_ids(["a", "", "b", "a"]) == ["a", "b"]
    for few in (None, [], ["a"], ["a", ""]):
        with pytest.raises(StudioError, match="^choose at least two prompts or vectors to compare$"):
            compared_ids(few)
    with pytest.raises(StudioError, match="at least two different prompts"):
        compared_ids(["a", "a"])
    assert compares_vectors("vectors") and not compares_vectors("prompts")
    with pytest.raises(StudioError, match="unknown view 'tokens': use vectors or prompts"):
        compares_vectors("tokens")


def test_a_map_draws_one_or_more_items_with_known_settings():
    from studio.analysis import check_map, drawn_ids
    from studio.projection import MAX_SEED, map_settings

    assert drawn_ids(["a", "", "a", "b"]) == ["a", "b"]
    with pytest.raises(StudioError, match="at least one prompt or vector to draw"):
        drawn_ids(["", ""])
    assert check_map(["a", "a"], "3", "origin", "tokens", None) == (["a"], 3, 0, True)
    assert check_map(["a"], 2, "kind", "items", MAX_SEED).per_token is False
    for args, message in (((["a"], 2, "size", "items", 0), "colour by one of task, origin, kind, not 'size'"),
                          ((["a"], 2, "task", "points", 0), "unknown view 'points': use items or tokens"),
                          ((["a"], "two", "task", "items", 0), "dimensions must be 2 or 3 and the seed a whole"),
                          ((["a"], 4, "task", "items", 0), "a map has 2 or 3 dimensions, got 4"),
                          ((["a"], 2, "task", "items", MAX_SEED + 1), f"from 0 to {MAX_SEED}, got {MAX_SEED + 1}"),
                          ((["a"], 2, "task", "items", -1), "the seed must be a whole number from 0")):
        with pytest.raises(StudioError, match=message):
            check_map(*args)
    assert map_settings(3.0, "7") == (3, 7)


def test_a_cross_origin_table_is_asked_for_tasks_a_split_and_a_sample():
    from studio.analysis import MAX_LIMIT, check_cross_origin

    assert check_cross_origin(["mr", ""], "test", "16") == (["mr"], 16)
    for args, message in ((([""], "test", 16), "at least one task with prompts tuned on two or more origins"),
                          ((["mr"], "train", 16), "unknown split 'train': use validation or test"),
                          ((["mr"], "test", "many"), "the cross-origin sample must be a whole number of examples"),
                          ((["mr"], "test", MAX_LIMIT + 1),
                           f"the cross-origin sample must be between 1 and {MAX_LIMIT} examples per task")):
        with pytest.raises(StudioError, match=message):
            check_cross_origin(*args)


def test_items_of_two_models_are_neither_compared_nor_drawn(state):
    from studio.analysis import map_points, similarity_table

    ids = vector_ids(state)
    other = state.library.add("vector", torch.randn(4, 8), "another-model", task="mr", seed=0)
    with pytest.raises(StudioError, match=r"different models \(another-model, made-up-model\): compare one at a"):
        similarity_table(state.library, [ids[0], other.id])
    with pytest.raises(StudioError, match=r"different models \(another-model, made-up-model\): draw one at a"):
        map_points(state.library, [ids[0], other.id], "pca")


# ---- the tabs keep their messages -----------------------------------------------------------------------------------
def test_the_tabs_say_what_is_wrong_as_before(state):
    from studio.ui import map_panel, similarity, transfer

    ids = vector_ids(state)
    with pytest.raises(StudioError, match="^choose at least two prompts or vectors to compare$"):
        similarity.draw(state, [ids[0], ""], "vectors", "token_mean_cosine", "task")
    with pytest.raises(StudioError, match="unknown order 'size': use task, origin or cluster"):
        similarity.draw(state, ids, "vectors", "token_mean_cosine", "size")
    with pytest.raises(StudioError, match="^choose at least one prompt or vector to draw$"):
        map_panel.draw(state, [""], "pca", 2, "task", "items", 0)
    with pytest.raises(StudioError, match="the seed must be a whole number from 0 to 4294967295, got 4294967296"):
        map_panel.draw(state, ids, "pca", 2, "task", "items", 2**32)
    with pytest.raises(StudioError, match="unknown projection 'tsne'"):
        map_panel.draw(state, ids, "tsne", 2, "task", "items", 0)
    with pytest.raises(StudioError, match="choose at least one task with prompts tuned on two or more origins"):
        transfer.cross_origin(state, [], "test", 16)
    with pytest.raises(StudioError, match="the cross-origin sample must be between 1 and 2000 examples per task"):
        transfer.cross_origin(state, ["mr"], "test", 0)


def test_a_map_of_an_id_named_twice_draws_it_once(state):
    from studio.ui import map_panel

    ids = vector_ids(state)
    figure, note, rows = map_panel.draw(state, [ids[0], ids[0], *ids[1:], ""], "umap", 2, "task", "items", 0)
    assert len(rows) == len(ids) and note.startswith("UMAP needs at least 4 points, so this is PCA")


# ---- the refresh the Similarity and Map tabs share ---------------------------------------------------------------
def test_a_refresh_keeps_what_still_exists():
    from studio.ui.common import still_chosen

    assert still_chosen(["b", "gone", "a"], ["a", "b"], ["default"]) == ["b", "a"]
    assert still_chosen(["gone"], ["a"], ["default"]) == ["default"]
    assert still_chosen(None, ["a"], []) == []
    assert still_chosen("a", ["a"], "first") == "a"
    assert still_chosen("gone", ["a"], "first") == "first"
    assert still_chosen(None, ["a"], None) is None


@pytest.mark.parametrize("panel", ["similarity", "map_panel"])
def test_opening_a_tab_redraws_its_own_figure_only_when_the_default_items_changed(state, panel):
    import importlib

    import gradio as gr

    tab = importlib.import_module(f"studio.ui.{panel}")
    default = tab.default_ids(state)
    figure_at = 2 if panel == "map_panel" else 1  # the Map tab also refreshes its nearest-token picker, second

    def opened(current, shown):
        sent = tab.on_open(state, current, shown)
        return sent[0], sent[figure_at], sent[-1]

    picker, figure, shown = opened(default, default)  # nothing changed: the figure stays, no value is sent
    assert "value" not in picker.constructor_args and shown == default
    assert figure == gr.skip()
    picker, figure, shown = opened(default[:1], None)  # the user drew: their figure and selection stay
    assert "value" not in picker.constructor_args and figure == gr.skip() and shown is None
    picker, figure, shown = opened(default, default[:1])  # the library changed under the automatic figure
    assert picker.constructor_args["value"] == default and shown == default
    assert hasattr(figure, "to_json")  # a plotly figure of the new default items
    picker = tab.on_refresh(state, [default[0], "gone"])
    picker = picker[0] if isinstance(picker, tuple) else picker
    assert picker.constructor_args["value"] == [default[0]]
    picker = tab.on_refresh(state, ["gone"])
    picker = picker[0] if isinstance(picker, tuple) else picker
    assert picker.constructor_args["value"] == default
