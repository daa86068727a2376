"""The job runner's rules (cancel, resume once), tuning requests, and the few-shot study's checks and recipes.

The runner is tested directly, with real threads: whoever calls it (the Tune tab, a script), a stopped job is
resumed once and a finished one is never cancelled or resumed (issue #12: a cancelled job resumed twice ran twice).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from studio import StudioError
from studio.backbones import load_backbone
from studio.fewshot import few_shot_configs, parse_shots, plan_few_shot, submit_few_shot
from studio.jobs import (
    FINISHED,
    Job,
    JobRunner,
    origin_item,
    progress_summary,
    run_tuning,
    submit_tuning,
    tune_request,
)
from studio.library import Library, content_id, origin_id, tuned_prompt_id
from studio.task_files import load_file_task
from studio.tasks import load_task
from studio.tuning import TuneConfig

CONFIG = TuneConfig(steps=2, batch_size=2, lr=0.03, eval_every=1, val_limit=4)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def runner():
    return JobRunner()


def hold(runner: JobRunner):
    """A job that keeps the worker busy until the returned event is set, so the next jobs stay queued."""
    gate = threading.Event()
    job = runner.submit("gate", lambda job: gate.wait(30) and ["opened"])
    wait_for(lambda: job.status == "running")
    return job, gate


# ---- the runner ---------------------------------------------------------------------------------------------------
def test_a_cancelled_job_is_resumed_once_and_runs_its_work_once(runner):
    calls = []
    gate_job, gate = hold(runner)
    job = runner.submit("work", lambda job: calls.append(job.id) or ["stored"], spec="the request", resumable=True)
    runner.cancel(job.id)
    assert job.status == "cancelled"  # queued: it never starts
    again = runner.resume(job.id)
    assert (again.resumes, job.resumed_by, again.spec, again.title) == (job.id, again.id, "the request", "work")
    with pytest.raises(StudioError, match=f"job {job.id} was already resumed as {again.id}"):
        runner.resume(job.id)
    with pytest.raises(StudioError, match=f"job {again.id} is queued: only a cancelled or failed job"):
        runner.resume(again.id)
    gate.set()
    wait_for(lambda: again.status in FINISHED)
    assert again.status == "done" and again.result == ["stored"] and calls == [again.id]
    assert gate_job.status == "done"
    with pytest.raises(StudioError, match="is done: only a cancelled or failed job can be resumed"):
        runner.resume(again.id)
    with pytest.raises(StudioError, match=f"job {again.id} already finished \\(done\\): nothing to cancel"):
        runner.cancel(again.id)
    assert set(runner.jobs) == {gate_job.id, job.id, again.id}  # the refused calls queued nothing


def test_a_running_job_cannot_be_resumed_and_a_failed_one_can(runner):
    gate = threading.Event()
    attempts = []

    def work(job):
        attempts.append(job.id)
        if len(attempts) == 1:
            gate.wait(30)
            raise StudioError("the data went away")
        return ["second time lucky"]

    job = runner.submit("flaky", work, resumable=True)
    wait_for(lambda: job.status == "running")
    with pytest.raises(StudioError, match="is running: only a cancelled or failed job"):
        runner.resume(job.id)
    gate.set()
    wait_for(lambda: job.status in FINISHED)
    assert (job.status, job.message) == ("failed", "the data went away")
    again = runner.resume(job.id)
    wait_for(lambda: again.status in FINISHED)
    assert again.result == ["second time lucky"] and attempts == [job.id, again.id]


def test_only_resumable_jobs_resume_and_unknown_ids_are_errors(runner):
    gate_job, gate = hold(runner)
    plain = runner.submit("a few-shot study", lambda job: [])
    runner.cancel(plain.id)
    with pytest.raises(StudioError, match="cannot be resumed: start it again"):
        runner.resume(plain.id)
    for call in (runner.resume, runner.cancel, runner.get):
        with pytest.raises(StudioError, match="no job 'nope'"):
            call("nope")
    gate.set()


def test_resumes_at_the_same_moment_queue_one_job(runner):
    """Two clicks on Resume (two server threads) at once: exactly one is queued, the other is told why."""
    gate_job, gate = hold(runner)
    job = runner.submit("work", lambda job: ["stored"], resumable=True)
    runner.cancel(job.id)
    start = threading.Barrier(8)
    resumed, refused = [], []

    def click():
        start.wait()
        try:
            resumed.append(runner.resume(job.id).id)
        except StudioError as error:
            refused.append(str(error))

    threads = [threading.Thread(target=click) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gate.set()
    assert len(resumed) == 1 and len(refused) == 7 and all("already resumed" in r for r in refused)
    assert len(runner.jobs) == 3



def test_jobs_ahead_are_the_unfinished_ones_queued_before(runner):
    """"N job(s) ahead of it" (Tune tab, start_tuning): the running job and the queued ones before it, not the
    finished or cancelled ones, nor the job itself or those queued after it."""
    finished = runner.submit("finished", lambda job: ["done"])
    wait_for(lambda: finished.status == "done")
    gate_job, gate = hold(runner)
    first, cancelled, second = (runner.submit(title, lambda job: []) for title in ("first", "cancelled", "second"))
    runner.cancel(cancelled.id)
    assert [runner.ahead_of(j) for j in (finished, gate_job, first, cancelled, second)] == [0, 0, 1, 2, 2]
    gate.set()
    wait_for(lambda: second.status in FINISHED)
    assert runner.ahead_of(second) == 0


def test_progress_summary_is_the_last_step_and_the_last_validation():
    """The numbers the Tune tab, the MCP tool and the CLI bars show: means over the prompts at the last step, the
    accuracies of the last validation (a step without one keeps it), nothing before the first step."""
    def step(n: int, losses: list[float], accuracies: list[float] | None = None) -> dict:
        event = {"step": n, "steps": 10, "train_loss": losses, "examples_per_s": 4.0 * n, "eta_s": 10.0 - n}
        if accuracies is not None:
            event["validation"] = [{"step": n, "val_accuracy": a} for a in accuracies]
        return event

    job = Job("j1", "mr")
    assert progress_summary(job) == {}
    job.events += [step(1, [1.0, 0.5], [0.5, 0.75]), step(2, [0.75, 0.25]), step(3, [0.5, 0.0], [])]
    assert progress_summary(job) == {"step": 3, "steps": 10, "train_loss": 0.25, "examples_per_s": 12.0, "eta_s": 7.0,
                                     "val_accuracies": [0.5, 0.75], "val_accuracy": 0.625}
    job.events.append(step(4, [], [1.0, 0.0, 0.5]))
    summary = progress_summary(job)
    assert summary["train_loss"] is None and summary["val_accuracies"] == [1.0, 0.0, 0.5]
    assert summary["val_accuracy"] == 0.5
    assert progress_summary(job.events[1:2])["val_accuracy"] is None  # one event alone: the CLI bar's view


# ---- tuning jobs --------------------------------------------------------------------------------------------------
def test_tune_request_checks_everything_before_a_job_is_queued():
    mr, tweets = load_task("mr"), load_task("tweets")
    request = tune_request([mr, tweets], "0, 2", CONFIG, 4.0)
    assert request.seeds == (0, 2) and request.n_tokens == 4 and type(request.n_tokens) is int
    assert request.title == "mr, tweets x origins 0,2: 2 steps, 4 tokens"
    assert request.labels() == ["mr / origin 0", "mr / origin 2", "tweets / origin 0", "tweets / origin 2"]
    assert tune_request([mr], [3], CONFIG, 4).seeds == (3,)
    for args, message in [(([], "0", CONFIG, 4), "choose at least one task"),
                          (([mr, mr], "0", CONFIG, 4), "a task is chosen twice"),
                          (([mr], "0,x", CONFIG, 4), "origin seeds must be whole numbers"),
                          (([mr], "", CONFIG, 4), "at least one origin seed"),
                          (([mr], "0", CONFIG, None), "prompt length is empty"),
                          (([mr], "0", CONFIG, 2.5), "prompt length must be a whole number"),
                          (([mr], "0", CONFIG, 5000), "between 1 and 1000 virtual tokens")]:
        with pytest.raises(StudioError, match=message):
            tune_request(*args)


def test_a_tuning_job_resumed_twice_stores_its_prompt_once(runner, tiny_llama_dir, tmp_path):
    """Issue #12's path through the real run_tuning: cancel a queued tuning job, resume it; the second resume is
    refused, and the library holds the job's origin, prompt and vector once."""
    library = Library(tmp_path / "lib")
    backbone = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    request = tune_request([load_task("mr")], "0", CONFIG, 4)
    gate_job, gate = hold(runner)
    job = submit_tuning(runner, library, lambda: backbone, request)
    runner.cancel(job.id)
    again = runner.resume(job.id)
    with pytest.raises(StudioError, match="already resumed"):
        runner.resume(job.id)
    gate.set()
    wait_for(lambda: again.status in FINISHED, timeout=120)
    assert again.status == "done", again.message
    assert [e["step"] for e in again.events] == [1, 2] and again.progress == 1.0 and again.spec is request
    assert sorted(i.kind for i in library.items()) == ["origin", "prompt", "vector"]
    assert again.result == [library.items(kind="prompt")[0].id] and "added 1 prompt" in again.message


def test_a_tuning_job_stores_its_best_validation_and_its_curves(tiny_llama_dir, tmp_path):
    """What ``run_tuning`` stores: the origin under its content id, the prompt's best validation as the catalog
    names metrics (``validation_loss``...), its curves as tuning draws them (``val_loss``... beside ``train_loss``);
    the same job again stores nothing, and a kept partial result has an id of its own."""
    library = Library(tmp_path / "lib")
    backbone = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    mr = load_task("mr")
    (prompt,), status = run_tuning(library, backbone, [mr], [0], CONFIG, 4, checkpoint_dir=tmp_path / "checkpoint")
    origin = library.get(prompt.origin_id)
    assert status == "done" and origin.id == origin_id(backbone.name, 0, 4) == origin_item(library, backbone, 0, 4).id
    assert (origin.name, origin.recipe) == ("origin 0 (4 tokens)", {"init": "top5000", "seed": 0, "n_tokens": 4})
    assert prompt.id == tuned_prompt_id(origin.id, mr, CONFIG)
    history = prompt.recipe["history"]
    assert [list(point) for point in history] == [["step", "train_loss", "val_loss", "val_accuracy",
                                                   "val_macro_f1"]] * 3
    best = next(point for point in history if point["step"] == prompt.recipe["best_step"])
    assert list(prompt.metrics.items()) == [("validation_loss", best["val_loss"]),
                                            ("validation_accuracy", best["val_accuracy"]),
                                            ("validation_macro_f1", best["val_macro_f1"])]
    events = []
    assert run_tuning(library, backbone, [mr, mr], [0], CONFIG, 4, on_progress=events.append) == ([prompt], "done")
    assert not events and sorted(i.kind for i in library.items()) == ["origin", "prompt", "vector"]
    (partial,), status = run_tuning(library, backbone, [mr], [1], CONFIG, 4, should_stop=iter([False, True]).__next__,
                                    checkpoint_dir=tmp_path / "partial", keep_partial=True)
    one_origin = origin_id(backbone.name, 1, 4)
    assert partial.origin_id == one_origin
    assert partial.id == content_id("prompt", tuned_prompt_id(one_origin, mr, CONFIG), 1)


def test_a_jobs_checkpoint_lives_in_its_library_and_old_ones_are_swept(tiny_llama_dir, tmp_path):
    """A cancelled job keeps its checkpoint for a resume, inside its library (a visitor's library is swept when
    they leave, and its checkpoints with it); a new job first removes the library's checkpoints past the most
    recent ``keep`` or unwritten for ``days``, never the one it resumes."""
    import os

    from studio.jobs import CHECKPOINTS, sweep_checkpoints

    library = Library(tmp_path / "lib")
    backbone = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    mr = load_task("mr")
    assert run_tuning(library, backbone, [mr], [0], CONFIG, 4, should_stop=iter([False, True]).__next__) == (
        [], "cancelled")
    (own,) = list((library.root / CHECKPOINTS).iterdir())
    assert (own / "state.json").is_file() and not library.items()  # nothing stored, the checkpoint kept
    stale = []
    for n in range(3):  # other jobs' checkpoints, the first two last written long ago
        folder = library.root / CHECKPOINTS / f"other{n}"
        folder.mkdir()
        if n < 2:
            os.utime(folder, (time.time() - 40 * 86400,) * 2)
            stale.append(folder)
    os.utime(own, (time.time() - 40 * 86400,) * 2)  # the cancelled job, resumed a while later
    events = []
    (prompt,), status = run_tuning(library, backbone, [mr], [0], CONFIG, 4, on_progress=events.append)
    assert status == "done" and [e["step"] for e in events] == [2]  # resumed from its checkpoint, not swept
    assert sorted(p.name for p in (library.root / CHECKPOINTS).iterdir()) == ["other2"]  # its own: gone when stored
    for n in range(3):
        (library.root / CHECKPOINTS / f"keep{n}").mkdir()
    assert len(sweep_checkpoints(library, keep=2)) == 2 and len(list((library.root / CHECKPOINTS).iterdir())) == 2


def test_a_job_whose_result_was_pulled_says_so_instead_of_passing_it_off_as_tuned(runner, tiny_llama_dir, tmp_path):
    """Someone who ran the same job pushed its result: pulled, it has this job's id, so the job finds it stored and
    tunes nothing. Nothing proves a pulled prompt's values are what its recipe says, so the job says where the
    prompt came from and how to tune one's own."""
    from studio.hub import hub_layout, pull
    from studio.jobs import pulled_note, submit_tuning, tune_request

    backbone = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    mr = load_task("mr")
    theirs = Library(tmp_path / "theirs")
    run_tuning(theirs, backbone, [mr], [0], CONFIG, 4)
    pull(Library(tmp_path / "mine"), hub_layout(theirs, None, backbone, tmp_path / "repo"), backbone)
    mine = Library(tmp_path / "mine")
    events = []
    (prompt,), status = run_tuning(mine, backbone, [mr], [0], CONFIG, 4, on_progress=events.append)
    assert status == "done" and not events and prompt.pulled_from == "folder repo"  # no path of this machine
    assert pulled_note([prompt]).startswith(f"{prompt.id} was pulled from folder repo, not tuned here")
    job = submit_tuning(runner, mine, lambda: backbone, tune_request([mr], [0], CONFIG, 4))
    wait_for(lambda: job.status == "done")
    assert job.result == [prompt.id] and "added" not in job.message
    assert job.message.startswith(f"1 prompt(s) were in the library already: {prompt.id}; {prompt.id} was pulled")
    assert pulled_note(theirs.items(kind="prompt")) == ""


def test_a_job_whose_origin_id_is_taken_by_another_item_stops_before_it_tunes(tiny_llama_dir, tmp_path):
    """The library holds an item under the id origin 0 would have, but it is not origin 0 (no seed: pulled from an
    altered repository). A seed-0 job refuses before its first step, not after hours of tuning."""
    library = Library(tmp_path / "lib")
    backbone = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    taken = origin_id(backbone.name, 0, 4)
    library.add("origin", torch.randn(4, backbone.hidden_size), backbone.name, item_id=taken)
    events = []
    with pytest.raises(StudioError, match=f"{taken} in this library is not the origin being stored"):
        run_tuning(library, backbone, [load_task("mr")], [0], CONFIG, 4, on_progress=events.append)
    assert not events and [i.id for i in library.items()] == [taken]


# ---- the few-shot study -------------------------------------------------------------------------------------------
@pytest.fixture
def fewshot_library(tmp_path):
    """An origin and two task prompt vectors (of two tasks) on it, and a vector of another length."""
    library = Library(tmp_path / "lib")
    torch.manual_seed(0)
    origin = library.add("origin", torch.randn(4, 8), "m", name="origin 0", seed=0)
    vectors = []
    for task in ("mr", "tweets"):
        prompt = library.add("prompt", torch.randn(4, 8), "m", name=f"{task} prompt", task=task, seed=0,
                             origin_id=origin.id)
        vectors.append(library.add("vector", torch.randn(4, 8), "m", name=f"TPV {task}", task=task, seed=0,
                                   origin_id=origin.id, prompt_id=prompt.id))
    return library, origin, vectors


def test_few_shot_configs_derive_the_runs_recipes():
    config, mixture = few_shot_configs("30", 0.2, 8, eval_limit=100, mixture_steps=40)
    assert (config.steps, config.batch_size, config.lr, config.eval_every, config.val_limit) == (30, 8, 0.2, 15, 32)
    assert (mixture.steps, mixture.batch_size, mixture.lr, mixture.eval_every, mixture.val_limit) == (40, 8, 0.2, 10,
                                                                                                     32)
    config, mixture = few_shot_configs(1, 0.1, 2, eval_limit=8)
    assert (config.eval_every, config.val_limit, mixture) == (1, 8, None)
    with pytest.raises(StudioError, match="steps must be between 1 and 100000"):
        few_shot_configs(0, 0.1, 2, eval_limit=8)
    assert parse_shots("50; 0,10, 10") == [0, 10, 50]


def test_plan_few_shot_checks_the_request_against_the_library(fewshot_library):
    library, origin, vectors = fewshot_library
    ids = [v.id for v in vectors]
    plan = plan_few_shot(library, "movie-reviews", ids, origin.id, "0, 10", "3", 0.1, 2, "50", "")
    assert (plan.shots, plan.eval_limit, plan.mixture, plan.config.steps) == ((0, 10), 50, None, 3)
    assert plan.starts == 4 and plan.rows() == 2 * 4  # the origin, each source, their sum
    assert plan.title == "few-shot movie-reviews from 2 TPV(s), shots [0, 10]"
    with_mixture = plan_few_shot(library, "movie-reviews", ids, origin.id, [0], 3, 0.1, 2, 50, 6)
    assert with_mixture.mixture.steps == 6 and with_mixture.rows() == 5
    good = ["movie-reviews", ids, origin.id, "0, 10", 3, 0.1, 2, 50, 0]
    for change, message in [({0: ""}, "choose a target task"), ({0: "no-such-task"}, "unknown task"),
                            ({1: []}, "at least one source"), ({2: None}, "choose an origin"),
                            ({3: "ten"}, "whole numbers separated by commas"), ({3: "2000"}, "between 0 and 1000"),
                            ({4: 0}, "steps must be between"), ({4: 1.5}, "steps must be a whole number"),
                            ({5: ""}, "learning rate is empty"), ({6: 1000}, "batch size must be between 1 and 512"),
                            ({7: 0}, "test on 1 to 2000 examples"), ({7: "many"}, "test examples must be a whole"),
                            ({8: 6000}, "multi-task prompt steps must be between 0"),
                            ({1: [origin.id]}, "is not a task prompt vector"),
                            ({2: vectors[0].id}, "is not an origin"),
                            ({1: ids[:1], 8: 5}, "needs source TPVs of two or more tasks")]:
        args = list(good)
        for index, value in change.items():
            args[index] = value
        with pytest.raises(StudioError, match=message):
            plan_few_shot(library, *args)


def test_a_planned_few_shot_study_runs_on_the_data_it_was_planned_on(fewshot_library, tmp_path):
    """The job may start long after the plan (a queue, a public Space): an upload replaced under the same name
    meanwhile (or dropped from the registry) must not change what the study tunes and tests on. The model's work
    is replaced by a recorder of the task each run gets: what is checked is which data reaches it."""
    from types import SimpleNamespace

    library, origin, vectors = fewshot_library

    def upload(rows: int):
        path = tmp_path / f"{rows}" / "notes.csv"
        path.parent.mkdir()
        path.write_text("text,label\n" + "".join(f"note {rows}-{i},{'ab'[i % 2]}\n" for i in range(rows)))
        return load_file_task(path)

    planned = upload(60)
    plan = plan_few_shot(library, "file:notes", [v.id for v in vectors], origin.id, f"0, {len(planned.train)}", 1,
                         0.1, 2, 8, 0)
    replaced = upload(20)  # the same name, other data, fewer training examples than the plan's shots
    assert load_task("file:notes").data_hash == replaced.data_hash != planned.data_hash
    seen = []

    def run(backbone, jobs, config, task, eval_limit, *rest):
        seen.append(task.data_hash)
        metrics = {"accuracy": 0.5, "accuracy_se": 0.1, "macro_f1": 0.5, "n": eval_limit}
        outcome = None if config is None else SimpleNamespace(status="done", results=[
            SimpleNamespace(best_step=1) for _ in jobs])
        return outcome, [SimpleNamespace(metrics=metrics) for _ in jobs]

    runner = JobRunner()
    job = submit_few_shot(runner, library, lambda: SimpleNamespace(hidden_size=8), plan, run=run)
    wait_for(lambda: job.status in FINISHED)
    assert job.status == "done", job.message
    assert seen == [planned.data_hash] * 2 and len(job.result) == plan.rows()



def test_a_planned_multi_task_start_tunes_on_the_data_it_was_planned_on(tmp_path):
    """The multi-task start mixes the source TPVs' tasks; those were loaded by name when the job ran, so an
    upload replaced meanwhile changed what it tuned on (or failed the job late, once dropped)."""
    from types import SimpleNamespace

    library = Library(tmp_path / "lib")
    origin = library.add("origin", torch.randn(4, 8), "m", name="origin 0", seed=0)

    def upload(name: str, rows: int):
        path = tmp_path / f"{name}-{rows}" / f"{name}.csv"
        path.parent.mkdir()
        path.write_text("text,label\n" + "".join(f"{name} {rows}-{i},{'ab'[i % 2]}\n" for i in range(rows)))
        return load_file_task(path)

    planned = [upload("notes", 40), upload("memos", 40)]
    vectors = [library.add("vector", torch.randn(4, 8), "m", task=t.spec.name, seed=0, origin_id=origin.id).id
               for t in planned]
    plan = plan_few_shot(library, "mr", vectors, origin.id, "0", 1, 0.1, 2, 8, 3)
    upload("notes", 30)  # replaced after planning
    seen = []

    def run(backbone, jobs, config, task, eval_limit, *rest):
        seen.append([job.task.data_hash for job in jobs])
        return SimpleNamespace(status="cancelled", results=[]), []

    job = submit_few_shot(JobRunner(), library, lambda: SimpleNamespace(hidden_size=8, name="m"), plan, run=run)
    wait_for(lambda: job.status in FINISHED)
    assert seen == [[t.data_hash for t in planned]], job.message
