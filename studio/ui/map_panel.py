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
    WholeNumber,
    explain,
    export_row,
    figure_exports,
    friendly,
    item_choices,
    plain,
    refreshed,
)

METHODS = [("UMAP", "umap"), ("PCA", "pca")]
COLOURS = ("task", "origin", "kind")
VIEWS = [("one point per item (flattened matrix)", "items"), ("one point per virtual token", "tokens")]
CSV_HEADER = ["x", "y", "z", "id", "name", "kind", "task", "origin", "token", "metrics"]


def draw(state: AppState, ids: list[str] | None, method: str, dims, colour: str, view: str, seed) -> tuple:
    ids = [i for i in (ids or []) if i]
    if not ids:
        raise StudioError("choose at least one prompt or vector to draw")
    if colour not in COLOURS:
        raise StudioError(f"colour by one of {', '.join(COLOURS)}, not {colour!r}")
    if view not in ("items", "tokens"):
        raise StudioError(f"unknown view {view!r}: use items or tokens")
    try:
        dims, seed = int(dims), int(seed if seed is not None else 0)
    except (TypeError, ValueError):
        raise StudioError("dimensions must be 2 or 3 and the seed a whole number") from None
    if not 0 <= seed < 2**32:
        raise StudioError(f"the seed must be a whole number from 0 to {2**32 - 1}, got {seed}")
    stored = views.stored_map(state.views, ids, method, dims, seed) if view == "items" else None
    method, why = choose_method(method, len(set(ids)) if view == "items" else None, stored is not None)
    points = analysis.map_points(state.library, ids, method, dims, seed, per_token=view == "tokens", stored=stored)
    kinds = "tokens" if view == "tokens" else "items"
    title = f"{method.upper()} of {len(points.records)} {kinds} (coloured by {colour})"
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
    try:
        return draw(state, ids, method, 2, "task", "items", 0) if ids else None
    except StudioError:  # e.g. items of different lengths: the tab opens empty and says why when drawn
        return None


def default_ids(state: AppState) -> list[str]:
    """Every prompt and TPV of the model (``views.map_ids``)."""
    return views.map_ids(state.library, state.model_name)


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
    choices = item_choices(state, ("vector", "prompt", "origin"))
    known = {value for _, value in choices}
    kept = [i for i in (current or []) if i in known]
    return (refreshed(choices, current, kept or default_ids(state)),
            gr.Dropdown(choices=item_choices(state, ("prompt", "origin", "vector"))))


@friendly
def on_open(state: AppState, current, shown_ids) -> tuple:
    """Fresh choices; and while the tab shows the automatic map, redraw it if the library changed."""
    ids = default_ids(state)
    lists = on_refresh(state, current)
    if shown_ids is None or ids == shown_ids or (drawn := first_view(state, ids)) is None:
        return *lists, gr.skip(), gr.skip(), shown_ids
    return gr.Dropdown(choices=item_choices(state, ("vector", "prompt", "origin")), value=ids), lists[1], \
        drawn[0], drawn[1], ids


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
    note: gr.Markdown
    plot: gr.Plot
    files: gr.File
    figure_json: gr.State
    shown: gr.State  # the ids of the map drawn on its own (at start-up or on opening); None once the user draws
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
    with gr.Row():
        items = gr.Dropdown(item_choices(state, ("vector", "prompt", "origin")), value=default_ids(state),
                            multiselect=True, allow_custom_value=True,
                            label="Items (default: every prompt and TPV of the model)", scale=5)
        refresh = gr.Button("Refresh list", scale=0, size="sm")
    with gr.Row():
        method = gr.Radio(METHODS, value="umap", label="Projection")
        dims = gr.Radio([2, 3], value=2, label="Dimensions")
        colour = gr.Radio(list(COLOURS), value="task", label="Colour by")
        view = gr.Radio(VIEWS, value="items", label="Points")
        seed = WholeNumber(0, label="Seed", minimum=0)
    run = gr.Button("Draw map", variant="primary")
    first = first_view(state, default_ids(state))
    note = gr.Markdown(first[1] if first else "")
    plot = gr.Plot(first[0] if first else None, label="Map", elem_id="map-plot")
    files, figure_json = export_row("map", "map_png")
    shown = gr.State(default_ids(state) if first else None)
    return items, refresh, method, dims, colour, view, seed, run, note, plot, files, figure_json, shown


def layout(state: AppState) -> MapView:
    drawn = layout_map(state)
    gr.Markdown("### Nearest vocabulary tokens\nWhich real tokens each virtual token of a prompt is closest to "
                "(cosine in the input-embedding space). Tuned prompts usually drift away from every real token.")
    with gr.Row():
        token_item = gr.Dropdown(item_choices(state, ("prompt", "origin", "vector")), allow_custom_value=True,
                                 label="Prompt (a vector shows its tuned prompt)", scale=4)
        top_k = gr.Slider(1, 10, value=5, step=1, label="Tokens per virtual token")
        lookup = gr.Button("Look up", scale=0)
    token_note = gr.Markdown()
    token_rows = gr.Dataframe(headers=["virtual token", "nearest"], interactive=False, wrap=True)
    return MapView(*drawn, token_item, top_k, lookup, token_note, token_rows)


# ---- wiring -------------------------------------------------------------------------------------------------------
def wire(state: AppState, ui: MapView, tab: gr.Tab) -> None:
    """Drawing (the button and every setting), the lookup, Refresh, and opening the tab."""
    gr.on([ui.run.click, ui.method.input, ui.dims.input, ui.colour.input, ui.view.input], partial(on_draw, state),
          ui.settings, [ui.plot, ui.note, ui.files, ui.figure_json], api_name="map").success(
        lambda: None, None, ui.shown, api_name="map_drawn", api_visibility="private")
    gr.on([ui.lookup.click, ui.token_item.input], partial(on_lookup, state), [ui.token_item, ui.top_k],
          [ui.token_rows, ui.token_note], api_name="nearest_tokens")
    ui.refresh.click(partial(on_refresh, state), ui.items, [ui.items, ui.token_item], api_name="map_refresh")
    tab.select(partial(on_open, state), [ui.items, ui.shown], [ui.items, ui.token_item, ui.plot, ui.note, ui.shown],
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
