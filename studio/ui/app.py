"""Assemble the tabs into one Gradio app.

Each tab module exposes ``build(state, tab, app)``: ``app.py`` creates the ``gr.Tab`` and passes it in, with the
app's ``gr.Blocks``, so a panel refreshes on ``tab.select`` and reloads on ``app.load`` through public Gradio API.
"""

from __future__ import annotations

import gradio as gr

from studio.config import max_upload_bytes
from studio.files import sweep_dead_scratch
from studio.library import open_library
from studio.tasks import set_task_owner
from studio.ui import arithmetic, guide, library_panel, map_panel, similarity, transfer, tune_panel
from studio.ui.common import AppState
from studio.ui.visitors import Visitors, visitor_mode

TITLE = "Prompt Arithmetic Studio"
CSS = (".explain {font-size: 0.95rem; opacity: 0.85; margin-bottom: 0.4rem} "
       ".banner {border-left: 4px solid #d97706; padding: 0.3rem 0.8rem; background: rgba(217, 119, 6, 0.08)}")
TEMPORARY_BANNER = (
    "**This Space's disk is temporary**: what you tune, import or save lives until the Space restarts. Keep it with "
    "**Library → Your whole library → Download my library** (and restore it there later), or ask the Space's owner "
    "to mount a storage bucket and set `STUDIO_LIBRARY` (docs: README, Hosting as a Hugging Face Space).")


def visitors_banner(state: AppState) -> str:
    """What a visitor of a public Space must know: whose library they see, how long it lasts, their limits."""
    from studio.ui.visitors import SESSION_LIBRARY_IDLE_S, limits_text

    return (f"**Your own space on this public studio**: the Library, Tune jobs and saved prompts you see are yours "
            f"alone (the prebuilt library is shared, read-only). Signed in with Hugging Face, your library is there "
            f"again on your next visit; signed out, it lasts while this page stays open (and is removed "
            f"{SESSION_LIBRARY_IDLE_S // 3600} h after its last use): **Library → Download my library** keeps it. "
            f"One queue serves everyone, first come first served: {limits_text(state.visitors.max_active_jobs)}.")


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
    # panels start warm-up threads that load the model: transformers replaces its own module object while it is
    # first imported, and a thread importing it at the same time as this one gets a half-made module. Import it
    # here, once, before any thread starts.
    import transformers  # noqa: F401
    # Gradio keeps a copy of every file it serves; drop copies older than an hour, checked every half hour
    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600)) as app:
        gr.Markdown(f"# {TITLE}\nTune soft prompts, compare **task prompt vectors** (tuned prompt minus its random "
                    f"origin) and do arithmetic on them. Model: `{state.model_name}`.")
        if state.visitors:
            gr.Markdown(visitors_banner(state), elem_classes="banner")
        if temporary_library():
            gr.Markdown(TEMPORARY_BANNER, elem_classes="banner")
        with gr.Tabs() as tabs:
            for name, module in TABS:
                with gr.Tab(name, id=name.lower()) as tab:
                    module.build(state, tab, app)
        app.load(open_tab_of_link, None, tabs, api_visibility="private", show_progress="hidden")
    return app


def open_tab_of_link(request: gr.Request):
    """A link with ``?tab=NAME`` (e.g. Arithmetic's shared combinations) opens on that tab."""
    wanted = (request.query_params.get("tab") or "").lower()
    return gr.Tabs(selected=wanted) if wanted in {name.lower() for name, _ in TABS} else gr.skip()


def create(library_dir: str | None = None, model: str | None = None, prebuilt: bool = True,
           warming=None) -> tuple[gr.Blocks, AppState]:
    """The app over the library in ``library_dir`` (the prebuilt one beneath it), its model warming up meanwhile
    (``warming``: a warm-up thread already started, ``studio.live.start_warm_up``). With ``STUDIO_VISITORS=own``
    (the default on a Space) each visitor gets their own library under ``library_dir/visitors``."""
    sweep_dead_scratch()  # what a killed studio left in the temporary folder
    state = AppState(open_library(library_dir, prebuilt=prebuilt))
    if visitor_mode() == "own":
        state.visitors = Visitors(state.home_library, state.shared_runner)
    # a visitor's uploaded data files are theirs alone (a task name another visitor types finds nothing)
    set_task_owner(state.visitors.key if state.visitors else None)
    if model:
        state.model_name = model
    state.warm_up(warming)
    return build_app(state), state


def serve(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True, mcp: bool = False,
          quiet: bool = False, public: bool = False) -> None:
    """Serve the app as every server of the studio does (``launch.py`` and the tests): the queue, the page's CSS,
    the upload limit; ``block=False`` returns once the server is up. ``public`` (a library per visitor): Gradio's
    direct REST routes are closed, as Gradio itself does on a Space, so that every call joins the queue with the
    session that tells visitors apart."""
    app.queue(default_concurrency_limit=4, api_open=not public).launch(
        server_name=host, server_port=port, share=False, css=CSS, show_error=True, mcp_server=mcp, quiet=quiet,
        max_file_size=max_upload_bytes(), prevent_thread_lock=not block)
