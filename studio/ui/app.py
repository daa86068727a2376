"""Assemble the tabs into one Gradio app.

Each tab module exposes ``build(state, tab, app)``: ``app.py`` creates the ``gr.Tab`` and passes it in, with the
app's ``gr.Blocks``, so a panel refreshes on ``tab.select`` and reloads on ``app.load`` through public Gradio API.
"""

from __future__ import annotations

import gradio as gr

from studio.library import open_library
from studio.ui import arithmetic, guide, library_panel, map_panel, similarity, transfer, tune_panel
from studio.ui.common import AppState

TITLE = "Prompt Arithmetic Studio"
CSS = ".explain {font-size: 0.95rem; opacity: 0.85; margin-bottom: 0.4rem}"

TABS = [
    ("Guide", guide),
    ("Library", library_panel),
    ("Tune", tune_panel),
    ("Similarity", similarity),
    ("Map", map_panel),
    ("Arithmetic", arithmetic),
    ("Transfer", transfer),
]


def build_app(state: AppState) -> gr.Blocks:
    """One tab per panel module (tab id = its name in lower case)."""
    # Gradio keeps a copy of every file it serves; drop copies older than an hour, checked every half hour
    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600)) as app:
        gr.Markdown(f"# {TITLE}\nTune soft prompts, compare **task prompt vectors** (tuned prompt minus its random "
                    f"origin) and do arithmetic on them. Model: `{state.model_name}`.")
        with gr.Tabs():
            for name, module in TABS:
                with gr.Tab(name, id=name.lower()) as tab:
                    module.build(state, tab, app)
    return app


def create(library_dir: str | None = None, model: str | None = None, prebuilt: bool = True) -> tuple[gr.Blocks, AppState]:
    """The app over the library in ``library_dir`` (the prebuilt one beneath it), its model warming up meanwhile."""
    state = AppState(open_library(library_dir, prebuilt=prebuilt))
    if model:
        state.model_name = model
    state.warm_up()
    return build_app(state), state
