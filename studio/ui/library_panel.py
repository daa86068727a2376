"""Library tab: browse, filter, inspect, rename, delete, export and import origins, prompts and TPVs, and share
them through the Hugging Face Hub.

Thin wiring over ``studio.library.Library`` and ``studio.hub``: every rule (prebuilt items are read-only, imports
are checked for pickles, width, NaN..., a pull checks everything before it stores anything) lives there; this
module only turns uploads into folders, typed ids into calls and results into tables and messages.
``layout_*`` make the components (the browser, the selected item, export / import, the whole library, the hub)
and the ``wire_*`` functions attach their events; the table refreshes when the page loads, when the tab opens, and every
few seconds while the catalog changes underneath (a finished job, another tab's save).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from studio import StudioError
from studio.files import export_folder
from studio.library import KINDS, Item, Library
from studio.ui.common import AppState, explain, friendly, plain

ALL = "all"
COLUMNS = ["id", "kind", "source", "task", "origin", "name", "tokens", "|tau|/|origin|", "val acc", "test acc",
           "created"]
EXPORT_FORMATS = ["PEFT adapter (.zip)", "safetensors"]
KIND_FROM_FILE = "as the file says (else prompt)"  # the import menu's no choice: another kind is checked against it


# ---- pure helpers (no gradio) -----------------------------------------------------------------------------------
def _metric(value) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) else None


PULLED = "pulled"  # the source shown for an item of one's own library pulled from a repository (``Item.pulled_from``)
SOURCES = [ALL, "user", PULLED, "prebuilt"]


def shown_source(item: Item) -> str:
    """Where an item comes from, as the table shows and filters it: made or imported here ("user"), pulled from
    a repository (its values could not all be checked: Show details says which one), or the prebuilt library."""
    return PULLED if item.source == "user" and item.pulled_from else item.source


def item_row(item: Item, ratio: float | None = None) -> list:
    """One table row: identity, lineage at a glance, how far tuning moved it (|tau| / |origin|: a TPV transfers
    across origins when this is large), and the numbers people compare first."""
    return [item.id, item.kind, shown_source(item), item.task or "", item.seed if item.seed is not None else "",
            item.name, item.n_tokens, _metric(ratio), _metric(item.accuracy("validation")), _metric(item.accuracy("test")),
            item.created]


def filtered_items(state: AppState, kind: str | None, task: str | None, text: str | None,
                   source: str | None = ALL) -> list[Item]:
    items = state.library.items(kind=None if kind in (None, "", ALL) else kind,
                                task=None if task in (None, "", ALL) else task, text=(text or "").strip() or None)
    return [i for i in items if source in (None, "", ALL) or shown_source(i) == source]


def items_table(items: list[Item], library: Library | None = None) -> pd.DataFrame:
    def ratio(item: Item) -> float | None:
        try:
            return library.scale_ratio(item.id) if library is not None else None
        except StudioError:  # an origin file missing or unreadable: the row still shows
            return None

    return pd.DataFrame([item_row(i, ratio(i)) for i in items], columns=COLUMNS)


def item_details(state: AppState, item_id: str) -> dict:
    """The item with its recipe, metrics and lineage (what it was made from, what was made from it)."""
    return state.library.describe(_clean_id(item_id))


def _clean_id(item_id: str | None) -> str:
    item_id = (item_id or "").strip()
    if not item_id:
        raise StudioError("choose an item first: click a row in the table or type its id")
    return item_id


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "item"


def export_item(state: AppState, item_id: str, fmt: str) -> Path:
    """Write the item to a fresh temporary folder as a zipped PEFT adapter or one safetensors file."""
    item = state.library.get(_clean_id(item_id))
    out = export_folder("export")
    stem = f"{item.id}-{_slug(item.name)}"
    if fmt == EXPORT_FORMATS[1]:
        return state.library.export_safetensors(item.id, out / f"{stem}.safetensors")
    if fmt != EXPORT_FORMATS[0]:
        raise StudioError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    return state.library.export_peft_zip(item.id, out / f"{stem}-peft.zip", state.backbone())


def import_upload(state: AppState, path: str | None, kind: str, task: str | None, name: str | None,
                  origin_id: str | None) -> Item:
    """Import an uploaded .safetensors file or .zip of a PEFT adapter folder; the library checks the contents."""
    if not path:
        raise StudioError("choose a .safetensors file or a .zip of a PEFT adapter folder to import")
    if Path(path).suffix.lower() not in (".safetensors", ".zip"):
        raise StudioError(f"{Path(path).name}: upload a .safetensors file or a .zip of a PEFT adapter folder")
    return state.library.import_file(path, state.backbone(), kind=None if kind == KIND_FROM_FILE else kind,
                                     task=(task or "").strip() or None,
                                     name=(name or "").strip(), origin_id=(origin_id or "").strip() or None)


def task_choices(state: AppState) -> list[str]:
    return [ALL] + sorted({i.task for i in state.library.items() if i.task})


def origin_choices(state: AppState) -> list[tuple[str, str]]:
    return [(f"{i.id} - {i.name}", i.id) for i in state.library.items(kind="origin")]


def listing(state: AppState, kind: str | None, task: str | None, text: str | None, source: str | None) -> pd.DataFrame:
    return items_table(filtered_items(state, kind, task, text, source), state.library)


def catalog_signature(state: AppState) -> str:
    """What the auto refresh compares: ids and names of every item (a new, removed or renamed item changes it)."""
    return json.dumps([[i.id, i.name] for i in state.library.items()])


# ---- event handlers: ``state`` first, bound with functools.partial when wired --------------------------------------
@friendly
def on_list(state: AppState, kind_value: str, task_value: str, text_value: str, source_value: str) -> tuple:
    """The table plus fresh choices for the task filter and the origin picker."""
    return (listing(state, kind_value, task_value, text_value, source_value), gr.update(choices=task_choices(state)),
            gr.update(choices=origin_choices(state)))


@friendly
def on_poll(state: AppState, kind_value: str, task_value: str, text_value: str, source_value: str, last: str) -> tuple:
    """Auto refresh: redraw only when the catalog changed (a job finished, an import...)."""
    now = catalog_signature(state)
    if now == last:
        return gr.skip(), gr.skip(), gr.skip(), last
    return (*on_list(state, kind_value, task_value, text_value, source_value), now)


@friendly
def on_details(state: AppState, item_value: str) -> tuple[dict, str]:
    data = item_details(state, item_value)
    return data, data["name"]


@friendly
def on_rename(state: AppState, item_value: str, name_value: str, *filter_values) -> tuple:
    item = state.library.rename(_clean_id(item_value), name_value or "")
    return listing(state, *filter_values), item_details(state, item.id), f"Renamed **{item.id}** to *{plain(item.name)}*."


@friendly
def on_delete(state: AppState, item_value: str, confirmed: bool, with_cascade: bool, *filter_values) -> tuple:
    item_value = _clean_id(item_value)
    if not confirmed:
        raise StudioError(f"tick 'I understand' to delete {item_value}: deleting cannot be undone")
    deleted = state.library.delete(item_value, cascade=bool(with_cascade))
    return listing(state, *filter_values), None, f"Deleted {', '.join(f'**{d}**' for d in deleted)}.", False, ""


@friendly
def on_export(state: AppState, item_value: str, fmt: str) -> str:
    return str(export_item(state, item_value, fmt))


@friendly
def on_import(state: AppState, path: str | None, kind_value: str, task_value: str, name_value: str,
              origin_value: str, *filter_values) -> tuple:
    item = import_upload(state, path, kind_value, task_value, name_value, origin_value)
    return (*on_list(state, *filter_values), item_details(state, item.id), item.id,
            f"Imported **{item.id}** ({item.kind}, {item.n_tokens} tokens).", None)


# ---- layout -------------------------------------------------------------------------------------------------------
@dataclass
class Browser:
    """The filters and the table."""

    kind: gr.Dropdown
    task: gr.Dropdown
    source: gr.Dropdown
    text: gr.Textbox
    refresh: gr.Button
    table: gr.Dataframe
    signature: gr.State  # the catalog the table shows (``catalog_signature``), for the auto refresh

    @property
    def filters(self) -> list:
        return [self.kind, self.task, self.text, self.source]


@dataclass
class Selection:
    """The selected item: its id, details, rename and delete."""

    item_id: gr.Textbox
    show: gr.Button
    new_name: gr.Textbox
    rename: gr.Button
    confirm: gr.Checkbox
    cascade: gr.Checkbox
    delete: gr.Button
    message: gr.Markdown
    details: gr.JSON


@dataclass
class Files:
    """Export of the selected item and import of a file."""

    export_format: gr.Radio
    export: gr.Button
    exported: gr.File
    upload: gr.File
    kind: gr.Dropdown
    task: gr.Textbox
    name: gr.Textbox
    origin: gr.Dropdown
    start: gr.Button


def layout_browser(state: AppState) -> Browser:
    with gr.Row():
        kind = gr.Dropdown([ALL, *KINDS], value=ALL, label="Kind", scale=1)
        task = gr.Dropdown(task_choices(state), value=ALL, label="Task", allow_custom_value=True, scale=1)
        source = gr.Dropdown(SOURCES, value=ALL, label="Source", scale=1)
        text = gr.Textbox(label="Search id / name / task", placeholder="e.g. mr", scale=2)
        refresh = gr.Button("Refresh", scale=0, min_width=100)
    table = gr.Dataframe(listing(state, ALL, ALL, "", ALL), headers=COLUMNS, interactive=False,
                         label="Library (click a row to select it)", max_height=420, wrap=True)
    return Browser(kind, task, source, text, refresh, table, gr.State(""))


def layout_selection() -> Selection:
    with gr.Row():
        with gr.Column(scale=1):
            item_id = gr.Textbox(label="Selected item id", placeholder="click a row, or type an id")
            show = gr.Button("Show details")
            with gr.Group():
                new_name = gr.Textbox(label="New name")
                rename = gr.Button("Rename")
            with gr.Group():
                confirm = gr.Checkbox(label="I understand: delete this item and its file for good", value=False)
                cascade = gr.Checkbox(label="Also delete items made from it (its TPV...)", value=False)
                delete = gr.Button("Delete", variant="stop")
            message = gr.Markdown()
        with gr.Column(scale=2):
            details = gr.JSON(label="Details: recipe, metrics, lineage")
    return Selection(item_id, show, new_name, rename, confirm, cascade, delete, message, details)


def layout_files(state: AppState) -> Files:
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Export** the selected item (a prompt or origin as a PEFT prompt-tuning adapter that "
                        "`peft.PeftModel.from_pretrained` loads, or any item as one safetensors tensor).")
            export_format = gr.Radio(EXPORT_FORMATS, value=EXPORT_FORMATS[0], label="Format")
            export = gr.Button("Export")
            exported = gr.File(label="Download", interactive=False)
        with gr.Column():
            gr.Markdown("**Import** a `.safetensors` prompt / vector, or a `.zip` of a PEFT prompt-tuning adapter "
                        "folder. Files are checked (never unpickled): model width, shape, finite values.")
            upload = gr.File(label="File to import", file_types=[".safetensors", ".zip"], type="filepath")
            with gr.Row():
                kind = gr.Dropdown([KIND_FROM_FILE, *KINDS], value=KIND_FROM_FILE, label="Kind",
                                   info="a file the studio exported says what it holds; another kind is refused")
                task = gr.Textbox(label="Task (optional)", placeholder="e.g. mr")
            with gr.Row():
                name = gr.Textbox(label="Name (optional)")
                origin = gr.Dropdown(origin_choices(state), value=None, label="Origin id (optional, for its TPV)",
                                     allow_custom_value=True)
            start = gr.Button("Import", variant="primary")
    return Files(export_format, export, exported, upload, kind, task, name, origin, start)


# ---- the whole library: download and restore ------------------------------------------------------------------
@dataclass
class Backup:
    """Your whole library as one zip (the Hub repository layout), and back: what keeps it across a Space restart."""

    download: gr.Button
    downloaded: gr.File
    upload: gr.File
    restore: gr.Button
    message: gr.Markdown


def download_library(state: AppState) -> str:
    """A zip of your items with their lineage: PEFT adapters, origins and TPVs, the catalog and a model card (the
    same layout ``studio hub push`` uploads, so ``studio hub pull`` and Restore read it back)."""
    from studio.files import zip_folder
    from studio.hub import hub_layout

    folder = hub_layout(state.library, None, state.backbone(), export_folder("library") / "my-library")
    return str(zip_folder(folder, folder.with_suffix(".zip")))


def restore_library(state: AppState, path: str | None) -> list[Item]:
    """Store the items of a downloaded library zip (``studio hub pull my-library.zip``: checked as a hub pull is,
    nothing stored unless all is good)."""
    from studio.hub import pull

    if not path:
        raise StudioError("choose a library .zip made by Download my library (or a zipped hub repository)")
    if Path(path).suffix.lower() != ".zip":
        raise StudioError(f"{Path(path).name}: upload the .zip that Download my library made")
    return pull(state.library, path, state.backbone())


@friendly
def on_download(state: AppState) -> str:
    return download_library(state)


@friendly
def on_restore(state: AppState, path: str | None, *filter_values) -> tuple:
    items = restore_library(state, path)
    return (*on_list(state, *filter_values), f"Restored **{len(items)}** item(s) with their lineage.", None)


def layout_backup() -> Backup:
    with gr.Accordion("Your whole library: download it, restore it", open=False):
        gr.Markdown("One zip of every item you made or imported, with lineage, recipes and metrics (the Hub "
                    "repository layout: PEFT adapters, safetensors, a catalog, a model card). Restore it here later, "
                    "or on another machine, or with `studio hub pull FOLDER`.")
        with gr.Row():
            with gr.Column():
                download = gr.Button("Download my library")
                downloaded = gr.File(label="Library zip", interactive=False, height=110)
            with gr.Column():
                upload = gr.File(label="Library zip to restore", file_types=[".zip"], type="filepath", height=110)
                restore = gr.Button("Restore")
        message = gr.Markdown()
    return Backup(download, downloaded, upload, restore, message)


def wire_backup(state: AppState, browser: Browser, files: Files, backup: Backup) -> None:
    """Download the whole library; restore one (the table and the choices follow)."""
    backup.download.click(partial(on_download, state), None, backup.downloaded, api_name="library_download")
    backup.restore.click(partial(on_restore, state), [backup.upload, *browser.filters],
                         [browser.table, browser.task, files.origin, backup.message, backup.upload],
                         api_name="library_restore")


# ---- the Hugging Face Hub: push, pull ---------------------------------------------------------------------------
PUSH_SCOPES = ["the selected item(s)", "my whole library"]
OVERWRITE_LABEL = "Replace a repository the studio did not write"


@dataclass
class Sharing:
    """Push items to a Hub model repository, pull one into the library (``studio hub push`` / ``pull``)."""

    login: gr.LoginButton | None  # only on a Space that offers Sign in with Hugging Face
    push_repo: gr.Textbox
    scope: gr.Radio
    private: gr.Checkbox
    overwrite: gr.Checkbox
    push: gr.Button
    pull_repo: gr.Textbox
    revision: gr.Textbox
    origin: gr.Textbox
    pull: gr.Button
    message: gr.Markdown


def sign_in_available() -> bool:
    """Sign in with Hugging Face exists only on a Space whose README asks for it (``hf_oauth: true``; the platform
    then sets ``OAUTH_CLIENT_ID``) and that installed ``gradio[oauth]``: with a LoginButton on the page Gradio
    refuses to start without those. Elsewhere it would need this machine's own hub login (and the network) just to
    start, so the page uses huggingface_hub's usual token instead. Gradio itself takes ``SYSTEM=spaces`` (set by
    the platform beside ``SPACE_ID``) as the sign of a Space: a simulated Space without it gets no button."""
    from studio.space import on_space

    return (on_space() and os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))
            and _oauth_installed())


def _oauth_installed() -> bool:
    """Whether ``gradio[oauth]`` (authlib, itsdangerous) is installed."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("authlib", "itsdangerous"))


def visitor_token(oauth_token: gr.OAuthToken | None, needed: bool) -> str | bool | None:
    """The token a hub call uses, handed on and never kept: the visitor's own (Sign in) when there is one. On a Space
    never the Space's own token: without a sign-in a push is refused and a pull reads public repositories only
    (False). Elsewhere None: huggingface_hub's usual one (HF_TOKEN, `hf auth login`)."""
    from studio.space import on_space

    if oauth_token is not None and oauth_token.token:
        return oauth_token.token
    if not on_space():
        return None
    if needed:
        if not sign_in_available():
            raise StudioError("this Space does not offer Sign in with Hugging Face (it needs hf_oauth: true in its "
                              "README and gradio[oauth] in requirements.txt): push from your own machine with "
                              "`studio hub push`")
        raise StudioError("sign in with Hugging Face first (the button above): a push writes to your account")
    return False


def _item_ids(text: str | None) -> list[str]:
    ids = [part for part in re.split(r"[\s,]+", (text or "").strip()) if part]
    if not ids:
        raise StudioError("choose what to push: click a row (or type ids separated by commas in Selected item id), "
                          "or choose 'my whole library'")
    return ids


def push_to_hub(state: AppState, item_text: str | None, scope: str, repo_value: str | None, private: bool,
                token: str | None, api=None, progress=None, overwrite: bool = False) -> str:
    """``studio.hub.push`` of the selected items (or the whole library) with their lineage; a message with the
    repository's address. ``overwrite``: replace a repository the studio did not write (the box under the push
    button; the hub refuses it otherwise). ``api`` (an ``HfApi``) is for tests."""
    from studio.hub import check_repo_id, items_to_push, push, require_online

    repo_id = check_repo_id(repo_value)
    item_ids = None if scope == PUSH_SCOPES[1] else _item_ids(item_text)
    require_online("push to")  # before the model loads
    backbone = state.backbone()
    count = len(items_to_push(state.library, item_ids, backbone.name))
    url = push(state.library, item_ids, repo_id, backbone, token=token, private=bool(private), api=api,
               progress=progress, overwrite=bool(overwrite))
    return f"Pushed **{count}** item(s) with their lineage to [{repo_id}]({url})."


def pull_from_hub(state: AppState, repo_value: str | None, revision: str | None, origin: str | None,
                  token: str | bool | None, download=None, progress=None) -> str:
    """``studio.hub.pull`` of a repository id (never a folder of the server: ``hub_only``); a message with what
    came. ``download`` (``snapshot_download``) is for tests."""
    from studio.hub import check_repo_id, pull, require_online

    repo_id = check_repo_id(repo_value)
    require_online("pull from")  # before the model loads
    revision = (revision or "").strip() or None
    before = {item.id for item in state.library.items()}
    items = pull(state.library, repo_id, state.backbone(), revision=revision, download=download,
                 origin=(origin or "").strip() or None, token=token, hub_only=True, progress=progress)
    new = sum(item.id not in before for item in items)
    at = f" at {revision[:60]}" if revision else ""
    return (f"Pulled **{len(items)}** item(s) with their lineage from [{repo_id}](https://huggingface.co/{repo_id})"
            f"{at}: {new} new, {len(items) - new} already in your library.")


def _reporter(progress: gr.Progress):
    """``studio.hub``'s (fraction, what) reports as Gradio's progress bar."""
    return lambda fraction, what: progress(fraction, desc=what)


def layout_sharing() -> Sharing:
    with gr.Accordion("Share through the Hugging Face Hub: push, pull", open=False):
        gr.Markdown("**Push** uploads items with their lineage to a model repository (a PEFT adapter per prompt, "
                    "origins and TPVs as safetensors, a catalog, a model card; created if needed). **Pull** stores a "
                    "repository's items in your library: one the studio pushed, or any repository of PEFT "
                    "prompt-tuning adapters (then *Origin* names the adapter folder they were all tuned from).")
        login = gr.LoginButton(size="sm") if sign_in_available() else None
        if login is None:
            gr.Markdown("Uses this machine's Hugging Face login (`hf auth login` or `HF_TOKEN`); the studio is "
                        "offline unless started with `HF_HUB_OFFLINE=0`.")
        with gr.Row():
            with gr.Column():
                push_repo = gr.Textbox(label="Repository to push to (owner/name)", placeholder="your-name/my-prompts")
                scope = gr.Radio(PUSH_SCOPES, value=PUSH_SCOPES[0], label="What to push",
                                 info="the selected item(s): the id in Selected item id (several: separate them "
                                      "with commas); the origins and prompts they derive from come along")
                private = gr.Checkbox(label="Private (when the repository is created)", value=False)
                overwrite = gr.Checkbox(label=OVERWRITE_LABEL, value=False,
                                        info="a push is refused into a repository the studio did not write: it "
                                             "would replace its README.md and delete its adapters/ and items/ "
                                             "(its history keeps them)")
                push = gr.Button("Push to the Hub")
            with gr.Column():
                pull_repo = gr.Textbox(label="Repository to pull (owner/name)", placeholder="owner/prompt-adapters")
                with gr.Row():
                    revision = gr.Textbox(label="Revision (optional)", placeholder="a branch, tag or commit")
                    origin = gr.Textbox(label="Origin (optional)", placeholder="the adapter folder that is the origin")
                pull = gr.Button("Pull into my library")
        message = gr.Markdown()
    return Sharing(login, push_repo, scope, private, overwrite, push, pull_repo, revision, origin, pull, message)


def wire_sharing(state: AppState, browser: Browser, files: Files, selection: Selection, sharing: Sharing) -> None:
    """Push and pull; after a pull the table and the choices follow. Closures, not partials: Gradio fills the
    ``gr.OAuthToken`` parameter by its type hint, which a partial hides."""

    @friendly
    def on_push(item_value: str, scope_value: str, repo_value: str, private_value: bool, overwrite_value: bool,
                oauth_token: gr.OAuthToken | None, progress=gr.Progress()) -> str:
        token = visitor_token(oauth_token, needed=True)
        return push_to_hub(state, item_value, scope_value, repo_value, private_value, token,
                           progress=_reporter(progress), overwrite=overwrite_value)

    @friendly
    def on_pull(repo_value: str, revision_value: str, origin_value: str, kind_value: str, task_value: str,
                text_value: str, source_value: str, oauth_token: gr.OAuthToken | None,
                progress=gr.Progress()) -> tuple:
        token = visitor_token(oauth_token, needed=False)
        message = pull_from_hub(state, repo_value, revision_value, origin_value, token, progress=_reporter(progress))
        return (*on_list(state, kind_value, task_value, text_value, source_value), message)

    sharing.push.click(on_push, [selection.item_id, sharing.scope, sharing.push_repo, sharing.private,
                                 sharing.overwrite], sharing.message, api_name="library_hub_push")
    sharing.pull.click(on_pull, [sharing.pull_repo, sharing.revision, sharing.origin, *browser.filters],
                       [browser.table, browser.task, files.origin, sharing.message], api_name="library_hub_pull")


# ---- wiring -------------------------------------------------------------------------------------------------------
def wire_browser(state: AppState, browser: Browser, files: Files, tab: gr.Tab, app: gr.Blocks) -> None:
    """Listing: the Refresh button, the filters, a page load, opening the tab, and a 5 s poll of the catalog."""
    filters, outputs = browser.filters, [browser.table, browser.task, files.origin]
    listed = partial(on_list, state)
    browser.refresh.click(listed, filters, outputs, api_name="library_list")
    for control in (browser.kind, browser.task, browser.source):
        control.input(listed, filters, outputs, api_name=f"library_filter_{control.label.lower()}",
                      api_visibility="private", show_progress="hidden")
    browser.text.submit(listed, filters, outputs, api_name="library_search", api_visibility="private")
    # a reloaded page shows the catalog as it is now, not as it was at start-up
    app.load(listed, filters, outputs, api_name="library_on_load", api_visibility="private", show_progress="hidden")
    # opening the tab shows what other tabs (Tune, Arithmetic...) added meanwhile
    tab.select(listed, filters, outputs, api_name="library_on_open", api_visibility="private", show_progress="hidden")
    gr.Timer(5).tick(partial(on_poll, state), [*filters, browser.signature], [*outputs, browser.signature],
                     api_name="library_poll", api_visibility="private", show_progress="hidden")


def wire_selection(state: AppState, browser: Browser, selection: Selection) -> None:
    """Picking a row, details, rename and delete."""
    item_id, details, name = selection.item_id, selection.details, selection.new_name

    @friendly
    def on_pick(evt: gr.SelectData):  # a closure: Gradio finds the SelectData by its type hint, which a partial hides
        row = evt.row_value or []
        if not row or not row[0]:
            return gr.skip(), gr.skip(), gr.skip()
        data = item_details(state, str(row[0]))
        return data["id"], data, data["name"]

    browser.table.select(on_pick, None, [item_id, details, name], api_name="library_pick", api_visibility="private")
    shown = partial(on_details, state)
    selection.show.click(shown, item_id, [details, name], api_name="library_details")
    item_id.submit(shown, item_id, [details, name], api_name="library_details_enter", api_visibility="private")
    selection.rename.click(partial(on_rename, state), [item_id, name, *browser.filters],
                           [browser.table, details, selection.message], api_name="library_rename")
    selection.delete.click(partial(on_delete, state), [item_id, selection.confirm, selection.cascade, *browser.filters],
                           [browser.table, details, selection.message, selection.confirm, item_id],
                           api_name="library_delete")


def wire_files(state: AppState, browser: Browser, selection: Selection, files: Files) -> None:
    """Export the selected item; import a file (the table, the choices and the selection follow)."""
    files.export.click(partial(on_export, state), [selection.item_id, files.export_format], files.exported,
                       api_name="library_export")
    files.start.click(partial(on_import, state), [files.upload, files.kind, files.task, files.name, files.origin,
                                                  *browser.filters],
                      [browser.table, browser.task, files.origin, selection.details, selection.item_id,
                       selection.message, files.upload], api_name="library_import")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Library tab inside ``tab``; ``app`` gets the page-load refresh."""
    explain("Everything you have made or imported, and the read-only prebuilt library, with its recipe and lineage: "
            "origins are random initialisations, prompts are tuned soft prompts and vectors (TPVs) are prompt minus "
            "origin. Click a row to see its details, then rename, delete or export it, import a PEFT adapter or "
            "safetensors file, or push items to (and pull them from) the Hugging Face Hub.")
    browser, selection, files = layout_browser(state), layout_selection(), layout_files(state)
    backup, sharing = layout_backup(), layout_sharing()
    wire_browser(state, browser, files, tab, app)
    wire_selection(state, browser, selection)
    wire_files(state, browser, selection, files)
    wire_backup(state, browser, files, backup)
    wire_sharing(state, browser, files, selection, sharing)
