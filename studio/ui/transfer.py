"""Transfer tab: TPVs moved to another origin (cross-origin), and TPVs as the starting point of few-shot tuning.

The cross-origin table opens on the prebuilt library's stored results; the few-shot study runs as a background job
(``studio.fewshot`` checks it and queues its ``few_shot_study`` on the ``JobRunner``) that a ``gr.Timer`` follows while it runs: Start switches
the timer on, and the tick that finds the job finished switches it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from studio import analysis, fewshot, plots, views
from studio.jobs import FINISHED, Job
from studio.space import few_shot_runner
from studio.tasks import BUNDLED_TASKS
from studio.ui.common import (
    AppState,
    WholeNumber,
    explain,
    export_row,
    figure_exports,
    friendly,
    gpu_for_visitor,
    item_choices,
    job_of,
    refreshed,
    still_chosen,
)

CROSS_HEADERS = ["task", "origin", "vector from", "own", "accuracy", "macro F1", "n", "|tau|/|origin| of the TPV"]
FEW_SHOT_HEADERS = ["shots", "init", "accuracy", "± se", "macro F1", "n", "best step"]
POLL_S = 2.0  # seconds between two ticks of the few-shot job timer


def cross_origin_tasks(state: AppState) -> list[str]:
    """Tasks with tuned (not combined) prompts on at least two origins for the current model."""
    return views.cross_origin_tasks(state.library, state.model_name)


def cross_origin(state: AppState, tasks: list[str] | None, split: str, limit, stored_only: bool = False) -> tuple:
    """The cross-origin table, chart and summary: from the prebuilt library's stored view when it was computed from
    these very prompts with these settings, else evaluated now (``stored_only``: then None instead)."""
    tasks, limit = analysis.check_cross_origin(tasks, split, limit)
    rows = views.stored_cross_origin(state.views, state.library, state.model_name, tasks, split, limit)
    if rows is None and stored_only:
        return None
    note = "shown from the prebuilt library's stored results; " if rows is not None else ""
    if rows is None:
        rows = analysis.cross_origin_table(state.library, state.backbone(), tasks, split=split, limit=limit)
    summary = analysis.cross_origin_summary(rows)
    names = [s["task"] for s in summary]
    figure = plots.grouped_bars(names, {
        "own origin (P0(A) + tau(A))": ([s["own_mean"] for s in summary], [s["own_std"] for s in summary]),
        "other origin (P0(A) + tau(B))": ([s["other_mean"] for s in summary], [s["other_std"] for s in summary]),
    }, f"Cross-origin transfer ({split}, {limit} examples; bars = mean, whiskers = std over origin pairs)")
    table = [[r["task"], r["origin"], r["vector_from"], "own" if r["own"] else "other", round(r["accuracy"], 4),
              round(r["macro_f1"], 4), r["n"], round(r.get("tau_ratio", float("nan")), 2)] for r in rows]
    text = " · ".join(f"**{s['task']}**: own {s['own_mean']:.3f}, other {s['other_mean']:.3f} "
                      f"(gap {100 * s['gap']:+.1f} points; |tau|/|origin| {s['tau_ratio']:.1f})" for s in summary)
    text += ("  \nThe paper finds TPVs largely independent of the random origin: applied to another origin they keep "
             "most of their accuracy. On this small model that holds once tuning has moved the prompt far from its "
             "origin (|tau|/|origin| well above 1): compare the gap with the ratio. "
             f"({note}{split} split, {limit} examples per cell.)")
    return table, figure, text


def start_few_shot(state: AppState, target: str | None, sources: list[str] | None, origin_id: str | None,
                   shots_text: str, steps, lr, batch_size, eval_limit, multitask_steps=0) -> Job:
    """Check the settings (``fewshot.plan_few_shot``) and queue the study (``fewshot.submit_few_shot``)."""
    plan = fewshot.plan_few_shot(state.library, target, sources, origin_id, shots_text, steps, lr, batch_size,
                                 eval_limit, multitask_steps)
    return fewshot.submit_few_shot(state.runner, state.library, state.backbone, plan, run=few_shot_runner())


def few_shot_view(state: AppState, job_id: str | None) -> tuple:
    job = job_of(state, job_id, f"no few-shot job {job_id!r}: start one first")
    rows = job.result if job.status == "done" and isinstance(job.result, list) else (
        job.events[-1]["rows"] if job.events else [])
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        xs, ys = series.setdefault(row["init"], ([], []))
        xs.append(row["shots"])
        ys.append(row["accuracy"])
    figure = plots.curves(series, f"{job.title}: test accuracy by number of shots", "shots (training examples)",
                          "accuracy")
    table = [[r["shots"], r["init"], round(r["accuracy"], 4), round(r["accuracy_se"], 4), round(r["macro_f1"], 4),
              r["n"], r["best_step"]] for r in rows]
    text = f"Job `{job.id}`: **{job.status}** ({job.progress:.0%}) {job.message}"
    if job.status == "done" and rows:
        best = max(rows, key=lambda r: (r["shots"], r["accuracy"]))
        text += f"  \nAt {best['shots']} shots the best start is **{best['init']}** ({best['accuracy']:.3f})."
    files = figure_exports(figure, "few-shot", FEW_SHOT_HEADERS, table) if rows else None
    return text, figure, table, files


# ---- event handlers: ``state`` first, bound with functools.partial when wired --------------------------------------
@friendly
def on_start(state: AppState, target, sources, origin_id, shots, steps, lr, batch_size, test_examples,
             mixture_steps) -> tuple:
    job = start_few_shot(state, target, sources, origin_id, shots, steps, lr, batch_size, test_examples, mixture_steps)
    return job.id, f"Job `{job.id}` queued: {job.title}", gr.Timer(active=True)


@friendly
def on_status(state: AppState, job_id: str | None) -> tuple:
    return few_shot_view(state, job_id)


@friendly
def on_poll(state: AppState, job_value: str | None) -> tuple:
    """One tick of the few-shot timer: the job's view, and the timer off once it finished."""
    job = job_of(state, job_value, quiet=True)
    if job is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
    return *few_shot_view(state, job_value), gr.Timer(active=job.status not in FINISHED)


@friendly
def on_cancel(state: AppState, job_value: str | None) -> str:
    job = state.runner.cancel((job_value or "").strip())
    return f"Job `{job.id}`: cancel requested ({job.status}); finished shot counts are kept."


@friendly
def on_refresh(state: AppState, current_tasks, current_sources, current_origin) -> tuple:
    """Fresh choices; the selection is kept where its items still exist."""
    task_list = cross_origin_tasks(state)
    vector_list = item_choices(state, ("vector",))
    origin_list = item_choices(state, ("origin",))
    known = [v for _, v in vector_list + origin_list]
    first_origin = origin_list[0][1] if origin_list else None
    return (refreshed(task_list, current_tasks, still_chosen(current_tasks, task_list, task_list)),
            refreshed(vector_list, current_sources, still_chosen(current_sources, known, [])),
            refreshed(origin_list, current_origin, still_chosen(current_origin, known, first_origin)))


@friendly
def on_open(state: AppState, current_tasks, current_sources, current_origin, shown_key) -> tuple:
    """Fresh choices; and if the library changed under the stored table, say so (recomputing needs the model)."""
    lists = on_refresh(state, current_tasks, current_sources, current_origin)
    if shown_key is None or views.cross_origin_key(state.library, state.model_name, list(shown_key)) == shown_key:
        return *lists, gr.skip(), shown_key
    return *lists, ("The library has changed since this table was computed (new or removed prompts): press "
                    "**Compare own vs other origin** to recompute it."), None


# ---- layout -------------------------------------------------------------------------------------------------------
@dataclass
class Cross:
    """The cross-origin table and chart."""

    tasks: gr.Dropdown
    split: gr.Radio
    limit: gr.Slider
    compare: gr.Button
    text: gr.Markdown
    plot: gr.Plot
    table: gr.Dataframe
    files: gr.File
    figure_json: gr.State
    shown: gr.State  # what the table shown on its own (the stored one) was computed from; None once computed here


@dataclass
class FewShot:
    """The few-shot study: its settings, the job and its results."""

    target: gr.Dropdown
    sources: gr.Dropdown
    origin: gr.Dropdown
    shots: gr.Textbox
    steps: gr.Number
    lr: gr.Number
    batch: gr.Number
    eval_limit: gr.Number
    multitask_steps: gr.Number
    start: gr.Button
    check: gr.Button
    cancel: gr.Button
    job_id: gr.Textbox
    text: gr.Markdown
    plot: gr.Plot
    table: gr.Dataframe
    files: gr.File
    timer: gr.Timer  # ticks while the started job runs
    refresh: gr.Button

    @property
    def settings(self) -> list:
        """``start_few_shot``'s arguments after the state, in its order."""
        return [self.target, self.sources, self.origin, self.shots, self.steps, self.lr, self.batch, self.eval_limit,
                self.multitask_steps]


def layout_cross(state: AppState) -> Cross:
    gr.Markdown("### Cross-origin table")
    default_tasks = cross_origin_tasks(state)
    # the prebuilt library's stored table, so the tab opens on results (None when the library has changed)
    first = cross_origin(state, default_tasks, "test", views.CROSS_ORIGIN_LIMIT, stored_only=True) \
        if default_tasks else None
    with gr.Row():
        tasks = gr.Dropdown(default_tasks, value=default_tasks, multiselect=True,
                            allow_custom_value=True, label="Tasks (with prompts tuned on two or more origins)", scale=4)
        split = gr.Radio(["validation", "test"], value="test", label="Split")
        limit = gr.Slider(8, 500, value=views.CROSS_ORIGIN_LIMIT, step=4, label="Examples per task")
    compare = gr.Button("Compare own vs other origin", variant="primary")
    text = gr.Markdown(first[2] if first else "")
    plot = gr.Plot(first[1] if first else None, label="Own vs other origin", elem_id="cross-origin-plot")
    table = gr.Dataframe(first[0] if first else None, headers=CROSS_HEADERS, interactive=False, max_height=320)
    files, figure_json = export_row("cross-origin", "cross_origin_png")
    shown = gr.State(views.cross_origin_key(state.library, state.model_name, default_tasks) if first else None)
    return Cross(tasks, split, limit, compare, text, plot, table, files, figure_json, shown)


def layout_few_shot_settings(state: AppState) -> tuple:
    """Target, sources, origin and the budget (the model's recipe for the learning rate and batch size)."""
    origins = item_choices(state, ("origin",))
    with gr.Row():
        target = gr.Dropdown(list(BUNDLED_TASKS), value="movie-reviews" if "movie-reviews" in BUNDLED_TASKS else None,
                             allow_custom_value=True, label="Target task")
        sources = gr.Dropdown(item_choices(state, ("vector",)), value=views.vectors_from(
                              state.library, state.model_name, origins[0][1] if origins else None,
                              exclude_task="movie-reviews"),
                              multiselect=True, allow_custom_value=True,
                              label="Source TPVs (their sum is the TPV start)", scale=3)
        origin = gr.Dropdown(origins, value=origins[0][1] if origins else None, allow_custom_value=True,
                             label="Origin P0")
    with gr.Row():
        shots = gr.Textbox("0, 10, 50", label="Shots")
        recipe = state.recipe()
        steps = WholeNumber(30, minimum=1, label="Steps per run")
        lr = gr.Number(recipe.lr, minimum=0.0001, label="Learning rate", info="the model's recipe")
        batch = WholeNumber(recipe.batch_size, minimum=1, label="Batch size (capped at k)")
        eval_limit = WholeNumber(100, minimum=1, label="Test examples")
        multitask_steps = WholeNumber(0, minimum=0, label="Multi-task prompt steps (0 = leave out)",
                                    info="SPoT's start: one prompt tuned on the source tasks mixed; tuned once")
    return target, sources, origin, shots, steps, lr, batch, eval_limit, multitask_steps


def layout_few_shot(state: AppState) -> FewShot:
    gr.Markdown("### Few-shot initialisation\nTune the target task on its first k class-balanced training examples "
                "from each start, then test; 0 shots evaluates each start as it is. Runs as a background job.")
    settings = layout_few_shot_settings(state)
    with gr.Row():
        start = gr.Button("Start experiment", variant="primary")
        check = gr.Button("Refresh status")
        cancel = gr.Button("Cancel", variant="stop")
    job_id = gr.Textbox(label="Job id", interactive=True)
    text = gr.Markdown()
    plot = gr.Plot(label="Learning curves")
    table = gr.Dataframe(headers=FEW_SHOT_HEADERS, interactive=False, max_height=320)
    files = gr.File(label="Download: interactive HTML and CSV", file_count="multiple", interactive=False, height=120)
    timer = gr.Timer(POLL_S, active=False)
    refresh = gr.Button("Refresh lists", size="sm")
    return FewShot(*settings, start, check, cancel, job_id, text, plot, table, files, timer, refresh)


# ---- wiring -------------------------------------------------------------------------------------------------------
def _int(value, default: int = 200) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def wire_cross(state: AppState, cross: Cross) -> None:
    """Compare: evaluate the table now (a closure, not a partial: on ZeroGPU a @gpu function's arguments are pickled
    to the GPU process, and the app state is not picklable)."""

    @friendly
    @gpu_for_visitor(lambda tasks, split, limit: 10 + 0.02 * 9 * _int(limit) * max(1, len(tasks or [])))  # 3 origins: 9 cells
    def on_cross(tasks, split, limit):
        table, figure, text = cross_origin(state, tasks, split, limit)
        return table, figure, text, figure_exports(figure, "cross-origin", CROSS_HEADERS, table), figure.to_json()

    cross.compare.click(on_cross, [cross.tasks, cross.split, cross.limit],
                        [cross.table, cross.plot, cross.text, cross.files, cross.figure_json], api_name="cross_origin")
    cross.compare.click(lambda: None, None, cross.shown, api_name="cross_origin_computed", api_visibility="private")


def wire_few_shot(state: AppState, cross: Cross, few: FewShot, tab: gr.Tab) -> None:
    """Start (the timer follows the job), status, cancel; Refresh and opening the tab renew the lists."""
    view = [few.text, few.plot, few.table, few.files]
    few.start.click(partial(on_start, state), few.settings, [few.job_id, few.text, few.timer], api_name="fewshot_start")
    few.check.click(partial(on_status, state), few.job_id, view, api_name="fewshot_status")
    few.timer.tick(partial(on_poll, state), few.job_id, [*view, few.timer], api_name="fewshot_poll",
                   api_visibility="private", show_progress="hidden")
    few.cancel.click(partial(on_cancel, state), few.job_id, few.text, api_name="fewshot_cancel")
    lists = [cross.tasks, few.sources, few.origin]
    few.refresh.click(partial(on_refresh, state), lists, lists, api_name="transfer_refresh")
    tab.select(partial(on_open, state), [*lists, cross.shown], [*lists, cross.text, cross.shown],
               api_name="transfer_on_open", api_visibility="private")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Transfer tab inside ``tab``."""
    explain("Cross-origin: a TPV learned from origin B is added to a different origin A and compared with A's own "
            "tuned prompt, which tests the paper's claim that TPVs do not depend on the random start. Few-shot: a new "
            "task is tuned from a random origin, from one source TPV, from the sum of source TPVs or (optionally) from a "
            "prompt tuned on the source tasks mixed, with only a few examples, to see which start learns fastest.")
    cross = layout_cross(state)
    few = layout_few_shot(state)
    wire_cross(state, cross)
    wire_few_shot(state, cross, few, tab)
