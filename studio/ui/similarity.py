"""Similarity tab: a heatmap of how alike task prompt vectors (or raw prompts) are, across tasks and origins.

The tab opens on the heatmap of every TPV drawn at start-up; opening the tab again renews the choices and, while the
heatmap shown is that automatic one, redraws it if the library changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import gradio as gr

from studio import analysis, plots
from studio.prompts import SIMILARITY_MEASURES, is_cosine
from studio.ui.common import (
    AppState,
    FirstFigure,
    draw_quietly,
    explain,
    figure_exports,
    friendly,
    layout_first_figure,
    layout_items,
    refreshed_items,
    reopened,
    wire_draw,
)

VIEWS = [("vectors: tau = tuned prompt - origin", "vectors"), ("prompts: the tuned matrices P", "prompts")]
ORDERS = [("task, then origin", "task"), ("origin, then task", "origin"), ("cluster (average linkage)", "cluster")]


def unique_labels(labels: list[str], ids: list[str]) -> list[str]:
    """Plotly merges equal category labels: keep them apart by adding the id where a label repeats."""
    return [f"{label} [{item_id}]" if labels.count(label) > 1 else label for label, item_id in zip(labels, ids)]


def summary_text(stats: dict, as_vectors: bool) -> str:
    """The one line under the heatmap: same task across origins vs different tasks."""
    measure = stats["measure"]
    if not stats["n_same"] and not stats["n_different"]:
        return "No pairs with known tasks to summarise."

    def mean(key: str, count: str) -> str:
        return "n/a (no pairs)" if math.isnan(stats[key]) else f"**{stats[key]:.3f}** ({stats[count]} pairs)"

    what = "TPVs" if as_vectors else "prompts"
    line = (f"Mean {measure} of {what}: same task across origins {mean('same_task', 'n_same')} · different tasks "
            f"{mean('different_task', 'n_different')}.")
    if is_cosine(measure) and not math.isnan(stats["same_task"]) and not math.isnan(stats["different_task"]):
        gap = stats["same_task"] - stats["different_task"]
        line += f" Gap {gap:+.3f}: " + ("the task, not the random origin, decides what a TPV looks like."
                                        if as_vectors and gap > 0.1 else
                                        "compare with the other view (vectors vs prompts).")
    return line + f"  \n*Shown:* {SIMILARITY_MEASURES[measure]}."


def draw(state: AppState, ids: list[str] | None, view: str, measure: str, order: str):
    """The heatmap, its summary line and its CSV (header, rows); ``analysis.similarity_table`` checks the choice."""
    as_vectors = analysis.compares_vectors(view)
    table = analysis.similarity_table(state.library, ids, measure, as_vectors, order)
    ids_sorted = [item.id for item in table.items]
    labels = unique_labels(table.labels, ids_sorted)
    hover = [f"{item.name} ({item.id})" for item in table.items]
    cosine = is_cosine(measure)
    figure = plots.heatmap(table.matrix, labels, f"{measure} of {'task prompt vectors' if as_vectors else 'prompts'}",
                           measure, hover, zmin=-1.0 if cosine else None, zmax=1.0 if cosine else None)
    rows = [[label, item_id, *(round(float(v), 6) for v in row)]
            for label, item_id, row in zip(labels, ids_sorted, table.matrix)]
    stats = analysis.same_vs_different(table)
    return figure, summary_text(stats, as_vectors), ["item", "id", *labels], rows


def first_view(state: AppState, ids: list[str]) -> tuple | None:
    """The default heatmap (every TPV, token-mean cosine), drawn when the app starts so the tab opens on it."""
    return draw_quietly(draw, state, ids, "vectors", "token_mean_cosine", "task")


def default_ids(state: AppState) -> list[str]:
    """Every TPV of the model."""
    return [item.id for item in state.library.items(kind="vector", model=state.model_name)]


# ---- event handlers: ``state`` first, bound with functools.partial when wired --------------------------------------
@friendly
def on_draw(state: AppState, ids, view, measure, order) -> tuple:
    figure, text, header, rows = draw(state, ids, view, measure, order)
    return figure, text, figure_exports(figure, "similarity", header, rows), figure.to_json()


@friendly
def on_refresh(state: AppState, current) -> gr.Dropdown:
    """Fresh choices; the selection is kept where its items still exist."""
    return refreshed_items(state, current, default_ids(state))


@friendly
def on_open(state: AppState, current, shown_ids) -> tuple:
    """Fresh choices; and while the tab shows the automatic heatmap, redraw it if the library changed."""
    return reopened(state, current, shown_ids, default_ids(state), partial(first_view, state))


# ---- layout and wiring --------------------------------------------------------------------------------------------
@dataclass
class SimilarityView:
    items: gr.Dropdown
    refresh: gr.Button
    view: gr.Radio
    measure: gr.Dropdown
    order: gr.Radio
    run: gr.Button
    figure: FirstFigure  # the heatmap and its summary line


def layout(state: AppState) -> SimilarityView:
    ids = default_ids(state)
    items, refresh = layout_items(state, ids, "Items (default: every TPV of the model)")
    with gr.Row():
        view = gr.Radio(VIEWS, value="vectors", label="Compare as")
        measure = gr.Dropdown([(f"{name}: {text}", name) for name, text in SIMILARITY_MEASURES.items()],
                              value="token_mean_cosine", label="Measure")
        order = gr.Radio(ORDERS, value="task", label="Order")
    run = gr.Button("Draw heatmap", variant="primary")
    figure = layout_first_figure(first_view(state, ids), ids, "Similarity", "similarity-plot", "similarity",
                                 "similarity_png")
    return SimilarityView(items, refresh, view, measure, order, run, figure)


def wire(state: AppState, ui: SimilarityView, tab: gr.Tab) -> None:
    """Drawing (the button and every setting), Refresh, and opening the tab."""
    wire_draw([ui.run.click, ui.view.input, ui.measure.input, ui.order.input], partial(on_draw, state),
              [ui.items, ui.view, ui.measure, ui.order], ui.figure, api_name="similarity")
    ui.refresh.click(partial(on_refresh, state), ui.items, ui.items, api_name="similarity_refresh")
    tab.select(partial(on_open, state), [ui.items, ui.figure.shown],
               [ui.items, ui.figure.plot, ui.figure.text, ui.figure.shown],
               api_name="similarity_on_open", api_visibility="private")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Similarity tab inside ``tab``."""
    explain("Each cell is the similarity of two task prompt vectors (tau = tuned prompt - its random origin) or of two "
            "raw prompts; hover a cell for the number. TPVs of the same task agree across origins while different "
            "tasks do not, whereas raw prompts that share an origin look alike whatever their task.")
    wire(state, layout(state), tab)
