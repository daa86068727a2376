"""What every panel shares: the app state, error handling, the optional ZeroGPU decorator, dropdown choices and
their refresh, the figure download row, and the figure of default items the Similarity and Map tabs open on.

A panel is a module with ``build(state, tab, app)``: it lays out its components inside ``tab`` (``app.py`` makes the
``gr.Tab``), refreshes them with ``tab.select`` and attaches page-load events with ``app.load``. Handlers take the
``AppState`` first and are bound with ``functools.partial``; the few that Gradio must inspect by type hint
(``gr.SelectData``) or that run under ``@gpu`` (their arguments are pickled on ZeroGPU) are closures instead.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import gradio as gr

from studio import StudioError
from studio.backbones import load_backbone
from studio.config import DEFAULT_MODEL
from studio.files import export_folder
from studio.jobs import Job, JobRunner
from studio.library import Library
from studio.space import on_gpu as gpu  # noqa: F401 - ZeroGPU's spaces.GPU, sized per call; a no-op elsewhere
from studio.tasks import adopt_file_tasks, file_tasks_for_evaluation
from studio.ui.visitors import VisitorJobs, Visitors, acting_for, asking_visitor


@dataclass
class AppState:
    """Shared by all panels: the library (user's, with the prebuilt one beneath), the model, the job queue.

    With ``visitors`` (a public Space: ``studio.ui.visitors``), ``library`` and ``runner`` are the asking visitor's
    own library and their view of the one job queue; otherwise they are ``home_library`` and ``shared_runner``."""

    home_library: Library
    model_name: str = DEFAULT_MODEL
    shared_runner: JobRunner = field(default_factory=JobRunner)
    visitors: Visitors | None = None
    _warm: threading.Thread | None = None

    @property
    def library(self) -> Library:
        return self.visitors.library() if self.visitors else self.home_library

    @property
    def runner(self) -> JobRunner | VisitorJobs:
        return self.visitors.jobs() if self.visitors else self.shared_runner

    @functools.cached_property
    def live(self):
        """The one worker that evaluates every visitor's slider positions (``studio.live``)."""
        from studio.live import LiveEvaluator

        return LiveEvaluator(self.backbone)

    @functools.cached_property
    def views(self) -> dict:
        """The prebuilt library's stored first-view results (``studio.views``); {} without a prebuilt library."""
        from studio.views import load_views

        prebuilt = next((lib for lib in self.library.parents if lib.source == "prebuilt"), None)
        return load_views(prebuilt.root) if prebuilt else {}

    def recipe(self):
        """The current model's default tuning recipe (``backbones.recipe_for``)."""
        from studio.backbones import recipe_for

        return recipe_for(self.model_name)

    def backbone(self):
        return load_backbone(self.model_name)

    def warm_up(self, started: threading.Thread | None = None) -> None:
        """Warm the model up on a background thread (``studio.live.warm_up_model``), or adopt the warm-up that
        ``launch.py`` started before Gradio was imported (``started``); ``launch.py`` serves the page once it is over."""
        from studio.live import start_warm_up

        self._warm = started or start_warm_up(self.model_name)

    def wait_warm_up(self, timeout: float | None = None) -> None:
        """Block until the warm-up is over (or ``timeout`` seconds passed)."""
        if self._warm is not None:
            self._warm.join(timeout)

    def after_warm_up(self, task: Callable[[], object]) -> None:
        """Run ``task`` on a daemon thread once the model's warm-up is over (at once if there is none)."""
        def work() -> None:
            self.wait_warm_up()
            task()

        threading.Thread(target=work, daemon=True, name="after-warm-up").start()


def job_of(state: AppState, job_id: object, missing: str | None = None, quiet: bool = False) -> Job | None:
    """The job ``job_id`` (stripped) names, found with ``state.runner.get``: on a public studio that is the asking
    visitor's view, which refuses other visitors' jobs, so no panel can reach one by its id. An empty id raises
    "choose a job first", an unknown one the runner's message; ``missing``: the panel's own message for both.
    ``quiet``: None instead of raising, for a timer that just stops."""
    key = job_id.strip() if isinstance(job_id, str) else ""
    try:
        if not key:
            raise StudioError("choose a job first: start one, or click a row of the jobs table")
        return state.runner.get(key)
    except StudioError:
        if quiet:
            return None
        if missing is None:
            raise
        raise StudioError(missing) from None


def gpu_for_visitor(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """``gpu(duration)`` for a handler that acts for the asking visitor (their library, their uploaded tasks). On
    ZeroGPU the handler runs in another process that gets no Gradio request and whose uploaded tasks are a copy
    from when it was forked, so the visitor and their uploaded tasks (``tasks.file_tasks_for_evaluation``: these
    handlers evaluate, tuning hands its data over itself) are read here, in the event, and handed over
    (``visitors.acting_for``); elsewhere the same path runs in this process."""

    def decorate(fn: Callable) -> Callable:
        def sized(visitor, uploads, *args, **kwargs) -> float:
            return duration(*args, **kwargs)

        if inspect.isgeneratorfunction(fn):
            def on_gpu(visitor, uploads, *args, **kwargs):
                with acting_for(visitor):
                    adopt_file_tasks(uploads)
                produced = fn(*args, **kwargs)
                try:
                    while True:  # each step in the visitor's name: Gradio may run each in another thread
                        with acting_for(visitor):
                            try:
                                item = next(produced)
                            except StopIteration:
                                return
                        yield item
                finally:  # a stream stopped early (a newer slider position) ends in the visitor's name too
                    with acting_for(visitor):
                        produced.close()

            def handler(*args, **kwargs):
                yield from placed(asking_visitor(), file_tasks_for_evaluation(), *args, **kwargs)
        else:
            def on_gpu(visitor, uploads, *args, **kwargs):
                with acting_for(visitor):
                    adopt_file_tasks(uploads)
                    return fn(*args, **kwargs)

            def handler(*args, **kwargs):
                return placed(asking_visitor(), file_tasks_for_evaluation(), *args, **kwargs)

        on_gpu.__module__, on_gpu.__qualname__ = fn.__module__, fn.__qualname__  # its entry in space.GPU_TASKS
        placed = gpu(sized)(on_gpu)
        return functools.wraps(fn)(handler)  # Gradio reads the inputs (and gr.Progress) from fn's signature

    return decorate


def friendly(fn: Callable) -> Callable:
    """Turn a StudioError into a gr.Error with its one-line message (no traceback in the UI)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as error:
            raise gr.Error(str(error)) from None

    return wrapper


def friendly_stream(fn: Callable) -> Callable:
    """Same as ``friendly`` for generator handlers (streaming outputs)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except StudioError as error:
            raise gr.Error(str(error)) from None

    return wrapper


def _whole_preprocess(component: gr.Number, payload: float | None) -> int | None:
    if payload is None:
        return None
    try:
        value = float(payload)
    except (TypeError, ValueError):
        raise gr.Error(f"{component.label or 'this field'} must be a whole number (got {payload!r})") from None
    if not value.is_integer():
        raise gr.Error(f"{component.label or 'this field'} must be a whole number (got {payload})")
    return int(value)


def WholeNumber(value: float | None = None, **kwargs) -> gr.Number:  # noqa: N802 - reads like the component it is
    """A ``gr.Number`` for counts (steps, examples, seeds): a fraction or text gets the studio's one-line message
    instead of Gradio's rounding (1.5 -> 2) or its raw preprocess error. (Not a subclass: Gradio writes a .pyi stub
    beside the source of every Component subclass, which an installed package must not do.)"""
    number = gr.Number(value, step=1, **kwargs)
    number.preprocess = functools.partial(_whole_preprocess, number)
    return number


def explain(text: str) -> gr.Markdown:
    """The two-sentence explanation at the top of every panel."""
    return gr.Markdown(f"<div class='explain'>{text}</div>")


# ---- shared by the analysis panels (similarity, map, arithmetic, transfer) --------------------------------------
def item_choices(state: AppState, kinds: tuple[str, ...] = ("vector",)) -> list[tuple[str, str]]:
    """(label, id) dropdown choices for the current model's items of the given kinds, labelled for humans."""
    from studio.analysis import item_label

    def order(item) -> tuple:
        return item.task or "", -1 if item.seed is None else item.seed, item.created, item.id

    return [(f"{item_label(item)} · {item.id}", item.id) for kind in kinds
            for item in sorted(state.library.items(kind=kind, model=state.model_name), key=order)]


def refreshed(choices: list, current, kept) -> gr.Dropdown:
    """A dropdown with fresh ``choices`` whose value is sent only where it must change (``kept``, what the refresh
    keeps of ``current``, differs from it). A refresh runs with the values of when it was triggered (opening a tab,
    which a shared link also does), and sending those back undid what the user or the link had set meanwhile."""
    if isinstance(kept, list):  # a multiselect's: said so, or Gradio checks the list as one choice
        current = list(current or [])
        return gr.Dropdown(choices=choices, multiselect=True, **({} if kept == current else {"value": kept}))
    return gr.Dropdown(choices=choices, **({} if kept == current else {"value": kept}))


def still_chosen(current, known: Iterable, default):
    """What a refresh keeps of a dropdown's value ``current``: the chosen values that are still ``known`` (a
    multiselect's, in their order: ``default`` is a list) or the one value while it is; ``default`` where nothing is
    left."""
    known = set(known)
    if isinstance(default, list):
        return [value for value in (current or []) if value in known] or default
    return current if current in known else default


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def plain(text: object) -> str:
    """``text`` shown as it is inside Markdown: a name or task from an import or a pull is data, never a link, an
    image (a remote image would tell its server who looks at the page) or markup. ``:`` and ``@`` become entities:
    the page's Markdown (GitHub's flavour) links bare addresses and e-mails."""
    escaped = _MARKDOWN.sub(r"\\\1", str(text)).replace("&", "&amp;").replace("<", "&lt;")
    return escaped.replace(":", "&#58;").replace("@", "&#64;")


def figure_exports(figure, stem: str, header: list[str], rows: list[list]) -> list[str]:
    """HTML (interactive, offline) and CSV (the numbers) of a figure; PNG is a separate, slower button."""
    from studio.plots import save_figure, write_csv

    folder = export_folder(stem)
    return [str(save_figure(figure, folder / f"{stem}.html")), str(write_csv(folder / f"{stem}.csv", header, rows))]


def png_export(figure_json: str | None, stem: str) -> str:
    """A PNG of the last figure (kaleido + the system Chromium); a StudioError says what to install if it fails."""
    import plotly.io

    from studio.plots import save_figure

    if not figure_json:
        raise StudioError("draw something first, then export it")
    return str(save_figure(plotly.io.from_json(figure_json), export_folder(stem) / f"{stem}.png"))


def export_row(stem: str, api_name: str) -> tuple[gr.File, gr.State]:
    """The download row under a figure: HTML + CSV files (the draw event fills them and the returned State with
    the figure's JSON) and an "Export PNG" button that renders that figure on demand."""
    with gr.Row():
        files = gr.File(label="Download: interactive HTML and CSV", file_count="multiple", interactive=False,
                        height=120)
        with gr.Column(scale=0, min_width=160):
            png_button = gr.Button("Export PNG", size="sm")
            png_file = gr.File(label="PNG", interactive=False, height=120)
    figure_json = gr.State(None)

    @friendly
    def on_png(value):
        return png_export(value, stem)

    png_button.click(on_png, figure_json, png_file, api_name=api_name)
    return files, figure_json


# ---- tabs that open on a figure of their default items (Similarity, Map) -----------------------------------------
# The figure is drawn on its own at start-up; ``shown`` holds the ids it was drawn from. Opening the tab again redraws
# it when the default items changed (a job stored new prompts), until the user draws: then the figure is theirs.
ITEM_KINDS = ("vector", "prompt", "origin")  # what their item pickers list


def draw_quietly(draw: Callable[..., tuple], *args) -> tuple | None:
    """``draw(*args)``, or None where it cannot draw (too few items, items of different lengths...): a figure drawn
    on its own leaves the tab empty instead, and the user hears why when they draw."""
    try:
        return draw(*args)
    except StudioError:
        return None


def refreshed_items(state: AppState, current, default_ids: list[str]) -> gr.Dropdown:
    """The item picker with fresh choices; its selection kept where its items still exist, else ``default_ids``."""
    choices = item_choices(state, ITEM_KINDS)
    return refreshed(choices, current, still_chosen(current, (value for _, value in choices), default_ids))


def reopened(state: AppState, current, shown_ids: list[str] | None, default_ids: list[str],
             first_view: Callable[[list[str]], tuple | None]) -> tuple:
    """What opening the tab sends to (picker, plot, text, shown): while the figure shown is the one drawn on its own
    and the default items changed, ``first_view`` of them (figure, text, ...) with the picker set to them; otherwise
    the refreshed picker and the figure left as it is."""
    if shown_ids is not None and default_ids != shown_ids and (drawn := first_view(default_ids)) is not None:
        picker = gr.Dropdown(choices=item_choices(state, ITEM_KINDS), value=default_ids, multiselect=True)
        return picker, drawn[0], drawn[1], default_ids
    return refreshed_items(state, current, default_ids), gr.skip(), gr.skip(), shown_ids


def layout_items(state: AppState, default_ids: list[str], label: str) -> tuple[gr.Dropdown, gr.Button]:
    """The item picker, set to ``default_ids``, and its Refresh button in one row."""
    with gr.Row():
        items = gr.Dropdown(item_choices(state, ITEM_KINDS), value=default_ids, multiselect=True,
                            allow_custom_value=True, label=label, scale=5)
        refresh = gr.Button("Refresh list", scale=0, size="sm")
    return items, refresh


@dataclass
class FirstFigure:
    """The figure, the text above it (``draw``'s first two results), its download row, and what it was drawn from."""

    text: gr.Markdown
    plot: gr.Plot
    files: gr.File
    figure_json: gr.State
    shown: gr.State  # the ids of the figure drawn on its own (at start-up or on opening); None once the user draws

    @property
    def drawn(self) -> list:
        """What a draw event fills, in its order."""
        return [self.plot, self.text, self.files, self.figure_json]


def layout_first_figure(first: tuple | None, default_ids: list[str], label: str, elem_id: str, stem: str,
                        png_api_name: str) -> FirstFigure:
    """The figure area, showing ``first`` (the figure drawn on its own, or None) of ``default_ids``."""
    text = gr.Markdown(first[1] if first else "")
    plot = gr.Plot(first[0] if first else None, label=label, elem_id=elem_id)
    files, figure_json = export_row(stem, png_api_name)
    return FirstFigure(text, plot, files, figure_json, gr.State(default_ids if first else None))


def wire_draw(triggers: list, handler: Callable, inputs: list, figure: FirstFigure, api_name: str) -> None:
    """The draw event (``api_name``) and, once it succeeded, ``figure.shown`` cleared (``{api_name}_drawn``): a
    figure the user drew is not replaced on opening the tab."""
    gr.on(triggers, handler, inputs, figure.drawn, api_name=api_name).success(
        lambda: None, None, figure.shown, api_name=f"{api_name}_drawn", api_visibility="private")
