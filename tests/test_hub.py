"""Sharing through the Hugging Face Hub, with only the network replaced: the repository a push writes (PEFT loads
every adapter, the card's metadata parses), pulls that round-trip a library, the paper authors' kind of T5 adapter
([2 n, d], made by PEFT itself), and bad repositories that get one clear error and change nothing."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from studio import StudioError
from studio.backbones import load_backbone
from studio.cli import main
from studio.hub import (
    ADAPTER_PATTERNS,
    CATALOG,
    CATALOG_PATTERNS,
    MAX_LISTED_FILES,
    MAX_PULL_BYTES,
    MAX_PULL_FILES,
    TAGS,
    base_model_id,
    hub_layout,
    model_card,
    pull,
    push,
)
from studio.library import PULLED_FROM, Library, open_library
from studio.prompts import make_origin

FIELDS = ("id", "kind", "name", "model", "task", "seed", "origin_id", "prompt_id", "n_tokens", "hidden", "recipe",
          "metrics")


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


@pytest.fixture(scope="module")
def t5(tiny_t5_dir):
    return load_backbone(str(tiny_t5_dir), dtype=torch.float32)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def rand(n=4, d=32, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def populate(library: Library, model: str) -> dict:
    """Two tuned prompts on one origin with their vectors (as run_tuning stores them) and a combined prompt. The
    origin is the real origin 0 of ``model`` (a pull checks that an origin naming its seed and init is that one)."""
    origin_tensor = make_origin(load_backbone(model), 0, 4, "top5000")
    origin = library.add("origin", origin_tensor, model, name="origin 0", seed=0, recipe={"init": "top5000"})
    items = {"origin": origin}
    tuned = {}
    for seed, task in ((2, "mr"), (3, "tweets")):
        tuned[task] = origin_tensor + 0.1 * rand(seed=seed)
        prompt = library.add("prompt", tuned[task], model, name=f"{task} / origin 0", task=task, seed=0,
                             origin_id=origin.id, recipe={"lr": 0.2, "history": [{"step": 1, "loss": 0.5}]},
                             metrics={"validation_accuracy": 0.8, f"test_accuracy/{task}": 0.75,
                                      f"test_accuracy_se/{task}": 0.02})
        items[task] = prompt
        items[f"tpv {task}"] = library.add("vector", tuned[task] - origin_tensor, model, name=f"TPV {task}",
                                           task=task, seed=0, origin_id=origin.id, prompt_id=prompt.id,
                                           recipe={"from": prompt.id})
    items["combined"] = library.add("prompt", origin_tensor + 0.5 * (tuned["mr"] - origin_tensor), model,
                                    name="weighted_sum of mr | tweets", task="mr+tweets", seed=0,
                                    origin_id=origin.id, recipe={"method": "weighted_sum"})
    return items


def described(library: Library) -> dict:
    """Each item as a pull must carry it over; the recipe without where the item was pulled from (``pulled_from``,
    which the pull records: ``test_pull_round_trips_a_library`` checks it)."""
    def fields(item) -> dict:
        return {f: ({k: v for k, v in item.recipe.items() if k != PULLED_FROM} if f == "recipe" else getattr(item, f))
                for f in FIELDS}

    return {item.id: fields(item) for item in library.items()}


def snapshot(library: Library) -> tuple:
    """Everything a failed pull must leave as it was: catalog rows and the items folder."""
    db = sqlite3.connect(library.root / "catalog.sqlite")
    rows = db.execute("SELECT * FROM items ORDER BY id").fetchall()
    db.close()
    return rows, sorted((p.name, p.read_bytes()) for p in (library.root / "items").iterdir())


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


COMMIT = "c0ffee" * 6 + "beef"


def matching(paths, patterns) -> list[str]:
    """huggingface_hub's own pattern matching (upload_folder's delete_patterns, snapshot_download's allow_patterns)."""
    from huggingface_hub.utils import filter_repo_objects

    return sorted(filter_repo_objects(sorted(paths), allow_patterns=patterns))


class FakeApi:
    """Stands in for HfApi and snapshot_download on one repository, whose files (the hub's side) are the folder
    ``target`` (the repository exists while it does). ``listed`` adds files that the listing shows but no folder
    holds (a model's weight shards, path -> size) or replaces a file's listed size. ``calls`` records what changes
    the hub, ``reads`` the listing, ``downloads`` each download and ``fetched`` the files it fetched."""

    def __init__(self, target: Path, listed: dict[str, int] | None = None):
        self.target, self.listed = target, dict(listed or {})
        self.calls, self.reads, self.downloads, self.fetched = [], [], [], []

    def repo_exists(self, repo_id, **kwargs):
        return self.target.exists()

    def file_exists(self, repo_id, filename, **kwargs):
        return (self.target / filename).is_file()

    def list_repo_files(self, repo_id, **kwargs):
        return list(self.files())

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        """The hub's commit: files matching ``delete_patterns`` go, then the folder's files are added or replaced."""
        self.calls.append(("upload_folder", repo_id, kwargs))
        if self.target.exists():
            for path in matching(tree(self.target), kwargs.get("delete_patterns") or []):
                (self.target / path).unlink()
        shutil.copytree(folder_path, self.target, dirs_exist_ok=True)

    def files(self) -> dict[str, int]:
        held = {p: (self.target / p).stat().st_size for p in tree(self.target)} if self.target.exists() else {}
        return {**held, **self.listed}

    def model_info(self, repo_id, revision=None, **kwargs):
        self.reads.append(("model_info", repo_id, revision))
        return SimpleNamespace(id=repo_id, sha=COMMIT)

    def list_repo_tree(self, repo_id, recursive=False, revision=None, **kwargs):
        self.reads.append(("list_repo_tree", repo_id, revision))
        assert recursive and revision == COMMIT  # the whole tree, at the commit that model_info named
        folders = {path.rsplit("/", 1)[0] for path in self.files() if "/" in path}
        yield from (SimpleNamespace(path=folder, tree_id="0" * 40) for folder in sorted(folders))  # no size
        yield from (SimpleNamespace(path=path, size=size) for path, size in self.files().items())

    def snapshot_download(self, *, repo_id, revision, allow_patterns, local_dir=None, **kwargs):
        """Copies the matching files that ``target`` holds into ``local_dir`` (as snapshot_download does); without
        one, the snapshot is ``target`` itself (the cache)."""
        self.downloads.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns,
                               "local_dir": local_dir, **kwargs})
        fetched = matching(self.files(), allow_patterns)
        self.fetched += fetched
        if local_dir is None:
            return str(self.target)
        for path in fetched:
            if (self.target / path).is_file():
                (Path(local_dir) / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.target / path, Path(local_dir) / path)
        return local_dir


# ---- push ---------------------------------------------------------------------------------------------------------
def test_push_builds_the_repository(tiny, tiny_llama_dir, tmp_path, online):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    library = Library(tmp_path / "lib")
    items = populate(library, tiny.name)
    library.add("prompt", rand(seed=9), tiny.name, name="not chosen")
    api = FakeApi(tmp_path / "hub")
    chosen = [items["tpv mr"].id, items["combined"].id]
    url = push(library, chosen, "someone/my-prompts", tiny, token="hf_NEVERWRITTEN", private=True, api=api)
    assert url == "https://huggingface.co/someone/my-prompts"
    assert [(name, repo) for name, repo, _ in api.calls] == [("create_repo", "someone/my-prompts"),
                                                             ("upload_folder", "someone/my-prompts")]
    assert api.calls[0][2]["exist_ok"] is True and api.calls[0][2]["private"] is True
    assert api.calls[1][2]["delete_patterns"] == ["adapters/*", "items/*"]
    repo = tmp_path / "hub"
    # the chosen items and the lineage they need (origin, the vector's prompt), nothing else
    origin, prompt, vector, combined = (items[k] for k in ("origin", "mr", "tpv mr", "combined"))
    adapter_files = ("adapter_config.json", "adapter_model.safetensors", "studio_item.json")
    assert tree(repo) == {"README.md", CATALOG, f"items/{origin.id}.safetensors", f"items/{vector.id}.safetensors",
                          *(f"adapters/{i.id}/{f}" for i in (origin, prompt, combined) for f in adapter_files)}
    assert not any("hf_NEVERWRITTEN" in p.read_text(errors="replace") for p in repo.rglob("*") if p.is_file())
    catalog = json.loads((repo / CATALOG).read_text())
    assert catalog["model"] == tiny.name and [r["id"] for r in catalog["items"]] == [
        origin.id, prompt.id, vector.id, combined.id]  # parents first
    for record in catalog["items"]:
        assert {f: record[f] for f in FIELDS} == described(library)[record["id"]] and record["file"].endswith(
            "adapter_model.safetensors" if record["kind"] == "prompt" else f"items/{record['id']}.safetensors")
    for item in (origin, prompt, combined):  # each adapter loads in PEFT on a fresh base and holds the prompt
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32),
                                               str(repo / "adapters" / item.id))
        torch.testing.assert_close(peft_model.get_prompt(1)[0].float(), library.tensor(item.id))
    card = ModelCard.load(repo / "README.md")
    assert card.data.library_name == "peft" and card.data.tags == TAGS
    assert card.data.base_model is None  # a local folder is not a hub id: the hub would refuse the card
    for item in (origin, prompt, vector, combined):
        assert f"| `{item.id}` | {item.kind} |" in card.text
    assert "weighted_sum of mr \\| tweets" in card.text and "test_accuracy/mr 0.750" in card.text
    assert "someone/my-prompts" in card.text


def test_card_names_the_hub_id_of_a_known_model(tmp_path):
    from huggingface_hub import ModelCard

    assert base_model_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("google-t5/t5-base") == "google-t5/t5-base"
    library = Library(tmp_path / "lib")
    item = library.add("prompt", rand(), "smollm2-135m-instruct", task="mr")
    (tmp_path / "README.md").write_text(model_card([item], item.model, "me/x"))
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"


HUB_IDS = ["someone/my-prompts", "google-t5/t5-base", "HuggingFaceTB/SmolLM2-135M-Instruct", "a/b.c_d-e"]
NOT_HUB_IDS = ["", " ", "gpt2", "/etc", "/etc/passwd", "../x", "./a/b", "~/models", "a/b/c", "a/..", "a..b/c",
               "a--b/c", "a/b.git", "a/-b", "a b/c", "a/" + "x" * 97]


def test_one_rule_says_what_a_repository_id_is_for_every_caller(tiny, tmp_path, online):
    """``config.is_hub_id`` (owner/name, as the hub accepts it) is the rule for the page's field, push, pull, model
    cards and models; each caller keeps its own message, and nothing reaches the hub or a folder."""
    from studio.config import is_hub_id
    from studio.hub import check_repo_id
    from studio.weights import model_source

    assert all(is_hub_id(name) for name in HUB_IDS) and not any(is_hub_id(name) for name in NOT_HUB_IDS)
    library, api = Library(tmp_path / "lib"), FakeApi(tmp_path / "hub")
    for name in NOT_HUB_IDS:
        with pytest.raises(StudioError, match="is not a Hugging Face repository id: type owner/name"):
            check_repo_id(name)
        with pytest.raises(StudioError, match="is not a Hugging Face repository id: use owner/name"):
            push(library, None, name, tiny, api=api)
        if name.strip() and not Path(name).expanduser().exists():
            with pytest.raises(StudioError, match="neither a folder nor a Hugging Face repository id"):
                pull(library, name, tiny, download=lambda **kwargs: pytest.fail("downloaded"))
            with pytest.raises(StudioError, match="unknown model"):
                model_source(name)
        assert base_model_id(name) is None
    assert api.calls == [] and api.reads == [] and not (tmp_path / "hub").exists()
    assert [check_repo_id(f" {name} ") for name in HUB_IDS] == HUB_IDS
    assert [model_source(name) for name in HUB_IDS] == HUB_IDS == [base_model_id(name) for name in HUB_IDS]


def test_push_of_the_whole_library_leaves_out_the_prebuilt_one(tiny, tmp_path, online):
    source = Library(tmp_path / "build")
    built = populate(source, tiny.name)
    prebuilt = source.export_catalog(tmp_path / "prebuilt")
    library = open_library(tmp_path / "user", prebuilt=prebuilt)
    mine = library.add("prompt", rand(seed=7), tiny.name, name="mine", task="mr", origin_id=built["origin"].id)
    push(library, None, "someone/all", tiny, api=FakeApi(tmp_path / "hub"))
    catalog = json.loads((tmp_path / "hub" / CATALOG).read_text())
    assert [r["id"] for r in catalog["items"]] == [built["origin"].id, mine.id]  # the user's item and its origin


def test_a_push_to_a_repository_the_studio_did_not_write_is_refused(tiny, tmp_path, online):
    """Someone's model repository: a push would replace its card and delete its adapters/, so nothing happens
    unless ``overwrite`` says so."""
    library = Library(tmp_path / "lib")
    items = populate(library, tiny.name)
    theirs = {"README.md": b"# my LoRA", "adapters/lora/adapter_config.json": b"{}", "model.safetensors": b"w"}
    for path, data in theirs.items():
        (tmp_path / "hub" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hub" / path).write_bytes(data)
    api = FakeApi(tmp_path / "hub")
    with pytest.raises(StudioError, match=f"someone/model already exists and has no {CATALOG}.*--overwrite") as error:
        push(library, [items["mr"].id], "someone/model", tiny, api=api)
    assert "\n" not in str(error.value)
    assert api.calls == [] and {p: (tmp_path / "hub" / p).read_bytes() for p in tree(tmp_path / "hub")} == theirs
    push(library, [items["mr"].id], "someone/model", tiny, api=api, overwrite=True)  # on purpose: replaced
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    assert (tmp_path / "hub" / CATALOG).is_file() and tree(tmp_path / "hub") & set(theirs) == {
        "README.md", "model.safetensors"}  # their adapters/ went, their README.md was replaced
    assert (tmp_path / "hub" / "README.md").read_bytes() != theirs["README.md"]


def test_a_push_into_an_empty_repository_goes_ahead(tiny, tmp_path, online):
    """A repository with only .gitattributes (made on the website, or by a push whose upload failed after it created
    the repository) has nothing to lose: a push, or its retry, fills it."""
    library = Library(tmp_path / "lib")
    items = populate(library, tiny.name)
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    api = FakeApi(tmp_path / "hub")
    push(library, [items["mr"].id], "someone/new", tiny, api=api)
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    assert (tmp_path / "hub" / CATALOG).is_file()


def test_a_push_to_a_repository_the_studio_wrote_replaces_its_library(tiny, tmp_path, online):
    library = Library(tmp_path / "lib")
    items = populate(library, tiny.name)
    api = FakeApi(tmp_path / "hub")
    push(library, [items["tpv mr"].id], "someone/mine", tiny, api=api)
    push(library, [items["tweets"].id], "someone/mine", tiny, api=api)  # the repository exists and is the studio's
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"] * 2
    catalog = json.loads((tmp_path / "hub" / CATALOG).read_text())
    assert [r["id"] for r in catalog["items"]] == [items["origin"].id, items["tweets"].id]
    gone = (items["mr"].id, items["tpv mr"].id)  # the first push's items went: the repository is one library
    assert not [p for p in tree(tmp_path / "hub") if any(i in p for i in gone)]
    assert f"adapters/{items['tweets'].id}/adapter_model.safetensors" in tree(tmp_path / "hub")


def test_offline_push_and_pull_say_the_hub_is_unreachable(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    library = Library(tmp_path / "lib")
    items = populate(library, tiny.name)
    api = FakeApi(tmp_path / "hub")
    with pytest.raises(StudioError, match="not reachable.*HF_HUB_OFFLINE=0.*HF_TOKEN"):
        push(library, [items["mr"].id], "someone/x", tiny, api=api)
    assert api.calls == [] and not (tmp_path / "hub").exists()
    before = snapshot(library)
    with pytest.raises(StudioError, match="not reachable"):
        pull(library, "rbelanec/t5-base-pt-origin0", tiny, download=lambda **kwargs: pytest.fail("downloaded"))
    assert snapshot(library) == before
    for command in (["hub", "push", "someone/x"], ["hub", "pull", "someone/x"]):
        assert main([*command, "--library", str(tmp_path / "lib"), "--no-prebuilt"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: the Hugging Face Hub is not reachable") and "\n" not in error
    with pytest.raises(StudioError, match="neither a folder nor"):
        pull(library, str(tmp_path / "no-such-folder"), tiny)


# ---- pull ---------------------------------------------------------------------------------------------------------
def test_pull_round_trips_a_library(tiny, tiny_llama_dir, tmp_path, online, capsys):
    source = Library(tmp_path / "source")
    populate(source, tiny.name)
    hub = FakeApi(tmp_path / "snapshot")
    push(source, None, "someone/lib", tiny, api=hub)
    target = Library(tmp_path / "target")
    pulled = pull(target, "someone/lib", tiny, revision="main", download=hub.snapshot_download, api=hub)
    assert hub.reads == [("model_info", "someone/lib", "main"), ("list_repo_tree", "someone/lib", COMMIT)]
    [download] = hub.downloads  # the commit that was listed, only the files a pull reads, into a temporary folder
    assert {k: v for k, v in download.items() if k != "local_dir"} == {
        "repo_id": "someone/lib", "repo_type": "model", "revision": COMMIT, "allow_patterns": CATALOG_PATTERNS}
    assert set(hub.fetched) == tree(tmp_path / "snapshot") - {"README.md"}
    assert not Path(download["local_dir"]).exists()  # removed after the pull: nothing piles up in a cache
    assert described(target) == described(source) and sorted(i.id for i in pulled) == sorted(described(source))
    assert {i.pulled_from for i in target.items()} == {f"someone/lib@{COMMIT[:12]}"}  # the repository at the commit pulled
    assert not [i for i in source.items() if i.pulled_from]
    for item in source.items():
        torch.testing.assert_close(target.tensor(item.id), source.tensor(item.id))
    before = snapshot(target)
    pull(target, tmp_path / "snapshot", tiny)  # a local folder works offline too; twice stores nothing twice
    pull(source, tmp_path / "snapshot", tiny)
    assert snapshot(target) == before and described(source) == described(target)
    assert {i.pulled_from for i in source.items()} == {None}  # its own items stay its own
    # the command line: one line per item, or JSON
    cli_library = tmp_path / "cli"
    assert main(["hub", "pull", str(tmp_path / "snapshot"), "--model", str(tiny_llama_dir), "--library",
                 str(cli_library), "--no-prebuilt", "--json"]) == 0
    assert sorted(r["id"] for r in json.loads(capsys.readouterr().out)) == sorted(described(source))


def rewrite_item(folder: Path, item_id: str, change) -> None:
    """Replace the tensor of ``items/<item_id>.safetensors`` in a pushed repository by ``change(tensor)``, keeping
    its metadata: what someone altering a repository would do."""
    from safetensors import safe_open

    path = folder / "items" / f"{item_id}.safetensors"
    with safe_open(path, "pt") as file:
        metadata, tensor = file.metadata(), file.get_tensor("prompt")
    save_file({"prompt": change(tensor).contiguous()}, path, metadata=metadata)


@pytest.mark.parametrize("altered", ["origin", "tpv mr"])
def test_a_pull_refuses_an_origin_or_vector_that_is_not_what_it_says(tiny, tmp_path, online, altered):
    """A forged origin 0 would become every later seed-0 job's origin (``find_origin``); a vector must be its
    prompt minus its origin. Either refuses the whole pull; an honest copy of the same repository pulls."""
    source = Library(tmp_path / "source")
    items = populate(source, tiny.name)
    push(source, None, "someone/lib", tiny, api=FakeApi(tmp_path / "repo"))
    honest = tmp_path / "honest"
    shutil.copytree(tmp_path / "repo", honest)
    rewrite_item(tmp_path / "repo", items[altered].id, lambda t: torch.full_like(t, 0.123))
    target = Library(tmp_path / "target")
    before = snapshot(target)
    with pytest.raises(StudioError, match=f"{items[altered].id} says it is .* the repository was altered"):
        pull(target, tmp_path / "repo", tiny)
    assert snapshot(target) == before
    assert len(pull(target, honest, tiny)) == len(items)


def test_a_pulled_seed_out_of_range_is_refused_before_anything_is_stored(tiny, tmp_path, online):
    source = Library(tmp_path / "source")
    items = populate(source, tiny.name)
    push(source, None, "someone/lib", tiny, api=FakeApi(tmp_path / "repo"))
    catalog = json.loads((tmp_path / "repo" / CATALOG).read_text())
    next(r for r in catalog["items"] if r["id"] == items["tpv mr"].id)["seed"] = 10**30
    (tmp_path / "repo" / CATALOG).write_text(json.dumps(catalog))
    target = Library(tmp_path / "target")
    before = snapshot(target)
    with pytest.raises(StudioError, match="its origin seed must be a whole number between 0 and .*damaged"):
        pull(target, tmp_path / "repo", tiny)
    assert snapshot(target) == before


# ---- what a pull may download ------------------------------------------------------------------------------------
SHARDS = {f"model-0000{i}-of-00004.safetensors": 5 * 1024 ** 3 for i in range(1, 5)}  # an LLM's weights, 20 GB


def test_a_model_repository_is_refused_before_anything_is_downloaded(tiny, tmp_path, online):
    """A big model's repository id typed on a public Space: listed, refused, nothing downloaded."""
    llm = {**SHARDS, "model.safetensors.index.json": 30_000, "config.json": 700, "tokenizer.json": 2_000_000,
           "README.md": 5_000}
    api = FakeApi(tmp_path / "absent", listed=llm)
    library = Library(tmp_path / "lib")
    before = snapshot(library)
    with pytest.raises(StudioError, match=f"big-llm has no {CATALOG} and no PEFT adapter"):
        pull(library, "someone/big-llm", tiny, download=api.snapshot_download, api=api)
    assert api.downloads == [] and snapshot(library) == before


def _studio_repo(tiny, tmp_path: Path) -> tuple[Path, dict]:
    source = Library(tmp_path / "source")
    items = populate(source, tiny.name)
    return hub_layout(source, None, tiny, tmp_path / "repo"), items


def _too_big(repo: Path, items: dict) -> list[tuple[str, dict[str, int]]]:
    """Listings the limits refuse (what the message says, the listed files): an item file that takes the total just
    past the limit, a big file deep under items/ (the patterns' "*" matches "/"), too many item files, too many
    files to list at all."""
    read = len(tree(repo)) - 1  # every file of the studio's repository but its README.md
    many = {f"items/o-{i:08x}.safetensors": 1 for i in range(MAX_PULL_FILES - read + 1)}
    return [(f"too big to pull: .* {read} files of 200.0 MB.* at most {MAX_PULL_FILES:,} files of 200 MB",
             {f"items/{items['origin'].id}.safetensors": MAX_PULL_BYTES}),
            (f"{read + 1} files of 300.0 MB", {"items/deep/er/weights.safetensors": 300 * 1024 ** 2}),
            (f"too big to pull: .* {MAX_PULL_FILES + 1:,} files of", many),
            (f"more than {MAX_LISTED_FILES:,} files", {f"data/{i}.txt": 1 for i in range(MAX_LISTED_FILES)})]


@pytest.mark.parametrize("case", range(4))
def test_a_studio_repository_over_the_limits_is_refused_before_anything_is_downloaded(case, tiny, tmp_path, online):
    repo, items = _studio_repo(tiny, tmp_path)
    message, listed = _too_big(repo, items)[case]
    api = FakeApi(repo, listed=listed)
    library = Library(tmp_path / "lib")
    before = snapshot(library)
    with pytest.raises(StudioError, match=message) as error:
        pull(library, "someone/lib", tiny, download=api.snapshot_download, api=api)
    assert "\n" not in str(error.value) and api.downloads == [] and snapshot(library) == before


def test_beside_a_models_shards_only_the_adapters_are_downloaded(tiny, tmp_path, online):
    """A repository without a catalog: its PEFT adapters come (three files each), its model's shards do not."""
    repo, items = _studio_repo(tiny, tmp_path)
    (repo / CATALOG).unlink()
    shutil.rmtree(repo / "items")
    (repo / "notes.txt").write_text("not needed")
    api = FakeApi(repo, listed=SHARDS)
    pulled = pull(Library(tmp_path / "lib"), "someone/mixed", tiny, download=api.snapshot_download, api=api)
    adapters = {items[k].id for k in ("origin", "mr", "tweets", "combined")}
    assert sorted((i.kind, i.name) for i in pulled) == sorted(
        (items[k].kind, items[k].name) for k in ("origin", "mr", "tweets", "combined"))
    assert api.downloads[0]["allow_patterns"] == ADAPTER_PATTERNS
    assert sorted(api.fetched) == sorted(f"adapters/{i}/{f}" for i in adapters
                                         for f in ("adapter_config.json", "adapter_model.safetensors",
                                                   "studio_item.json"))


def test_a_repository_of_peft_adapters_pulls_from_the_hub(t5, authors_repo, tmp_path, online):
    repo, tensors, n = authors_repo
    api = FakeApi(repo)
    pulled = pull(Library(tmp_path / "lib"), "rbelanec/t5-pt", t5, origin="t5-pt-origin0",
                  download=api.snapshot_download, api=api)
    assert sorted(i.kind for i in pulled) == ["origin", "prompt", "prompt", "vector", "vector"]
    assert {Path(p).name for p in api.fetched} == {"adapter_config.json", "adapter_model.safetensors"}
    assert len(api.fetched) == 2 * len(tensors) and not Path(api.downloads[0]["local_dir"]).exists()


def make_peft_t5_adapter(t5_dir: Path, folder: Path, n: int, seed: int) -> torch.Tensor:
    """A prompt-tuning adapter saved by PEFT itself for a T5 model: prompt_embeddings [2 n, d]."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(seed)
    base = AutoModelForSeq2SeqLM.from_pretrained(t5_dir, dtype=torch.float32)
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=n))
    model.save_pretrained(str(folder))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["num_transformer_submodules"] == 2 and config["task_type"] == "SEQ_2_SEQ_LM"
    from safetensors.torch import load_file

    both = load_file(str(folder / "adapter_model.safetensors"))["prompt_embeddings"]
    assert both.shape == (2 * n, 32)
    return both


@pytest.fixture(scope="module")
def authors_repo(tiny_t5_dir, tmp_path_factory) -> tuple[Path, dict, int]:
    """A repository like the paper authors': an origin and two task prompts, T5 adapters saved by PEFT."""
    repo, n = tmp_path_factory.mktemp("hub") / "authors", 3
    tensors = {name: make_peft_t5_adapter(tiny_t5_dir, repo / name, n, seed)
               for seed, name in enumerate(("t5-pt-origin0", "t5-pt-mnli", "t5-pt-qnli"))}
    return repo, tensors, n


def test_peft_t5_adapters_import_as_their_encoder_half(t5, tiny_t5_dir, authors_repo, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    repo, tensors, n = authors_repo
    library = Library(tmp_path / "plain")
    items = {i.name: i for i in pull(library, repo, t5)}
    assert sorted(items) == sorted(tensors) and {i.kind for i in items.values()} == {"prompt"}
    for name, item in items.items():
        torch.testing.assert_close(library.tensor(item.id), tensors[name][:n])
        assert "kept the encoder half" in item.recipe["peft_halves"]
        assert "decoder half was dropped" in item.recipe["peft_halves"]
        assert item.recipe["imported_from"] == f"authors/{name}"
    # it predicts as PEFT does: PEFT prepends only the encoder half to the encoder input
    peft_model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, dtype=torch.float32),
                                           str(repo / "t5-pt-mnli")).eval()
    plain = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, dtype=torch.float32).eval()
    ids, labels = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[10, 11, 12]])
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, labels=labels).logits
        embeds = torch.cat([library.tensor(items["t5-pt-mnli"].id)[None], plain.get_input_embeddings()(ids)], dim=1)
        ours = plain(inputs_embeds=embeds, labels=labels).logits
    torch.testing.assert_close(theirs, ours)


def test_marking_the_origin_forms_task_prompt_vectors(t5, tiny_t5_dir, authors_repo, tmp_path):
    repo, tensors, n = authors_repo
    marked = Library(tmp_path / "marked")
    pulled = pull(marked, repo, t5, origin="t5-pt-origin0")
    origin = next(i for i in pulled if i.kind == "origin")
    prompts = [i for i in pulled if i.kind == "prompt"]
    vectors = [i for i in pulled if i.kind == "vector"]
    assert origin.name == "t5-pt-origin0" and len(prompts) == 2 and len(vectors) == 2
    for prompt in prompts:
        assert prompt.origin_id == origin.id
        vector = next(v for v in vectors if v.prompt_id == prompt.id)
        expected = tensors[prompt.name][:n] - tensors["t5-pt-origin0"][:n]
        torch.testing.assert_close(marked.tensor(vector.id), expected)
        torch.testing.assert_close(marked.vector(prompt.id).delta, expected)
    before = snapshot(marked)
    pull(marked, repo, t5, origin="t5-pt-origin0")
    assert snapshot(marked) == before
    # the authors publish origin and task prompts in separate repositories: an origin already pulled can be named
    later = tmp_path / "later"
    make_peft_t5_adapter(tiny_t5_dir, later, n, seed=1)  # the same prompt as t5-pt-mnli
    again = pull(marked, later, t5, origin=origin.id)
    assert [i.id for i in again] == [i.id for i in pulled if i.name in ("t5-pt-mnli", "TPV t5-pt-mnli")]
    assert snapshot(marked) == before
    # a repository holding only its origin adapter (at any depth) is marked by the repository's name
    shutil.copytree(repo / "t5-pt-origin0", tmp_path / "t5-base-pt-origin0" / "nested")
    alone = pull(Library(tmp_path / "alone"), tmp_path / "t5-base-pt-origin0", t5, origin="t5-base-pt-origin0")
    assert [(i.kind, i.id) for i in alone] == [("origin", origin.id)]


# ---- bad repositories ---------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this would create a marker file: proof that a file was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _edit_catalog(repo: Path, edit) -> None:
    catalog = json.loads((repo / CATALOG).read_text())
    edit(catalog["items"])
    (repo / CATALOG).write_text(json.dumps(catalog))


def _bad_repo(kind: str, tmp_path: Path, tiny, tiny_t5_dir) -> Path:
    """A repository with good items and one bad thing."""
    source = Library(tmp_path / "source")
    items = populate(source, tiny.name)
    repo = hub_layout(source, None, tiny, tmp_path / "repo")
    bad_adapter = repo / "adapters" / items["tweets"].id
    if kind in ("nothing", "pickle", "other_hidden", "seq2seq"):
        (repo / CATALOG).unlink()
    if kind == "nothing":
        shutil.rmtree(repo / "adapters")
    elif kind in ("pickle", "pickle_in_catalog"):
        (bad_adapter / "adapter_model.safetensors").unlink()
        (bad_adapter / "adapter_model.bin").write_bytes(pickle.dumps({"prompt_embeddings": Payload(tmp_path / "pwned")}))
    elif kind == "other_hidden":
        save_file({"prompt_embeddings": rand(d=48)}, str(bad_adapter / "adapter_model.safetensors"))
    elif kind == "seq2seq":
        make_peft_t5_adapter(tiny_t5_dir, repo / "t5-adapter", 4, seed=0)
    elif kind == "other_model":
        _edit_catalog(repo, lambda records: records[-1].update(model="gemma3-270m"))
    elif kind == "nan":
        tensor = rand(seed=3) - rand(seed=1)
        tensor[0, 0] = float("nan")
        save_file({"prompt": tensor}, str(repo / "items" / f"{items['tpv tweets'].id}.safetensors"))
    elif kind == "lineage":
        _edit_catalog(repo, lambda records: records.pop(0))  # the origin
    elif kind == "bad_id":
        _edit_catalog(repo, lambda records: records[-1].update(id="p-../../../escape"))
    elif kind == "shape":
        _edit_catalog(repo, lambda records: records[1].update(n_tokens=5))
    return repo


BAD_REPOS = {
    "nothing": "no studio_catalog.json and no PEFT adapter",
    "pickle": "adapter_model.bin holds pickle weights: they are refused, never loaded",
    "pickle_in_catalog": "adapter_model.bin holds pickle weights: they are refused, never loaded",
    "other_hidden": "hidden size 48 but the model has 32",
    "seq2seq": "SEQ_2_SEQ_LM adapter, made for an encoder-decoder model",
    "other_model": "made for model gemma3-270m",
    "nan": "1 NaN or infinite",
    "lineage": "lineage of .* is incomplete",
    "bad_id": "bad id or kind",
    "shape": "the catalog says",
}


@pytest.mark.parametrize("kind", sorted(BAD_REPOS))
def test_bad_repository_is_refused_and_changes_nothing(kind, tiny, tiny_t5_dir, tmp_path):
    repo = _bad_repo(kind, tmp_path, tiny, tiny_t5_dir)
    library = Library(tmp_path / "lib")
    library.add("prompt", rand(seed=11), tiny.name, name="already here")
    before = snapshot(library)
    with pytest.raises(StudioError, match=BAD_REPOS[kind]) as error:
        pull(library, repo, tiny)
    assert "\n" not in str(error.value)
    assert snapshot(library) == before
    assert not [p for p in (tmp_path / "lib").rglob("*") if "partial" in p.name]
    assert not (tmp_path / "pwned").exists(), "a pickle was loaded"


@pytest.mark.parametrize("point", ["atomic:before-rename:3", "store:files-written:1"])
def test_a_pull_killed_while_it_stores_leaves_the_library_as_it_was(point, tiny, tiny_llama_dir, tmp_path):
    """A pull stores every item in one transaction: killed (kill -9) between its files or before its commit, it leaves
    the catalog as it was, never a prompt without its origin or vector; pulling again stores all of it."""
    source = Library(tmp_path / "source")
    populate(source, tiny.name)
    repo = hub_layout(source, None, tiny, tmp_path / "repo")
    target = Library(tmp_path / "target")
    target.add("prompt", rand(seed=11), tiny.name, name="already here")
    rows, _ = snapshot(target)
    command = [sys.executable, "-m", "studio", "hub", "pull", str(repo), "--model", str(tiny_llama_dir), "--library",
               str(target.root), "--no-prebuilt"]
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "STUDIO_KILL_AT": point}
    root = Path(__file__).resolve().parent.parent
    killed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
    assert snapshot(target)[0] == rows
    env.pop("STUDIO_KILL_AT")
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert {k: v for k, v in described(target).items() if k in described(source)} == described(source)
    assert {p.name for p in (target.root / "items").iterdir()} == {Path(i.file).name for i in target.items()}


def test_a_library_zip_pulls_offline_from_the_command_line(tiny, tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """`studio hub pull my-library.zip`: the Library tab's download (Restore's input) works from a shell too, offline,
    with the same checks; a zip without a catalog stores nothing."""
    from studio.files import zip_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = Library(tmp_path / "source")
    populate(source, tiny.name)
    archive = zip_folder(hub_layout(source, None, tiny, tmp_path / "my-library"), tmp_path / "mine.zip")
    target = tmp_path / "target"
    assert main(["hub", "pull", str(archive), "--model", str(tiny_llama_dir), "--library", str(target),
                 "--no-prebuilt", "--json"]) == 0
    assert sorted(r["id"] for r in json.loads(capsys.readouterr().out)) == sorted(described(source))
    assert described(Library(target)) == described(source)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    empty = zip_folder(tmp_path / "other", tmp_path / "empty.zip")
    fresh = Library(tmp_path / "fresh")
    before = snapshot(fresh)
    with pytest.raises(StudioError, match="holds no studio_catalog.json"):
        pull(fresh, empty, tiny)
    assert snapshot(fresh) == before


def test_a_downloaded_library_of_many_items_restores(tiny, tmp_path):
    """Download my library writes three or four files an item: 20 prompts with their TPVs are 86 files, over the
    64 an uploaded adapter zip may have. Restore takes what a pull takes (``MAX_PULL_FILES``), so it restores."""
    from studio.files import zip_folder

    library = Library(tmp_path / "many")
    start = make_origin(tiny, 0, 4, "top5000")
    origin = library.add("origin", start, tiny.name, name="origin 0", seed=0, recipe={"init": "top5000"})
    for n in range(20):
        prompt = library.add("prompt", start + rand(seed=n + 1), tiny.name, task="mr", origin_id=origin.id)
        library.add("vector", rand(seed=n + 1), tiny.name, task="mr", origin_id=origin.id, prompt_id=prompt.id)
    archive = zip_folder(hub_layout(library, None, tiny, tmp_path / "my-library"), tmp_path / "mine.zip")
    with zipfile.ZipFile(archive) as members:
        assert len(members.namelist()) > 64
    restored = Library(tmp_path / "restored")
    assert len(pull(restored, archive, tiny)) == 41
    assert described(restored) == described(library)
    assert {i.pulled_from for i in restored.items()} == {None}  # one's own backup: not marked as pulled


def test_a_library_mixing_two_machines_copies_of_one_origin_pulls(tiny, tmp_path, online):
    """Machine A (an fp32 model) and machine B (bf16) both made origin 0: one content id, values a rounding apart.
    A restored B's prompts and vectors (its own origin kept), then pushed: the vectors are B's prompt minus B's
    origin, a rounding away from A's origin. That library is honest and must pull."""
    library = Library(tmp_path / "mixed")
    origin_a = make_origin(tiny, 0, 4, "top5000")
    origin_b = origin_a.to(torch.bfloat16).float()
    assert not torch.equal(origin_a, origin_b)
    origin = library.add("origin", origin_a, tiny.name, name="origin 0", seed=0, recipe={"init": "top5000"})
    prompt_b = origin_b + 0.1 * rand(seed=5)
    prompt = library.add("prompt", prompt_b, tiny.name, task="mr", seed=0, origin_id=origin.id)
    library.add("vector", prompt_b - origin_b, tiny.name, task="mr", seed=0, origin_id=origin.id,
                prompt_id=prompt.id)
    push(library, None, "someone/mixed", tiny, api=FakeApi(tmp_path / "repo"))
    assert len(pull(Library(tmp_path / "target"), tmp_path / "repo", tiny)) == 3
