"""The Library tab's Hugging Face Hub section: push and pull through the tab's own handlers (the functions Gradio
calls, taken from the built page) and through the served app, with the network replaced only where
``huggingface_hub`` meets it (``HfApi``, ``snapshot_download``). Also the PEFT zip export that moved below the UI."""

from __future__ import annotations

import json
import shutil
import sqlite3
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import huggingface_hub
import pytest
import torch

from studio import StudioError
from studio.hub import CATALOG, CATALOG_PATTERNS, hub_layout, push
from studio.library import Library
from studio.ui import library_panel
from studio.ui.common import AppState
from studio.ui.library_panel import PUSH_SCOPES

SECRET = "hf_oauthSECRETnever0written1"  # a visitor's token: may reach HfApi and nothing else
SELECTED, WHOLE = PUSH_SCOPES
FILTERS = ("all", "all", "", "all")  # kind, task, text, source: the table shows everything
NOT_AN_ID = "not a Hugging Face repository id"
COMMIT = "0123456789abcdef" * 2 + "01234567"
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # gradio's own pandas use


@pytest.fixture
def state(tiny_llama_dir, tmp_path) -> AppState:
    return AppState(Library(tmp_path / "lib"), model_name=str(tiny_llama_dir))


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


@pytest.fixture
def hub(monkeypatch, tmp_path) -> dict:
    """The hub's side: ``HfApi`` records the token it was made with and keeps each uploaded folder, and lists
    ``repos[repo_id]`` (a folder on disk) at ``COMMIT``; a snapshot download serves that folder and records what it
    was asked."""
    record: dict = {"tokens": [], "calls": [], "uploads": [], "downloads": [], "listings": [], "repos": {}}

    class FakeHfApi:
        def __init__(self, token=None, **kwargs):
            record["tokens"].append(token)

        def repo_exists(self, repo_id, **kwargs):
            return repo_id in record["repos"]

        def file_exists(self, repo_id, filename, **kwargs):
            return repo_id in record["repos"] and (record["repos"][repo_id] / filename).is_file()

        def list_repo_files(self, repo_id, **kwargs):
            folder = record["repos"][repo_id]
            return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]

        def model_info(self, repo_id, revision=None, **kwargs):
            record["listings"].append((repo_id, revision))
            if repo_id not in record["repos"]:
                raise RuntimeError(f"404 Client Error: Repository Not Found for url: .../api/models/{repo_id}")
            return SimpleNamespace(sha=COMMIT)

        def list_repo_tree(self, repo_id, recursive=False, revision=None, **kwargs):
            assert recursive and revision == COMMIT
            folder = record["repos"][repo_id]
            return [SimpleNamespace(path=p.relative_to(folder).as_posix(), size=p.stat().st_size)
                    for p in folder.rglob("*") if p.is_file()]

        def create_repo(self, repo_id, **kwargs):
            record["calls"].append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            record["calls"].append(("upload_folder", repo_id, kwargs))
            target = tmp_path / "hub-side" / f"{len(record['uploads'])}-{repo_id.replace('/', '--')}"
            shutil.copytree(folder_path, target)
            record["uploads"].append(target)
            record["repos"][repo_id] = target

    def snapshot_download(**kwargs):
        record["downloads"].append(kwargs)
        return str(record["repos"][kwargs["repo_id"]])

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return record


def handlers(state: AppState) -> dict:
    """The Library tab's event functions by api name, exactly as Gradio calls them."""
    with gr.Blocks() as page:
        with gr.Tab("Library") as tab:
            library_panel.build(state, tab, page)
    return {fn.api_name: fn.fn for fn in page.fns.values() if fn.api_name}


def token(value: str = SECRET) -> gr.OAuthToken:
    return gr.OAuthToken(token=value, scope="openid profile write-repos", expires_at=0)


def populate(state: AppState) -> dict:
    """An origin, two prompts tuned from it and their TPVs."""
    model, library = state.backbone().name, state.library
    gen = torch.Generator().manual_seed(0)
    origin_tensor = torch.randn(4, state.backbone().hidden_size, generator=gen)
    items = {"origin": library.add("origin", origin_tensor, model, name="origin 0", seed=0)}
    for task in ("mr", "tweets"):
        tensor = origin_tensor + 0.1 * torch.randn(origin_tensor.shape, generator=gen)
        prompt = library.add("prompt", tensor, model, name=f"{task} prompt", task=task, seed=0,
                             origin_id=items["origin"].id, metrics={"validation_accuracy": 0.75})
        items[task] = prompt
        items[f"tpv {task}"] = library.add("vector", tensor - origin_tensor, model, name=f"TPV {task}", task=task,
                                           seed=0, origin_id=items["origin"].id, prompt_id=prompt.id)
    return items


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def repository(folder: Path) -> dict:
    """A repository's content: text files as text, safetensors as their tensors and metadata (whose order in the
    file's header is not fixed)."""
    from safetensors import safe_open

    content = {}
    for name, data in files_of(folder).items():
        if name.endswith(".safetensors"):
            with safe_open(folder / name, "pt") as file:
                content[name] = (file.metadata(), {key: file.get_tensor(key).tolist() for key in file.keys()})
        else:
            content[name] = data.decode()
    return content


def library_state(library: Library) -> tuple:
    """Everything a refused pull must leave as it was: catalog rows and item files."""
    db = sqlite3.connect(library.root / "catalog.sqlite")
    rows = db.execute("SELECT * FROM items ORDER BY id").fetchall()
    db.close()
    return rows, files_of(library.root / "items")


# ---- push ---------------------------------------------------------------------------------------------------------
def test_push_uploads_the_selection_with_its_lineage_and_the_token_goes_only_to_the_hub(state, hub, online, tmp_path):
    items = populate(state)
    push_fn = handlers(state)["library_hub_push"]
    vector = items["tpv mr"]
    message = push_fn(f" {vector.id} ", SELECTED, " someone/my-prompts ", True, False, token())
    assert hub["tokens"] == [SECRET]  # the visitor's token reached HfApi...
    assert [(name, repo) for name, repo, _ in hub["calls"]] == [("create_repo", "someone/my-prompts"),
                                                                ("upload_folder", "someone/my-prompts")]
    assert hub["calls"][0][2]["private"] is True
    # ...and the repository is what hub_layout writes for that selection: the TPV, its prompt and origin
    expected = hub_layout(state.library, [vector.id], state.backbone(), tmp_path / "expected",
                          repo_id="someone/my-prompts")
    uploaded = files_of(hub["uploads"][0])
    assert repository(hub["uploads"][0]) == repository(expected)
    catalog = json.loads(uploaded[CATALOG])
    assert [r["id"] for r in catalog["items"]] == [items["origin"].id, items["mr"].id, vector.id]
    assert "**3** item(s)" in message and "https://huggingface.co/someone/my-prompts" in message
    # the token is nowhere else: not in the message, the state, the library's files or the uploaded files
    assert SECRET not in message and SECRET not in repr(vars(state))
    written = [*files_of(state.library.root).values(), *uploaded.values()]
    assert not any(SECRET.encode() in content for content in written)


def test_push_of_several_ids_or_the_whole_library(state, hub, online):
    items = populate(state)
    push_fn = handlers(state)["library_hub_push"]
    push_fn(f"{items['mr'].id}, {items['tweets'].id}", SELECTED, "someone/two", False, False, None)
    catalog = json.loads((hub["uploads"][0] / CATALOG).read_text())
    assert {r["id"] for r in catalog["items"]} == {items[k].id for k in ("origin", "mr", "tweets")}
    message = push_fn("ignored when the whole library goes", WHOLE, "someone/all", False, False, None)
    catalog = json.loads((hub["uploads"][1] / CATALOG).read_text())
    assert {r["id"] for r in catalog["items"]} == {i.id for i in items.values()} and "**5** item(s)" in message
    assert hub["tokens"] == [None, None]  # off a Space: huggingface_hub's own token (HF_TOKEN, saved login)
    with pytest.raises(gr.Error, match="choose what to push"):
        push_fn("  ", SELECTED, "someone/none", False, False, None)
    with pytest.raises(gr.Error, match="no library item"):
        push_fn("v-0000000000000000", SELECTED, "someone/none", False, False, None)
    assert len(hub["uploads"]) == 2


def test_a_repository_the_studio_did_not_write_is_replaced_only_with_the_box_ticked(state, hub, online, tmp_path):
    """The page's way to `studio hub push --overwrite`: refused with a message naming the box, then replaced."""
    items = populate(state)
    theirs = tmp_path / "theirs"
    (theirs / "adapters" / "lora").mkdir(parents=True)
    (theirs / "README.md").write_text("# my LoRA")
    (theirs / "adapters" / "lora" / "adapter_config.json").write_text("{}")
    hub["repos"]["someone/model"] = theirs
    push_fn = handlers(state)["library_hub_push"]
    with pytest.raises(gr.Error, match=f"has no {CATALOG}.*{library_panel.OVERWRITE_LABEL}"):
        push_fn(items["mr"].id, SELECTED, "someone/model", False, False, None)
    assert hub["calls"] == [] and hub["uploads"] == []
    message = push_fn(items["mr"].id, SELECTED, "someone/model", False, True, None)
    assert "**2** item(s)" in message
    assert [name for name, _, _ in hub["calls"]] == ["create_repo", "upload_folder"]
    assert (hub["uploads"][0] / CATALOG).is_file()


# ---- pull ---------------------------------------------------------------------------------------------------------
def test_pull_by_repo_id_round_trips_items_with_lineage_into_the_table(state, hub, online, tmp_path, tiny_llama_dir):
    source = AppState(Library(tmp_path / "source"), model_name=str(tiny_llama_dir))
    items = populate(source)
    push(source.library, None, "someone/lib", source.backbone(), api=huggingface_hub.HfApi())
    pull_fn = handlers(state)["library_hub_pull"]
    table, _, origins, message = pull_fn("someone/lib", "v1.0", "", *FILTERS, None)
    assert hub["listings"] == [("someone/lib", "v1.0")]
    assert [{k: v for k, v in d.items() if k != "local_dir"} for d in hub["downloads"]] == [
        {"repo_id": "someone/lib", "repo_type": "model", "revision": COMMIT,  # the commit listed
         "allow_patterns": CATALOG_PATTERNS}]  # no token: the usual one
    assert set(table["id"]) == {i.id for i in items.values()}
    for item in items.values():
        back = state.library.get(item.id)
        assert (back.kind, back.origin_id, back.prompt_id, back.task) == (item.kind, item.origin_id, item.prompt_id,
                                                                         item.task)
        assert torch.equal(state.library.tensor(item.id), source.library.tensor(item.id))
    assert items["origin"].id in {value for _, value in origins["choices"]}
    assert "**5** item(s)" in message and "5 new" in message and "v1.0" in message
    before = library_state(state.library)
    again = pull_fn("someone/lib", "", "", *FILTERS, None)[3]
    assert "0 new, 5 already" in again and library_state(state.library) == before
    assert hub["listings"][1] == ("someone/lib", None)


@pytest.mark.parametrize("typed", ["/etc", "../x", "~/x", "./someone/lib", "", "gpt2", "a/../b", "someone/lib/x",
                                   "C:\\Windows"])
def test_a_path_or_anything_but_owner_name_is_refused_and_changes_nothing(state, hub, online, typed):
    populate(state)
    before = library_state(state.library)
    page = handlers(state)
    with pytest.raises(gr.Error, match=NOT_AN_ID):
        page["library_hub_pull"](typed, "", "", *FILTERS, None)
    with pytest.raises(gr.Error, match=NOT_AN_ID):
        page["library_hub_push"]("", WHOLE, typed, False, False, token())
    assert hub["downloads"] == [] and hub["tokens"] == [] and library_state(state.library) == before


def test_a_server_folder_named_like_a_repo_id_is_never_read(state, hub, online, tmp_path, monkeypatch):
    """``someone/lib`` exists as a folder where the server runs: the page still asks the hub, never the disk."""
    source = Library(tmp_path / "source")
    populate(AppState(source, model_name=state.model_name))
    local = tmp_path / "cwd" / "someone" / "lib"
    local.parent.mkdir(parents=True)
    push(source, None, "someone/lib", state.backbone(), api=huggingface_hub.HfApi())
    shutil.copytree(hub["uploads"][0], local)
    del hub["repos"]["someone/lib"]  # the hub has no such repository
    monkeypatch.chdir(tmp_path / "cwd")
    before = library_state(state.library)
    with pytest.raises(gr.Error, match="could not download someone/lib"):
        handlers(state)["library_hub_pull"]("someone/lib", "", "", *FILTERS, None)
    assert hub["listings"] == [("someone/lib", None)] and hub["downloads"] == []
    assert library_state(state.library) == before


# ---- offline, and on a Space ---------------------------------------------------------------------------------------
def test_offline_both_buttons_say_the_hub_is_unreachable(state, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    populate(state)
    before = library_state(state.library)
    page = handlers(state)
    with pytest.raises(gr.Error, match="not reachable.*HF_HUB_OFFLINE=0"):
        page["library_hub_push"]("", WHOLE, "someone/x", False, False, token())
    with pytest.raises(gr.Error, match="not reachable.*HF_HUB_OFFLINE=0"):
        page["library_hub_pull"]("someone/x", "", "", *FILTERS, None)
    assert hub["tokens"] == [] and hub["downloads"] == [] and library_state(state.library) == before


def test_on_a_space_push_needs_the_visitors_sign_in_and_never_the_spaces_token(state, hub, online, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    monkeypatch.setenv("SYSTEM", "spaces")  # both set by the platform
    monkeypatch.setenv("HF_TOKEN", "hf_theSpacesOwnToken")  # a Space secret: visitors must never write with it
    monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)
    items = populate(state)
    page = handlers(state)
    assert not library_panel.sign_in_available()
    with pytest.raises(gr.Error, match="does not offer Sign in.*hf_oauth"):
        page["library_hub_push"]("", WHOLE, "someone/x", False, False, None)
    # with hf_oauth: true the platform sets OAUTH_CLIENT_ID; with gradio[oauth] installed the page can sign in
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    monkeypatch.setattr(library_panel, "_oauth_installed", lambda: True)
    assert library_panel.sign_in_available()
    with pytest.raises(gr.Error, match="sign in with Hugging Face first"):
        page["library_hub_push"]("", WHOLE, "someone/x", False, False, None)
    assert hub["tokens"] == []
    page["library_hub_push"](items["mr"].id, SELECTED, "visitor/prompts", False, False, token())
    assert hub["tokens"] == [SECRET]
    page["library_hub_pull"]("visitor/prompts", "", "", *FILTERS, None)  # anonymous: public repositories only
    page["library_hub_pull"]("visitor/prompts", "", "", *FILTERS, token())
    assert [d["token"] for d in hub["downloads"]] == [False, SECRET]
    assert hub["tokens"] == [SECRET, False, SECRET]  # the listing before each download uses the same token


def has_login(state: AppState) -> bool:
    with gr.Blocks() as page:
        with gr.Tab("Library") as tab:
            library_panel.build(state, tab, page)
    return page.expects_oauth  # Gradio adds its OAuth routes only to a page with a LoginButton


def test_no_sign_in_button_where_it_cannot_work(state, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    monkeypatch.setattr(library_panel, "_oauth_installed", lambda: True)
    assert not has_login(state)  # off a Space Gradio would need this machine's own hub login just to start
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    monkeypatch.delenv("OAUTH_CLIENT_ID")
    assert not has_login(state)  # a Space without hf_oauth: Gradio would refuse to start
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    monkeypatch.setattr(library_panel, "_oauth_installed", lambda: False)
    assert not has_login(state)  # without gradio[oauth] too


def test_the_sign_in_button_on_a_space_with_oauth(state, monkeypatch):
    for extra in ("authlib", "itsdangerous"):
        pytest.importorskip(extra, reason="gradio[oauth] is not installed here")
    import gradio.oauth

    monkeypatch.setenv("SPACE_ID", "someone/studio")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    for name, value in {"OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": "secret", "OAUTH_SCOPES": "openid",
                        "OPENID_PROVIDER_URL": "https://huggingface.co"}.items():  # what hf_oauth: true sets;
        monkeypatch.setattr(gradio.oauth, name, value)  # Gradio reads them once, when imported
    assert not has_login(state)  # Gradio sees a Space only with SYSTEM=spaces (it would mock the sign-in otherwise)
    monkeypatch.setenv("SYSTEM", "spaces")
    assert has_login(state)


# ---- through the served app -----------------------------------------------------------------------------------------
def test_the_buttons_are_wired_in_the_served_app(app_url, hub, monkeypatch):
    """gradio_client sends the token as Gradio's OAuth token; the push endpoint hands it to HfApi."""
    gradio_client = pytest.importorskip("gradio_client")
    from gradio_client.exceptions import AppError

    url, app_state = app_url
    model, library = app_state.model_name, app_state.library
    origin = library.add("origin", torch.randn(4, app_state.backbone().hidden_size), model, name="hub wiring origin")
    prompt = library.add("prompt", library.tensor(origin.id) + 0.1, model, name="hub wiring", task="mr",
                         origin_id=origin.id)
    try:
        client = gradio_client.Client(url, verbose=False, oauth_token=SECRET)
        with pytest.raises(AppError, match="not reachable"):  # the default: offline
            client.predict(prompt.id, SELECTED, "someone/served", False, False, api_name="/library_hub_push")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        message = client.predict(prompt.id, SELECTED, "someone/served", False, False, api_name="/library_hub_push")
        assert "**2** item(s)" in message and SECRET not in message and hub["tokens"] == [SECRET]
        catalog = json.loads((hub["uploads"][0] / CATALOG).read_text())
        assert [r["id"] for r in catalog["items"]] == [origin.id, prompt.id]
        with pytest.raises(AppError, match=NOT_AN_ID):
            client.predict("/etc", "", "", *FILTERS, api_name="/library_hub_pull")
        library.delete(origin.id, cascade=True)
        table, _, _, message = client.predict("someone/served", "", "", *FILTERS, api_name="/library_hub_pull")
        assert prompt.id in [row[0] for row in table["data"]] and "2 new" in message
        assert library.get(prompt.id).origin_id == origin.id
    finally:
        if library.find(origin.id):
            library.delete(origin.id, cascade=True)


# ---- the PEFT zip export (below the UI since #13) -------------------------------------------------------------------
def test_export_peft_zip_writes_one_zip_that_imports_back(state, tmp_path):
    items = populate(state)
    backbone = state.backbone()
    (tmp_path / "out").mkdir()
    path = state.library.export_peft_zip(items["mr"].id, tmp_path / "out" / "mr.zip", backbone)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["adapter_config.json", "adapter_model.safetensors", "studio_item.json"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mr.zip"]  # no adapter folder, no temporary left
    back = state.library.import_file(path, backbone)
    assert torch.equal(state.library.tensor(back.id), state.library.tensor(items["mr"].id))
    with pytest.raises(StudioError, match="exists"):
        state.library.export_peft_zip(items["mr"].id, path, backbone)
    with pytest.raises(StudioError, match="task prompt vector"):
        state.library.export_peft_zip(items["tpv mr"].id, tmp_path / "out" / "tpv.zip", backbone)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mr.zip"]
    zip_path = library_panel.export_item(state, items["tweets"].id, library_panel.EXPORT_FORMATS[0])
    assert zip_path.suffix == ".zip" and zipfile.ZipFile(zip_path).testzip() is None
