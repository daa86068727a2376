"""Library tab: browse, filter, inspect, rename, delete, export and import origins, prompts and TPVs.

Thin wiring over ``studio.library.Library``: every rule (prebuilt items are read-only, imports are checked for
pickles, width, NaN...) lives there; this module only turns uploads into folders and results into tables.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.context import Context

from studio import StudioError
from studio.library import KINDS, Item, Library
from studio.ui.common import AppState, enclosing_tab, explain, export_folder, friendly

ALL = "all"
COLUMNS = ["id", "kind", "source", "task", "origin", "name", "tokens", "|tau|/|origin|", "val acc", "test acc",
           "created"]
EXPORT_FORMATS = ["PEFT adapter (.zip)", "safetensors"]


# ---- pure helpers (no gradio) -----------------------------------------------------------------------------------
def _metric(value) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def item_row(item: Item, ratio: float | None = None) -> list:
    """One table row: identity, lineage at a glance, how far tuning moved it (|tau| / |origin|: a TPV transfers
    across origins when this is large), and the numbers people compare first."""
    return [item.id, item.kind, item.source, item.task or "", item.origin if item.origin is not None else "",
            item.name, item.n_tokens, _metric(ratio), _metric(item.accuracy("validation")), _metric(item.accuracy("test")),
            item.created]


def filtered_items(state: AppState, kind: str | None, task: str | None, text: str | None,
                   source: str | None = ALL) -> list[Item]:
    items = state.library.items(kind=None if kind in (None, "", ALL) else kind,
                                task=None if task in (None, "", ALL) else task, text=(text or "").strip() or None)
    return [i for i in items if source in (None, "", ALL) or i.source == source]


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
    folder = state.library.export_peft(item.id, out / f"{stem}-peft", state.backbone())
    return Path(shutil.make_archive(str(out / f"{stem}-peft"), "zip", root_dir=folder))


def import_upload(state: AppState, path: str | None, kind: str, task: str | None, name: str | None,
                  origin_id: str | None) -> Item:
    """Import an uploaded .safetensors file or .zip of a PEFT adapter folder; the library checks the contents."""
    if not path:
        raise StudioError("choose a .safetensors file or a .zip of a PEFT adapter folder to import")
    if Path(path).suffix.lower() not in (".safetensors", ".zip"):
        raise StudioError(f"{Path(path).name}: upload a .safetensors file or a .zip of a PEFT adapter folder")
    return state.library.import_file(path, state.backbone(), kind=kind, task=(task or "").strip() or None,
                                     name=(name or "").strip(), origin_id=(origin_id or "").strip() or None)


def _root():
    root = Context.root_block
    return root if isinstance(root, gr.Blocks) else None


# ---- the tab ------------------------------------------------------------------------------------------------------
def build(state: AppState) -> None:
    explain("Everything you have made or imported, and the read-only prebuilt library, with its recipe and lineage: "
            "origins are random initialisations, prompts are tuned soft prompts and vectors (TPVs) are prompt minus "
            "origin. Click a row to see its details, then rename, delete or export it, or import a PEFT adapter or "
            "safetensors file.")

    def task_choices() -> list[str]:
        return [ALL] + sorted({i.task for i in state.library.items() if i.task})

    def origin_choices() -> list[tuple[str, str]]:
        return [(f"{i.id} - {i.name}", i.id) for i in state.library.items(kind="origin")]

    with gr.Row():
        kind = gr.Dropdown([ALL, *KINDS], value=ALL, label="Kind", scale=1)
        task = gr.Dropdown(task_choices(), value=ALL, label="Task", allow_custom_value=True, scale=1)
        source = gr.Dropdown([ALL, "user", "prebuilt"], value=ALL, label="Source", scale=1)
        text = gr.Textbox(label="Search id / name / task", placeholder="e.g. mr", scale=2)
        refresh = gr.Button("Refresh", scale=0, min_width=100)
    table = gr.Dataframe(items_table(filtered_items(state, ALL, ALL, ""), state.library), headers=COLUMNS, interactive=False,
                         label="Library (click a row to select it)", max_height=420, wrap=True)
    signature = gr.State("")
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
                import_kind = gr.Dropdown(list(KINDS), value="prompt", label="Kind (if the file does not say)")
                import_task = gr.Textbox(label="Task (optional)", placeholder="e.g. mr")
            with gr.Row():
                import_name = gr.Textbox(label="Name (optional)")
                import_origin = gr.Dropdown(origin_choices(), value=None, label="Origin id (optional, for its TPV)",
                                            allow_custom_value=True)
            import_button = gr.Button("Import", variant="primary")

    filters = [kind, task, text, source]

    def listing(kind_value, task_value, text_value, source_value):
        items = filtered_items(state, kind_value, task_value, text_value, source_value)
        return items_table(items, state.library)

    def refreshed(kind_value, task_value, text_value, source_value):
        """The table plus fresh choices for the task filter and the origin picker."""
        return (listing(kind_value, task_value, text_value, source_value),
                gr.update(choices=task_choices()), gr.update(choices=origin_choices()))

    @friendly
    def list_items(kind_value, task_value, text_value, source_value):
        return refreshed(kind_value, task_value, text_value, source_value)

    @friendly
    def poll(kind_value, task_value, text_value, source_value, last):
        """Auto refresh: redraw only when the catalog changed (a job finished, an import...)."""
        now = json.dumps([[i.id, i.name] for i in state.library.items()])
        if now == last:
            return gr.skip(), gr.skip(), gr.skip(), last
        return (*refreshed(kind_value, task_value, text_value, source_value), now)

    @friendly
    def pick(evt: gr.SelectData):
        row = evt.row_value or []
        if not row or not row[0]:
            return gr.skip(), gr.skip(), gr.skip()
        data = item_details(state, str(row[0]))
        return data["id"], data, data["name"]

    @friendly
    def show_details(item_value):
        data = item_details(state, item_value)
        return data, data["name"]

    @friendly
    def do_rename(item_value, name_value, *filter_values):
        item = state.library.rename(_clean_id(item_value), name_value or "")
        return (listing(*filter_values), item_details(state, item.id),
                f"Renamed **{item.id}** to *{item.name}*.")

    @friendly
    def do_delete(item_value, confirmed, with_cascade, *filter_values):
        item_value = _clean_id(item_value)
        if not confirmed:
            raise StudioError(f"tick 'I understand' to delete {item_value}: deleting cannot be undone")
        deleted = state.library.delete(item_value, cascade=bool(with_cascade))
        return (listing(*filter_values), None, f"Deleted {', '.join(f'**{d}**' for d in deleted)}.", False, "")

    @friendly
    def do_export(item_value, fmt):
        return str(export_item(state, item_value, fmt))

    @friendly
    def do_import(path, kind_value, task_value, name_value, origin_value, *filter_values):
        item = import_upload(state, path, kind_value, task_value, name_value, origin_value)
        return (*refreshed(*filter_values), item_details(state, item.id), item.id,
                f"Imported **{item.id}** ({item.kind}, {item.n_tokens} tokens).", None)

    list_outputs = [table, task, import_origin]
    refresh.click(list_items, filters, list_outputs, api_name="library_list")
    for control in (kind, task, source):
        control.input(list_items, filters, list_outputs, api_name=f"library_filter_{control.label.lower()}",
                      api_visibility="private", show_progress="hidden")
    text.submit(list_items, filters, list_outputs, api_name="library_search", api_visibility="private")
    root = _root()
    if root is not None:  # a reloaded page shows the catalog as it is now, not as it was at start-up
        root.load(list_items, filters, list_outputs, api_name="library_on_load", api_visibility="private",
                  show_progress="hidden")
    tab = enclosing_tab()
    if tab is not None:  # opening the tab shows what other tabs (Tune, Arithmetic...) added meanwhile
        tab.select(list_items, filters, list_outputs, api_name="library_on_open", api_visibility="private",
                   show_progress="hidden")
    gr.Timer(5).tick(poll, [*filters, signature], [*list_outputs, signature], api_name="library_poll",
                     api_visibility="private", show_progress="hidden")
    table.select(pick, None, [item_id, details, new_name], api_name="library_pick", api_visibility="private")
    show.click(show_details, item_id, [details, new_name], api_name="library_details")
    item_id.submit(show_details, item_id, [details, new_name], api_name="library_details_enter",
                   api_visibility="private")
    rename.click(do_rename, [item_id, new_name, *filters], [table, details, message], api_name="library_rename")
    delete.click(do_delete, [item_id, confirm, cascade, *filters], [table, details, message, confirm, item_id],
                 api_name="library_delete")
    export.click(do_export, [item_id, export_format], exported, api_name="library_export")
    import_button.click(do_import, [upload, import_kind, import_task, import_name, import_origin, *filters],
                    [*list_outputs, details, item_id, message, upload], api_name="library_import")
