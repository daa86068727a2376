"""The library: items, lineage, the read-only prebuilt parent, and imports that refuse bad files without side effects."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time

import pytest
import torch
from safetensors.torch import save_file

from studio import StudioError
from studio.backbones import load_backbone
from studio.library import Library, open_library, read_prompt_file
from studio.prompts import TaskPromptVector

MODEL = "tiny-model"


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


def rand(n=4, d=32, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def populate(library: Library, model: str = MODEL):
    """An origin, a tuned prompt on it and the prompt's vector: the lineage run_tuning stores."""
    origin_t, tuned_t = rand(seed=1), rand(seed=2)
    origin = library.add("origin", origin_t, model, name="origin 0", seed=0, recipe={"init": "top5000"})
    prompt = library.add("prompt", tuned_t, model, name="mr / origin 0", task="mr", seed=0, origin_id=origin.id,
                         metrics={"validation_accuracy": 0.8})
    vector = library.add("vector", tuned_t - origin_t, model, name="TPV mr", task="mr", seed=0,
                         origin_id=origin.id, prompt_id=prompt.id)
    return origin, prompt, vector


def snapshot(library: Library) -> tuple:
    """Everything a failed operation must leave as it was: catalog rows and the items folder."""
    db = sqlite3.connect(library.root / "catalog.sqlite")
    rows = db.execute("SELECT * FROM items ORDER BY id").fetchall()
    db.close()
    files = sorted((p.name, p.read_bytes()) for p in (library.root / "items").iterdir())
    return rows, files


# ---- basic operations ---------------------------------------------------------------------------------------------
def test_add_get_list_rename(tmp_path):
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library)
    assert origin.id.startswith("o-") and prompt.id.startswith("p-") and vector.id.startswith("v-")
    got = library.get(prompt.id)
    assert got.kind == "prompt" and got.task == "mr" and got.origin_id == origin.id
    assert got.n_tokens == 4 and got.hidden == 32 and got.metrics == {"validation_accuracy": 0.8}
    assert got.source == "user" and (tmp_path / "lib" / got.file).is_file()
    torch.testing.assert_close(library.tensor(prompt.id), rand(seed=2))
    assert [i.id for i in library.items()] == [origin.id, prompt.id, vector.id]
    assert [i.id for i in library.items(kind="vector")] == [vector.id]
    assert [i.id for i in library.items(task="mr")] == [prompt.id, vector.id]
    assert library.items(model="other") == []
    assert [i.id for i in library.items(text="TPV")] == [vector.id]
    assert library.rename(prompt.id, "  better name ").name == "better name"
    with pytest.raises(StudioError, match="empty"):
        library.rename(prompt.id, "   ")
    assert library.update_metrics(prompt.id, {"test_accuracy": 0.7}).metrics == {
        "validation_accuracy": 0.8, "test_accuracy": 0.7}
    with pytest.raises(StudioError, match="no library item 'p-missing'"):
        library.get("p-missing")
    with pytest.raises(StudioError, match="already exists"):
        library.add("prompt", rand(), MODEL, item_id=prompt.id)
    with pytest.raises(StudioError, match="unknown kind"):
        library.add("adapter", rand(), MODEL)
    with pytest.raises(StudioError, match="no library item"):
        library.add("prompt", rand(), MODEL, origin_id="o-missing")
    with pytest.raises(StudioError, match="NaN"):
        library.add("prompt", torch.full((4, 32), float("nan")), MODEL)


def test_vectors_from_the_library(tmp_path):
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library)
    from_prompt = library.vector(prompt.id)
    assert isinstance(from_prompt, TaskPromptVector) and from_prompt.model == MODEL
    torch.testing.assert_close(from_prompt.delta, rand(seed=2) - rand(seed=1))
    torch.testing.assert_close(library.vector(vector.id).delta, from_prompt.delta)
    with pytest.raises(StudioError, match="no task prompt vector"):
        library.vector(origin.id)


def test_delete_needs_cascade_for_dependents(tmp_path):
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library)
    assert {d.id for d in library.dependents(origin.id)} == {prompt.id, vector.id}
    assert [d.id for d in library.dependents(prompt.id)] == [vector.id]
    before = snapshot(library)
    with pytest.raises(StudioError, match=f"{prompt.id} is used by {vector.id}"):
        library.delete(prompt.id)
    assert snapshot(library) == before
    assert library.delete(vector.id) == [vector.id]
    assert not (tmp_path / "lib" / vector.file).exists()
    assert library.delete(prompt.id) == [prompt.id]
    assert [i.id for i in library.items()] == [origin.id]


def test_cascade_delete_of_an_origin(tmp_path):
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library)
    other = library.add("prompt", rand(seed=5), MODEL, name="unrelated")
    deleted = library.delete(origin.id, cascade=True)
    assert sorted(deleted) == sorted([origin.id, prompt.id, vector.id])
    assert deleted[-1] == origin.id
    assert [i.id for i in library.items()] == [other.id]
    assert sorted(p.name for p in (tmp_path / "lib" / "items").iterdir()) == [f"{other.id}.safetensors"]


def test_catalog_survives_reopening(tmp_path):
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library)
    library.rename(vector.id, "renamed")
    del library
    reopened = Library(tmp_path / "lib")
    assert [i.id for i in reopened.items()] == [origin.id, prompt.id, vector.id]
    assert reopened.get(vector.id).name == "renamed"
    assert reopened.get(prompt.id).recipe == {} and reopened.get(origin.id).recipe == {"init": "top5000"}
    torch.testing.assert_close(reopened.tensor(vector.id), rand(seed=2) - rand(seed=1))


def test_catalogs_from_before_the_seed_rename_still_open(tmp_path):
    """Libraries made when ``Item.seed`` was called ``origin`` open as they were: the SQLite column is renamed in
    place, and a read-only catalog.json with the old key reads the same."""
    library = Library(tmp_path / "lib")
    origin, prompt, _ = populate(library)
    db = sqlite3.connect(tmp_path / "lib" / "catalog.sqlite")
    with db:
        db.execute("ALTER TABLE items RENAME COLUMN seed TO origin")
    db.close()
    reopened = Library(tmp_path / "lib")
    assert reopened.get(prompt.id).seed == 0 and reopened.get(origin.id).seed == 0
    assert reopened.add("origin", rand(seed=9), prompt.model, seed=5).seed == 5
    exported = reopened.export_catalog(tmp_path / "prebuilt")
    records = json.loads((exported / "catalog.json").read_text())
    for record in records:
        record["origin"] = record.pop("seed")
    (exported / "catalog.json").write_text(json.dumps(records))
    old = Library(exported, read_only=True)
    assert sorted(i.seed for i in old.items(kind="origin")) == [0, 5]


# ---- the prebuilt library -----------------------------------------------------------------------------------------
@pytest.fixture
def with_prebuilt(tmp_path):
    source = Library(tmp_path / "build")
    origin, prompt, vector = populate(source)
    prebuilt = source.export_catalog(tmp_path / "prebuilt")
    assert not list(tmp_path.glob("*.partial"))
    user = open_library(tmp_path / "user", prebuilt=prebuilt)
    return user, (origin, prompt, vector)


def test_prebuilt_parent_is_listed_and_read(with_prebuilt):
    user, (origin, prompt, vector) = with_prebuilt
    items = user.items()
    assert [i.id for i in items] == [origin.id, prompt.id, vector.id]
    assert all(i.source == "prebuilt" for i in items)
    assert user.get(prompt.id).metrics == {"validation_accuracy": 0.8}
    torch.testing.assert_close(user.tensor(prompt.id), rand(seed=2))
    torch.testing.assert_close(user.vector(prompt.id).delta, rand(seed=2) - rand(seed=1))
    # the user's own items come first and can build on prebuilt ones
    mine = user.add("prompt", rand(seed=9), MODEL, origin_id=origin.id)
    assert [i.id for i in user.items()][0] == mine.id and user.get(mine.id).source == "user"
    assert {d.id for d in user.dependents(origin.id)} == {prompt.id, vector.id, mine.id}


def test_prebuilt_tensors_are_read_once_and_handed_out_as_copies(with_prebuilt, monkeypatch):
    """The prebuilt library never changes, so its files are read once (the UI's first views read each many times);
    a caller that changes its tensor in place does not change what the next caller gets."""
    import studio.library

    user, (origin, prompt, vector) = with_prebuilt
    reads = []
    original = studio.library.read_prompt_file
    monkeypatch.setattr(studio.library, "read_prompt_file", lambda *a, **k: reads.append(a[0]) or original(*a, **k))
    first = user.tensor(prompt.id)
    first += 100.0
    torch.testing.assert_close(user.tensor(prompt.id), rand(seed=2))
    assert len(reads) == 1
    mine = user.add("prompt", rand(seed=9), MODEL, origin_id=origin.id)  # the user's own: read every time
    user.tensor(mine.id), user.tensor(mine.id)
    assert len(reads) == 3


def test_prebuilt_parent_refuses_writes(with_prebuilt):
    user, (origin, prompt, vector) = with_prebuilt
    prebuilt = user.parents[0]
    before = snapshot(user)
    catalog_before = (prebuilt.root / "catalog.json").read_text()
    with pytest.raises(StudioError, match="read-only"):
        user.rename(prompt.id, "mine now")
    with pytest.raises(StudioError, match="read-only"):
        user.delete(vector.id)
    with pytest.raises(StudioError, match="read-only"):
        user.delete(origin.id, cascade=True)
    with pytest.raises(StudioError, match="read-only"):
        user.update_metrics(prompt.id, {"x": 1})
    with pytest.raises(StudioError, match="read-only"):
        prebuilt.add("prompt", rand(), MODEL)
    with pytest.raises(StudioError, match="read-only"):
        prebuilt.rename(prompt.id, "x")
    with pytest.raises(StudioError, match="no library item"):
        user.rename("p-nowhere", "x")
    assert snapshot(user) == before
    assert (prebuilt.root / "catalog.json").read_text() == catalog_before
    assert user.get(prompt.id).name == "mr / origin 0"


def test_missing_prebuilt_is_ignored(tmp_path):
    library = open_library(tmp_path / "user", prebuilt=tmp_path / "absent")
    assert library.parents == [] and library.items() == []
    with pytest.raises(StudioError, match="catalog.json missing"):
        Library(tmp_path / "absent", read_only=True)


# ---- imports and exports ------------------------------------------------------------------------------------------
def test_export_and_import_round_trip(tmp_path, tiny):
    source = Library(tmp_path / "a")
    prompt = source.add("prompt", rand(seed=3), tiny.name, task="mr")
    path = source.export_safetensors(prompt.id, tmp_path / "prompt.safetensors")
    tensor, metadata = read_prompt_file(path, 32)
    torch.testing.assert_close(tensor, rand(seed=3))
    assert metadata["model"] == tiny.name and metadata["kind"] == "prompt" and metadata["task"] == "mr"
    target = Library(tmp_path / "b")
    imported = target.import_file(path, tiny)
    assert imported.kind == "prompt" and imported.task == "mr" and imported.model == tiny.name
    assert imported.recipe == {"imported_from": "prompt.safetensors"}
    torch.testing.assert_close(target.tensor(imported.id), rand(seed=3))
    # a plain file someone saved with safetensors: our key, no metadata
    plain = tmp_path / "plain.safetensors"
    save_file({"prompt": rand(seed=4)}, str(plain))
    item = target.import_file(plain, tiny, kind="vector", task="tweets", name="theirs")
    assert (item.kind, item.task, item.name) == ("vector", "tweets", "theirs")
    # a PEFT adapter folder exported by the studio
    peft_dir = source.export_peft(prompt.id, tmp_path / "adapter", tiny)
    assert not list(tmp_path.glob("*.partial"))
    from_peft = target.import_file(peft_dir, tiny)
    torch.testing.assert_close(target.tensor(from_peft.id), rand(seed=3))
    assert from_peft.recipe["peft_base_model"] == tiny.name
    assert (from_peft.kind, from_peft.task, from_peft.name) == ("prompt", "mr", prompt.name)  # studio_item.json
    item_json = json.loads((peft_dir / "studio_item.json").read_text())
    (peft_dir / "studio_item.json").write_text(json.dumps({**item_json, "model": "another-model"}))
    before = len(target.items())
    with pytest.raises(StudioError, match="made for model another-model"):
        target.import_file(peft_dir, tiny)
    for broken in ("{not json", "[]"):
        (peft_dir / "studio_item.json").write_text(broken)
        with pytest.raises(StudioError, match="studio_item.json in the adapter folder is not valid JSON"):
            target.import_file(peft_dir, tiny)
    (peft_dir / "studio_item.json").unlink()
    (peft_dir / "adapter_config.json").write_text("[1, 2")
    with pytest.raises(StudioError, match="adapter_config.json in adapter is not valid JSON"):
        target.import_file(peft_dir, tiny)
    assert len(target.items()) == before


def test_import_with_origin_checks_length(tmp_path, tiny):
    library = Library(tmp_path / "lib")
    origin = library.add("origin", rand(n=4), tiny.name)
    path = tmp_path / "five.safetensors"
    save_file({"prompt": rand(n=5)}, str(path))
    before = snapshot(library)
    with pytest.raises(StudioError, match="5 virtual tokens but origin"):
        library.import_file(path, tiny, origin_id=origin.id)
    assert snapshot(library) == before
    good = tmp_path / "four.safetensors"
    save_file({"prompt": rand(n=4, seed=8)}, str(good))
    item = library.import_file(good, tiny, origin_id=origin.id)
    torch.testing.assert_close(library.vector(item.id).delta, rand(n=4, seed=8) - rand(n=4))


class Payload:
    """Unpickling this would create a marker file: proof that a file was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_file(kind: str, tmp_path, tiny, library: Library):
    path = tmp_path / f"{kind}.safetensors"
    good = tmp_path / "good-source.safetensors"
    save_file({"prompt": rand()}, str(good))
    if kind == "garbage":
        path.write_bytes(b"this is not a safetensors file at all, just some bytes" * 3)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:-100])
    elif kind == "header_only":
        path.write_bytes(good.read_bytes()[:20])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong_key":
        save_file({"weights": rand()}, str(path))
    elif kind == "wrong_hidden":
        save_file({"prompt": rand(d=576)}, str(path))
    elif kind == "other_model":
        save_file({"prompt": rand()}, str(path), metadata={"model": "gemma3-270m", "kind": "prompt"})
    elif kind == "one_dimensional":
        save_file({"prompt": torch.zeros(32)}, str(path))
    elif kind == "nan":
        tensor = rand()
        tensor[1, 3] = float("nan")
        save_file({"prompt": tensor}, str(path))
    elif kind == "inf":
        tensor = rand()
        tensor[0, 0] = float("inf")
        tensor[2, 2] = float("-inf")
        save_file({"prompt": tensor}, str(path))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"prompt": Payload(tmp_path / "pwned")}))
    elif kind == "pickle_protocol0":
        path.write_bytes(pickle.dumps({"prompt": Payload(tmp_path / "pwned")}, protocol=0))
    elif kind == "torch_save":
        torch.save({"prompt": rand(), "evil": Payload(tmp_path / "pwned")}, path)
    elif kind == "torch_save_pt":
        path = tmp_path / "prompt.pt"
        torch.save({"prompt": rand(), "evil": Payload(tmp_path / "pwned")}, path)
    elif kind == "missing":
        path = tmp_path / "absent.safetensors"
    elif kind in ("peft_tokens", "peft_type", "peft_no_config", "peft_pickle"):
        source = Library(tmp_path / "source")
        item = source.add("prompt", rand(), tiny.name)
        path = source.export_peft(item.id, tmp_path / "adapter", tiny)
        config_path = path / "adapter_config.json"
        config = json.loads(config_path.read_text())
        if kind == "peft_tokens":
            config["num_virtual_tokens"] = 7
            config_path.write_text(json.dumps(config))
        elif kind == "peft_type":
            config["peft_type"] = "LORA"
            config_path.write_text(json.dumps(config))
        elif kind == "peft_no_config":
            config_path.unlink()
        else:
            (path / "adapter_model.safetensors").unlink()
            torch.save({"prompt_embeddings": rand(), "evil": Payload(tmp_path / "pwned")},
                       path / "adapter_model.safetensors")
    return path


BAD_FILES = {
    "garbage": "not a valid safetensors file",
    "truncated": "not a valid safetensors file|could not be read",
    "header_only": "not a valid safetensors file|could not be read",
    "empty": "not a valid safetensors file|could not be read",
    "wrong_key": r"has no 'prompt' or 'prompt_embeddings' tensor \(it has: weights\)",
    "wrong_hidden": "hidden size 576 but the model has 32",
    "other_model": "made for model gemma3-270m",
    "one_dimensional": "2-D",
    "nan": "1 NaN or infinite",
    "inf": "2 NaN or infinite",
    "pickle": "pickle",
    "pickle_protocol0": "not a valid safetensors file",
    "torch_save": "pickle",
    "torch_save_pt": "pickle",
    "missing": "not found",
    "peft_tokens": "4 prompt rows but the config says 7",
    "peft_type": "LORA adapter",
    "peft_no_config": "not a PEFT adapter folder",
    "peft_pickle": "pickle",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_import_is_refused_and_changes_nothing(kind, tmp_path, tiny):
    library = Library(tmp_path / "lib")
    populate(library, tiny.name)
    path = _bad_file(kind, tmp_path, tiny, library)
    before = snapshot(library)
    with pytest.raises(StudioError, match=BAD_FILES[kind]) as error:
        library.import_file(path, tiny)
    assert "\n" not in str(error.value)
    assert snapshot(library) == before
    assert not list((tmp_path / "lib").rglob("*.partial"))
    assert not (tmp_path / "pwned").exists(), "a pickle was loaded"


def test_read_prompt_file_checks(tmp_path):
    path = tmp_path / "peft.safetensors"
    save_file({"prompt_embeddings": rand(n=6)}, str(path))
    tensor, _ = read_prompt_file(path, 32)
    assert tensor.shape == (6, 32) and tensor.dtype == torch.float32
    half = tmp_path / "half.safetensors"
    save_file({"prompt": rand().to(torch.bfloat16)}, str(half))
    assert read_prompt_file(half)[0].dtype == torch.float32


def test_two_submodule_peft_adapter_keeps_encoder_half(tmp_path, tiny):
    folder = tmp_path / "t5-style"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3, "num_transformer_submodules": 2}))
    both = rand(n=6)
    save_file({"prompt_embeddings": both}, str(folder / "adapter_model.safetensors"))
    library = Library(tmp_path / "lib")
    item = library.import_file(folder, tiny)
    assert item.n_tokens == 3
    torch.testing.assert_close(library.tensor(item.id), both[:3])
    # the token limit counts tokens, not PEFT's rows: 600 tokens are 1,200 rows (refused as 1,200 tokens before)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 600, "num_transformer_submodules": 2}))
    save_file({"prompt_embeddings": rand(n=1200, seed=3)}, str(folder / "adapter_model.safetensors"))
    assert library.import_file(folder, tiny).n_tokens == 600


# ---- exports never delete what they did not write -------------------------------------------------------------
def test_exports_refuse_targets_that_would_lose_data(tmp_path, tiny):
    library = Library(tmp_path / "lib")
    prompt = library.add("prompt", rand(seed=3), tiny.name, task="mr")
    before = snapshot(library)
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(StudioError, match="not empty"):
        library.export_peft(prompt.id, precious, tiny)
    with pytest.raises(StudioError, match="not empty"):
        library.export_peft(prompt.id, precious, tiny, overwrite=True)  # not an earlier export: never replaced
    with pytest.raises(StudioError, match="not empty"):
        library.export_catalog(precious)
    with pytest.raises(StudioError, match="library folder"):
        library.export_peft(prompt.id, library.root, tiny)
    with pytest.raises(StudioError, match="library folder"):
        library.export_peft(prompt.id, library.root / "items" / "x", tiny)
    with pytest.raises(StudioError, match="library folder"):
        library.export_catalog(tmp_path)  # the library lies inside it
    with pytest.raises(StudioError, match="does not exist"):
        library.export_peft(prompt.id, tmp_path / "missing" / "adapter", tiny)
    file_target = tmp_path / "note.safetensors"
    file_target.write_text("mine")
    with pytest.raises(StudioError, match="exists"):
        library.export_safetensors(prompt.id, file_target)
    with pytest.raises(StudioError, match="is a file"):
        library.export_peft(prompt.id, file_target, tiny, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work" and sorted(precious.iterdir()) == [
        precious / "thesis.txt"]
    assert file_target.read_text() == "mine"
    assert snapshot(library) == before
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]
    # what the studio wrote itself can be replaced on request, and an empty folder is a fine target
    adapter = library.export_peft(prompt.id, tmp_path / "adapter", tiny)
    with pytest.raises(StudioError, match="not empty"):
        library.export_peft(prompt.id, adapter, tiny)
    assert library.export_peft(prompt.id, adapter, tiny, overwrite=True) == adapter
    (tmp_path / "empty").mkdir()
    assert (library.export_peft(prompt.id, tmp_path / "empty", tiny) / "adapter_model.safetensors").is_file()
    assert library.export_safetensors(prompt.id, file_target, overwrite=True) == file_target
    torch.testing.assert_close(read_prompt_file(file_target)[0], rand(seed=3))
    exported = library.export_catalog(tmp_path / "catalog")
    assert library.export_catalog(exported) == exported  # an earlier catalog export is replaced whole
    assert json.loads((exported / "catalog.json").read_text())[0]["id"] == prompt.id
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]


def test_names_and_prompt_lengths_are_checked_on_every_way_in(tmp_path):
    from studio.limits import MAX_NAME, MAX_PROMPT_TOKENS, parse_seeds

    library = Library(tmp_path / "lib")
    for bad in ("line\nbreak", "\x1b[31mred", "x" * (MAX_NAME + 1)):
        with pytest.raises(StudioError, match="name"):
            library.add("prompt", rand(), MODEL, name=bad)
    item = library.add("prompt", rand(), MODEL, name="  fine  ")
    assert item.name == "fine"
    with pytest.raises(StudioError, match="line breaks"):
        library.rename(item.id, "two\nlines")
    with pytest.raises(StudioError, match="virtual tokens"):
        library.add("prompt", torch.zeros(0, 32), MODEL)
    with pytest.raises(StudioError, match="virtual tokens"):
        library.add("prompt", torch.zeros(MAX_PROMPT_TOKENS + 1, 32), MODEL)
    assert [i.id for i in library.items()] == [item.id]
    # one seed parser for the CLI and the UI
    assert parse_seeds("3, 1;3 0") == [3, 1, 0]
    for bad, match in (("-1", "between 0"), (str(10**30), "between 0"), ("a", "whole numbers"), ("", "at least one")):
        with pytest.raises(StudioError, match=match):
            parse_seeds(bad)


def test_odd_library_folders_give_one_clear_error(tmp_path, monkeypatch):
    import os

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(StudioError, match="is a file, not a library folder"):
        Library(a_file)
    damaged = tmp_path / "damaged"
    (damaged / "items").mkdir(parents=True)
    (damaged / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StudioError, match="damaged or not a studio catalog"):
        Library(damaged)
    odd = tmp_path / "odd"
    (odd / "catalog.sqlite").mkdir(parents=True)  # a catalog that is there but not a file: move it away
    with pytest.raises(StudioError, match="catalog.sqlite is damaged or not a studio catalog .*move it away"):
        Library(odd)
    if os.path.isdir("/proc/self"):  # a folder that cannot hold a catalog is not called damaged
        with pytest.raises(StudioError, match=r"cannot make a library catalog in /proc/self .*choose a folder"):
            Library("/proc/self")
    # a folder the user may read but not write (as root here, the answer of os.access is what is replaced): it is
    # listed, read and exported without writing a byte; changes say why they cannot happen
    library = Library(tmp_path / "shared")
    origin, prompt, _ = populate(library)
    before = sorted(p.name for p in library.root.rglob("*"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    shared = Library(tmp_path / "shared")
    assert [i.id for i in shared.items()] == [i.id for i in library.items()]
    torch.testing.assert_close(shared.tensor(prompt.id), rand(seed=2))
    with pytest.raises(StudioError, match="read-only"):
        shared.rename(prompt.id, "new name")
    with pytest.raises(StudioError, match="read-only"):
        shared.add("origin", rand(), MODEL)
    assert sorted(p.name for p in library.root.rglob("*")) == before


def test_a_library_deleted_while_in_use_is_a_clear_error(tmp_path):
    import shutil

    library = Library(tmp_path / "lib")
    populate(library)
    shutil.rmtree(library.root)
    with pytest.raises(StudioError, match="library catalog"):
        library.items()
    with pytest.raises(StudioError):
        library.add("origin", rand(), MODEL)


# ---- metric keys, lineage kept on import ------------------------------------------------------------------------
def test_metric_keys_and_accuracy_of_every_kind_of_saved_prompt(tmp_path):
    from studio.library import metric_key, split_metrics

    assert metric_key("validation", "accuracy") == "validation_accuracy"
    assert metric_key("test", "accuracy", "mr") == "test_accuracy/mr"
    assert split_metrics("test", {"accuracy": 0.5, "n": 3}, "mr") == {"test_accuracy/mr": 0.5, "test_n/mr": 3}
    library = Library(tmp_path / "lib")
    origin, tuned, _ = populate(library)  # a tuned prompt: one validation score
    combined = library.add("prompt", rand(seed=5), MODEL, task="mr+tweets", origin_id=origin.id,  # Arithmetic's save
                           metrics={**split_metrics("validation", {"accuracy": 0.6}, "mr"),
                                    **split_metrics("validation", {"accuracy": 0.8}, "tweets")})
    scored = library.add("prompt", rand(seed=6), MODEL, task="mr", origin_id=origin.id,  # build-library's test scores
                         metrics={**split_metrics("test", {"accuracy": 0.9}, "mr"),
                                  **split_metrics("test", {"accuracy": 0.1}, "tweets")})
    assert library.get(tuned.id).accuracy("validation") == 0.8
    assert library.get(combined.id).accuracy("validation") == pytest.approx(0.7)  # the mean over its tasks
    assert library.get(scored.id).accuracy("test") == 0.9  # its own task's, not the mean
    assert library.get(scored.id).accuracy("validation") is None


@pytest.mark.parametrize("form", ["safetensors", "peft folder", "peft zip"])
def test_an_exported_item_imports_with_its_lineage(tmp_path, tiny, form):
    import shutil

    library = Library(tmp_path / "lib")
    origin, _, _ = populate(library, tiny.name)
    prompt = library.add("prompt", rand(seed=7), tiny.name, name="mr tuned", task="mr", origin_id=origin.id)
    if form == "safetensors":
        path = library.export_safetensors(prompt.id, tmp_path / "p.safetensors")
    else:
        path = library.export_peft(prompt.id, tmp_path / "adapter", tiny)
        if form == "peft zip":
            path = shutil.make_archive(str(tmp_path / "adapter"), "zip", root_dir=path)
    imported = library.import_file(path, tiny)
    assert imported.id != prompt.id and imported.origin_id == origin.id and imported.task == "mr"
    assert library.describe(imported.id)["lineage"]["origin_id"] == origin.id
    torch.testing.assert_close(library.tensor(imported.id), rand(seed=7))
    # into a library without that origin the item still imports, without a dangling origin
    other = Library(tmp_path / "other")
    assert other.import_file(path, tiny).origin_id is None
    # an explicit origin wins over the remembered one
    second = library.add("origin", rand(seed=8), tiny.name, name="origin 1", seed=1)
    assert library.import_file(path, tiny, origin_id=second.id).origin_id == second.id


def test_describe_shows_lineage_both_ways(tmp_path):
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library)
    shown = library.describe(prompt.id)
    assert "file" not in shown and shown["lineage"] == {"origin_id": origin.id, "prompt_id": None,
                                                        "dependents": [vector.id]}
    assert library.describe(origin.id)["lineage"]["dependents"] == [prompt.id, vector.id]


# ---- a folder that is not this library's: never emptied ---------------------------------------------------------
def age(paths, seconds: float) -> None:
    for path in paths:
        os.utime(path, (time.time() - seconds, time.time() - seconds))


def test_an_exported_catalog_is_not_opened_as_a_library_and_keeps_its_files(tmp_path):
    """`--library` pointed at the prebuilt library, a build-library output or a download (catalog.json, no
    catalog.sqlite) once made an empty catalog there and then deleted every "orphan" item file in it."""
    source = Library(tmp_path / "build")
    populate(source)
    exported = source.export_catalog(tmp_path / "export")
    files = sorted(p.name for p in (exported / "items").iterdir())
    age((exported / "items").iterdir(), 3600)
    with pytest.raises(StudioError, match="exported catalog.*nothing in this one was changed"):
        Library(exported)
    assert sorted(p.name for p in (exported / "items").iterdir()) == files
    assert not (exported / "catalog.sqlite").exists()
    assert len(Library(exported, read_only=True).items()) == 3  # still whole: it opens as what it is


def test_item_files_older_than_the_catalog_are_left_alone_and_orphans_are_moved_not_deleted(tmp_path):
    """A damaged catalog moved away, as its error message advises: the new empty catalog must not take the old
    item files for its own orphans (they are older than it). A real orphan (a store killed before its transaction,
    written after the catalog was made, untouched for 10 minutes) goes to orphans/, never deleted."""
    library = Library(tmp_path / "lib")
    populate(library)
    files = sorted(p.name for p in (library.root / "items").iterdir())
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        if (library.root / name).exists():
            (library.root / name).rename(tmp_path / name)
    age((library.root / "items").iterdir(), 3600)
    for _ in range(2):  # the first open makes the new catalog, the second would have swept
        assert Library(tmp_path / "lib").items() == []
    assert sorted(p.name for p in (library.root / "items").iterdir()) == files
    # a real orphan of this catalog
    fresh = Library(tmp_path / "fresh")
    db = sqlite3.connect(fresh.root / "catalog.sqlite")
    with db:
        db.execute("UPDATE catalog_meta SET value = ? WHERE key = 'created'", (repr(time.time() - 7200),))
    db.close()
    orphan = fresh.root / "items" / "p-0123456789abcdef.safetensors"
    orphan.write_bytes((library.root / "items" / files[0]).read_bytes())
    young = fresh.root / "items" / "p-fedcba9876543210.safetensors"
    young.write_bytes(orphan.read_bytes())
    age([orphan], 3600)
    Library(tmp_path / "fresh")
    assert not orphan.exists() and (fresh.root / "orphans" / orphan.name).exists()
    assert young.exists()  # written in the last 10 minutes: maybe a store in another process, right now


def test_an_old_catalog_gets_its_date_and_a_catalog_that_cannot_be_written_is_only_read(tmp_path):
    """The creation date is written once, on the first open that lacks it; a catalog file that cannot be written
    (opened read-only here: a root test process can write any file) still opens, and nothing counts as an orphan."""
    from studio.library import _catalog_created

    library = Library(tmp_path / "lib")
    origin, _, _ = populate(library)
    path = library.root / "catalog.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP TABLE catalog_meta")  # as a catalog made before the date was kept
    db.close()
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert _catalog_created(read_only) is None  # it would have been "damaged or not a studio catalog"
    read_only.close()
    assert Library(tmp_path / "lib").get(origin.id).kind == "origin"
    db = sqlite3.connect(path)
    (created,) = db.execute("SELECT value FROM catalog_meta").fetchone()
    db.close()
    assert abs(float(created) - time.time()) < 60
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert _catalog_created(read_only) == float(created)  # read, not written again
    read_only.close()


# ---- what a file claims is checked before it is read ------------------------------------------------------------------
def _peak_rss_added(call) -> tuple[object, float]:
    """``call()``'s outcome (result or StudioError) and how much the process's peak resident memory grew meanwhile,
    in MiB: tensors are allocated outside Python's allocator, where tracemalloc does not see them."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # the peak (VmHWM) starts again from the current resident size
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")

    def peak_kib() -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))

    before = peak_kib()
    try:
        outcome = call()
    except StudioError as error:
        outcome = error
    return outcome, (peak_kib() - before) / 1024


@pytest.fixture
def tensor_reads(monkeypatch):
    """The keys ``read_prompt_file`` reads tensors of: a refusal from the header reads none."""
    import studio.item_files

    real, read = studio.item_files.safe_open, []

    class Spy:
        def __init__(self, *args, **kwargs):
            self.opened = real(*args, **kwargs)

        def __enter__(self):
            self.handle = self.opened.__enter__()
            return self

        def __exit__(self, *exc):
            return self.opened.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def get_tensor(self, key):
            read.append(key)
            return self.handle.get_tensor(key)

    monkeypatch.setattr(studio.item_files, "safe_open", Spy)
    return read


def _zipped_adapter(tmp_path, tiny, weights: dict, name: str = "adapter") -> object:
    """A zip of a studio PEFT adapter folder whose weights file holds ``weights`` instead of the prompt."""
    import shutil

    folder = Library(tmp_path / f"{name}-source").export_peft(
        Library(tmp_path / f"{name}-source").add("prompt", rand(), tiny.name).id, tmp_path / name, tiny)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return shutil.make_archive(str(tmp_path / name), "zip", root_dir=folder)


def test_a_small_zip_of_a_huge_tensor_is_refused_from_its_header(tmp_path, tiny, tensor_reads):
    """A 40 KB zip held 40 MB of uint8 'prompt': the import unpacked it, read it and made it float (200 MB more)
    before the shape check refused it."""
    library = Library(tmp_path / "lib")
    populate(library, tiny.name)
    path = _zipped_adapter(tmp_path, tiny, {"prompt_embeddings": torch.zeros(4, 10_000_000, dtype=torch.uint8)})
    assert os.path.getsize(path) < 200_000
    before = snapshot(library)
    tensor_reads.clear()  # what making the adapter read
    error, added = _peak_rss_added(lambda: library.import_file(path, tiny))
    assert isinstance(error, StudioError) and "holds a U8 tensor; a prompt is floating point" in str(error)
    assert tensor_reads == [] and added < 20, f"the refusal took {added:.0f} MiB more"
    assert snapshot(library) == before


@pytest.mark.parametrize("shape, hidden, expected", [
    ((1001, 32), 32, "between 1 and 1000 virtual tokens"),
    ((4, 8, 4), 32, "2-D"),
    ((4, 576), 32, "hidden size 576 but the model has 32"),
    ((2, 16_385), None, "hidden size 16385; a model's is 1 to 16384"),
])
def test_prompt_shapes_are_checked_before_the_tensor_is_read(tmp_path, tensor_reads, shape, hidden, expected):
    path = tmp_path / "odd.safetensors"
    save_file({"prompt": torch.zeros(shape)}, str(path))
    with pytest.raises(StudioError, match=expected):
        read_prompt_file(path, hidden)
    assert tensor_reads == []
    save_file({"prompt": rand(n=5)}, str(path))
    assert read_prompt_file(path, 32)[0].shape == (5, 32) and tensor_reads == ["prompt"]


def test_file_heads_are_read_not_whole_files(tmp_path, tensor_reads):
    """A safetensors header whose length starts with byte 0x80 (128, 384... bytes) is no pickle; a header of MBs of
    metadata is refused unread; the pickle check reads a few bytes, not the file."""
    path = tmp_path / "x.safetensors"
    pad = next(n for n in range(300) if (save_file({"prompt": rand()}, str(path), metadata={"k": "a" * n}) or
                                         path.read_bytes()[0] == 0x80))
    assert read_prompt_file(path, 32)[1] == {"k": "a" * pad}
    save_file({"prompt": rand()}, str(path), metadata={"task": "x" * 2_000_000})
    with pytest.raises(StudioError, match="safetensors header, over the 1,048,576"):
        read_prompt_file(path, 32)
    assert tensor_reads == ["prompt"]
    pickled = tmp_path / "big.safetensors"
    pickled.write_bytes(pickle.dumps(b"x" * 10_000_000))
    error, added = _peak_rss_added(lambda: read_prompt_file(pickled, 32))
    assert isinstance(error, StudioError) and "pickle" in str(error) and added < 5


def test_a_zip_member_larger_than_an_adapter_file_is_refused_before_unpacking(tmp_path, tiny, monkeypatch):
    import zipfile

    library = Library(tmp_path / "lib")
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("adapter/adapter_config.json", "{}")
        with archive.open("adapter/adapter_model.safetensors", "w", force_zip64=True) as member:
            for _ in range(65):  # MiB: one more than studio.files.MAX_ZIP_MEMBER_BYTES
                member.write(bytes(2**20))
    extracted = []
    monkeypatch.setattr(zipfile.ZipFile, "extractall", lambda self, *args, **kwargs: extracted.append(args))
    with pytest.raises(StudioError, match=r"'adapter/adapter_model.safetensors' unpacks to 68,157,440 bytes"):
        library.import_file(path, tiny)
    assert extracted == [] and library.items() == []


def test_an_oversized_adapter_json_is_refused_unread(tmp_path, tiny):
    source = Library(tmp_path / "source")
    folder = source.export_peft(source.add("prompt", rand(), tiny.name).id, tmp_path / "adapter", tiny)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config) + " " * 1_100_000)
    library = Library(tmp_path / "lib")
    with pytest.raises(StudioError, match=r"adapter_config.json in adapter is 1,1\d\d,\d\d\d bytes, over the 1,048,576"):
        library.import_file(folder, tiny)
    assert library.items() == []


# ---- task names, recipes and metrics: checked on every way in -----------------------------------------------------------
HOSTILE_TASK = "mr\x1b[2J\x1b[31m\n| p-00000000 | prompt | fake row |"


def test_an_imported_task_name_is_checked(tmp_path, tiny):
    """An imported file's metadata named its task with terminal escapes and a line break: `studio library list`
    printed them (a cleared screen, a fake table row)."""
    library = Library(tmp_path / "lib")
    populate(library, tiny.name)
    before = snapshot(library)
    for task in (HOSTILE_TASK, "x" * 2_000_036):
        path = tmp_path / "theirs.safetensors"
        save_file({"prompt": rand()}, str(path), metadata={"task": task[:900_000]})
        with pytest.raises(StudioError, match="the task of a prompt") as error:
            library.import_file(path, tiny)
        assert "\n" not in str(error.value) and "\x1b" not in str(error.value)
        with pytest.raises(StudioError, match="the task of a prompt"):
            library.import_file(tmp_path / "theirs.safetensors", tiny, task=task)
    assert snapshot(library) == before


def test_every_store_checks_tasks_recipes_and_metrics_before_writing_anything(tmp_path):
    from studio.library import NewItem

    library = Library(tmp_path / "lib")
    good = NewItem("origin", rand(seed=1), MODEL, item_id="o-000000000001")
    cases = [({"task": "two\nlines"}, "line breaks"), ({"task": "\x1b[31mred"}, "control characters"),
             ({"task": "x" * 1001}, "at most 1000 characters"),  # studio.limits.MAX_ITEM_TASK
             ({"recipe": {"steps": list(range(500_000))}}, r"the recipe of a prompt is [\d,]+ bytes of JSON"),
             ({"metrics": {f"test_accuracy/t{i}": 0.5 for i in range(5_000)}}, "the metrics of a prompt is"),
             ({"recipe": {"when": object()}}, "not JSON data"), ({"metrics": [0.5]}, "must be a JSON object")]
    for fields, expected in cases:
        bad = NewItem("prompt", rand(seed=2), MODEL, origin_id=good.item_id, **fields)
        with pytest.raises(StudioError, match=expected):
            library.add_together([good, bad])  # the good one's file is not written either
        assert library.items() == [] and list((library.root / "items").iterdir()) == []
    # what the studio itself stores still fits: a file task's longest name, a combination of six of them
    long_task = "file:" + "n" * 75  # studio.limits.MAX_TASK_NAME: 80
    item = library.add("prompt", rand(), MODEL, task="+".join([long_task] * 6), recipe={"history": [{}] * 1000})
    assert library.get(item.id).task.count("+") == 5
    with pytest.raises(StudioError, match="the metrics of"):
        library.update_metrics(item.id, {f"validation_accuracy/t{i}": 0.5 for i in range(5_000)})
    assert library.get(item.id).metrics == {}


def test_a_pulled_catalog_with_a_huge_task_or_recipe_stores_nothing(tmp_path, tiny):
    """A repository's catalog gave a 2,000,036-character task and a 500,000-entry recipe: both were stored."""
    from studio.hub import CATALOG, hub_layout, pull
    from studio.prompts import make_origin

    source = Library(tmp_path / "source")  # a pull checks an origin against its seed and init: the real origin 0
    origin_t = make_origin(tiny, 0, 4, "top5000")
    tuned_t = origin_t + 0.1 * rand(seed=2)
    origin = source.add("origin", origin_t, tiny.name, name="origin 0", seed=0, recipe={"init": "top5000"})
    prompt = source.add("prompt", tuned_t, tiny.name, task="mr", seed=0, origin_id=origin.id)
    source.add("vector", tuned_t - origin_t, tiny.name, task="mr", seed=0, origin_id=origin.id, prompt_id=prompt.id)
    target = Library(tmp_path / "target")
    before = snapshot(target)
    for n, change in enumerate(({"task": "x" * 2_000_036}, {"recipe": {"steps": list(range(500_000))}},
                                {"task": HOSTILE_TASK})):
        repo = hub_layout(source, None, tiny, tmp_path / f"repo{n}")
        catalog = json.loads((repo / CATALOG).read_text())
        catalog["items"][-1].update(change)  # the vector, stored after its origin and prompt
        (repo / CATALOG).write_text(json.dumps(catalog))
        with pytest.raises(StudioError, match="the task of a vector|the recipe of a vector"):
            pull(target, repo, tiny)
        assert snapshot(target) == before


def test_an_oversized_read_only_catalog_is_refused_unread(tmp_path, monkeypatch):
    import studio.library

    exported = Library(tmp_path / "lib")
    populate(exported)
    folder = exported.export_catalog(tmp_path / "prebuilt")
    assert len(Library(folder, read_only=True).items()) == 3
    monkeypatch.setattr(studio.library, "MAX_CATALOG_BYTES", 1000, raising=False)
    with pytest.raises(StudioError, match=r"catalog .* is [\d,]+ bytes, over the 1,000"):
        Library(folder, read_only=True)


def test_a_long_jobs_curve_is_thinned_to_fit_its_recipe(tmp_path):
    """100,000 steps validated every step made a recipe over the catalog's limit: the tuned prompt could not be
    stored after all the tuning. The stored curve keeps its first, last and best points, evenly spaced between."""
    from studio.library import MAX_HISTORY_POINTS, thinned_history
    from studio.limits import MAX_RECIPE_BYTES, check_json_size

    history = [{"step": s, "train_loss": 1 / s, "val_accuracy": 0.5 + s / 1e6, "val_accuracy_se": 0.01,
                "val_macro_f1": 0.5, "val_n": 100} for s in range(1, 20_001)]
    with pytest.raises(StudioError, match="over the"):
        check_json_size({"history": history}, "a recipe", MAX_RECIPE_BYTES)
    kept = thinned_history(history, best_step=12_345)
    assert len(kept) <= MAX_HISTORY_POINTS and kept[0]["step"] == 1 and kept[-1]["step"] == 20_000
    assert 12_345 in [p["step"] for p in kept] and [p["step"] for p in kept] == sorted({p["step"] for p in kept})
    check_json_size({"history": kept}, "a recipe", MAX_RECIPE_BYTES)
    assert thinned_history(history[:50], best_step=3) == history[:50]  # a short curve is kept whole
    # every store thins it: a tuning job's, and an item stored before with its whole curve coming back (a pull)
    library = Library(tmp_path / "lib")
    item = library.add("prompt", rand(), "m", name="long job", recipe={"best_step": 12_345, "history": history})
    stored = library.get(item.id).recipe["history"]
    assert len(stored) <= MAX_HISTORY_POINTS and 12_345 in [p["step"] for p in stored]


# ---- kinds and lineage an import cannot contradict (session 10) ----------------------------------------------------
def test_an_import_refuses_a_kind_that_contradicts_the_files(tmp_path, tiny):
    """`import v.safetensors --kind origin` (a vector export) was stored as a vector, --kind silently ignored."""
    source = Library(tmp_path / "source")
    vector = populate(source, tiny.name)[2]
    path = source.export_safetensors(vector.id, tmp_path / "v.safetensors")
    library = Library(tmp_path / "lib")
    before = snapshot(library)
    with pytest.raises(StudioError, match=r"v.safetensors says it holds a vector, but it was asked to be imported as "
                                          r"an origin: import it as a vector \(leave --kind out, or choose vector\)"):
        library.import_file(path, tiny, kind="origin")
    assert snapshot(library) == before
    with pytest.raises(StudioError, match="says it holds a vector, but it was asked to be imported as a prompt"):
        library.import_file(path, tiny, kind="prompt")
    # no choice (the CLI without --kind, the UI's "as the file says") and the same kind import it as what it is
    assert library.import_file(path, tiny).kind == library.import_file(path, tiny, kind="vector").kind == "vector"


@pytest.mark.parametrize("kind,parent,expected", [
    ("vector", "prompt", r"p-\w+ is a prompt, not an origin: the origin of a vector must be an origin"),
    ("prompt", "vector", r"v-\w+ is a vector, not an origin: the origin of a prompt must be an origin"),
    ("origin", "origin", r"an origin starts a lineage and has no origin or prompt of its own .*leave --origin out"),
])
def test_an_import_refuses_lineage_that_cannot_be(kind, parent, expected, tmp_path, tiny):
    """`--kind vector --origin p-...` (a prompt as origin) and `--kind origin --origin o-...` (an origin with an
    origin) were accepted: the vector could never be applied, and the origin listed as made from another."""
    library = Library(tmp_path / "lib")
    origin, prompt, vector = populate(library, tiny.name)
    path = tmp_path / "plain.safetensors"
    save_file({"prompt": rand(seed=11)}, str(path))
    before = snapshot(library)
    with pytest.raises(StudioError, match=expected):
        library.import_file(path, tiny, kind=kind, origin_id={"origin": origin, "prompt": prompt,
                                                               "vector": vector}[parent].id)
    with pytest.raises(StudioError, match=r"o-\w+ is an origin, not a prompt: the prompt of a vector must be a prompt"):
        library.add("vector", rand(seed=12), tiny.name, origin_id=origin.id, prompt_id=origin.id)
    assert snapshot(library) == before


# ---- a failed store leaves no file; a row always has its file (session 10) ------------------------------------------
def test_a_seed_the_catalog_cannot_hold_is_refused_before_any_file(tmp_path):
    """A seed of 10**30 reached SQLite (OverflowError) after the item's file was written: a file without a row."""
    library = Library(tmp_path / "lib")
    for seed in (10**30, -1, True, 2.0):
        with pytest.raises(StudioError, match=r"the seed of a prompt must be a whole number between 0 and 2147483647"):
            library.add("prompt", rand(), MODEL, seed=seed)
    assert library.items() == [] and list((library.root / "items").iterdir()) == []


def test_any_failure_while_storing_removes_the_files_written(tmp_path, monkeypatch):
    """Only sqlite3 and studio errors removed the written files; anything else left item files without rows."""
    import studio.library
    from studio.library import NewItem

    def fails(point):
        if point == "store:files-written":
            raise RuntimeError("something unexpected")

    library = Library(tmp_path / "lib")
    monkeypatch.setattr(studio.library, "kill_point", fails)
    with pytest.raises(RuntimeError, match="something unexpected"):
        library.add_together([NewItem("origin", rand(seed=1), MODEL, item_id="o-000000000001"),
                              NewItem("prompt", rand(seed=2), MODEL, origin_id="o-000000000001")])
    assert library.items() == [] and list((library.root / "items").iterdir()) == []
    db = sqlite3.connect(library.root / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_storing_an_item_whose_file_is_missing_writes_it_again(tmp_path, tiny):
    """A row whose file had gone (a delete racing an import) stayed so: a re-import said "imported" and wrote
    nothing."""
    library = Library(tmp_path / "lib")
    path = tmp_path / "mine.safetensors"
    save_file({"prompt": rand(seed=5)}, str(path))
    item = library.import_file(path, tiny)
    (library.root / item.file).unlink()
    again = library.import_file(path, tiny)
    assert again.id == item.id and len(library.items()) == 1
    torch.testing.assert_close(library.tensor(item.id), rand(seed=5))


def test_an_import_landing_between_a_deletes_row_and_its_file_keeps_its_file(tmp_path, tiny, monkeypatch):
    """A delete committed the row's deletion, then removed the file; an import of the same content id in between
    wrote its file and row, and the delete then removed the file: a row without its file (two processes in a
    loop, /tmp/audit-a/race.py). The import is run at the moment the delete removes a file."""
    from pathlib import Path

    library = Library(tmp_path / "lib")
    path = tmp_path / "mine.safetensors"
    save_file({"prompt": rand(seed=6)}, str(path))
    item = library.import_file(path, tiny)
    other = Library(tmp_path / "lib")  # another process's library object
    unlink, raced = Path.unlink, []

    def import_meanwhile(self, missing_ok=False):
        if item.id in self.name and not raced:
            raced.append(other.import_file(path, tiny).id)
        return unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", import_meanwhile)
    library.delete(item.id)
    monkeypatch.setattr(Path, "unlink", unlink)
    assert raced == [item.id]
    rows = [i.file for i in Library(tmp_path / "lib").items()]
    assert rows == [item.file] and sorted(p.name for p in (library.root / "items").iterdir()) == [Path(item.file).name]
    torch.testing.assert_close(library.tensor(item.id), rand(seed=6))


def test_a_delete_cut_short_is_finished_when_the_library_opens(tmp_path):
    """``delete`` sets the file aside before the row goes: killed before its commit, the row and its file are
    both kept (the file goes back); killed after it, neither."""
    from studio.library import DELETING_SUFFIX

    library = Library(tmp_path / "lib")
    kept, gone = (library.add("prompt", rand(seed=s), MODEL) for s in (1, 2))
    for item in (kept, gone):
        (library.root / item.file).rename(library.root / "items" / f".{item.id}.safetensors{DELETING_SUFFIX}")
    db = sqlite3.connect(library.root / "catalog.sqlite")
    with db:
        db.execute("DELETE FROM items WHERE id = ?", (gone.id,))
    db.close()
    reopened = Library(tmp_path / "lib")
    assert [i.id for i in reopened.items()] == [kept.id]
    assert [p.name for p in (library.root / "items").iterdir()] == [f"{kept.id}.safetensors"]
    torch.testing.assert_close(reopened.tensor(kept.id), rand(seed=1))


def test_a_zip_of_several_adapters_side_by_side_is_refused_and_a_folder_named_like_a_config_is_skipped(tmp_path, tiny):
    """Which of two adapters at the same depth was imported depended on the order of the zip's files; a folder
    named adapter_config.json, shallower than the real adapter, was read as a file ("not valid JSON")."""
    import zipfile

    source = Library(tmp_path / "source")
    _, prompt, _ = populate(source, tiny.name)
    adapter = source.export_peft(prompt.id, tmp_path / "adapter", tiny)
    both = tmp_path / "both.zip"
    with zipfile.ZipFile(both, "w") as archive:
        for folder in ("a", "b"):
            for file in adapter.iterdir():
                archive.write(file, f"{folder}/{file.name}")
    library = Library(tmp_path / "lib")
    before = snapshot(library)
    with pytest.raises(StudioError, match="several adapters side by side"):
        library.import_file(both, tiny)
    assert snapshot(library) == before
    decoy = tmp_path / "decoy.zip"
    with zipfile.ZipFile(decoy, "w") as archive:
        archive.writestr("adapter_config.json/readme.txt", "a folder, not a config")
        for file in adapter.iterdir():
            archive.write(file, f"deeper/adapter/{file.name}")
    assert library.import_file(decoy, tiny).kind == "prompt"


def test_a_library_another_process_keeps_busy_says_so(tmp_path, monkeypatch):
    """A store holds the write lock while it writes its files (a large sweep merge for long): a writer that waited
    its limit is told the library is busy, not to check its disk space."""
    from studio import library as library_module

    library = Library(tmp_path / "lib")
    item = library.add("prompt", rand(), MODEL, name="mine")
    other = sqlite3.connect(tmp_path / "lib" / "catalog.sqlite")
    other.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(library_module, "LOCK_WAIT_S", 0.2)
    try:
        with pytest.raises(StudioError, match="is busy: another studio process has been writing to it"):
            library.rename(item.id, "renamed")
    finally:
        other.rollback()
        other.close()
    assert library.rename(item.id, "renamed").name == "renamed"


# ---- lineage under the write lock; a read-only catalog file (session 11) ---------------------------------------------
def test_a_parent_deleted_by_another_process_after_the_checks_is_never_stored_as_a_parent(tmp_path, monkeypatch):
    """The lineage was checked before the write lock: an origin deleted by another process between the check and
    the store left a vector whose origin did not exist."""
    library = Library(tmp_path / "lib")
    origin = library.add("origin", rand(seed=1), MODEL, seed=0)
    other_process = Library(tmp_path / "lib")
    real_prepare = Library._prepare

    def prepare_then_lose_the_origin(self, entry, exist_ok):
        prepared = real_prepare(self, entry, exist_ok)
        other_process.delete(origin.id)  # no dependents yet: the delete is allowed
        return prepared

    monkeypatch.setattr(Library, "_prepare", prepare_then_lose_the_origin)
    with pytest.raises(StudioError, match=rf"no library item '{origin.id}'"):
        library.add("vector", rand(seed=2), MODEL, origin_id=origin.id)
    assert library.items() == [] and list((library.root / "items").glob("*.safetensors")) == []


def test_a_read_only_catalog_file_in_a_writable_folder_opens_read_only(tmp_path, monkeypatch):
    """A catalog.sqlite the user may not write (in a folder they may) was opened for writing: opening it tried to
    finish a killed delete (a write: it failed to open), and changes failed with a raw SQLite error. It is opened
    read-only now, and nothing is touched (as root here, os.access's answer is what is replaced)."""
    library = Library(tmp_path / "lib")
    _, prompt, _ = populate(library)
    aside = library.root / "items" / f".{prompt.id}.safetensors.studio-deleting"
    aside.write_bytes(b"left by a killed delete")
    before = snapshot(library)
    catalog = str(library.root / "catalog.sqlite")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK and str(path) == catalog
                        else real_access(path, mode))
    shared = Library(tmp_path / "lib")
    assert [i.id for i in shared.items()] == [i.id for i in library.items()]
    with pytest.raises(StudioError, match=r"\(or its catalog.sqlite\) is read-only: it can be listed and exported"):
        shared.rename(prompt.id, "new name")
    assert snapshot(library) == before


def test_a_child_stored_while_its_parent_is_deleted_keeps_the_parent(tmp_path, monkeypatch):
    """A delete listed its dependents before the write lock: a prompt another process stored from the origin in
    between was left pointing at an origin that no longer existed."""
    library = Library(tmp_path / "lib")
    origin = library.add("origin", rand(seed=1), MODEL, seed=0)
    other_process = Library(tmp_path / "lib")
    real_dependents = Library.dependents

    def listed_then_stored(self, item_id):
        found = real_dependents(self, item_id)  # none yet
        other_process.add("prompt", rand(seed=2), MODEL, origin_id=origin.id, item_id="p-late")
        return found

    monkeypatch.setattr(Library, "dependents", listed_then_stored)
    with pytest.raises(StudioError, match=rf"{origin.id} is used by p-late, stored while it was being deleted"):
        library.delete(origin.id)
    kept = library.get(library.get("p-late").origin_id)
    assert kept.id == origin.id and (library.root / kept.file).exists()
    assert not list((library.root / "items").glob(".*"))  # no file left aside


def test_an_id_is_reused_only_for_the_item_it_stands_for(tmp_path):
    """A pull can store any tensor under an id it cannot check (an origin that names no seed, under the id origin 0
    of this model would have). A job that later stores the real origin 0 with ``exist_ok`` must not take that item
    as its own: it would tie every seed-0 prompt to the wrong origin, and their TPVs would not be prompt - origin."""
    from studio.library import NewItem, origin_id

    library = Library(tmp_path / "lib")
    canonical = origin_id("m", 0, 4)
    library.add("origin", torch.randn(4, 8), "m", item_id=canonical)  # seed and init not stated: unchecked
    real = NewItem("origin", torch.randn(4, 8), "m", "origin 0", seed=0, recipe={"init": "top5000"},
                   item_id=canonical)
    with pytest.raises(StudioError, match=f"{canonical} in this library is not the origin being stored.*studio library delete {canonical} --cascade"):
        library.add_together([real], exist_ok=True)
    assert library.get(canonical).seed is None  # nothing stored, nothing changed
    # the same item again (a rerun) is still reused, and so is a name or a metric that differs
    again = Library(tmp_path / "lib2")
    first = again.add_together([real], exist_ok=True)[0]
    renamed = NewItem("origin", real.tensor, "m", "another name", seed=0, recipe={"init": "top5000", "n": 4},
                      item_id=canonical)
    assert again.add_together([renamed], exist_ok=True)[0].id == first.id and len(again.items()) == 1


def test_metrics_added_at_once_by_several_writers_are_all_kept(tmp_path):
    """Each evaluation adds its split's scores to a prompt's metrics; read and written under the write lock, none
    is lost when several land at once (read first and written later, 6 threads kept 16 of 90)."""
    import threading

    library = Library(tmp_path / "lib")
    item = library.add("prompt", torch.randn(4, 8), "m")

    def add_scores(writer: int) -> None:
        for n in range(15):
            library.update_metrics(item.id, {f"writer{writer}_{n}": n})

    threads = [threading.Thread(target=add_scores, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(library.get(item.id).metrics) == 90
