"""Arithmetic tab: origin + weighted task prompt vectors, evaluated live as the weight sliders move.

Moving a slider starts a streaming evaluation: a first estimate on 16 class-balanced validation examples per task,
then 32, 64... up to the chosen sample, each drawn as it arrives. Each visitor has a ``Session`` in the page's
``gr.State`` (the last evaluation, for flips and for saving, and a generation counter): a newer slider position
bumps the counter, and the stale evaluation stops at its next round. A sweep draws the accuracy landscape. A
shared link (``?tab=arithmetic&origin=ID&vectors=ID:WEIGHT,...&method=...``) reopens the tab on a combination: it
is read from the page's query on load. Query parameters rather than ``gr.DeepLinkButton``: a deep link snapshots the
whole page into the server's temporary folder (gone with a restart, the Space's included) and records the origin
only once an event has read it, while content ids in a query stay valid wherever the same items exist.
``layout_*`` make the components, ``wire_*`` attach the events; the math and every rule (limits, saving, links) are
in ``studio.analysis`` and ``studio.evaluation``, the reference marks' scores and the warm-up in ``studio.live``.
"""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import gradio as gr

from studio import StudioError, analysis, plots, views
from studio.evaluation import evaluate_many, evaluate_progressively
from studio.library import metric_key
from studio.limits import TASK_JOINER
from studio.live import item_accuracies, start_samples_warm_up
from studio.prompts import MERGE_METHODS
from studio.space import on_zero_gpu
from studio.tasks import BUNDLED_TASKS, load_task
from studio.ui.common import (
    AppState,
    explain,
    export_row,
    figure_exports,
    friendly,
    friendly_stream,
    gpu_for_visitor,
    item_choices,
    plain,
    refreshed,
    still_chosen,
)

MAX_VECTORS = analysis.MAX_VECTORS
FIRST_ROUND = 16
FLIP_HEADERS = ["task", "input", "label", "before", "after"]
SWEEP_MODES = [("one shared coefficient c = 0, 0.05 ... 1 (the paper's search)", "coefficient"),
               ("landscape over the first two weights, 0 ... 1 step 0.25", "grid")]


class Session:
    """What one browser session (or API client) remembers between events. The page's ``gr.State`` holds it, so it
    lives where Gradio keeps per-visitor state and is dropped with the session (``SESSION_TTL_S`` after its last
    evaluation, or an hour after the page closed). ``generation`` lets a newer slider position stop an older
    evaluation that is still running in the same session. A plain class, not a dataclass: Gradio writes a
    dataclass State value into the page's config, and a lock cannot be written."""

    def __init__(self) -> None:
        self.generation = 0
        self.records: dict[str, list[dict]] = {}  # task -> records of the last full evaluation
        self.accuracy: dict[str, float] = {}
        self.evaluated: dict | None = None  # recipe + tasks + limit of that evaluation, and its metrics
        self.lock = threading.Lock()
        self.key = uuid.uuid4().hex  # this visitor, for the shared live evaluator

    def bump(self) -> int:
        """Start a new evaluation: every older one of this session is stale from now on."""
        with self.lock:
            self.generation += 1
            return self.generation

    def __getstate__(self) -> dict:
        """Gradio deep-copies the State's value for each new visitor (and ZeroGPU pickles a GPU call's arguments):
        a lock can be neither, so copies leave it out and get a fresh one."""
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, values: dict) -> None:
        self.__dict__.update(values)
        self.lock = threading.Lock()
        self.key = uuid.uuid4().hex  # each copy is another visitor


# a move's handler mostly waits for the one shared live evaluator, so every visitor's newest move starts at once (and
# supersedes their older one) instead of queueing behind 4 others; on ZeroGPU each move holds a GPU call instead
LIVE_CONCURRENCY = 4 if on_zero_gpu() else 64
SESSION_TTL_S = 6 * 3600  # a visitor's Session is dropped this long after its last evaluation


Choice = analysis.Combination  # the checked inputs every arithmetic event shares


class Form(NamedTuple):
    """The controls' values as an event receives them, unchecked, in ``Controls.inputs``' order."""

    origin_id: str | None
    vector_ids: list[str] | None
    method: str
    density: float
    tasks: list[str] | None
    limit: int
    weights: list[float]  # one per slider, hidden ones included


def split_form(values: Sequence) -> tuple[Form, tuple]:
    """An event's positional values as the form (``Controls.inputs``: six fields, then ``MAX_VECTORS`` weights) and
    the event's own inputs after it."""
    origin_id, vector_ids, method, density, tasks, limit, *rest = values
    return (Form(origin_id, vector_ids, method, density, tasks, limit, list(rest[:MAX_VECTORS])),
            tuple(rest[MAX_VECTORS:]))


def parse(state: AppState, form: Form) -> Choice:
    """The form as a checked ``Combination`` (``analysis.check_combination`` holds every rule), made for the studio's
    model."""
    return analysis.check_combination(state.library, form.origin_id, form.vector_ids, form.method, form.density,
                                      form.tasks, form.limit, form.weights, model=state.model_name)


# what the API page calls the form's inputs: a handler's parameter names (one weight per slider)
FORM_PARAMETERS = (*Form._fields[:-1], *(f"w{k}" for k in range(1, MAX_VECTORS + 1)))


def takes_form(*own: str, progress: bool = False) -> Callable[[Callable], Callable]:
    """Give a handler written ``fn([state,] *values)`` (the form, then the event's ``own`` inputs) one named
    parameter per input. Gradio reads a handler's parameters from its signature: the API page names the inputs after
    them, and a ``gr.Progress`` (``progress``) is filled in only as a named parameter after the inputs."""

    def decorate(fn: Callable) -> Callable:
        before = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_POSITIONAL]  # ``state``
        named = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in (*FORM_PARAMETERS, *own)]
        if progress:
            named.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
        fn.__signature__ = inspect.Signature([*before, *named])
        return fn

    return decorate


REFERENCES = analysis.REFERENCES


def reference_marks(state: AppState, choice: Choice, compute: bool) -> dict[str, list[float | None]]:
    """The marks' accuracies on the live view's sample (``live.item_accuracies`` keeps them for every visitor); with
    ``compute``, the missing ones are evaluated first, in one batched pass per task."""
    items = analysis.reference_items(state.library, state.model_name, choice)
    wanted = {task: [item_id for item_id in by_mark.values() if item_id] for task, by_mark in items.items()}
    known = item_accuracies(wanted, choice.limit, partial(reference_accuracies, state) if compute else None)
    return {mark: [known.get((items[t][mark], t)) for t in choice.tasks] for mark in REFERENCES}


def reference_accuracies(state: AppState, item_ids: list[str], task: str, limit: int) -> list[float]:
    """Validation accuracy of each item on the live view's own sample (stratified, ``limit`` examples). Through the
    shared live evaluator (one batch, queued with every visitor's moves); on ZeroGPU directly, in this GPU call."""
    if on_zero_gpu():
        result = evaluate_many(state.backbone(), [state.library.tensor(i) for i in item_ids], [task], "validation",
                               limit)
        return [float(result["accuracy"][k, 0]) for k in range(len(item_ids))]
    return state.live.accuracies({item_id: state.library.tensor(item_id) for item_id in item_ids}, task, limit)


def chart(tasks: list[str], results: dict, previous: dict[str, float], title: str,
          marks: dict[str, list[float | None]] | None = None):
    names = [t for t in tasks if t in results]
    values = [results[t].metrics["accuracy"] for t in names]
    errors = [results[t].metrics["accuracy_se"] for t in names]
    reference = [previous.get(t, float("nan")) for t in names] if previous else None
    shown = {mark: [ys[tasks.index(t)] for t in names] for mark, ys in (marks or {}).items()
             if any(y is not None for y in ys)}
    return plots.bars(names, values, errors, title, reference=reference, name="this combination",
                      reference_name="previous full evaluation", marks=shown)


def share_of_own(tasks: list[str], accuracy: dict[str, float], marks: dict[str, list[float | None]]) -> str:
    """ "keeps 92% of its own tuned prompt" per task, where the own prompt's accuracy is known."""
    parts = []
    for t, own in zip(tasks, marks.get("own tuned prompt", [])):
        if own and t in accuracy:
            parts.append(f"{t} keeps {100 * accuracy[t] / own:.0f}% of its own tuned prompt")
    return " · ".join(parts)


def flip_rows(session: Session, results: dict) -> list[list]:
    rows = []
    for task, result in results.items():
        for flip in analysis.flipped(session.records.get(task, []), result.records, task):
            text = flip["fields"].replace("\n", " ")
            rows.append([task, text[:200] + ("…" if len(text) > 200 else ""), flip["label"], flip["before"],
                         flip["after"]])
    return rows[:100]


def refinements(state: AppState, session: Session, backbone, prompt, choice: Choice, stale) -> Iterator[dict]:
    """The combination's results per task, refined round by round. Served by the one live evaluator that every
    visitor shares (``studio.live``: a newer move of this session supersedes this one at once); on ZeroGPU this
    call already holds a GPU in its own process, so it evaluates directly."""
    if on_zero_gpu():
        results: dict = {}
        for name in choice.tasks:
            for step in evaluate_progressively(backbone, [prompt], load_task(name), "validation", choice.limit,
                                               first=FIRST_ROUND, should_stop=stale):
                results[name] = step[0]
                yield dict(results)
        return
    request = state.live.submit(session.key, prompt, choice.tasks, choice.limit, first=FIRST_ROUND)
    yield from state.live.stream(request)
    if isinstance(request.outcome, BaseException):
        raise request.outcome


def live_evaluation(state: AppState, session: Session, choice: Choice):
    """Yield (figure, status, flips) after every round of every task; stop when a newer position arrives."""
    mine = session.bump()

    def stale() -> bool:
        return session.generation != mine

    started = time.time()
    prompt, recipe = analysis.combine(state.library, choice.origin_id, choice.vector_ids, choice.weights,
                                      choice.method, choice.density)
    backbone = state.backbone()
    marks = reference_marks(state, choice, compute=False)  # cached ones at once; the rest after the estimate
    results: dict = {}
    first_at = None
    previous = dict(session.accuracy)
    for rounds, results in enumerate(refinements(state, session, backbone, prompt, choice, stale), start=1):
        if stale():  # a newer position took over: leave the outputs to it
            yield gr.skip(), gr.skip(), gr.skip()
            return
        first_at = first_at if first_at is not None else time.time() - started
        sizes = ", ".join(f"{t} {r.metrics['accuracy']:.3f} ± {r.metrics['accuracy_se']:.3f} "
                          f"(n={r.metrics['n']})" for t, r in results.items())
        status = (f"Refining (round {rounds}) · {sizes} · first estimate after {first_at:.1f} s")
        yield (chart(choice.tasks, results, previous, "Validation accuracy (refining)", marks), status,
               flip_rows(session, results))
    if stale() or set(results) != set(choice.tasks):
        yield gr.skip(), gr.skip(), gr.skip()
        return
    marks = reference_marks(state, choice, compute=True)
    if stale():
        yield gr.skip(), gr.skip(), gr.skip()
        return
    flips = flip_rows(session, results)
    accuracy = {t: r.metrics["accuracy"] for t, r in results.items()}
    mean = sum(accuracy.values()) / len(accuracy)
    session.records = {t: r.records for t, r in results.items()}
    session.accuracy = accuracy
    session.evaluated = {"recipe": recipe, "tasks": list(choice.tasks), "limit": choice.limit,
                         "metrics": {t: r.metrics for t, r in results.items()}}
    had_previous = bool(previous)
    kept = share_of_own(choice.tasks, accuracy, marks)
    status = (f"Done in {time.time() - started:.1f} s (first estimate after {first_at:.1f} s) · mean accuracy "
              f"{mean:.3f} · " + " · ".join(f"{t} {a:.3f}" for t, a in accuracy.items())
              + (f"  \n{kept}" if kept else "")
              + (f" · {len(flips)} predictions flipped since the previous evaluation" if had_previous else ""))
    yield chart(choice.tasks, results, previous, "Validation accuracy", marks), status, flips


def run_sweep(state: AppState, choice: Choice, mode: str, limit, progress) -> tuple:
    limit = analysis.check_sweep(mode, limit)

    def report(done: int, total: int) -> None:
        progress(done / total, desc=f"{done}/{total} prompt evaluations")

    common = dict(method=choice.method, density=choice.density, limit=limit, on_progress=report)
    if mode == "coefficient":
        result = views.stored_sweep(state.views, choice.origin_id, choice.vector_ids, choice.weights, choice.tasks,
                                    choice.method, limit)
        if result is None:
            result = analysis.coefficient_sweep(state.library, state.backbone(), choice.origin_id, choice.vector_ids,
                                                choice.weights, choice.tasks, **common)
        figure, text, header, rows = sweep_view(result, choice.tasks, limit, max(abs(w) for w in choice.weights))
    else:
        result = analysis.weight_grid(state.library, state.backbone(), choice.origin_id, choice.vector_ids, choice.weights,
                                      choice.tasks, **common)
        names = [state.library.get(v).task or v for v in choice.vector_ids[:2]]
        figure = plots.grid_heatmap(result["mean"], result["values"], result["values"],
                                    f"Mean validation accuracy ({limit} examples per task)", f"weight of {names[0]}",
                                    f"weight of {names[1]}", current=tuple(result["current"]))
        header = [f"weight {names[1]} \\ {names[0]}", *result["values"]]
        rows = [[b, *row] for b, row in zip(result["values"], result["mean"])]
        text = (f"Best: {names[0]} {result['best'][0]:.2f}, {names[1]} {result['best'][1]:.2f} (mean accuracy "
                f"{result['best_mean']:.3f}); other vectors keep their slider weights.")
    return figure, text, figure_exports(figure, f"sweep-{mode}", header, rows), figure.to_json()


def sweep_view(result: dict, tasks: list[str], limit: int, current: float) -> tuple:
    """Figure, summary text, CSV header and rows of a coefficient sweep (computed now or stored)."""
    series = {**result["accuracy"], "mean": result["mean"]} if len(tasks) > 1 else result["accuracy"]
    figure = plots.sweep_curve(result["coefficients"], series,
                               f"Accuracy along P0 + c x merge(weights / {current:.2f}) ({limit} examples "
                               "per task)", current=current if current <= 1.0 else None, best=result["best"])
    header = ["c", *result["accuracy"], "mean"]
    rows = [[c, *(result["accuracy"][t][k] for t in result["accuracy"]), result["mean"][k]]
            for k, c in enumerate(result["coefficients"])]
    text = (f"Best shared coefficient c = {result['best']:.2f} (mean validation accuracy {result['best_mean']:.3f}"
            f" on {limit} examples per task); the sliders now sit at c = {current:.2f}"
            + (" (outside 0..1)." if current > 1 else ".")
            + f" Set every weight to {result['best']:.2f} x your current weights to use it.")
    return figure, text, header, rows


def save_combination(state: AppState, session: Session, choice: Choice, name: str | None) -> tuple[str, str]:
    """Save the combination with the live view's metrics (reused when it was just evaluated, else scored now on the
    same sample); an identical combination already stored is named instead of saved again."""
    item, known = analysis.save_scored_combination(state.library, state.backbone(), choice, name, session.evaluated)
    if known:
        return f"This combination is already in the library as **{plain(item.name)}** (`{item.id}`).", item.id
    scores = ", ".join(f"{task} {item.metrics[metric_key('validation', 'accuracy', task)]:.3f}"
                       for task in choice.tasks)
    return f"Saved **{plain(item.name)}** as `{item.id}` (validation accuracy: {plain(scores)}).", item.id


def slider_label(state: AppState, vector_ids: list[str], k: int) -> str:
    item = state.library.find(vector_ids[k]) if k < len(vector_ids) else None
    if item is None:  # a hidden slider, or an id the evaluation will report as unknown
        return f"weight {k + 1}"
    return f"weight of {item.task or item.name} (TPV from origin {item.seed}) · {item.id}"


def slider_updates(state: AppState, vector_ids: list[str], weights: list[float] | None = None) -> list:
    """One visible slider per chosen vector, labelled by its task (and set to ``weights`` when given)."""
    return [gr.Slider(visible=k < len(vector_ids), label=slider_label(state, vector_ids, k),
                      **({"value": weights[k]} if weights and k < len(weights) else {})) for k in range(MAX_VECTORS)]


def own_tasks(state: AppState, vector_ids: list[str]) -> list[str]:
    """The tasks the chosen vectors were tuned on, in their order: what is evaluated unless the user says else."""
    return list(dict.fromkeys(t for t in (state.library.get(v).task for v in vector_ids) if t))


def task_choices(state: AppState) -> list[str]:
    """Single tasks of the model's library items, then the bundled tasks."""
    in_library = [i.task for i in state.library.items(model=state.model_name) if i.task and TASK_JOINER not in i.task]
    return list(dict.fromkeys([*in_library, *BUNDLED_TASKS]))


# ---- event handlers: ``state`` first, bound with functools.partial when wired --------------------------------------
@friendly
def on_vectors(state: AppState, vector_ids, current_tasks) -> tuple:
    """The user picked vectors: one visible slider each, labelled by its task; the evaluated tasks follow them."""
    vector_ids = analysis.check_vector_ids(vector_ids)
    return *slider_updates(state, vector_ids), gr.Dropdown(value=own_tasks(state, vector_ids) or (current_tasks or []))


def on_vectors_shown(state: AppState, vector_ids) -> list:
    """Whatever changed the vectors (a pick, Refresh, a shared link), the sliders follow; the tasks are left to
    the pick (``on_vectors``) so that a link's own tasks survive. Never raises: the pick reports bad input."""
    return slider_updates(state, [v for v in (vector_ids or []) if v][:MAX_VECTORS])


@friendly
@takes_form("name", "session")
def on_save(state: AppState, *values) -> tuple[str, str]:
    form, (name, session) = split_form(values)
    return save_combination(state, session, parse(state, form), name)


@friendly
def on_refresh(state: AppState, current_origin, current_vectors, current_tasks) -> tuple:
    """Fresh choices; the selection is kept where its items still exist (``refreshed``: a value is sent only where
    it changes; this also runs when a shared link selects the tab, with the values from before the link's)."""
    origin_list = item_choices(state, ("origin",))
    vector_list = item_choices(state, ("vector",))
    kept_origin = still_chosen(current_origin, (v for _, v in origin_list), origin_list[0][1] if origin_list else None)
    kept_vectors = still_chosen(current_vectors, (v for _, v in vector_list), [])
    tasks = current_tasks or []
    if kept_vectors != list(current_vectors or []):  # a vector is gone: the tasks follow the rest, as after a pick
        tasks = own_tasks(state, kept_vectors) or tasks
    return (refreshed(origin_list, current_origin, kept_origin), refreshed(vector_list, current_vectors, kept_vectors),
            refreshed(task_choices(state), current_tasks, tasks))


@friendly
@takes_form("page_url")
def on_link(state: AppState, *values) -> str:
    """A link to this page that reopens the tab on the current combination (``analysis.combination_url``)."""
    form, (page_url,) = split_form(values)
    return analysis.combination_url(page_url or "", parse(state, form))


@friendly
def open_link(state: AppState, params: dict) -> tuple:
    """Page load: the combination a shared link names, into the controls (``Controls.inputs``) and the status;
    every output is left as it is when the page was opened without one."""
    try:
        choice = analysis.combination_from_link(state.library, state.model_name, params)
    except StudioError as error:
        raise StudioError(f"this link cannot be opened: {error}") from None
    if choice is None:
        return tuple(gr.skip() for _ in range(6 + MAX_VECTORS + 1))  # Controls.inputs, then the status
    gr.Info("Opened a shared combination in the Arithmetic tab.")
    terms = " ".join(f"{w:+g} x {plain(state.library.get(v).task or v)}"
                     for v, w in zip(choice.vector_ids, choice.weights))
    return (gr.Dropdown(choices=item_choices(state, ("origin",)), value=choice.origin_id),
            gr.Dropdown(choices=item_choices(state, ("vector",)), value=choice.vector_ids, multiselect=True),
            choice.method, choice.density,
            gr.Dropdown(choices=task_choices(state), value=choice.tasks, multiselect=True), choice.limit,
            *slider_updates(state, choice.vector_ids, choice.weights),
            f"Opened from a shared link: origin `{choice.origin_id}` {terms} ({choice.method}). Press **Evaluate** "
            "or move a slider to score it.")


# ---- layout -------------------------------------------------------------------------------------------------------
@dataclass
class Controls:
    """What to combine and where to evaluate it: the inputs every arithmetic event shares (``inputs``)."""

    origin: gr.Dropdown
    vectors: gr.Dropdown
    refresh: gr.Button
    method: gr.Dropdown
    density: gr.Slider
    tasks: gr.Dropdown
    limit: gr.Slider
    sliders: list[gr.Slider]
    session: gr.State  # this visitor's ``Session``

    @property
    def inputs(self) -> list:
        """The form every arithmetic event starts with, in ``Form``'s order (``split_form`` reads it back)."""
        return [self.origin, self.vectors, self.method, self.density, self.tasks, self.limit, *self.sliders]


@dataclass
class Sweep:
    """The sweep accordion: its settings, its button and what it draws."""

    mode: gr.Radio
    limit: gr.Slider
    button: gr.Button
    text: gr.Markdown
    plot: gr.Plot
    files: gr.File
    figure_json: gr.State  # the drawn figure, for the PNG export

    @property
    def outputs(self) -> list:
        """``run_sweep``'s results, in its order."""
        return [self.plot, self.text, self.files, self.figure_json]


@dataclass
class Results:
    """The live evaluation, the sweep and saving."""

    evaluate: gr.Button
    status: gr.Markdown
    plot: gr.Plot
    flips: gr.Dataframe
    sweep: Sweep
    save_name: gr.Textbox
    save: gr.Button
    save_text: gr.Markdown
    saved_id: gr.Textbox
    link: gr.Button
    link_text: gr.Textbox  # the link, with a copy button
    page_url: gr.Textbox  # hidden: the page's address, filled in by the browser when the link is made


def layout_controls(state: AppState, first_origin: str | None, first_vectors: list[str]) -> Controls:
    origins = item_choices(state, ("origin",))
    with gr.Row():
        origin = gr.Dropdown(origins, value=first_origin, allow_custom_value=True, label="Origin P0", scale=2)
        vectors = gr.Dropdown(item_choices(state, ("vector",)), value=first_vectors, multiselect=True,
                              allow_custom_value=True, max_choices=MAX_VECTORS,
                              label=f"Task prompt vectors (up to {MAX_VECTORS})", scale=4)
        refresh = gr.Button("Refresh lists", scale=0, size="sm")
    with gr.Row():
        method = gr.Dropdown([(f"{k}: {v}", k) for k, v in MERGE_METHODS.items()], value="weighted_sum",
                             label="Merge method")
        density = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Density (TIES / DARE / prune keep this share)")
    with gr.Row():
        tasks = gr.Dropdown(task_choices(state), value=[state.library.get(v).task for v in first_vectors],
                            multiselect=True, allow_custom_value=True,
                            label="Evaluate on (default: the chosen vectors' tasks)", scale=4)
        limit = gr.Slider(*analysis.LINK_LIMITS, value=128, step=16, label="Validation examples per task")
    sliders = [gr.Slider(*analysis.WEIGHT_RANGE, value=1.0, step=0.05, label=slider_label(state, first_vectors, k),
                         visible=k < len(first_vectors)) for k in range(MAX_VECTORS)]
    session = gr.State(Session(), time_to_live=SESSION_TTL_S)  # Gradio gives each visitor a deep copy
    return Controls(origin, vectors, refresh, method, density, tasks, limit, sliders, session)


def layout_sweep(state: AppState, first_origin: str | None, first_vectors: list[str]) -> Sweep:
    """The sweep accordion, opened on the prebuilt library's stored sweep of the default pair when there is one."""
    with gr.Accordion("Sweep: accuracy landscape", open=False):
        with gr.Row():
            mode = gr.Radio(SWEEP_MODES, value="coefficient", label="Sweep")
            limit = gr.Slider(8, 256, value=32, step=8, label="Validation examples per task (keep it small)")
        button = gr.Button("Sweep")
        first_tasks = list(dict.fromkeys(state.library.get(v).task for v in first_vectors))
        stored = views.stored_sweep(state.views, first_origin, first_vectors, [1.0] * len(first_vectors),
                                    first_tasks, "weighted_sum", views.SWEEP_LIMIT) if first_vectors else None
        first = sweep_view(stored, first_tasks, views.SWEEP_LIMIT, 1.0) if stored else None
        text = gr.Markdown(first[1] + " (stored with the prebuilt library)" if first else "")
        plot = gr.Plot(first[0] if first else None, label="Landscape", elem_id="sweep-plot")
        files, figure_json = export_row("sweep", "arithmetic_png")
    return Sweep(mode, limit, button, text, plot, files, figure_json)


def layout_results(state: AppState, first_origin: str | None, first_vectors: list[str]) -> Results:
    evaluate = gr.Button("Evaluate", variant="primary")
    status = gr.Markdown("Choose an origin and one or more vectors, then move a slider.", elem_id="arithmetic-status")
    plot = gr.Plot(label="Live evaluation", elem_id="arithmetic-plot")
    flips = gr.Dataframe(headers=FLIP_HEADERS, label="Predictions that flipped since the previous full evaluation",
                         interactive=False, wrap=True, max_height=300)
    sweep = layout_sweep(state, first_origin, first_vectors)
    with gr.Row():
        save_name = gr.Textbox(label="Name (optional)", placeholder="e.g. mr + tweets, 0.5 each", scale=3)
        save = gr.Button("Save to library", scale=1)
    save_text = gr.Markdown()
    saved_id = gr.Textbox(label="Saved item id", interactive=False, visible=False)
    with gr.Row():
        link = gr.Button("Link to this combination", scale=1)
        link_text = gr.Textbox(label="Link: opens this tab on the same origin, vectors, weights, method and sample",
                               interactive=False, buttons=["copy"], scale=3, elem_id="arithmetic-link")
    page_url = gr.Textbox(visible=False)
    return Results(evaluate, status, plot, flips, sweep, save_name, save, save_text, saved_id, link, link_text,
                   page_url)


# ---- wiring -------------------------------------------------------------------------------------------------------
def _int(value, default: int = 128) -> int:
    """A number from a form field for sizing a GPU call (the handler itself reports a bad value)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _task_count(tasks: list[str] | None) -> int:
    """How many tasks a GPU call evaluates, for sizing it: two while none is chosen (the vectors' own, usually)."""
    return max(1, len(tasks or [None, None]))


def evaluation_seconds(*values, **_) -> float:
    """A live evaluation's GPU call (``on_evaluate``'s inputs): longer for a larger sample and more tasks."""
    form, _ = split_form(values)
    return 10 + 0.02 * _int(form.limit) * _task_count(form.tasks)


def sweep_seconds(*values, **_) -> float:
    """A sweep's GPU call (``on_sweep``'s inputs): up to 25 prompts (the 5 x 5 grid; the coefficient sweep has 21),
    each on the sweep's sample of every task."""
    form, (_, sweep_examples, *_) = split_form(values)
    return 15 + 0.01 * 25 * _int(sweep_examples) * _task_count(form.tasks)


def wire_evaluation(state: AppState, controls: Controls, results: Results) -> None:
    """Live evaluation and the sweep. Both are closures, not partials: on ZeroGPU a @gpu function's arguments are
    pickled to the GPU process, and the app state is not picklable."""

    @friendly_stream
    @gpu_for_visitor(evaluation_seconds)
    @takes_form("session")
    def on_evaluate(*values):
        form, (session,) = split_form(values)
        for outputs in live_evaluation(state, session, parse(state, form)):
            yield *outputs, session  # handing the Session back starts its time to live

    @friendly
    @gpu_for_visitor(sweep_seconds)
    @takes_form("sweep", "sweep_examples", progress=True)
    def on_sweep(*values):
        form, (mode, sweep_examples, progress) = split_form(values)
        return run_sweep(state, parse(state, form), mode, sweep_examples, progress)

    # every slider release (and the button, and the merge settings) starts a new live evaluation; "multiple" lets
    # the new one start at once, and it makes the stale one stop at its next round (the Session's generation)
    gr.on([results.evaluate.click, *(s.release for s in controls.sliders), controls.method.input,
           controls.density.release], on_evaluate, [*controls.inputs, controls.session],
          [results.plot, results.status, results.flips, controls.session], api_name="arithmetic_eval",
          trigger_mode="multiple", show_progress="minimal", concurrency_limit=LIVE_CONCURRENCY)
    sweep = results.sweep
    sweep.button.click(on_sweep, [*controls.inputs, sweep.mode, sweep.limit], sweep.outputs,
                       api_name="arithmetic_sweep")


def wire_choices(state: AppState, controls: Controls, results: Results, tab: gr.Tab) -> None:
    """The vector choice drives the sliders; Refresh and opening the tab renew the lists; Save keeps the result."""
    controls.vectors.input(partial(on_vectors, state), [controls.vectors, controls.tasks],
                           [*controls.sliders, controls.tasks], api_name="arithmetic_vectors")
    controls.vectors.change(partial(on_vectors_shown, state), controls.vectors, controls.sliders,
                            api_visibility="private", show_progress="hidden")
    results.save.click(partial(on_save, state), [*controls.inputs, results.save_name, controls.session],
                       [results.save_text, results.saved_id], api_name="arithmetic_save")
    lists = [controls.origin, controls.vectors, controls.tasks]
    refresh = partial(on_refresh, state)
    controls.refresh.click(refresh, lists, lists, api_name="arithmetic_refresh")
    tab.select(refresh, lists, lists, api_name="arithmetic_on_open", api_visibility="private")


# a link's last input is the page's own address, which only the browser knows (the app opens the link's tab:
# ``ui.app.open_tab_of_link``)
PAGE_URL_JS = "(...args) => [...args.slice(0, {n}), window.location.href]"


def wire_link(state: AppState, controls: Controls, results: Results, app: gr.Blocks) -> None:
    """The "Link to this combination" button, and a page opened from such a link (its query read on load)."""
    inputs = [*controls.inputs, results.page_url]
    results.link.click(partial(on_link, state), inputs, results.link_text, api_name="arithmetic_link",
                       js=PAGE_URL_JS.format(n=len(inputs) - 1))

    def on_open(request: gr.Request) -> tuple:  # a closure, not a partial: Gradio finds gr.Request by annotation
        return open_link(state, dict(request.query_params))

    app.load(on_open, None, [*controls.inputs, results.status], api_visibility="private", show_progress="hidden")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Arithmetic tab inside ``tab``, opened on ``views.default_pair``: the lowest-seed origin and one TPV per
    task, the selection whose sweep the prebuilt library stores."""
    explain("Build a new prompt as origin + a weighted merge of task prompt vectors; each slider is one vector's "
            "weight (negative pushes that task away). Accuracy on the chosen datasets updates live as you move a "
            "slider, a first rough estimate at once and sharper ones after; the sweep shows the whole landscape.")
    first_origin, first_vectors = views.default_pair(state.library, state.model_name)
    controls = layout_controls(state, first_origin, first_vectors)
    results = layout_results(state, first_origin, first_vectors)
    wire_evaluation(state, controls, results)
    wire_choices(state, controls, results, tab)
    wire_link(state, controls, results, app)
    start_samples_warm_up(state.backbone, [state.library.get(v).task for v in first_vectors
                                           if state.library.get(v).task], 128)
