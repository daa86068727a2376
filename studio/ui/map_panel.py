"""Map tab: UMAP / PCA projections of prompts and task prompt vectors, and the nearest vocabulary tokens.

The tab opens on a map drawn at start-up (the prebuilt library's stored UMAP when the items are its own); opening
the tab again renews the choices and, while the map shown is that automatic one, redraws it if the library changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from studio import StudioError, analysis, plots, views
from studio.projection import choose_method, warm_umap
from studio.prompts import nearest_tokens
from studio.ui.common import (
    AppState,
    FirstFigure,
    WholeNumber,
    draw_quietly,
    explain,
    figure_exports,
    friendly,
    item_choices,
    layout_first_figure,
    layout_items,
    plain,
    refreshed_items,
    reopened,
    wire_draw,
)

METHODS = [("UMAP", "umap"), ("PCA", "pca")]
VIEWS = [("one point per item (flattened matrix)", "items"), ("one point per virtual token", "tokens")]
CSV_HEADER = ["x", "y", "z", "id", "name", "kind", "task", "origin", "token", "metrics"]
TOKEN_KINDS = ("prompt", "origin", "vector")  # what the nearest-token lookup lists (a vector shows its tuned prompt)


def draw(state: AppState, ids: list[str] | None, method: str, dims, colour: str, view: str, seed) -> tuple:
    """The map, its note and its CSV rows; ``analysis.check_map`` checks the settings, ``choose_method`` the
    projection (the prebuilt library's stored coordinates where they are of exactly these items)."""
    ids, dims, seed, per_token = analysis.check_map(ids, dims, colour, view, seed)
    stored = None if per_token else views.stored_map(state.views, ids, method, dims, seed)
    method, why = choose_method(method, None if per_token else len(ids), stored is not None)
    points = analysis.map_points(state.library, ids, method, dims, seed, per_token=per_token, stored=stored)
    title = f"{method.upper()} of {len(points.records)} {'tokens' if per_token else 'items'} (coloured by {colour})"
    figure = plots.scatter_map(points.coords, points.records, colour, title)
    rows = [[*(round(float(v), 6) for v in xyz), *([""] * (3 - len(xyz))),
             *(record[k] for k in CSV_HEADER[3:])] for xyz, record in zip(points.coords, points.records)]
    return figure, why + points.note + ".", rows


def tokens_table(state: AppState, item_id: str | None, k) -> tuple[list[list], str]:
    if not item_id:
        raise StudioError("choose a prompt to look up")
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise StudioError("the number of tokens must be a whole number") from None
    if not 1 <= k <= 20:
        raise StudioError("show between 1 and 20 nearest tokens")
    item = state.library.get(item_id)
    note = f"{plain(item.name)}: nearest vocabulary tokens by cosine to each virtual token's embedding."
    source = item.id
    if item.kind == "vector":
        if not item.prompt_id:
            raise StudioError(f"{item.id} is a vector without its tuned prompt: choose a prompt or an origin")
        source = item.prompt_id
        note = (f"{plain(item.name)} is a difference of prompts, not an embedding: showing its tuned prompt {source}. "
                + note.split(": ", 1)[1])
    backbone = state.backbone()
    if item.model != backbone.name:
        raise StudioError(f"{item.id} was made for {item.model}, not {backbone.name}")
    nearest = nearest_tokens(backbone, state.library.tensor(source), k)
    rows = [[index, *(f"{token!r} {score:.2f}" for token, score in row)] for index, row in enumerate(nearest)]
    return rows, note


def first_view(state: AppState, ids: list[str]) -> tuple | None:
    """The default map, drawn at start-up so the tab opens on it: the prebuilt library's stored UMAP coordinates
    when the default items are exactly the prebuilt ones, else PCA (UMAP compiles for ~30 s on first use)."""
    method = "umap" if views.stored_map(state.views, ids, "umap", 2, 0) is not None else "pca"
    return draw_quietly(draw, state, ids, method, 2, "task", "items", 0)


def default_ids(state: AppState) -> list[str]:
    """Every prompt and TPV of the model (``views.map_ids``)."""
    return views.map_ids(state.library, state.model_name)


def token_picker(state: AppState) -> gr.Dropdown:
    """Fresh choices for the nearest-token lookup."""
    return gr.Dropdown(choices=item_choices(state, TOKEN_KINDS))


# ---- event handlers: ``state`` first, bound with functools.partial when wired --------------------------------------
@friendly
def on_draw(state: AppState, ids, method, dims, colour, view, seed) -> tuple:
    figure, text, rows = draw(state, ids, method, dims, colour, view, seed)
    return figure, text, figure_exports(figure, "map", CSV_HEADER, rows), figure.to_json()


@friendly
def on_lookup(state: AppState, item_id, k) -> tuple:
    import pandas as pd

    rows, text = tokens_table(state, item_id, k)
    return pd.DataFrame(rows, columns=["virtual token", *(f"#{n + 1}" for n in range(int(k)))]), text


@friendly
def on_refresh(state: AppState, current) -> tuple:
    """Fresh choices for both pickers; the map's selection is kept where its items still exist."""
    return refreshed_items(state, current, default_ids(state)), token_picker(state)


@friendly
def on_open(state: AppState, current, shown_ids) -> tuple:
    """Fresh choices; and while the tab shows the automatic map, redraw it if the library changed."""
    items, plot, note, shown = reopened(state, current, shown_ids, default_ids(state), partial(first_view, state))
    return items, token_picker(state), plot, note, shown


# ---- layout -------------------------------------------------------------------------------------------------------
@dataclass
class MapView:
    """The map's settings and figure, and the nearest-token lookup."""

    items: gr.Dropdown
    refresh: gr.Button
    method: gr.Radio
    dims: gr.Radio
    colour: gr.Radio
    view: gr.Radio
    seed: gr.Number
    run: gr.Button
    figure: FirstFigure  # the map and its note
    token_item: gr.Dropdown
    top_k: gr.Slider
    lookup: gr.Button
    token_note: gr.Markdown
    token_rows: gr.Dataframe

    @property
    def settings(self) -> list:
        """``draw``'s arguments after the state."""
        return [self.items, self.method, self.dims, self.colour, self.view, self.seed]


def layout_map(state: AppState) -> tuple:
    """The map's pickers and its first figure (``first_view``)."""
    ids = default_ids(state)
    items, refresh = layout_items(state, ids, "Items (default: every prompt and TPV of the model)")
    with gr.Row():
        method = gr.Radio(METHODS, value="umap", label="Projection")
        dims = gr.Radio([2, 3], value=2, label="Dimensions")
        colour = gr.Radio(list(analysis.MAP_COLOURS), value="task", label="Colour by")
        view = gr.Radio(VIEWS, value="items", label="Points")
        seed = WholeNumber(0, label="Seed", minimum=0)
    run = gr.Button("Draw map", variant="primary")
    figure = layout_first_figure(first_view(state, ids), ids, "Map", "map-plot", "map", "map_png")
    return items, refresh, method, dims, colour, view, seed, run, figure


def layout(state: AppState) -> MapView:
    drawn = layout_map(state)
    gr.Markdown("### Nearest vocabulary tokens\nWhich real tokens each virtual token of a prompt is closest to "
                "(cosine in the input-embedding space). Tuned prompts usually drift away from every real token.")
    with gr.Row():
        token_item = gr.Dropdown(item_choices(state, TOKEN_KINDS), allow_custom_value=True,
                                 label="Prompt (a vector shows its tuned prompt)", scale=4)
        top_k = gr.Slider(1, 10, value=5, step=1, label="Tokens per virtual token")
        lookup = gr.Button("Look up", scale=0)
    token_note = gr.Markdown()
    token_rows = gr.Dataframe(headers=["virtual token", "nearest"], interactive=False, wrap=True)
    return MapView(*drawn, token_item, top_k, lookup, token_note, token_rows)


# ---- wiring -------------------------------------------------------------------------------------------------------
def wire(state: AppState, ui: MapView, tab: gr.Tab) -> None:
    """Drawing (the button and every setting), the lookup, Refresh, and opening the tab."""
    wire_draw([ui.run.click, ui.method.input, ui.dims.input, ui.colour.input, ui.view.input], partial(on_draw, state),
              ui.settings, ui.figure, api_name="map")
    gr.on([ui.lookup.click, ui.token_item.input], partial(on_lookup, state), [ui.token_item, ui.top_k],
          [ui.token_rows, ui.token_note], api_name="nearest_tokens")
    ui.refresh.click(partial(on_refresh, state), ui.items, [ui.items, ui.token_item], api_name="map_refresh")
    tab.select(partial(on_open, state), [ui.items, ui.figure.shown],
               [ui.items, ui.token_item, ui.figure.plot, ui.figure.text, ui.figure.shown],
               api_name="map_on_open", api_visibility="private")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Map tab inside ``tab``."""
    explain("Each point is a prompt or a task prompt vector (or one virtual token of it), placed by UMAP or PCA so "
            "that similar ones sit close together; hover a point for its details. Colour by task to see TPVs group "
            "by task, and by origin to see that raw prompts group by their random start instead.")
    # compile UMAP in the background once the model is warm (both at once doubled the model's warm-up on 2 cores);
    # PCA is shown until it is ready, and asking for UMAP earlier starts it at once
    state.after_warm_up(warm_umap)
    wire(state, layout(state), tab)
