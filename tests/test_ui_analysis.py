"""API tests of the analysis tabs (Similarity, Map, Arithmetic, Transfer) through gradio_client.

They run against the real app (``app_url``) with the prebuilt library beneath a fresh user library, so they need
a prebuilt library with at least two tasks tuned on at least two origins (``STUDIO_PREBUILT`` for a dev one).
Ids come from the library, never hard-coded. Sample sizes are tiny: the point is the wiring, not the accuracy.
"""

from __future__ import annotations

import base64
import csv
import json
import time

import numpy as np
import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402


def prebuilt_vectors(state):
    """The prebuilt library's TPVs: what the panels are tested on, whatever other tests added to the user library."""
    return [v for v in state.library.items(kind="vector", model=state.model_name) if v.source == "prebuilt"]


@pytest.fixture(scope="module")
def app(app_url):
    url, state = app_url
    vectors = prebuilt_vectors(state)
    if len({v.task for v in vectors}) < 2 or len({v.seed for v in vectors}) < 2:
        pytest.skip("needs a prebuilt library with two tasks on two origins (set STUDIO_PREBUILT)")
    return Client(url, verbose=False), state


@pytest.fixture(scope="module")
def pair(app):
    """An origin and two vectors of different tasks tuned from it."""
    _, state = app
    vectors = prebuilt_vectors(state)
    origin_id = vectors[0].origin_id
    chosen = {}
    for vector in vectors:
        if vector.origin_id == origin_id and vector.task not in chosen:
            chosen[vector.task] = vector.id
    return origin_id, list(chosen.values())[:2]


def plot_data(value) -> list[dict]:
    return json.loads(value["plot"])["data"]


def values(array) -> list:
    """A plotly array from figure JSON: a list, or a base64 typed array ({"dtype", "bdata"}) as plotly 6+ writes."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def expect_error(client: Client, *args, api_name: str, match: str) -> None:
    with pytest.raises(Exception) as raised:
        client.predict(*args, api_name=api_name)
    assert match in str(raised.value), str(raised.value)


def arithmetic_args(origin_id, vector_ids, weights, tasks=(), limit=32, method="weighted_sum"):
    weights = list(weights) + [0.0] * (6 - len(weights))
    return [origin_id, list(vector_ids), method, 0.5, list(tasks), limit, *weights]


# ---- similarity ------------------------------------------------------------------------------------------------
def test_similarity_heatmap_with_csv_export(app):
    client, state = app
    ids = [v.id for v in prebuilt_vectors(state)]
    figure, summary, files = client.predict(ids, "vectors", "token_mean_cosine", "task", api_name="/similarity")
    heat = plot_data(figure)[0]
    assert heat["type"] == "heatmap" and len(values(heat["x"])) == len(ids)
    assert "same task across origins" in summary and "cos(P1.mean(0), P2.mean(0))" in summary
    csv_path = next(f for f in files if f.endswith(".csv"))
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == len(ids) + 1 and len(rows[1]) == len(ids) + 2
    assert any(f.endswith(".html") for f in files)
    _, prompts_summary, _ = client.predict(ids, "prompts", "flat_cosine", "cluster", api_name="/similarity")
    assert "prompts" in prompts_summary
    png = client.predict(api_name="/similarity_png")  # the last figure of this session, rendered on demand
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_png_export_before_drawing_says_what_to_do(app):
    client, _ = app
    fresh = Client(client.src, verbose=False)  # a new session: nothing drawn yet
    expect_error(fresh, api_name="/map_png", match="draw something first")


def test_similarity_rejects_too_few_items(app):
    client, state = app
    one = prebuilt_vectors(state)[0].id
    expect_error(client, [one], "vectors", "token_mean_cosine", "task", api_name="/similarity", match="at least two")
    expect_error(client, [], "vectors", "token_mean_cosine", "task", api_name="/similarity", match="at least two")


# ---- map ---------------------------------------------------------------------------------------------------------
def test_map_pca_umap_2d_3d_and_fallback(app):
    from studio.projection import warm_umap

    client, state = app
    ids = [v.id for v in prebuilt_vectors(state)]
    figure, note, files = client.predict(ids, "pca", 2, "task", "items", 0, api_name="/map")
    assert sum(len(values(trace["x"])) for trace in plot_data(figure)) == len(ids) and note.startswith("PCA")
    assert any(f.endswith(".csv") for f in files)
    warm_umap().join(timeout=240)
    for dims, kind in ((2, "scatter"), (3, "scatter3d")):
        figure, note, _ = client.predict(ids, "umap", dims, "origin", "items", 0, api_name="/map")
        traces = plot_data(figure)
        assert note.startswith("UMAP") and {t["type"] for t in traces} == {kind}
        assert sum(len(values(t["x"])) for t in traces) == len(ids)
    figure, note, _ = client.predict(ids[:2], "umap", 2, "kind", "items", 0, api_name="/map")
    assert "at least 4 points" in note and sum(len(values(t["x"])) for t in plot_data(figure)) == 2
    figure, _, _ = client.predict(ids[:2], "pca", 3, "task", "tokens", 0, api_name="/map")
    tokens = sum(state.library.get(i).n_tokens for i in ids[:2])
    assert sum(len(values(t["x"])) for t in plot_data(figure)) == tokens
    expect_error(client, [], "pca", 2, "task", "items", 0, api_name="/map", match="at least one")


def test_nearest_tokens_of_a_prompt(app):
    client, state = app
    prompt = state.library.items(kind="prompt", model=state.model_name)[0]
    table, note = client.predict(prompt.id, 3, api_name="/nearest_tokens")
    assert len(table["data"]) == prompt.n_tokens and len(table["data"][0]) == 4
    assert "nearest" in note


# ---- arithmetic --------------------------------------------------------------------------------------------------
def bars_of(figure) -> list[float]:
    return [float(v) for v in values(plot_data(figure)[0]["y"])]


def test_live_evaluation_marks_the_origin_and_each_tasks_own_prompt(app, pair):
    """The final chart carries reference marks: the origin alone and the task's own tuned prompt, scored on the
    same validation sample (checked here against a direct evaluation)."""
    from studio.evaluation import evaluate_progressively
    from studio.tasks import load_task

    client, state = app
    origin_id, vector_ids = pair
    task = state.library.get(vector_ids[0]).task
    job = client.submit(*arithmetic_args(origin_id, vector_ids[:1], [0.5], [task], limit=16),
                        api_name="/arithmetic_eval")
    final = job.result()
    marks = {t["name"]: values(t["y"]) for t in plot_data(final[0]) if t["type"] == "scatter"}
    assert set(marks) == {"origin alone", "own tuned prompt"}, marks
    own_prompt = state.library.get(vector_ids[0]).prompt_id
    # the live chart's own sample (the first 16 validation examples in class-balanced order), both marks scored in
    # one batch as the live evaluator does (a bf16 batch of other shapes may flip a borderline example)
    final_round = list(evaluate_progressively(state.backbone(), [state.library.tensor(i) for i in (origin_id, own_prompt)],
                                              load_task(task), "validation", 16, first=16))[-1]
    expected = [result.metrics["accuracy"] for result in final_round]
    assert marks["origin alone"][0] == pytest.approx(expected[0]) and marks["own tuned prompt"][0] == pytest.approx(
        expected[1])
    assert "of its own tuned prompt" in final[1]


def test_task_names_never_read_files_on_the_server(app, pair, tmp_path):
    """A path typed where a task name goes is an unknown task: its rows never reach a response, and the message is
    the same whether the file exists or not."""
    client, _ = app
    origin_id, vector_ids = pair
    secret = tmp_path / "secret.csv"
    secret.write_text("text,label\n" + "".join(f"TOPSECRET-{i},{'ab'[i % 2]}\n" for i in range(40)))
    messages = []
    for path in (str(secret), str(tmp_path / "absent.csv")):
        for api_name, extra in (("/arithmetic_eval", ()), ("/arithmetic_save", ("x",)),
                                ("/arithmetic_sweep", ("coefficient", 8))):
            with pytest.raises(Exception) as raised:
                client.predict(*arithmetic_args(origin_id, vector_ids, [1, 1], [path], limit=16), *extra,
                               api_name=api_name)
            message = str(raised.value)
            assert "unknown task" in message and "TOPSECRET" not in message, message
            messages.append(message.replace(path, "PATH"))
        with pytest.raises(Exception) as raised:
            client.predict(path, vector_ids, origin_id, "0, 2", 1, 0.03, 2, 8, 0, api_name="/fewshot_start")
        assert "unknown task" in str(raised.value) and "TOPSECRET" not in str(raised.value)
    assert messages[:3] == messages[3:]  # existing and missing paths answer alike


def test_live_evaluation_streams_and_follows_the_sliders(app, pair):
    client, _ = app
    origin_id, vector_ids = pair
    finals = []
    for weights in ([1.5, 1.5], [-1.5, -1.5]):
        started = time.time()
        job = client.submit(*arithmetic_args(origin_id, vector_ids, weights), api_name="/arithmetic_eval")
        first_at = None
        for _ in job:
            first_at = first_at or time.time() - started
        outputs = job.outputs()
        refining = [o for o in outputs if o[1].startswith("Refining")]
        assert len(refining) >= 2, [o[1] for o in outputs]
        assert outputs[-1][1].startswith("Done"), outputs[-1][1]
        print(f"weights {weights}: first estimate after {first_at:.1f} s; {outputs[-1][1]}")
        finals.append(outputs[-1])
    assert bars_of(finals[0][0]) != bars_of(finals[1][0])  # accuracy moves with the weights
    assert "flipped" in finals[1][1]
    assert finals[1][2]["headers"] == ["task", "input", "label", "before", "after"]
    assert all("<|im_start|>" not in row[1] for row in finals[1][2]["data"])  # people read the example, not the template


def test_two_sessions_keep_their_own_arithmetic_state(app, pair):
    """Each visitor's Session lives in its page's gr.State: what one client evaluated is the other's "previous
    evaluation" in no way (only an evaluation that follows one in the same session reports flips)."""
    client, state = app
    origin_id, vector_ids = pair
    first, second = Client(client.src, verbose=False), Client(client.src, verbose=False)
    task = state.library.get(vector_ids[0]).task
    one = first.predict(*arithmetic_args(origin_id, vector_ids[:1], [1.0], [task], limit=16), api_name="/arithmetic_eval")
    assert one[1].startswith("Done") and "flipped" not in one[1], one[1]
    two = second.predict(*arithmetic_args(origin_id, vector_ids[:1], [-1.5], [task], limit=16),
                         api_name="/arithmetic_eval")
    assert two[1].startswith("Done") and "flipped" not in two[1], two[1]  # a fresh session: nothing to compare
    again = first.predict(*arithmetic_args(origin_id, vector_ids[:1], [-1.5], [task], limit=16),
                          api_name="/arithmetic_eval")
    assert "flipped since the previous evaluation" in again[1], again[1]


def test_a_newer_position_stops_the_older_evaluation_of_the_same_session(app, pair):
    """The generation counter in the session's State: a second evaluation in the same session makes the first,
    still refining, stop at its next round without ever reporting Done; the second finishes."""
    client, _ = app
    origin_id, vector_ids = pair
    session = Client(client.src, verbose=False)
    slow = session.submit(*arithmetic_args(origin_id, vector_ids, [1, 1], limit=512), api_name="/arithmetic_eval")
    deadline = time.time() + 120
    while not slow.outputs() and time.time() < deadline:  # the slow one is refining before the next one starts
        time.sleep(0.1)
    assert slow.outputs() and not slow.done()
    fast = session.submit(*arithmetic_args(origin_id, vector_ids, [0.5, 0.5], limit=16), api_name="/arithmetic_eval")
    assert fast.result()[1].startswith("Done")
    slow.result(timeout=120)
    assert not any(str(o[1]).startswith("Done") for o in slow.outputs()), [o[1] for o in slow.outputs()]


def test_a_session_survives_gradios_deep_copy_and_pickling():
    import copy
    import pickle

    from studio.ui.arithmetic import Session

    session = Session()
    session.generation, session.accuracy = 3, {"mr": 0.5}
    for twin in (copy.deepcopy(session), pickle.loads(pickle.dumps(session))):
        assert twin.accuracy == {"mr": 0.5} and twin.lock is not session.lock
        assert twin.bump() == 4 and session.generation == 3


def test_live_evaluation_rejects_bad_input(app, pair):
    client, state = app
    origin_id, vector_ids = pair
    expect_error(client, *arithmetic_args(origin_id, [], []), api_name="/arithmetic_eval", match="at least one")
    expect_error(client, *arithmetic_args(None, vector_ids, [1, 1]), api_name="/arithmetic_eval", match="origin")
    short = state.library.add("vector", torch.randn(7, state.library.get(vector_ids[0]).hidden) * 0.01,
                              state.model_name, name="short vector", task="mr")
    expect_error(client, *arithmetic_args(origin_id, [vector_ids[0], short.id], [1, 1]),
                 api_name="/arithmetic_eval", match="shape")
    expect_error(client, *arithmetic_args(origin_id, [short.id], [1]), api_name="/arithmetic_eval", match="shape")
    state.library.delete(short.id)


def test_sweep_has_21_points(app, pair):
    client, state = app
    origin_id, vector_ids = pair
    task = state.library.get(vector_ids[0]).task
    figure, text, files = client.predict(*arithmetic_args(origin_id, vector_ids, [1, 1], [task]), "coefficient", 8,
                                         api_name="/arithmetic_sweep")
    lines = [t for t in plot_data(figure) if t["type"] == "scatter"]
    assert len(lines) == 1 and len(values(lines[0]["x"])) == 21 and values(lines[0]["x"])[-1] == 1.0
    assert "Best shared coefficient" in text and any(f.endswith(".csv") for f in files)


def test_save_adds_the_combination_to_the_library(app, pair):
    client, state = app
    origin_id, vector_ids = pair
    before = len(state.library.items())
    text, item_id = client.predict(*arithmetic_args(origin_id, vector_ids, [0.5, 1.0], limit=16), "my mix",
                                   api_name="/arithmetic_save")
    item = state.library.get(item_id)
    assert len(state.library.items()) == before + 1 and item.kind == "prompt" and item.name == "my mix"
    assert item.recipe["combination"]["weights"] == [0.5, 1.0] and item.origin_id == origin_id
    assert any(k.startswith("validation_accuracy/") for k in item.metrics) and item_id in text
    # the Library's "val acc" column is filled for a saved combination too (its mean over the evaluated tasks)
    table, _, _ = client.predict("prompt", "all", item_id, "user", api_name="/library_list")
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["id"] == item_id and row["val acc"] is not None and 0 <= row["val acc"] <= 1
    # the same combination saved again is named, not stored twice
    again, again_id = client.predict(*arithmetic_args(origin_id, vector_ids, [0.5, 1.0], limit=16), "other name",
                                     api_name="/arithmetic_save")
    assert again_id == item_id and "already in the library as **my mix**" in again
    assert len(state.library.items()) == before + 1
    state.library.delete(item_id)


def test_link_names_the_combination_and_opening_it_restores_the_controls(app, pair):
    """/arithmetic_link makes the URL (from the page address the browser passes in); the page-load handler reads
    it back into the controls: origin, vectors, method, density, tasks, sample and each slider's weight."""
    from urllib.parse import parse_qsl, urlsplit

    import gradio as gr

    from studio.ui.arithmetic import MAX_VECTORS, open_link

    client, state = app
    origin_id, vector_ids = pair
    task = state.library.get(vector_ids[1]).task
    url = client.predict(*arithmetic_args(origin_id, vector_ids, [0.35, -0.5], [task], 48, "ties"),
                         "http://studio.example/?__sign=x", api_name="/arithmetic_link")
    assert url.startswith("http://studio.example/?tab=arithmetic&") and "__sign" not in url
    params = dict(parse_qsl(urlsplit(url).query))
    outputs = open_link(state, params)
    origin, vectors, method, density, tasks, limit, *sliders, status = outputs
    assert len(sliders) == MAX_VECTORS and origin.value == origin_id and vectors.value == vector_ids
    assert (method, density, tasks.value, limit) == ("ties", 0.5, [task], 48)
    assert [s.value for s in sliders[:2]] == [0.35, -0.5] and [s.visible for s in sliders[:3]] == [True, True, False]
    assert "Opened from a shared link" in status
    assert all(o == gr.skip() for o in open_link(state, {"__theme": "dark"}))  # no link: everything left as it is
    with pytest.raises(gr.Error, match="this link cannot be opened: no library item 'v-gone'"):
        open_link(state, {**params, "vectors": "v-gone:1"})
    expect_error(client, *arithmetic_args(origin_id, vector_ids, [1.0, 1.0], ["mr,tweets"]), "",
                 api_name="/arithmetic_link", match="cannot go into a link")


def test_refreshing_the_lists_keeps_a_selection_it_has_no_reason_to_change(app, pair):
    """Opening the tab refreshes the lists with the values the page held when the tab was selected. A shared link
    selects the tab while it sets its own combination, so a refresh that sent those older values back replaced the
    link's vectors with the page's default (a failure seen in CI): values go out only where an item is gone."""
    from studio.ui.arithmetic import on_refresh

    _, state = app
    origin_id, vector_ids = pair
    origin, vectors, tasks = on_refresh(state, origin_id, vector_ids, ["mr"])
    assert "value" not in origin.constructor_args and "value" not in vectors.constructor_args
    assert "value" not in tasks.constructor_args and vector_ids[0] in [v for _, v in vectors.choices]
    origin, vectors, tasks = on_refresh(state, "o-gone", [vector_ids[0], "v-gone"], [])
    assert origin.value != "o-gone" and vectors.constructor_args["value"] == [vector_ids[0]]
    assert tasks.constructor_args["value"] == [state.library.get(vector_ids[0]).task]
    # the other tabs' refreshes (run on opening them) follow the same rule
    from studio.ui import map_panel, similarity, transfer

    for refreshed in (similarity.on_refresh(state, vector_ids), map_panel.on_refresh(state, vector_ids)[0],
                      *transfer.on_refresh(state, ["mr"], vector_ids, origin_id)):
        assert "value" not in refreshed.constructor_args
    assert similarity.on_refresh(state, [vector_ids[0], "v-gone"]).constructor_args["value"] == [vector_ids[0]]
    assert transfer.on_refresh(state, ["mr"], vector_ids, "o-gone")[2].constructor_args["value"] != "o-gone"


# ---- transfer ----------------------------------------------------------------------------------------------------
def test_cross_origin_table_has_own_and_other_rows(app, pair):
    client, state = app
    task = state.library.get(pair[1][0]).task
    table, figure, text, files = client.predict([task], "validation", 8, api_name="/cross_origin")
    kinds = {row[3] for row in table["data"]}
    assert kinds == {"own", "other"} and all(row[0] == task for row in table["data"])
    assert len(plot_data(figure)) == 2 and "own" in text
    # each row says how far its TPV moved from its own origin, and the summary sets the gap beside it
    assert table["headers"][-1] == "|tau|/|origin| of the TPV" and all(row[-1] > 0 for row in table["data"])
    assert "gap" in text and "|tau|/|origin|" in text
    expect_error(client, [], "validation", 16, api_name="/cross_origin", match="at least one task")


def test_few_shot_experiment_runs_as_a_job(app, pair):
    client, state = app
    origin_id, vector_ids = pair
    target = state.library.get(vector_ids[0]).task
    job_id, _, _ = client.predict(target, vector_ids, origin_id, "0, 2", 1, 0.03, 2, 8, 2, api_name="/fewshot_start")
    deadline = time.time() + 120
    while time.time() < deadline:
        text, figure, table, _ = client.predict(job_id, api_name="/fewshot_status")
        if "**done**" in text or "**failed**" in text:
            break
        time.sleep(1)
    assert "**done**" in text, text
    inits = {row[1] for row in table["data"]}
    assert {row[0] for row in table["data"]} == {0, 2} and len(inits) == 5 and "random origin" in inits
    tasks = "+".join(state.library.get(v).task for v in vector_ids)
    assert f"multi-task prompt: {tasks}" in inits  # SPoT's start, tuned on the two source tasks mixed
    (multitask,) = [i for i in state.library.items(kind="prompt") if i.task == tasks]
    assert multitask.recipe["mixture"] == tasks.split("+") and multitask.recipe["steps"] == 2
    assert len(plot_data(figure)) == 5
    expect_error(client, target, vector_ids, origin_id, "ten", 1, 0.03, 2, 8, 0, api_name="/fewshot_start",
                 match="whole numbers")
    expect_error(client, target, vector_ids[:1], origin_id, "0", 1, 0.03, 2, 8, 2, api_name="/fewshot_start",
                 match="two or more tasks")


# ---- the small pure helpers behind the panels (no app needed) ----------------------------------------------------
def test_same_vs_different_and_flips_and_cross_origin_summary():
    from studio.analysis import SimilarityTable, cross_origin_summary, flipped, same_vs_different
    from studio.library import Item

    def item(task, origin):
        return Item(f"v-{task}{origin}", "vector", task, "m", task, origin, None, None, 2, 3)

    items = [item("a", 0), item("a", 1), item("b", 0)]
    matrix = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
    stats = same_vs_different(SimilarityTable(matrix, items, ["x"] * 3, "token_mean_cosine", True))
    assert stats["same_task"] == pytest.approx(0.8) and stats["different_task"] == pytest.approx(0.2)
    assert (stats["n_same"], stats["n_different"]) == (1, 2)

    before = [{"input": "x", "label": "pos", "prediction": "pos"}, {"input": "y", "label": "neg", "prediction": "pos"}]
    after = [{"input": "x", "label": "pos", "prediction": "neg"}, {"input": "y", "label": "neg", "prediction": "pos"},
             {"input": "z", "label": "neg", "prediction": "neg"}]
    assert flipped(before, after, "t") == [{"task": "t", "input": "x", "fields": "x", "label": "pos",
                                            "before": "pos", "after": "neg"}]

    rows = [{"task": "a", "own": True, "accuracy": 0.8}, {"task": "a", "own": False, "accuracy": 0.6},
            {"task": "a", "own": False, "accuracy": 0.7}]
    (summary,) = cross_origin_summary(rows)
    assert summary["own_mean"] == pytest.approx(0.8) and summary["other_mean"] == pytest.approx(0.65)
    assert (summary["n_own"], summary["n_other"]) == (1, 2)


def test_the_arithmetic_tab_opens_on_the_selection_whose_sweep_is_stored(tiny_llama_dir, tmp_path):
    """The tab opens on ``views.default_pair`` (the lowest-seed origin), the selection the prebuilt library's sweep
    was computed for; it picked the first origin of the dropdown, which an imported origin without a seed heads."""
    import gradio as gr

    from studio.library import Library
    from studio.ui import arithmetic
    from studio.ui.common import AppState
    from studio.views import default_pair

    state = AppState(Library(tmp_path / "lib"), model_name=str(tiny_llama_dir))
    model, hidden = state.model_name, state.backbone().hidden_size
    state.library.add("origin", torch.randn(4, hidden), model, name="imported origin")  # no seed
    origin = state.library.add("origin", torch.randn(4, hidden), model, name="origin 0", seed=0)
    for task in ("mr", "tweets"):
        prompt = state.library.add("prompt", torch.randn(4, hidden), model, task=task, seed=0, origin_id=origin.id)
        state.library.add("vector", torch.randn(4, hidden), model, task=task, seed=0, origin_id=origin.id,
                          prompt_id=prompt.id)
    with gr.Blocks() as page:
        with gr.Tab("Arithmetic") as tab:
            arithmetic.build(state, tab, page)
    shown = {block.label: block.value for block in page.blocks.values() if isinstance(block, gr.Dropdown)}
    expected_origin, expected_vectors = default_pair(state.library, model)
    assert expected_origin == origin.id
    assert shown["Origin P0"] == origin.id and shown["Task prompt vectors (up to 6)"] == expected_vectors
