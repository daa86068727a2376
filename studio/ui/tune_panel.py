"""Tune tab: train soft prompts (tasks x origin seeds) as background jobs and watch them learn.

Thin wiring over ``studio.jobs``: ``run_tuning`` does the work on the ``JobRunner`` worker thread (one job at a
time, the rest queue), reports each step into ``job.events``, stores origin, prompt and TPV in the library, and
resumes from its checkpoint when the same job runs again after a crash or a cancel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd
from gradio.context import Context

from studio import StudioError
from studio.jobs import Job, run_tuning
from studio.limits import MAX_PROMPT_TOKENS, MAX_STEPS, parse_seeds
from studio.plots import curves
from studio.tasks import TaskData, guess_columns, list_tasks, load_file_task, load_task, preview_file
from studio.tuning import TuneConfig
from studio.ui.common import AppState, explain, friendly, friendly_stream

FINAL = ("done", "cancelled", "failed")
JOB_COLUMNS = ["id", "title", "status", "progress", "message"]
PREVIEW_ROWS = 10
POLL_S = 1.0
MAX_WATCH_S = 12 * 3600
DEFAULTS = TuneConfig()


@dataclass
class TuneRequest:
    """Everything a job needs, kept so a cancelled or failed job can be started again (it then resumes)."""

    tasks: list[TaskData]
    seeds: list[int]
    config: TuneConfig
    n_tokens: int
    title: str

    def labels(self) -> list[str]:  # run_tuning trains prompts in this order: task-major, then seed
        return [f"{t.spec.name} / origin {s}" for t in self.tasks for s in self.seeds]


# ---- pure helpers (no gradio) -----------------------------------------------------------------------------------
def _whole(value, what: str, low: int, high: int) -> int:
    if value is None or value == "":
        raise StudioError(f"{what} is empty: enter a number")
    if float(value) != int(float(value)):
        raise StudioError(f"{what} must be a whole number (got {value})")
    number = int(float(value))
    if not low <= number <= high:
        raise StudioError(f"{what} must be between {low} and {high} (got {number})")
    return number


def bundled_tasks() -> list[tuple[str, str]]:
    return [(f"{spec.title} ({spec.name})", spec.name) for spec in list_tasks() if spec.source == "bundled"]


def read_preview(path: str) -> pd.DataFrame:
    """The first rows of a CSV / JSONL file, to choose the text and label columns from."""
    columns, rows = preview_file(path, PREVIEW_ROWS)
    return pd.DataFrame(rows, columns=columns)


def file_task(path: str | None, text_columns, label_column, name: str | None) -> TaskData:
    if not path:
        raise StudioError("upload a CSV or JSONL file first")
    if not text_columns:
        raise StudioError("choose the text column(s) of your file")
    if not label_column:
        raise StudioError("choose the label column of your file")
    return load_file_task(path, list(text_columns), label_column, name=(name or "").strip() or None)


def make_request(task_names, path, text_columns, label_column, file_name, seeds_text, n_tokens, steps, lr,
                 batch_size, eval_every, val_limit, schedule, select_by) -> TuneRequest:
    """Check every setting and load every task up front, so mistakes show before anything is queued."""
    tasks = [load_task(name) for name in task_names or []]
    if path:
        tasks.append(file_task(path, text_columns, label_column, file_name))
    if not tasks:
        raise StudioError("choose at least one task (or upload your own CSV / JSONL file)")
    names = [t.spec.name for t in tasks]
    if len(set(names)) != len(names):
        raise StudioError(f"a task is chosen twice ({', '.join(names)}): give your file another task name")
    seeds = parse_seeds(seeds_text)
    if lr is None or lr == "":
        raise StudioError("learning rate is empty: enter a number such as 0.2")
    config = TuneConfig(steps=_whole(steps, "steps", 1, MAX_STEPS), batch_size=_whole(batch_size, "batch size", 1, 512),
                        lr=float(lr), eval_every=_whole(eval_every, "validate every", 1, 100_000),
                        val_limit=_whole(val_limit, "validation examples", 1, 100_000), schedule=schedule,
                        select_by=select_by)
    n = _whole(n_tokens, "prompt length", 1, MAX_PROMPT_TOKENS)
    title = f"{', '.join(names)} x origin{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}: " \
            f"{config.steps} steps, {n} tokens"
    return TuneRequest(tasks, seeds, config, n, title)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def status_line(job: Job) -> str:
    """One line: where the job is, how fast it goes and how long it still needs."""
    head = f"**{job.id}** ({job.title}): **{job.status}**"
    if job.events:
        event = job.events[-1]
        losses = event.get("train_loss") or [float("nan")]
        head += (f" - step {event['step']}/{event['steps']}, loss {sum(losses) / len(losses):.3f}, "
                 f"{event['examples_per_s']:.1f} examples/s")
        if job.status == "running":
            head += f", ETA {_duration(event['eta_s'])}"
        validated = [e["validation"] for e in job.events if e.get("validation")]
        if validated:
            accuracies = [v["val_accuracy"] for v in validated[-1]]
            head += f", validation accuracy {sum(accuracies) / len(accuracies):.3f}" + (
                " (mean over prompts)" if len(accuracies) > 1 else "")
    elif job.status == "running":
        head += " - preparing (loading the model and data, first validation)"
    if job.message:
        head += f"  \n{job.message}"
    return head


def progress_text(job: Job) -> str:
    if not job.events:
        return f"{job.status}"
    event = job.events[-1]
    return f"{job.status}: step {event['step']} of {event['steps']} ({100 * job.progress:.0f}%)"


def job_curves(job: Job, labels: list[str]):
    """Training loss per step and validation accuracy at each validation, one line per prompt."""
    def name(j: int) -> str:
        return labels[j] if j < len(labels) else f"prompt {j}"

    losses: dict[str, tuple[list, list]] = {}
    accuracy: dict[str, tuple[list, list]] = {}
    for event in job.events:
        for j, loss in enumerate(event.get("train_loss", [])):
            xs, ys = losses.setdefault(name(j), ([], []))
            xs.append(event["step"])
            ys.append(loss)
        for j, metrics in enumerate(event.get("validation", [])):
            xs, ys = accuracy.setdefault(name(j), ([], []))
            xs.append(metrics["step"])
            ys.append(metrics["val_accuracy"])
    return (curves(losses, "Training loss", "step", "loss"),
            curves(accuracy, "Validation accuracy", "step", "accuracy"))


def jobs_table(state: AppState) -> pd.DataFrame:
    jobs = sorted(state.runner.jobs.values(), key=lambda j: j.created, reverse=True)
    return pd.DataFrame([[j.id, j.title, j.status, f"{100 * j.progress:.0f}%", j.message] for j in jobs],
                        columns=JOB_COLUMNS)


def submit(state: AppState, request: TuneRequest) -> Job:
    """Queue the tuning job on the runner; the worker thread runs it and the result lands in the library."""
    def work(job: Job) -> list[str]:
        def on_progress(event: dict) -> None:
            job.events.append(event)
            job.progress = event["step"] / max(event["steps"], 1)

        items, status = run_tuning(state.library, state.backbone(), request.tasks, request.seeds, request.config,
                                   request.n_tokens, on_progress=on_progress, should_stop=job.cancel.is_set)
        if items:
            job.progress = 1.0
            job.message = (f"added {len(items)} prompt(s) and their TPVs to the library: "
                           + ", ".join(i.id for i in items))
        else:
            job.message = (f"{status} at step {job.events[-1]['step'] if job.events else 0}: the checkpoint is "
                           "kept; Resume (or Start with the same settings) continues from it")
        return [i.id for i in items]

    return state.runner.submit(request.title, work)


def _job(state: AppState, job_id: str | None) -> Job:
    job_id = (job_id or "").strip()
    if not job_id:
        raise StudioError("choose a job first: start one, or click a row of the jobs table")
    if job_id not in state.runner.jobs:
        raise StudioError(f"no job {job_id!r} in this session: the jobs table lists them")
    return state.runner.jobs[job_id]


# ---- the tab ------------------------------------------------------------------------------------------------------
def build(state: AppState) -> None:
    explain("Train soft prompts for one or more tasks from one or more random origins and watch the training loss "
            "and validation accuracy live; each finished prompt lands in the Library with its origin and its task "
            "prompt vector (prompt minus origin). Jobs run one at a time in the background while the rest wait in "
            "the queue; cancel one at any time and resume it later from its last checkpoint.")
    requests: dict[str, TuneRequest] = {}
    resumed: dict[str, str] = {}  # cancelled or failed job id -> the job that resumed it
    recipe = state.recipe()  # its length is the prebuilt library's: tuning with it reuses the prebuilt origins

    with gr.Row():
        with gr.Column(scale=3):
            task_names = gr.Dropdown(bundled_tasks(), value=["mr"], multiselect=True, label="Bundled tasks")
            with gr.Accordion("Your own data (CSV / JSONL)", open=False):
                data_file = gr.File(label="Data file", file_types=[".csv", ".jsonl", ".json"], type="filepath")
                with gr.Row():
                    text_columns = gr.Dropdown([], multiselect=True, label="Text column(s)", allow_custom_value=True)
                    label_column = gr.Dropdown([], label="Label column", allow_custom_value=True)
                    file_name = gr.Textbox(label="Task name (optional)", placeholder="file:<file name>")
                check = gr.Button("Check file")
                file_summary = gr.Markdown()
                preview = gr.Dataframe(label="Preview", interactive=False, max_height=300, wrap=True)
        with gr.Column(scale=2):
            with gr.Row():
                seeds = gr.Textbox("0", label="Origin seeds", placeholder="0,1,2",
                                   info="one prompt per task and seed; same seed = same origin")
                n_tokens = gr.Number(recipe.n_tokens, label="Prompt length (virtual tokens)", precision=0)
            with gr.Row():  # the model's default recipe: the budget at which its TPVs transfer across origins
                steps = gr.Number(recipe.steps, label="Steps", precision=0, info=recipe.why)
                lr = gr.Number(recipe.lr, label="Learning rate")
                batch_size = gr.Number(recipe.batch_size, label="Batch size (per prompt)", precision=0)
            with gr.Row():
                eval_every = gr.Number(DEFAULTS.eval_every, label="Validate every (steps)", precision=0)
                val_limit = gr.Number(DEFAULTS.val_limit, label="Validation examples", precision=0)
            with gr.Accordion("More settings", open=False):
                schedule = gr.Dropdown(["cosine", "linear", "constant"], value=DEFAULTS.schedule,
                                       label="Learning-rate schedule")
                select_by = gr.Dropdown(["loss", "accuracy"], value=DEFAULTS.select_by,
                                        label="Keep the best prompt by validation")
            start = gr.Button("Start", variant="primary")
    gr.Markdown("If the studio stopped in the middle of a job, start the same settings again: the job resumes from "
                "its last checkpoint.")
    with gr.Row():
        job_id = gr.Textbox(label="Job id", placeholder="click a row of the jobs table", scale=2)
        watch = gr.Button("Watch", scale=1)
        cancel = gr.Button("Cancel", variant="stop", scale=1)
        resume = gr.Button("Resume", scale=1)
        refresh = gr.Button("Refresh jobs", scale=1)
    status = gr.Markdown("No job watched yet.", elem_id="tune-status")
    bar = gr.Markdown(min_height=60, padding=True)  # the progress bar of a watched job shows here
    with gr.Row():
        loss_plot = gr.Plot(label="Training loss", elem_id="tune-loss")
        accuracy_plot = gr.Plot(label="Validation accuracy")
    jobs = gr.Dataframe(jobs_table(state), headers=JOB_COLUMNS, interactive=False, label="Jobs (newest first)",
                        max_height=300, wrap=True)

    settings = [task_names, data_file, text_columns, label_column, file_name, seeds, n_tokens, steps, lr,
                batch_size, eval_every, val_limit, schedule, select_by]

    @friendly
    def file_columns(path):
        if not path:
            return gr.update(choices=[], value=[]), gr.update(choices=[], value=None), None, ""
        frame = read_preview(path)
        columns = list(frame.columns)
        text_guess, label_guess = guess_columns(columns)
        return (gr.update(choices=columns, value=text_guess), gr.update(choices=columns, value=label_guess), frame,
                "Choose the text and label columns, then **Check file**.")

    @friendly
    def check_file(path, text_value, label_value, name_value):
        task = file_task(path, text_value, label_value, name_value)
        rows = [[example.body(), task.spec.label_words[example.label]] for example in task.train[:PREVIEW_ROWS]]
        summary = (f"**{task.spec.name}**: {len(task.train)} train / {len(task.validation)} validation / "
                   f"{len(task.test)} test examples; labels: {', '.join(task.spec.label_words)}.")
        return summary, pd.DataFrame(rows, columns=["input", "label"])

    @friendly
    def start_job(*values):
        request = make_request(*values)
        job = submit(state, request)
        requests[job.id] = request
        queued = sum(j.status in ("queued", "running") for j in state.runner.jobs.values()) - 1
        note = f" ({queued} job(s) ahead of it)" if queued > 0 else ""
        return job.id, f"**{job.id}** queued{note}: {job.title}", jobs_table(state)

    @friendly_stream
    def watch_job(job_value, progress=gr.Progress()):
        job = _job(state, job_value)
        labels = requests[job.id].labels() if job.id in requests else []
        shown, deadline = -1, time.time() + MAX_WATCH_S
        while True:
            final = job.status in FINAL
            if job.status == "queued":
                progress(None)
            else:
                progress(job.progress, desc=f"{job.status}: step {job.events[-1]['step'] if job.events else 0}")
            plots = job_curves(job, labels) if len(job.events) != shown else (gr.skip(), gr.skip())
            shown = len(job.events)
            yield status_line(job), progress_text(job), *plots, jobs_table(state)
            if final or time.time() > deadline:
                return
            time.sleep(POLL_S)

    @friendly
    def cancel_job(job_value):
        job = _job(state, job_value)
        if job.status in FINAL:
            raise StudioError(f"job {job.id} already finished ({job.status}): nothing to cancel")
        state.runner.cancel(job.id)
        when = "before it started" if job.status == "cancelled" else "after the current step (checkpoint kept)"
        return f"Cancelling **{job.id}**: it stops {when}.", jobs_table(state)

    @friendly
    def resume_job(job_value):
        job = _job(state, job_value)
        if job.status not in ("cancelled", "failed"):
            raise StudioError(f"job {job.id} is {job.status}: only a cancelled or failed job can be resumed")
        if job.id not in requests:
            raise StudioError(f"job {job.id} was not started from this tab: start it again with the same settings")
        if job.id in resumed:  # one resume per job: a second would queue the same work again
            raise StudioError(f"job {job.id} was already resumed as {resumed[job.id]}: watch that one")
        request = requests[job.id]
        again = submit(state, request)
        requests[again.id] = request
        resumed[job.id] = again.id
        return again.id, f"**{again.id}** queued: resumes {job.id} from its checkpoint", jobs_table(state)

    @friendly
    def list_jobs():
        return jobs_table(state)

    def pick(evt: gr.SelectData):
        row = evt.row_value or []
        return row[0] if row and row[0] else gr.skip()

    watch_outputs = [status, bar, loss_plot, accuracy_plot, jobs]
    data_file.change(file_columns, data_file, [text_columns, label_column, preview, file_summary],
                     api_name="tune_file_columns")
    check.click(check_file, [data_file, text_columns, label_column, file_name], [file_summary, preview],
                api_name="tune_check_file")
    start.click(start_job, settings, [job_id, status, jobs], api_name="tune_start").success(
        watch_job, job_id, watch_outputs, api_name="tune_start_watch", api_visibility="private",
        concurrency_limit=16, show_progress_on=[bar])
    watch.click(watch_job, job_id, watch_outputs, api_name="tune_watch", concurrency_limit=16,
                show_progress_on=[bar])
    cancel.click(cancel_job, job_id, [status, jobs], api_name="tune_cancel")
    resume.click(resume_job, job_id, [job_id, status, jobs], api_name="tune_resume").success(
        watch_job, job_id, watch_outputs, api_name="tune_resume_watch", api_visibility="private",
        concurrency_limit=16, show_progress_on=[bar])
    refresh.click(list_jobs, None, jobs, api_name="tune_jobs")
    if isinstance(Context.root_block, gr.Blocks):  # a reloaded page lists the jobs as they are now
        Context.root_block.load(list_jobs, None, jobs, api_name="tune_on_load", api_visibility="private",
                                show_progress="hidden")
    jobs.select(pick, None, job_id, api_name="tune_pick_job", api_visibility="private")
