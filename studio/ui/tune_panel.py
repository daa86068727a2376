"""Tune tab: train soft prompts (tasks x origin seeds) as background jobs and watch them learn.

Thin wiring over ``studio.jobs``: ``tune_request`` checks the form, ``submit_tuning`` queues ``run_tuning`` on the
``JobRunner`` worker thread (one job at a time, the rest queue), which reports each step into ``job.events``, stores
origin, prompt and TPV in the library, and resumes from its checkpoint when the same job runs again after a crash or
a cancel; the runner's ``cancel`` and ``resume`` hold the rules about which job can be stopped or resumed (once).

Watching is a ``gr.Timer``: Start, Resume and Watch remember the job in the page's ``gr.State`` and switch the timer
on; each tick redraws the status, the text progress bar (percent, steps, ETA) and, when new steps arrived, the loss
and accuracy curves; the tick that sees the job finished switches the timer off. No handler sleeps or holds a
worker while a job runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr
import pandas as pd

from studio import StudioError
from studio.jobs import FINISHED, Job, TuneRequest, progress_summary, submit_tuning, tune_request
from studio.plots import curves
from studio.settings import TuneConfig, config_fields
from studio.space import tuner
from studio.task_files import guess_columns, load_file_task, preview_file
from studio.tasks import TaskData, list_tasks, load_task
from studio.ui import sweep_panel
from studio.ui.common import AppState, WholeNumber, explain, friendly, job_of, plain

JOB_COLUMNS = ["id", "title", "status", "progress", "message"]
PREVIEW_ROWS = 10
POLL_S = 1.0  # seconds between two ticks of the watch timer
BAR_WIDTH = 30
DEFAULTS = TuneConfig()


# ---- pure helpers (no gradio) -----------------------------------------------------------------------------------
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
    """The form as a checked ``TuneRequest`` (``TuneConfig.parse`` and ``jobs.tune_request`` hold the rules), every
    task loaded up front, so mistakes show before anything is queued."""
    tasks = [load_task(name) for name in task_names or []]
    if path:
        tasks.append(file_task(path, text_columns, label_column, file_name))
    config = TuneConfig.parse(steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every, val_limit=val_limit,
                              schedule=schedule, select_by=select_by)
    return tune_request(tasks, seeds_text or "", config, n_tokens)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def status_line(job: Job) -> str:
    """One line: where the job is, how fast it goes and how long it still needs."""
    head = f"**{job.id}** ({plain(job.title)}): **{job.status}**"
    summary = progress_summary(job)
    if summary:
        loss = float("nan") if summary["train_loss"] is None else summary["train_loss"]
        head += (f" - step {summary['step']}/{summary['steps']}, loss {loss:.3f}, "
                 f"{summary['examples_per_s']:.1f} examples/s")
        if job.status == "running":
            head += f", ETA {_duration(summary['eta_s'])}"
        if summary["val_accuracies"]:
            head += f", validation accuracy {summary['val_accuracy']:.3f}" + (
                " (mean over prompts)" if len(summary["val_accuracies"]) > 1 else "")
    elif job.status == "running":
        head += " - preparing (loading the model and data, first validation)"
    if job.message:
        head += f"  \n{job.message}"
    return head


def text_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A progress bar in text, so it shows in a Markdown (and in an API client) without any Gradio progress API."""
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


def progress_text(job: Job) -> str:
    """The progress bar of a watched job: status, step of steps, percent, speed and ETA while it runs, then the bar."""
    summary = progress_summary(job)
    if not summary:  # queued, preparing, or finished without a step (e.g. its prompts were already stored)
        if job.status in FINISHED:
            return f"{job.status} ({100 * job.progress:.0f}%)  \n`{text_bar(job.progress)}`"
        return job.status + (": preparing (loading the model and data)" if job.status == "running" else "")
    line = f"{job.status}: step {summary['step']} of {summary['steps']} ({100 * job.progress:.0f}%)"
    if job.status == "running":
        line += f" · {summary['examples_per_s']:.1f} examples/s · ETA {_duration(summary['eta_s'])}"
    return f"{line}  \n`{text_bar(job.progress)}`"


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


def labels(job: Job) -> list[str]:
    """The curves' names: task and origin of each prompt of a tuning job."""
    return job.spec.labels() if isinstance(job.spec, TuneRequest) else []


@dataclass(frozen=True)
class Watched:
    """The job a page watches (its ``gr.State``) and what the page shows of it, so that a tick that finds nothing
    new sends nothing, and the curves are redrawn only when new steps arrived."""

    job_id: str
    steps: int = -1  # job events in the curves shown
    status: str = ""
    message: str = ""

    @classmethod
    def now(cls, job: Job) -> Watched:
        return cls(job.id, len(job.events), job.status, job.message)


def job_view(state: AppState, job: Job, curves_too: bool = True) -> tuple:
    """Status, progress bar, loss and accuracy curves (gr.skip() unless ``curves_too``) and the jobs table."""
    plots = job_curves(job, labels(job)) if curves_too else (gr.skip(), gr.skip())
    return status_line(job), progress_text(job), *plots, jobs_table(state)


# ---- event handlers: ``state`` (and ``started``) first, bound with functools.partial when wired --------------------
@friendly
def on_file_columns(path: str | None) -> tuple:
    if not path:
        return gr.update(choices=[], value=[]), gr.update(choices=[], value=None), None, ""
    frame = read_preview(path)
    columns = list(frame.columns)
    text_guess, label_guess = guess_columns(columns)
    return (gr.update(choices=columns, value=text_guess), gr.update(choices=columns, value=label_guess), frame,
            "Choose the text and label columns, then **Check file**.")


@friendly
def on_check_file(path: str | None, text_value, label_value, name_value) -> tuple[str, pd.DataFrame]:
    task = file_task(path, text_value, label_value, name_value)
    rows = [[example.body(), task.spec.label_words[example.label]] for example in task.train[:PREVIEW_ROWS]]
    summary = (f"**{plain(task.spec.name)}**: {len(task.train)} train / {len(task.validation)} validation / "
               f"{len(task.test)} test examples; labels: {plain(', '.join(task.spec.label_words))}.")
    return summary, pd.DataFrame(rows, columns=["input", "label"])


@friendly
def on_start(state: AppState, *values) -> tuple:
    """Queue a job; the page then watches it (the returned ``Watched`` goes to its State, the timer follows)."""
    job = submit_tuning(state.runner, state.library, state.backbone, make_request(*values), tuner=tuner())
    ahead = state.runner.ahead_of(job)
    note = f" ({ahead} job(s) ahead of it)" if ahead > 0 else ""
    return job.id, f"**{job.id}** queued{note}: {plain(job.title)}", jobs_table(state), Watched(job.id)


@friendly
def on_watch(state: AppState, job_value: str | None) -> tuple:
    """The job as it is now (once); the page keeps watching it through the timer while it is not finished."""
    job = job_of(state, job_value)
    now = Watched.now(job)  # before drawing: a step that lands meanwhile is drawn by the next tick
    return *job_view(state, job), now


@friendly
def on_follow(state: AppState, watched: Watched | None) -> gr.Timer:
    """Switch the watch timer on while the watched job is queued or running."""
    job = job_of(state, watched.job_id, quiet=True) if watched else None
    return gr.Timer(active=job is not None and job.status not in FINISHED)


@friendly
def on_tick(state: AppState, watched: Watched | None) -> tuple:
    """One tick of the watch timer: what changed since the last one, and the timer off once the job finished."""
    job = job_of(state, watched.job_id, quiet=True) if watched else None
    if job is None:
        return *(gr.skip(),) * 5, watched, gr.Timer(active=False)
    now = Watched.now(job)  # before drawing: a step that lands meanwhile is drawn by the next tick
    timer = gr.Timer(active=False) if now.status in FINISHED else gr.skip()
    if now == watched:
        return *(gr.skip(),) * 5, watched, timer
    return *job_view(state, job, curves_too=now.steps != watched.steps), now, timer


@friendly
def on_cancel(state: AppState, job_value: str | None) -> tuple[str, pd.DataFrame]:
    job = state.runner.cancel(job_of(state, job_value).id)
    when = "before it started" if job.status == "cancelled" else "after the current step (checkpoint kept)"
    return f"Cancelling **{job.id}**: it stops {when}.", jobs_table(state)


@friendly
def on_resume(state: AppState, job_value: str | None) -> tuple:
    job = job_of(state, job_value)
    again = state.runner.resume(job.id)  # the runner refuses a job that is not stopped, or was resumed already
    return again.id, f"**{again.id}** queued: resumes {job.id} from its checkpoint", jobs_table(state), Watched(again.id)


@friendly
def on_list_jobs(state: AppState) -> pd.DataFrame:
    return jobs_table(state)


def on_pick(evt: gr.SelectData) -> str | dict:
    row = evt.row_value or []
    return row[0] if row and row[0] else gr.skip()


# ---- layout -------------------------------------------------------------------------------------------------------
@dataclass
class TuneForm:
    """What to tune: tasks (bundled or a file), origin seeds and the budget."""

    task_names: gr.Dropdown
    data_file: gr.File
    text_columns: gr.Dropdown
    label_column: gr.Dropdown
    file_name: gr.Textbox
    check: gr.Button
    file_summary: gr.Markdown
    preview: gr.Dataframe
    seeds: gr.Textbox
    n_tokens: gr.Number
    steps: gr.Number
    lr: gr.Number
    batch_size: gr.Number
    eval_every: gr.Number
    val_limit: gr.Number
    schedule: gr.Dropdown
    select_by: gr.Dropdown
    start: gr.Button

    @property
    def settings(self) -> list:
        """``make_request``'s arguments, in its order."""
        return [self.task_names, self.data_file, self.text_columns, self.label_column, self.file_name, self.seeds,
                self.n_tokens, self.steps, self.lr, self.batch_size, self.eval_every, self.val_limit, self.schedule,
                self.select_by]


@dataclass
class JobView:
    """The watched job and the job queue."""

    job_id: gr.Textbox
    watch: gr.Button
    cancel: gr.Button
    resume: gr.Button
    refresh: gr.Button
    status: gr.Markdown
    bar: gr.Markdown
    loss_plot: gr.Plot
    accuracy_plot: gr.Plot
    jobs: gr.Dataframe
    timer: gr.Timer  # ticks while the watched job is queued or running
    watched: gr.State  # this page's ``Watched``

    @property
    def view(self) -> list:
        """``job_view``'s outputs."""
        return [self.status, self.bar, self.loss_plot, self.accuracy_plot, self.jobs]


def layout_data() -> tuple:
    """The task pickers: bundled tasks, and your own CSV / JSONL with its column choices and preview."""
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
    return task_names, data_file, text_columns, label_column, file_name, check, file_summary, preview


def layout_budget(state: AppState) -> tuple:
    """Seeds and the budget, starting from the model's recipe (its length is the prebuilt library's: tuning with
    it reuses the prebuilt origins; its budget is the one at which the model's TPVs transfer across origins)."""
    recipe = state.recipe()
    with gr.Row():
        seeds = gr.Textbox("0", label="Origin seeds", placeholder="0,1,2",
                           info="one prompt per task and seed; same seed = same origin")
        n_tokens = WholeNumber(recipe.n_tokens, label="Prompt length (virtual tokens)")
    with gr.Row():
        steps = WholeNumber(recipe.steps, label="Steps", info=recipe.why)
        lr = gr.Number(recipe.lr, label="Learning rate")
        batch_size = WholeNumber(recipe.batch_size, label="Batch size (per prompt)")
    with gr.Row():
        eval_every = WholeNumber(DEFAULTS.eval_every, label="Validate every (steps)")
        val_limit = WholeNumber(DEFAULTS.val_limit, label="Validation examples")
    with gr.Accordion("More settings", open=False):
        fields = {f.name: f for f in config_fields(TuneConfig)}  # choices and help from the config itself
        schedule = gr.Dropdown(fields["schedule"].choices, value=DEFAULTS.schedule, label="Learning-rate schedule",
                               info=fields["schedule"].help)
        select_by = gr.Dropdown(fields["select_by"].choices, value=DEFAULTS.select_by,
                                label="Keep the best prompt by validation", info=fields["select_by"].help)
    return seeds, n_tokens, steps, lr, batch_size, eval_every, val_limit, schedule, select_by


def layout_form(state: AppState) -> TuneForm:
    with gr.Row():
        with gr.Column(scale=3):
            data = layout_data()
        with gr.Column(scale=2):
            budget = layout_budget(state)
            start = gr.Button("Start", variant="primary")
    return TuneForm(*data, *budget, start)


def layout_jobs(state: AppState) -> JobView:
    gr.Markdown("If the studio stopped in the middle of a job, start the same settings again: the job resumes from "
                "its last checkpoint.")
    with gr.Row():
        job_id = gr.Textbox(label="Job id", placeholder="click a row of the jobs table", scale=2)
        watch = gr.Button("Watch", scale=1)
        cancel = gr.Button("Cancel", variant="stop", scale=1)
        resume = gr.Button("Resume", scale=1)
        refresh = gr.Button("Refresh jobs", scale=1)
    status = gr.Markdown("No job watched yet.", elem_id="tune-status")
    bar = gr.Markdown(min_height=60, padding=True, elem_id="tune-progress")  # the watched job's progress bar
    with gr.Row():
        loss_plot = gr.Plot(label="Training loss", elem_id="tune-loss")
        accuracy_plot = gr.Plot(label="Validation accuracy")
    jobs = gr.Dataframe(jobs_table(state), headers=JOB_COLUMNS, interactive=False, label="Jobs (newest first)",
                        max_height=300, wrap=True)
    return JobView(job_id, watch, cancel, resume, refresh, status, bar, loss_plot, accuracy_plot, jobs,
                   gr.Timer(POLL_S, active=False), gr.State(None))


# ---- wiring -------------------------------------------------------------------------------------------------------
def wire_form(state: AppState, form: TuneForm, view: JobView) -> None:
    """The file checks, and Start: queue the job, watch it, switch the timer on."""
    form.data_file.change(on_file_columns, form.data_file,
                          [form.text_columns, form.label_column, form.preview, form.file_summary],
                          api_name="tune_file_columns")
    form.check.click(on_check_file, [form.data_file, form.text_columns, form.label_column, form.file_name],
                     [form.file_summary, form.preview], api_name="tune_check_file")
    form.start.click(partial(on_start, state), form.settings,
                     [view.job_id, view.status, view.jobs, view.watched], api_name="tune_start").success(
        partial(on_follow, state), view.watched, view.timer, api_name="tune_start_watch", api_visibility="private")


def wire_jobs(state: AppState, view: JobView, tab: gr.Tab, app: gr.Blocks) -> None:
    """Watch, Cancel, Resume, the timer's ticks, and the jobs table (refreshed on page load and on opening)."""
    follow = partial(on_follow, state)
    view.watch.click(partial(on_watch, state), view.job_id, [*view.view, view.watched],
                     api_name="tune_watch", show_progress="minimal").success(
        follow, view.watched, view.timer, api_name="tune_watch_follow", api_visibility="private")
    # "undocumented": a client (and the tests) can read what the timer shows this session
    view.timer.tick(partial(on_tick, state), view.watched, [*view.view, view.watched, view.timer],
                    api_name="tune_poll", api_visibility="undocumented", show_progress="hidden",
                    concurrency_limit=16)
    view.cancel.click(partial(on_cancel, state), view.job_id, [view.status, view.jobs], api_name="tune_cancel")
    view.resume.click(partial(on_resume, state), view.job_id,
                      [view.job_id, view.status, view.jobs, view.watched], api_name="tune_resume").success(
        follow, view.watched, view.timer, api_name="tune_resume_watch", api_visibility="private")
    listed = partial(on_list_jobs, state)
    view.refresh.click(listed, None, view.jobs, api_name="tune_jobs")
    # a reloaded page, and an opened tab, list the jobs as they are now
    app.load(listed, None, view.jobs, api_name="tune_on_load", api_visibility="private", show_progress="hidden")
    tab.select(listed, None, view.jobs, api_name="tune_on_open", api_visibility="private", show_progress="hidden")
    view.jobs.select(on_pick, None, view.job_id, api_name="tune_pick_job", api_visibility="private")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Tune tab inside ``tab``; ``app`` gets the page-load refresh of the jobs table."""
    explain("Train soft prompts for one or more tasks from one or more random origins and watch the training loss "
            "and validation accuracy live; each finished prompt lands in the Library with its origin and its task "
            "prompt vector (prompt minus origin). Jobs run one at a time in the background while the rest wait in "
            "the queue; cancel one at any time and resume it later from its last checkpoint.")
    form = layout_form(state)
    view = layout_jobs(state)
    sweep = sweep_panel.layout_sweep()
    wire_form(state, form, view)
    wire_jobs(state, view, tab, app)
    sweep_panel.wire_sweep(state, sweep)
