"""API tests of the Library and Tune tabs (and the Guide) through gradio_client, against the real app.

The app runs with a fresh user library and the prebuilt library beneath it (``app_url`` in conftest.py). Item ids
are never hard-coded: they come from the library or the list endpoint.
"""

from __future__ import annotations

import json
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ALL = "all"
TINY = {"n_tokens": 4, "batch": 2, "val_limit": 8}
FINAL = ("done", "cancelled", "failed")
CANCEL_LR = 0.0123  # a learning rate no other job uses: these jobs never share another's checkpoint
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # gradio's own pandas use


@pytest.fixture(scope="module")
def app(app_url):
    url, state = app_url
    client = Client(url, verbose=False)
    return client, state


def listing(client, kind=ALL, task=ALL, text="", source=ALL) -> list[dict]:
    table, _, _ = client.predict(kind, task, text, source, api_name="/library_list")
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def ids(state) -> list[str]:
    return [i.id for i in state.library.items()]


def hidden(state) -> int:
    return state.backbone().hidden_size


def user_prompt(state, name="test prompt"):
    """A user origin and a prompt tuned from it (no tuning: a small random step), with its TPV."""
    torch.manual_seed(len(ids(state)))
    origin_tensor = torch.randn(4, hidden(state))
    origin = state.library.add("origin", origin_tensor, state.model_name, name=f"{name} origin", seed=99,
                               recipe={"init": "test", "seed": 99, "n_tokens": 4})
    prompt = state.library.add("prompt", origin_tensor + 0.1 * torch.randn_like(origin_tensor), state.model_name,
                               name=name, task="mr", seed=99, origin_id=origin.id)
    vector = state.library.add("vector", state.library.vector(prompt.id).delta, state.model_name, name=f"TPV {name}",
                               task="mr", seed=99, origin_id=origin.id, prompt_id=prompt.id)
    return origin, prompt, vector


def prebuilt_item(state, kind="prompt"):
    items = [i for i in state.library.items(kind=kind) if i.source == "prebuilt"]
    if not items:
        pytest.skip("no prebuilt library attached (set STUDIO_PREBUILT or build assets/library)")
    return items[0]


# ---- Library --------------------------------------------------------------------------------------------------------
def test_listing_shows_prebuilt_items_and_filters(app):
    client, state = app
    prebuilt = [i for i in state.library.items() if i.source == "prebuilt"]
    if not prebuilt:
        pytest.skip("no prebuilt library attached")
    rows = listing(client, source="prebuilt")
    assert {r["id"] for r in rows} == {i.id for i in prebuilt}
    assert all(r["source"] == "prebuilt" for r in rows)
    prompts = listing(client, kind="prompt", source="prebuilt")
    assert prompts and all(r["kind"] == "prompt" for r in prompts)
    task = prompts[0]["task"]
    assert all(r["task"] == task for r in listing(client, kind="prompt", task=task))
    details, _ = client.predict(prompts[0]["id"], api_name="/library_details")
    assert details["id"] == prompts[0]["id"] and details["lineage"]["origin_id"]
    assert details["task"] == task and isinstance(details["recipe"], dict) and "file" not in details


def test_pulled_items_show_and_filter_as_pulled(app, tmp_path):
    """Items pulled from a repository are one's own but not made here: the table shows them as "pulled" (the
    Source filter finds them; "user" is what was made or imported here), and the details name the repository."""
    from studio.hub import hub_layout, pull
    from studio.library import Library
    from studio.prompts import make_origin

    client, state = app
    backbone = state.backbone()
    theirs = Library(tmp_path / "theirs")
    start = make_origin(backbone, 7, 4, "top5000")
    origin = theirs.add("origin", start, backbone.name, name="their origin 7", seed=7, recipe={"init": "top5000"})
    theirs.add("prompt", start + 0.1, backbone.name, name="their prompt", task="mr", origin_id=origin.id)
    pulled = pull(state.library, hub_layout(theirs, None, backbone, tmp_path / "shared-prompts"), backbone)
    try:
        rows = {r["id"]: r for r in listing(client, source="pulled")}
        assert set(rows) == {i.id for i in pulled} and {r["source"] for r in rows.values()} == {"pulled"}
        assert not {r["id"] for r in listing(client, source="user")} & set(rows)
        details, _ = client.predict(origin.id, api_name="/library_details")
        assert details["recipe"]["pulled_from"] == "folder shared-prompts"
    finally:
        state.library.delete(origin.id, cascade=True)


def test_listing_shows_how_far_tuning_moved_each_prompt(app):
    """|tau| / |origin| for every TPV and tuned prompt (none for origins), computed from the stored tensors."""
    client, state = app
    rows = listing(client, source="prebuilt")
    if not rows:
        pytest.skip("no prebuilt library attached")
    for row in rows:
        ratio = row["|tau|/|origin|"]
        if row["kind"] == "origin":
            assert ratio is None or ratio != ratio  # empty cell (None or NaN)
            continue
        item = state.library.get(row["id"])
        tau = state.library.vector(item.id).delta
        expected = float(tau.norm() / state.library.tensor(item.origin_id).norm())
        assert ratio == pytest.approx(expected, abs=1e-3) and ratio > 0
    # the validation accuracy column is filled for tuned prompts
    assert all(r["val acc"] is not None for r in rows if r["kind"] == "prompt")


def test_tune_form_starts_from_the_models_recipe(app_url):
    """The Tune tab's fields show the model's default recipe (backbones.recipe_for), not a global constant."""
    import urllib.request

    from studio.backbones import recipe_for

    url, state = app_url
    config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
    by_label = {c["props"].get("label"): c["props"].get("value") for c in config["components"] if "props" in c}
    recipe = recipe_for(state.model_name)
    assert by_label["Steps"] == recipe.steps and by_label["Learning rate"] == recipe.lr
    assert by_label["Batch size (per prompt)"] == recipe.batch_size
    assert by_label["Prompt length (virtual tokens)"] == recipe.n_tokens


def test_details_of_unknown_or_empty_id_is_an_error(app):
    client, _ = app
    with pytest.raises(AppError, match="no library item"):
        client.predict("no-such-id", api_name="/library_details")
    with pytest.raises(AppError, match="choose an item"):
        client.predict("", api_name="/library_details")


def test_rename_and_delete_user_items(app):
    client, state = app
    origin, prompt, vector = user_prompt(state)
    client.predict(prompt.id, "renamed prompt", ALL, ALL, "", ALL, api_name="/library_rename")
    assert state.library.get(prompt.id).name == "renamed prompt"
    assert any(r["id"] == prompt.id and r["name"] == "renamed prompt" for r in listing(client, text="renamed"))
    with pytest.raises(AppError, match="empty"):
        client.predict(prompt.id, "   ", ALL, ALL, "", ALL, api_name="/library_rename")

    with pytest.raises(AppError, match="I understand"):  # not confirmed: nothing happens
        client.predict(vector.id, False, False, ALL, ALL, "", ALL, api_name="/library_delete")
    assert vector.id in ids(state)
    with pytest.raises(AppError, match="cascade"):  # the prompt has a TPV made from it
        client.predict(prompt.id, True, False, ALL, ALL, "", ALL, api_name="/library_delete")
    assert prompt.id in ids(state)
    client.predict(prompt.id, True, True, ALL, ALL, "", ALL, api_name="/library_delete")
    left = ids(state)
    assert prompt.id not in left and vector.id not in left and origin.id in left
    client.predict(origin.id, True, False, ALL, ALL, "", ALL, api_name="/library_delete")
    assert origin.id not in ids(state)


def test_prebuilt_items_are_read_only(app):
    client, state = app
    item = prebuilt_item(state)
    before = ids(state)
    with pytest.raises(AppError, match="read-only"):
        client.predict(item.id, "hijacked", ALL, ALL, "", ALL, api_name="/library_rename")
    with pytest.raises(AppError, match="read-only"):
        client.predict(item.id, True, True, ALL, ALL, "", ALL, api_name="/library_delete")
    assert state.library.get(item.id).name == item.name and ids(state) == before


def test_export_peft_zip_and_import_it_back(app, tmp_path):
    client, state = app
    origin, prompt, _ = user_prompt(state, "exported")
    path = Path(client.predict(prompt.id, "PEFT adapter (.zip)", api_name="/library_export"))
    assert path.suffix == ".zip"
    with zipfile.ZipFile(path) as archive:
        names = {Path(n).name for n in archive.namelist()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    result = client.predict(handle_file(str(path)), "prompt", "", "", "", ALL, ALL, "", ALL,
                            api_name="/library_import")
    new_id = result[4]
    new = state.library.get(new_id)
    assert new_id != prompt.id and new.kind == "prompt" and new.task == "mr" and new.origin_id == origin.id
    assert torch.equal(state.library.tensor(new_id), state.library.tensor(prompt.id))
    assert any(r["id"] == new_id for r in listing(client, kind="prompt"))

    path = Path(client.predict(prompt.id, "safetensors", api_name="/library_export"))
    result = client.predict(handle_file(str(path)), "prompt", "mr", "round trip", origin.id, ALL, ALL, "", ALL,
                            api_name="/library_import")
    again = state.library.get(result[4])
    assert again.name == "round trip" and again.origin_id == origin.id
    assert torch.equal(state.library.tensor(again.id), state.library.tensor(prompt.id))

    # the menu's first choice takes the kind the file states; another kind is refused (it was silently ignored)
    from studio.ui.library_panel import KIND_FROM_FILE

    vector = Path(client.predict(_.id, "safetensors", api_name="/library_export"))
    with pytest.raises(AppError, match="says it holds a vector, but it was asked to be imported as an origin"):
        client.predict(handle_file(str(vector)), "origin", "", "", "", ALL, ALL, "", ALL, api_name="/library_import")
    result = client.predict(handle_file(str(vector)), KIND_FROM_FILE, "", "", "", ALL, ALL, "", ALL,
                            api_name="/library_import")
    assert state.library.get(result[4]).kind == "vector"

    with pytest.raises(AppError, match="task prompt vector"):  # a TPV is not a prompt: PEFT refuses it
        client.predict(state.library.dependents(prompt.id)[0].id, "PEFT adapter (.zip)", api_name="/library_export")
    state.library.delete(origin.id, cascade=True)  # its 4-token mr prompts would join the cross-origin table
    assert not {origin.id, prompt.id, new_id, again.id} & set(ids(state))


def _bad_files(folder: Path, width: int) -> dict[str, Path]:
    files = {}
    files["garbage"] = folder / "garbage.safetensors"
    files["garbage"].write_bytes(bytes(range(256)) * 8)
    files["pickle"] = folder / "payload.safetensors"
    files["pickle"].write_bytes(pickle.dumps({"prompt": [[1.0] * width]}))
    files["pickle zip"] = folder / "payload.zip"
    files["pickle zip"].write_bytes(pickle.dumps({"prompt": [[1.0] * width]}))
    files["wrong width"] = folder / "narrow.safetensors"
    save_file({"prompt": torch.randn(4, width // 2)}, str(files["wrong width"]))
    files["nan"] = folder / "nan.safetensors"
    nan = torch.randn(4, width)
    nan[1, 3] = float("nan")
    save_file({"prompt": nan}, str(files["nan"]))
    files["no key"] = folder / "other.safetensors"
    save_file({"weights": torch.randn(4, width)}, str(files["no key"]))
    files["zip without adapter"] = folder / "empty.zip"
    with zipfile.ZipFile(files["zip without adapter"], "w") as archive:
        archive.writestr("readme.txt", "not an adapter")
    files["zip slip"] = folder / "slip.zip"
    with zipfile.ZipFile(files["zip slip"], "w") as archive:
        archive.writestr("../adapter_config.json", "{}")
    return files


@pytest.mark.parametrize("bad", ["garbage", "pickle", "pickle zip", "wrong width", "nan", "no key",
                                 "zip without adapter", "zip slip"])
def test_bad_imports_are_refused_and_change_nothing(app, tmp_path, bad):
    client, state = app
    path = _bad_files(tmp_path, hidden(state))[bad]
    before = [(i.id, i.name) for i in state.library.items()]
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(path)), "prompt", "", "", "", ALL, ALL, "", ALL, api_name="/library_import")
    assert "\n" not in str(error.value).strip()  # one line, no traceback
    assert [(i.id, i.name) for i in state.library.items()] == before
    assert not list((Path(state.library.root) / "items").glob("*.partial"))


def test_import_without_a_file_is_an_error(app):
    client, state = app
    before = ids(state)
    with pytest.raises(AppError, match="choose a .safetensors"):
        client.predict(None, "prompt", "", "", "", ALL, ALL, "", ALL, api_name="/library_import")
    assert ids(state) == before


# ---- Tune -----------------------------------------------------------------------------------------------------------
def start(client, tasks=("mr",), seeds="0", steps=2, lr=0.03, eval_every=1, val_limit=TINY["val_limit"]):
    return client.predict(list(tasks), None, [], None, "", seeds, TINY["n_tokens"], steps, lr, TINY["batch"],
                          eval_every, val_limit, "cosine", "loss", api_name="/tune_start")


def wait_for(condition, timeout=90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_tiny_tune_job_runs_to_done_and_lands_in_the_library(app):
    client, state = app
    job_id, message, jobs = start(client)
    assert job_id in message and any(row[0] == job_id for row in jobs["data"])
    job = state.runner.jobs[job_id]
    wait_for(lambda: job.status in FINAL)
    status, bar, loss_plot, accuracy_plot, _ = client.predict(job_id, api_name="/tune_watch")  # the job as it is now
    assert bar.startswith("done: step 2 of 2 (100%)")
    assert "**done**" in status and "added 1 prompt" in status
    assert loss_plot is not None and accuracy_plot is not None
    assert job.status == "done" and job.progress == 1.0 and [e["step"] for e in job.events] == [1, 2]
    (prompt_id,) = job.result
    row = next(r for r in listing(client, kind="prompt", task="mr", source="user") if r["id"] == prompt_id)
    assert row["tokens"] == TINY["n_tokens"] and row["val acc"] is not None
    vector = state.library.dependents(prompt_id)
    assert [v.kind for v in vector] == ["vector"]
    # leave the shared app as the analysis tests expect it: a 4-token prompt beside the prebuilt 20-token ones of
    # the same task breaks the cross-origin table (analysis.cross_origin_table pairs origins of any length)
    state.library.delete(prompt_id, cascade=True)


def test_bad_tune_settings_are_errors_and_queue_nothing(app):
    client, state = app
    before = set(state.runner.jobs)
    with pytest.raises(AppError, match="at least one task"):
        start(client, tasks=())
    with pytest.raises(AppError, match="whole numbers"):
        start(client, seeds="0,x")
    with pytest.raises(AppError, match="learning rate"):
        start(client, lr=50)
    with pytest.raises(AppError, match="validate every must be between 1 and 100000"):  # TuneConfig's range
        start(client, eval_every=0)
    with pytest.raises(AppError, match="no-such-task"):  # refused by the dropdown before our code runs
        start(client, tasks=("no-such-task",))
    with pytest.raises(AppError, match="no job"):
        client.predict("nope", api_name="/tune_cancel")
    assert set(state.runner.jobs) == before


def test_own_csv_file_preview_and_check(app, tmp_path):
    client, _ = app
    path = tmp_path / "mine.csv"
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(30)]
    path.write_text("review,verdict\n" + "\n".join(rows) + "\n")
    text, label, preview, _ = client.predict(handle_file(str(path)), api_name="/tune_file_columns")
    assert preview["headers"] == ["review", "verdict"] and len(preview["data"]) == 10
    assert text["value"] == ["review"] and label["value"] == "verdict" and text["choices"]
    summary, examples = client.predict(handle_file(str(path)), ["review"], "verdict", "mine",
                                       api_name="/tune_check_file")
    assert "**mine**" in summary and "neg, pos" in summary and examples["headers"] == ["input", "label"]
    with pytest.raises(AppError, match="column 'missing' not found"):
        client.predict(handle_file(str(path)), ["review"], "missing", "", api_name="/tune_check_file")
    # a file's labels and name are data in the summary, never Markdown (a remote image tells its server who looks)
    image = "![x](https://example.com/pixel.png)"
    path.write_text("review,verdict\n" + "\n".join(f"text {i},{image if i % 2 else 'fine'}" for i in range(30)))
    summary, _ = client.predict(handle_file(str(path)), ["review"], "verdict", "[me](https://example.com)",
                                api_name="/tune_check_file")
    assert "https://example.com" not in summary and "](" not in summary


def test_a_server_path_in_place_of_an_upload_is_refused(app_url, tmp_path):
    """Only files a visitor uploaded reach the studio: a path on the server sent as a file in a raw API call (no
    client that would upload it) is refused by Gradio's upload check, and none of the file's content comes back."""
    import urllib.request

    url, _ = app_url
    secret = tmp_path / "server-secret.csv"
    secret.write_text("text,label\n" + "".join(f"TOPSECRET-{i},{'ab'[i % 2]}\n" for i in range(30)))
    fake_upload = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.csv"}
    for api_name, data in (("tune_file_columns", [fake_upload]),
                           ("tune_check_file", [fake_upload, ["text"], "label", ""])):
        request = urllib.request.Request(f"{url}gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                                         {"Content-Type": "application/json"})
        event_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
        stream = urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event_id}", timeout=60).read().decode()
        assert "event: error" in stream and "TOPSECRET" not in stream, stream[:500]

def test_cancel_a_running_and_a_queued_job_then_resume(app):
    client, state = app
    prompts_before = {i.id for i in state.library.items(kind="prompt")}
    running_id, _, _ = start(client, steps=400, eval_every=400, lr=CANCEL_LR, val_limit=2)
    queued_id, message, _ = start(client, steps=400, eval_every=400, lr=CANCEL_LR, val_limit=2, seeds="1")
    assert "ahead of it" in message
    running, queued = state.runner.jobs[running_id], state.runner.jobs[queued_id]
    wait_for(lambda: running.events)
    status, _ = client.predict(queued_id, api_name="/tune_cancel")
    assert "before it started" in status and queued.status == "cancelled"
    client.predict(running_id, api_name="/tune_cancel")
    wait_for(lambda: running.status == "cancelled")
    stopped_at = running.events[-1]["step"]
    assert stopped_at < 400 and "checkpoint" in running.message
    with pytest.raises(AppError, match="already finished"):
        client.predict(running_id, api_name="/tune_cancel")

    resumed_id, message, _ = client.predict(running_id, api_name="/tune_resume")
    with pytest.raises(AppError, match="already resumed"):  # a second resume would queue the same work twice
        client.predict(running_id, api_name="/tune_resume")
    resumed = state.runner.jobs[resumed_id]
    wait_for(lambda: resumed.events)
    assert resumed.events[0]["step"] == stopped_at + 1  # continued from the checkpoint, not from step 1
    client.predict(resumed_id, api_name="/tune_cancel")
    wait_for(lambda: resumed.status in FINAL)
    status = client.predict(resumed_id, api_name="/tune_watch")[0]
    assert "**cancelled**" in status
    assert {i.id for i in state.library.items(kind="prompt")} == prompts_before


def ticks_until_finished(client, job, timeout=120.0) -> tuple:
    """Tick this session's watch timer (what the page's gr.Timer does every POLL_S) until a tick shows the job
    finished; that tick's outputs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        outputs = client.predict(api_name="/tune_poll")
        if isinstance(outputs[0], str) and f"**{job.status}**" in outputs[0] and job.status in FINAL:
            return outputs
        time.sleep(0.3)
    raise AssertionError(f"no tick showed job {job.id} finished ({job.status})")


def test_the_watch_timer_shows_a_finished_job_at_100_percent(app):
    """Start puts the job in this session's watch State; the timer's ticks draw it until it is done (then the last
    tick switches the timer off); a later tick with nothing new sends nothing."""
    client, state = app
    watcher = Client(client.src, verbose=False)  # a page of its own: its State watches only its own job
    job_id, _, _ = start(watcher, lr=0.05)  # not the first Tune test's settings: this one tunes for real
    job = state.runner.jobs[job_id]
    status, bar, loss_plot, accuracy_plot, *_ = ticks_until_finished(watcher, job)
    assert job.status == "done", job.message
    assert bar.startswith("done: step 2 of 2 (100%)") and "█" * 30 in bar, bar
    assert f"**{job_id}**" in status and "added 1 prompt" in status and loss_plot and accuracy_plot
    again = watcher.predict(api_name="/tune_poll")
    assert not (isinstance(again[0], str) and job_id in again[0]), again[0]  # nothing new: nothing sent
    for prompt_id in job.result:
        state.library.delete(prompt_id, cascade=True)


def test_progress_text_shows_steps_percent_speed_and_eta():
    from studio.jobs import Job
    from studio.ui.tune_panel import progress_text, text_bar

    job = Job("j1", "mr", status="running", progress=0.25)
    assert progress_text(job).startswith("running: preparing")
    job.events.append({"step": 5, "steps": 20, "examples_per_s": 12.5, "eta_s": 75, "train_loss": [0.7]})
    text = progress_text(job)
    assert text.startswith("running: step 5 of 20 (25%)") and "12.5 examples/s" in text and "ETA 1m 15s" in text
    assert text_bar(0.25, 8) == "██░░░░░░" and text_bar(1.0, 4) == "████" and text_bar(-1, 2) == "░░"


# ---- the app: tabs refresh when opened, public Gradio API only ------------------------------------------------------
def test_every_tab_refreshes_when_opened(app_url):
    """app.py hands each panel its gr.Tab: every tab but the Guide has a select event (its refresh), and the
    Library and Tune tabs also refresh on page load."""
    import urllib.request

    url, _ = app_url
    config = json.loads(urllib.request.urlopen(f"{url}config", timeout=30).read())
    tabs = {c["id"]: c["props"].get("id") for c in config["components"] if c["type"] == "tabitem"}
    on_select = {tabs[target[0]]: dep["api_name"] for dep in config["dependencies"]
                 for target in dep["targets"] if target[1] == "select" and target[0] in tabs}
    assert on_select == {name: f"{name}_on_open" for name in
                         ("library", "tune", "similarity", "map", "arithmetic", "transfer")}, on_select
    on_load = {dep["api_name"] for dep in config["dependencies"] if any(t[1] == "load" for t in dep["targets"])}
    assert {"library_on_load", "tune_on_load"} <= on_load, on_load


def test_the_ui_uses_public_gradio_api_only():
    import studio.ui

    for path in Path(studio.ui.__file__).parent.glob("*.py"):
        text = path.read_text()
        if path.name == "visitors.py":  # one documented exception: who is asking, read where Hugging Face's own
            # `spaces` package reads it for per-visitor GPU quotas (spaces.utils.gradio_request_var)
            assert text.count("gradio.context") == 1 and "LocalContext.request.get(None)" in text
            text = text.replace("gradio.context", "")
        for private in ("gradio.context", "get_render_context", "root_block", "time.sleep"):
            assert private not in text, f"{path.name} uses {private}"


# ---- Guide ----------------------------------------------------------------------------------------------------------
def test_guide_summarises_the_prebuilt_library(app):
    _, state = app
    from studio.ui.guide import prebuilt_summary

    text = prebuilt_summary(state)
    prompts = [i for i in state.library.items(kind="prompt") if i.source == "prebuilt"]
    if prompts:
        assert f"{len(prompts)} tuned prompts" in text and f"`{prompts[0].task}`" in text
    else:
        assert "No prebuilt library" in text
    # the path's "expect" numbers are read from the library and its stored views, never written by hand
    from studio.ui.guide import PATH, expectations

    expected = expectations(state)
    path = PATH.format(**expected)
    if state.views.get("sweep"):
        assert f"best c = {state.views['sweep']['best']:.2f}" in path
    if state.views.get("cross_origin"):
        assert "own vs" in expected["transfer"] and "largest gap" in expected["transfer"]
    if prompts:
        assert expected["same"].startswith("mean 0.") or expected["same"].startswith("mean -")


# ---- Sweep (in the Tune tab) -----------------------------------------------------------------------------------------
SWEEP_SPEC = """models = ["smollm2-135m-instruct"]
tasks = ["mr"]
seeds = [7]
[recipe]
steps = 2
batch_size = 2
n_tokens = 4
eval_every = 1
val_limit = 8
lr = [0.05, 0.06]
"""


def test_a_sweep_spec_is_planned_run_as_a_job_and_never_rerun(app):
    client, state = app
    table, text = client.predict(SWEEP_SPEC, "toml", api_name="/sweep_plan")
    assert len(table["data"]) == 2 and "2 prompt(s); 2 still to tune" in text
    job_id = client.predict(SWEEP_SPEC, "toml", api_name="/sweep_run")[0]
    job = state.runner.jobs[job_id]
    wait_for(lambda: job.status in FINAL, timeout=600)
    try:
        assert job.status == "done", job.message
        stored = [i for i in state.library.items(kind="prompt", task="mr") if i.source == "user" and i.seed == 7]
        assert sorted(i.recipe["lr"] for i in stored) == [0.05, 0.06]
        assert all(any(v.kind == "vector" for v in state.library.dependents(i.id)) for i in stored)
        _, again = client.predict(SWEEP_SPEC, "toml", api_name="/sweep_plan")
        assert "0 still to tune" in again
        status = client.predict(job_id, api_name="/sweep_poll")[0]
        assert "**done**" in status and status.count("- group") == 2
    finally:  # 4-token prompts would sit beside the prebuilt ones in other tests' tables
        for origin in {i.origin_id for i in state.library.items(kind="prompt") if i.source == "user" and i.seed == 7}:
            state.library.delete(origin, cascade=True)
    with pytest.raises(Exception, match="not valid TOML"):
        client.predict("models = [", "toml", api_name="/sweep_plan")
    with pytest.raises(Exception, match="unknown"):
        client.predict(SWEEP_SPEC.replace("seeds", "sneeds"), "toml", api_name="/sweep_plan")


def test_download_my_library_and_restore_it(app):
    """The whole user library as one zip and back: same ids, lineage and tensors; bad zips change nothing."""
    client, state = app
    origin, prompt, vector = user_prompt(state, "backup test")
    zip_path = Path(client.predict(api_name="/library_download"))
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert "studio_catalog.json" in names and any(n.startswith("adapters/") for n in names)
    tensor = state.library.tensor(prompt.id)
    state.library.delete(origin.id, cascade=True)
    assert state.library.find(prompt.id) is None
    message = client.predict(handle_file(str(zip_path)), ALL, ALL, "", ALL, api_name="/library_restore")[3]
    assert "Restored" in message
    try:
        back = state.library.get(prompt.id)
        assert back.origin_id == origin.id and state.library.get(vector.id).prompt_id == prompt.id
        assert torch.equal(state.library.tensor(prompt.id), tensor)
    finally:
        state.library.delete(origin.id, cascade=True)
    before = ids(state)
    with pytest.raises(Exception, match="not a library made by this studio"):
        empty = zip_path.parent / "empty.zip"
        with zipfile.ZipFile(empty, "w") as archive:
            archive.writestr("hello.txt", "hi")
        client.predict(handle_file(str(empty)), ALL, ALL, "", ALL, api_name="/library_restore")
    assert ids(state) == before


@pytest.mark.parametrize("steps", [1.5, "lots"])
def test_whole_number_fields_answer_with_the_studios_message(app, steps):
    client, state = app
    before = dict(state.runner.jobs)
    with pytest.raises(Exception, match="Steps must be a whole number"):
        start(client, steps=steps)
    assert state.runner.jobs == before  # nothing queued


def test_names_from_imports_show_as_text_never_as_markup():
    """Item names and tasks arrive from imports and pulls: shown in a Markdown message, a name like an image
    link made every viewer's browser fetch a remote image (telling its server who looks). ``plain`` keeps them text,
    rendered here by CommonMark (as the page's Markdown renderer does)."""
    from markdown_it import MarkdownIt

    from studio.ui.common import plain

    hostile = ("![seen](https://tracker.example/p.png) [click](https://x.example) <img src=x> **loud** `code` # h "
               "https://3232235777/p.png www.example.com me@example.com &amp;")
    html = MarkdownIt("commonmark").render(f"Renamed **o-1** to *{plain(hostile)}*.")
    assert "<img" not in html and "<a " not in html and "<strong>loud" not in html and "<code>" not in html
    text = html.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    assert hostile in text  # every character is still shown
    # what GitHub-flavoured Markdown (the page's) turns into links by itself: bare addresses, www., e-mails
    assert not any(trigger in plain(hostile) for trigger in ("://", "www.", "@"))
    assert plain("mr / origin 3 (lr 0.3)") != "" and MarkdownIt().render(plain("a_b-c.d")).strip() == "<p>a_b-c.d</p>"
