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
CSS = (".explain {font-size: 0.95rem; opacity: 0.85; margin-bottom: 0.4rem} "
       ".banner {border-left: 4px solid #d97706; padding: 0.3rem 0.8rem; background: rgba(217, 119, 6, 0.08)}")
TEMPORARY_BANNER = (
    "**This Space's disk is temporary**: what you tune, import or save lives until the Space restarts. Keep it with "
    "**Library → Your whole library → Download my library** (and restore it there later), or ask the Space's owner "
    "to mount a storage bucket and set `STUDIO_LIBRARY` (docs: README, Hosting as a Hugging Face Space).")


def temporary_library() -> bool:
    """On a Space whose library is not on mounted storage (``STUDIO_LIBRARY``), the visitor must be told."""
    import os

    from studio.space import on_space

    return on_space() and not os.environ.get("STUDIO_LIBRARY")

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
        if temporary_library():
            gr.Markdown(TEMPORARY_BANNER, elem_classes="banner")
        with gr.Tabs():
            for name, module in TABS:
                with gr.Tab(name, id=name.lower()) as tab:
                    module.build(state, tab, app)
    return app


def create(library_dir: str | None = None, model: str | None = None, prebuilt: bool = True,
           warming=None) -> tuple[gr.Blocks, AppState]:
    """The app over the library in ``library_dir`` (the prebuilt one beneath it), its model warming up meanwhile
    (``warming``: a warm-up thread already started, ``studio.live.start_warm_up``)."""
    state = AppState(open_library(library_dir, prebuilt=prebuilt))
    if model:
        state.model_name = model
    state.warm_up(warming)
    return build_app(state), state
