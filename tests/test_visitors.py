"""Each visitor of a public Space in their own space (``studio.ui.visitors``): tested on the real app served with
``STUDIO_VISITORS=own``, two gradio_client clients standing for two visitors (each has its own browser session)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from studio import StudioError
from studio.library import Library
from studio.ui.common import plain
from studio.ui.visitors import (
    MAX_JOB_PROMPTS,
    MAX_JOB_STEPS,
    folder_name,
    job_too_big,
    sweep_idle_sessions,
    visitor_key,
    visitor_mode,
)

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ALL = "all"
FINAL = ("done", "cancelled", "failed")
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


# ---- the rules, without a server ----------------------------------------------------------------------------------
def test_mode_and_keys():
    assert visitor_mode({}) == "shared" and visitor_mode({"SPACE_ID": "me/studio"}) == "own"
    assert visitor_mode({"SPACE_ID": "me/studio", "STUDIO_VISITORS": "shared"}) == "shared"
    with pytest.raises(StudioError, match="STUDIO_VISITORS"):
        visitor_mode({"STUDIO_VISITORS": "everyone"})

    class Request:
        username, session_hash = None, "abc123"

    signed_in = Request()
    signed_in.username = "ada"
    assert visitor_key(None) is None and visitor_key(Request()) == "session:abc123"
    assert visitor_key(signed_in) == "user:ada"  # the login wins: the same library on every visit
    hostile = folder_name("user:../../etc")
    assert hostile.startswith("u-") and "/" not in hostile and "." not in hostile
    assert folder_name("session:abc123").startswith("s-") and folder_name("session:abc123") != folder_name("user:abc123")


def test_a_visitors_job_is_checked_against_the_public_limits():
    from studio.fewshot import FewShotPlan
    from studio.jobs import tune_request
    from studio.tasks import load_task
    from studio.tuning import TuneConfig

    tasks = [load_task("mr"), load_task("tweets")]
    assert job_too_big(tune_request(tasks, "0,1", TuneConfig(steps=MAX_JOB_STEPS), 4)) is None
    assert "steps" in job_too_big(tune_request(tasks, "0", TuneConfig(steps=MAX_JOB_STEPS + 1), 4))
    seeds = ",".join(str(s) for s in range(MAX_JOB_PROMPTS // 2 + 1))
    assert "prompts" in job_too_big(tune_request(tasks, seeds, TuneConfig(steps=10), 4))
    plan = FewShotPlan("mr", ("tweets",), "o-1", (0, 10), TuneConfig(steps=10), TuneConfig(steps=MAX_JOB_STEPS + 1),
                       100, 3, tasks[0])
    assert "steps" in job_too_big(plan)
    assert "sweeps" in job_too_big({"tasks": ["mr"]})
    # the work itself is bounded, not only its steps and prompts: 8 prompts x 1000 steps at batch 512, validated
    # every step on 100,000 examples, with 1,000-token prompts, was queued and held the one queue for days
    widest = ",".join(str(s) for s in range(MAX_JOB_PROMPTS // 2))
    assert job_too_big(tune_request(tasks, widest, TuneConfig(steps=MAX_JOB_STEPS), 20)) is None  # the defaults
    assert "virtual tokens" in job_too_big(tune_request(tasks, "0", TuneConfig(steps=10), 1000))
    for heavy in (TuneConfig(steps=MAX_JOB_STEPS, batch_size=512), TuneConfig(steps=MAX_JOB_STEPS, eval_every=1)):
        assert "example rows" in job_too_big(tune_request(tasks, widest, heavy, 20))
    many = FewShotPlan("mr", ("tweets",), "o-1", (0, 10, 50), TuneConfig(steps=MAX_JOB_STEPS, batch_size=64), None,
                       100, 3, tasks[0])
    assert "example rows" in job_too_big(many)


def test_idle_signed_out_libraries_are_swept_and_nothing_else(tmp_path):
    """Idle for a day, or for an hour when empty (a session that only looked, or a script opening sessions)."""
    names = ("s-old", "s-kept", "s-fresh", "u-ada", "s-looked", "s-worked")
    old_session, kept_session, fresh_session, user, looked, worked = (tmp_path / n for n in names)
    for folder in (old_session, kept_session, fresh_session, user, looked, worked):
        Library(folder)  # a real catalog in each
    Library(worked).add("origin", torch.randn(2, 4), "m", name="kept work", seed=0)
    day_ago, two_hours_ago = time.time() - 2 * 24 * 3600, time.time() - 2 * 3600
    for folder, when in ((old_session, day_ago), (kept_session, day_ago), (user, day_ago),
                         (looked, two_hours_ago), (worked, two_hours_ago)):
        for path in (folder, *folder.glob("catalog.sqlite*")):
            os.utime(path, (when, when))
    stranger = tmp_path / "s-not-a-library"  # something else that happens to be there is never removed
    stranger.mkdir()
    os.utime(stranger, (day_ago, day_ago))
    removed = sweep_idle_sessions(tmp_path, keep={"s-kept"})
    assert sorted(removed) == ["s-looked", "s-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-fresh", "s-kept", "s-not-a-library", "s-worked",
                                                          "u-ada"]


def test_a_sweep_leaves_the_library_a_queued_job_will_write_to(tmp_path):
    """A signed-out visitor's first job may wait in the one queue for over an hour while their library is still
    empty: the sweep of empty libraries must not remove the folder the job will store its prompts in."""
    import threading

    from studio.jobs import JobRunner
    from studio.ui.visitors import Visitors, acting_for

    runner = JobRunner()
    visitors = Visitors(Library(tmp_path / "home"), runner)
    gate = threading.Event()
    with acting_for("session:waiting"):
        library = visitors.library()
        job = runner.submit("a long wait", lambda job: gate.wait(30), owner="session:waiting")
    visitors._libraries.clear()  # 256 other sessions came since: it is no longer among the open libraries
    two_hours_ago = time.time() - 2 * 3600
    for path in (library.root, *library.root.glob("catalog.sqlite*")):
        os.utime(path, (two_hours_ago, two_hours_ago))
    try:
        assert sweep_idle_sessions(visitors.root, visitors._in_use()) == [] and library.root.is_dir()
    finally:
        gate.set()
    deadline = time.time() + 30
    while job.status not in FINAL and time.time() < deadline:
        time.sleep(0.05)
    assert sweep_idle_sessions(visitors.root, visitors._in_use()) == [library.root.name]  # once done, it may go


# ---- two visitors on the served app -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    from conftest import free_port

    from studio.ui.app import create, serve

    home = tmp_path_factory.mktemp("space-library")
    previous = os.environ.get("STUDIO_VISITORS")
    os.environ["STUDIO_VISITORS"] = "own"
    try:
        app, state = create(str(home))
    finally:
        os.environ.pop("STUDIO_VISITORS") if previous is None else os.environ.update(STUDIO_VISITORS=previous)
    assert state.visitors is not None
    port = free_port()
    serve(app, port=port, block=False, public=True)
    url = f"http://127.0.0.1:{port}/"
    yield url, state, home
    app.close()


def test_the_page_shows_visitors_nothing_of_the_home_library(tmp_path, monkeypatch):
    """The page is laid out outside any event: from the home library, its items' ids and names went into the
    config every visitor's browser loads (and the API's defaults)."""
    import json

    from studio.ui.app import create

    home = Library(tmp_path / "home")
    secret = home.add("origin", torch.randn(4, 576), "smollm2-135m-instruct", name="owner-only origin", seed=3)
    monkeypatch.setenv("STUDIO_VISITORS", "own")
    app, state = create(str(home.root))
    try:
        config = json.dumps(app.get_config_file(), default=repr)
        assert secret.id not in config and "owner-only origin" not in config
        shown = state.visitors.page.items()
        assert shown and all(item.source == "prebuilt" for item in shown)  # what a new visitor sees
        assert not state.visitors.page.root.is_relative_to(home.root)  # a read-only home lays the page out too
    finally:
        app.close()


def library_of(client: Client, home: Path) -> Library:
    return Library(home / "visitors" / folder_name(f"session:{client.session_hash}"))


def listed_ids(client: Client) -> set[str]:
    table, _, _ = client.predict(ALL, ALL, "", ALL, api_name="/library_list")
    headers = table["headers"]
    return {dict(zip(headers, row))["id"] for row in table["data"]}


def test_a_call_that_names_no_visitor_is_refused(public_app):
    """A direct REST call carries no session: it acted on the home library (listed, renamed, exported and deleted
    the server owner's items) and shared one job list with every such call. The routes are closed, and a request
    without a visitor is refused wherever it comes from."""
    import httpx
    from gradio.context import LocalContext

    url, state, home = public_app
    answer = httpx.post(f"{url}gradio_api/run/library_list", json={"data": [ALL, ALL, "", ALL]}, timeout=30)
    assert answer.status_code == 404 and "join the queue" in answer.text

    class Anonymous:
        username, session_hash = None, None

    token = LocalContext.request.set(Anonymous())
    try:
        with pytest.raises(StudioError, match="names no visitor"):
            state.visitors.library()
        with pytest.raises(StudioError, match="names no visitor"):
            state.visitors.jobs()
    finally:
        LocalContext.request.reset(token)
    assert state.visitors.library() is state.visitors.page  # laying out the page (no event at all) is fine


def test_a_visitors_items_are_theirs_alone(public_app, tmp_path):
    url, state, home = public_app
    ada, bob = Client(url, verbose=False), Client(url, verbose=False)
    prebuilt = listed_ids(bob)
    path = tmp_path / "mine.safetensors"
    save_file({"prompt": torch.randn(4, state.backbone().hidden_size)}, str(path))
    result = ada.predict(handle_file(str(path)), "prompt", "mr", "ada's prompt", "", ALL, ALL, "", ALL,
                         api_name="/library_import")
    item_id = result[4]
    assert item_id in listed_ids(ada) and item_id not in listed_ids(bob)
    assert listed_ids(bob) == prebuilt  # bob sees the shared prebuilt library, nothing of ada's
    assert [i.id for i in library_of(ada, home).items()] == [item_id]
    assert not (home / "catalog.sqlite").exists() or not Library(home).items()  # nothing in the home library
    with pytest.raises(AppError, match=item_id):
        bob.predict(item_id, "renamed by bob", ALL, ALL, "", ALL, api_name="/library_rename")
    with pytest.raises(AppError, match=item_id):
        bob.predict(item_id, True, True, ALL, ALL, "", ALL, api_name="/library_delete")
    assert library_of(ada, home).get(item_id).name == "ada's prompt"


def start(client: Client, steps: int):
    return client.predict(["mr"], None, [], None, "", "0", 4, steps, 0.03, 2, 1, 8, "cosine", "loss",
                          api_name="/tune_start")


def test_a_visitors_jobs_are_theirs_alone_and_limited(public_app):
    url, state, home = public_app
    ada, bob = Client(url, verbose=False), Client(url, verbose=False)
    job_id, _, jobs = start(ada, steps=2)
    assert any(row[0] == job_id for row in jobs["data"])
    assert not any(row[0] == job_id for row in bob.predict(api_name="/tune_jobs")["data"])
    with pytest.raises(AppError, match="no job"):
        bob.predict(job_id, api_name="/tune_cancel")
    job = state.shared_runner.jobs[job_id]
    deadline = time.time() + 300
    while job.status not in FINAL and time.time() < deadline:
        time.sleep(0.5)
    assert job.status == "done", job.message
    (prompt_id,) = job.result
    assert library_of(ada, home).get(prompt_id).task == "mr"  # ran on the worker thread, stored in ada's library
    assert prompt_id not in listed_ids(bob) and prompt_id in listed_ids(ada)

    with pytest.raises(AppError, match=f"at most {MAX_JOB_STEPS} per job"):  # one job must not hold the queue
        start(bob, steps=MAX_JOB_STEPS + 1)
    long = [start(bob, steps=MAX_JOB_STEPS)[0] for _ in range(state.visitors.max_active_jobs)]
    try:
        with pytest.raises(AppError, match="waiting or running"):
            start(bob, steps=MAX_JOB_STEPS)
        start(ada, steps=1)  # one visitor's full share does not stop another's
    finally:
        for job_id in long:
            bob.predict(job_id, api_name="/tune_cancel")
    for job_id in long:
        job = state.shared_runner.jobs[job_id]
        deadline = time.time() + 120
        while job.status not in FINAL and time.time() < deadline:
            time.sleep(0.5)
        assert job.status == "cancelled"


def test_a_visitors_uploaded_data_is_theirs_alone(public_app, tmp_path):
    """A CSV one visitor checks in the Tune tab becomes their task "file:<name>"; another visitor who types that
    name into a task box gets "unknown task", never the first visitor's rows."""
    url, state, home = public_app
    ada, bob = Client(url, verbose=False), Client(url, verbose=False)
    path = tmp_path / "ada-secret.csv"
    path.write_text("text,label\n" + "".join(f"ADA-PRIVATE note {i},{'yes' if i % 2 else 'no'}\n" for i in range(40)))
    summary, _ = ada.predict(handle_file(str(path)), ["text"], "label", "", api_name="/tune_check_file")
    assert plain("file:ada-secret") in summary  # shown as text (the page renders it as file:ada-secret)
    info = bob.view_api(return_format="dict", print_info=False)["named_endpoints"]["/arithmetic_eval"]
    args = [p.get("parameter_default") for p in info["parameters"]]
    args[4], args[5] = ["file:ada-secret"], 16  # the tasks to evaluate on, the sample size
    with pytest.raises(AppError, match="unknown task 'file:ada-secret'") as refused:
        bob.predict(*args, api_name="/arithmetic_eval")
    assert "ADA-PRIVATE" not in str(refused.value)
    _, status, flips = ada.predict(*args, api_name="/arithmetic_eval")  # ada's own task: evaluated
    assert "Done" in status and "file:ada-secret" in status


def test_sweeps_cannot_even_be_planned_by_a_visitor(public_app):
    """A sweep spec names models by folder; its plan would tell a visitor which folders exist on the server."""
    url, state, home = public_app
    bob = Client(url, verbose=False)
    answers = []
    for folder in ("/etc", "/no/such/folder"):
        spec = f'models = ["{folder}"]\ntasks = ["mr"]\nseeds = [0]\n'
        with pytest.raises(AppError, match="sweeps run on your own machine") as refused:
            bob.predict(spec, "toml", api_name="/sweep_plan")
        answers.append(str(refused.value).replace(folder, "X"))
    assert answers[0] == answers[1] and "/etc" not in answers[0]


def test_a_gpu_handler_finds_the_visitors_files_uploaded_after_its_process_started(monkeypatch, tmp_path):
    """ZeroGPU forks its GPU process once: its registry of uploaded tasks is a copy from then, so a file uploaded
    later was an "unknown task" there. The visitor's own uploads go across with each call (without their training
    examples: these handlers evaluate), and nobody else's; an empty registry stands in for the forked copy."""
    import csv
    from collections import OrderedDict

    from studio import StudioError, task_files, tasks
    from studio.ui import common
    from studio.ui.visitors import acting_for, asking_visitor

    def in_another_process(duration):
        def place(fn):
            def run(*args, **kwargs):
                with monkeypatch.context() as fork:
                    fork.setattr(tasks, "_REGISTERED", OrderedDict())  # what the process holds: nothing uploaded
                    return fn(*args, **kwargs)
            return run
        return place

    monkeypatch.setattr(common, "gpu", in_another_process)

    @common.gpu_for_visitor(lambda *args: 1)
    def seen_there(name):
        try:
            task = tasks.load_task(name)
        except StudioError as error:
            return str(error)
        return task.data_hash, len(task.train), len(task.validation)

    def upload(folder: str, rows: list) -> tasks.TaskData:
        path = tmp_path / folder / "notes.csv"
        path.parent.mkdir()
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([("text", "label"), *rows])
        return task_files.load_file_task(path)

    tasks.set_task_owner(asking_visitor)
    try:
        with acting_for("session:ada"):
            ada = upload("ada", [(f"ada's text {i}", "ab"[i % 2]) for i in range(40)])
            assert len(ada.train) > 0
            assert seen_there("file:notes") == (ada.data_hash, 0, len(ada.validation))
        with acting_for("session:bob"):
            assert "unknown task 'file:notes'" in seen_there("file:notes")  # ada's upload is not bob's
            bob = upload("bob", [(f"bob's text {i}", "xy"[i % 2]) for i in range(30)])
            assert seen_there("file:notes")[0] == bob.data_hash != ada.data_hash
            assert len(tasks.load_task("file:notes").train) == len(bob.train)  # here, the whole task is kept
    finally:
        tasks.set_task_owner(None)


def test_a_gpu_handler_acts_for_the_visitor_who_asked_even_where_the_request_is_not(monkeypatch):
    """ZeroGPU runs a @gpu handler in another process and hands it no Gradio request, so the handler found no
    visitor there (or the wrong one) for their library and tasks. ``gpu_for_visitor`` reads the visitor in the
    event and acts for them where the work runs; a fresh context stands in for the other process here."""
    import contextvars
    import inspect

    from studio.ui import common
    from studio.ui.visitors import acting_for, asking_visitor

    def elsewhere(duration):
        def place(fn):
            if inspect.isgeneratorfunction(fn):
                def run_steps(*args, **kwargs):
                    yield from contextvars.Context().run(lambda: list(fn(*args, **kwargs)))
                return run_steps
            return lambda *args, **kwargs: contextvars.Context().run(fn, *args, **kwargs)
        return place

    monkeypatch.setattr(common, "gpu", elsewhere)

    @common.gpu_for_visitor(lambda *args: 1)
    def who(x):
        return x, asking_visitor()

    @common.gpu_for_visitor(lambda *args: 1)
    def who_at_each_step(n):
        for k in range(n):
            yield k, asking_visitor()

    with acting_for("session:ada"):  # stands in for ada's request in the event
        assert who(7) == (7, "session:ada")
        assert list(who_at_each_step(2)) == [(0, "session:ada"), (1, "session:ada")]
        assert contextvars.Context().run(asking_visitor) is None  # what the other place saw before
    assert list(inspect.signature(who).parameters) == ["x"]  # Gradio reads the inputs from it


def test_a_visitor_is_told_how_many_jobs_their_job_waits_for_other_visitors_too(tmp_path):
    """One queue serves everyone: a visitor's job behind two of another visitor's waits for them, and was said to
    have none ahead (only the visitor's own jobs were counted)."""
    import threading

    from studio.jobs import JobRunner
    from studio.ui.visitors import Visitors, acting_for

    runner = JobRunner()
    visitors = Visitors(Library(tmp_path / "home"), runner)
    gate = threading.Event()
    first = runner.submit("ada 1", lambda job: gate.wait(30) and [], owner="session:ada")
    runner.submit("ada 2", lambda job: [], owner="session:ada")
    mine = runner.submit("bob 1", lambda job: [], owner="session:bob")
    with acting_for("session:bob"):
        bob = visitors.jobs()
        assert bob.ahead_of(mine) == 2 and set(bob.jobs) == {mine.id}  # counted, never listed
    gate.set()
    deadline = time.time() + 30
    while mine.status not in FINAL and time.time() < deadline:
        time.sleep(0.02)
    assert first.status == "done" and bob.ahead_of(mine) == 0
