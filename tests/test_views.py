"""Deterministic ids, per-backbone recipes, and the views a prebuilt library ships for the first look at each tab."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from studio.backbones import load_backbone, recipe_for
from studio.cli import _with_recipe, build_parser
from studio.jobs import run_tuning
from studio.library import Library, content_id, origin_id, tuned_prompt_id, vector_id
from studio.prompts import scale_ratio
from studio.settings import SMALL_DECODER_RECIPE, T5_RECIPE, TuneConfig
from studio.tasks import load_task
from studio.views import (
    compute_views,
    cross_origin_tasks,
    default_pair,
    load_views,
    map_ids,
    save_views,
    stored_cross_origin,
    stored_map,
    stored_sweep,
)
from studio.weights import KNOWN_BACKBONES

CONFIG = TuneConfig(steps=2, batch_size=2, lr=0.03, eval_every=2, val_limit=6)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    """A read-only library of 2 tasks x 2 origins (as build-library exports it) and its computed views."""
    root = tmp_path_factory.mktemp("views")
    work = Library(root / "work")
    run_tuning(work, tiny, [load_task("mr"), load_task("uncertainty")], [0, 1], CONFIG, n_tokens=4)
    exported = work.export_catalog(root / "prebuilt")
    prebuilt = Library(exported, read_only=True)
    views = compute_views(prebuilt, tiny, cross_limit=6, sweep_limit=4)
    save_views(exported, views)
    return exported, views


# ---- deterministic ids --------------------------------------------------------------------------------------------
def test_ids_depend_on_content_not_on_time_or_library(tiny, tmp_path):
    first, second = Library(tmp_path / "a"), Library(tmp_path / "b")
    items_a, status = run_tuning(first, tiny, [load_task("mr")], [3], CONFIG, n_tokens=4)
    items_b, _ = run_tuning(second, tiny, [load_task("mr")], [3], CONFIG, n_tokens=4)
    assert status == "done" and [i.id for i in items_a] == [i.id for i in items_b]
    prompt = items_a[0]
    assert prompt.origin_id == origin_id(tiny.name, 3, 4) == content_id("origin", tiny.name, "top5000", 3, 4)
    assert prompt.id == tuned_prompt_id(prompt.origin_id, load_task("mr"), CONFIG)
    assert first.get(vector_id(prompt.id)).prompt_id == prompt.id
    assert sorted(i.id for i in first.items()) == sorted(i.id for i in second.items())
    # a different recipe or seed is a different item; micro_batch only splits the work, so it is the same item
    assert tuned_prompt_id(prompt.origin_id, load_task("mr"), TuneConfig(steps=3, batch_size=2)) != prompt.id
    assert tuned_prompt_id(prompt.origin_id, load_task("mr"), replace(CONFIG, micro_batch=1)) == prompt.id
    assert origin_id(tiny.name, 4, 4) != prompt.origin_id


def test_rerunning_a_job_stores_nothing_twice(tiny, tmp_path):
    library = Library(tmp_path / "lib")
    mr = load_task("mr")
    first, _ = run_tuning(library, tiny, [mr, mr], [0, 0], CONFIG, n_tokens=4)  # the same task and seed twice
    assert len(first) == 1 and len(library.items()) == 3  # one origin, one prompt, one vector
    events = []
    again, status = run_tuning(library, tiny, [mr], [0], CONFIG, n_tokens=4, on_progress=events.append)
    assert status == "done" and [i.id for i in again] == [i.id for i in first]
    assert events == [] and len(library.items()) == 3  # nothing was tuned or stored again
    # a new seed tunes only what is missing and reuses the stored prompt
    both, _ = run_tuning(library, tiny, [mr], [0, 1], CONFIG, n_tokens=4)
    assert both[0].id == first[0].id and len(library.items()) == 6


def test_a_job_cancelled_before_its_first_step_writes_nothing(tiny, tmp_path):
    library = Library(tmp_path / "lib")
    items, status = run_tuning(library, tiny, [load_task("mr")], [0, 1, 2], CONFIG, n_tokens=4,
                               should_stop=lambda: True, checkpoint_dir=tmp_path / "ckpt")
    assert (items, status) == ([], "cancelled") and library.items() == []  # no origins either


def test_adding_the_same_content_id_twice_returns_the_stored_item(tmp_path):
    library = Library(tmp_path / "lib")
    tensor = torch.ones(2, 8)
    first = library.add("origin", tensor, "m", item_id="o-fixed", exist_ok=True)
    again = library.add("origin", tensor * 2, "m", item_id="o-fixed", exist_ok=True)
    assert again.id == first.id and len(library.items()) == 1
    torch.testing.assert_close(library.tensor("o-fixed"), tensor)


# ---- recipes --------------------------------------------------------------------------------------------------------
def test_every_backbone_has_a_recipe_and_every_entry_point_uses_it(tiny_t5_dir, tiny_llama_dir):
    assert recipe_for("smollm2-135m-instruct") == KNOWN_BACKBONES["smollm2-135m-instruct"].recipe
    smol = recipe_for("smollm2-135m-instruct")
    assert (smol.lr, smol.steps, smol.batch_size, smol.n_tokens) == (0.2, 150, 8, 20)
    assert recipe_for(str(tiny_t5_dir)) == T5_RECIPE and T5_RECIPE.lr == 0.3  # the paper's T5 learning rate
    assert recipe_for(str(tiny_llama_dir)) == SMALL_DECODER_RECIPE
    assert recipe_for("google/flan-t5-base") == T5_RECIPE
    for command in (["tune", "--task", "mr"], ["build-library"]):
        args = build_parser().parse_args(command)
        _with_recipe(args)
        assert (args.steps, args.batch_size, args.lr, args.n_tokens) == (150, 8, 0.2, 20), command
    args = build_parser().parse_args(["tune", "--task", "mr", "--lr", "0.05", "--model", str(tiny_t5_dir)])
    _with_recipe(args)
    assert (args.lr, args.steps, args.batch_size, args.n_tokens) == (0.05, 1000, 32, 50)  # given values win


# ---- views ----------------------------------------------------------------------------------------------------------
def test_views_are_computed_for_the_default_selections(built, tiny):
    folder, views = built
    prebuilt = Library(folder, read_only=True)
    assert load_views(folder) == json.loads(json.dumps(views)) and views["model"] == tiny.name
    tasks = cross_origin_tasks(prebuilt, tiny.name)
    assert sorted(tasks) == ["mr", "uncertainty"]
    rows = stored_cross_origin(views, prebuilt, tiny.name, tasks, "test", 6)
    assert len(rows) == 2 * (2 + 2) and {r["own"] for r in rows} == {True, False}
    for row in rows:
        prompt = prebuilt.get(row["prompt_id"])
        origin = prebuilt.tensor(prompt.origin_id)
        assert row["tau_ratio"] == pytest.approx(scale_ratio(prebuilt.tensor(prompt.id) - origin, origin))
    origin_id_, vector_ids = default_pair(prebuilt, tiny.name)
    sweep = stored_sweep(views, origin_id_, vector_ids, [1.0, 1.0], ["mr", "uncertainty"], "weighted_sum", 4)
    assert sweep and len(sweep["coefficients"]) == 21 and set(sweep["accuracy"]) == {"mr", "uncertainty"}
    assert stored_sweep(views, origin_id_, vector_ids, [1.0, 0.5], ["mr", "uncertainty"], "weighted_sum", 4) is None
    assert stored_sweep(views, origin_id_, vector_ids, [1.0, 1.0], ["mr", "uncertainty"], "ties", 4) is None
    ids = map_ids(prebuilt, tiny.name)
    for method, dims in (("umap", 2), ("pca", 3)):
        coords = stored_map(views, ids, method, dims, 0)
        assert coords is not None and len(coords) == len(ids) and len(coords[0]) == dims
    assert stored_map(views, ids[:-1], "umap", 2, 0) is None and stored_map(views, ids, "umap", 2, 1) is None


def test_views_are_not_used_once_the_library_changes(built, tiny, tmp_path):
    folder, views = built
    library = Library(tmp_path / "user", parents=[Library(folder, read_only=True)])
    tasks = cross_origin_tasks(library, tiny.name)
    assert stored_cross_origin(views, library, tiny.name, tasks, "test", 6) is not None
    assert stored_cross_origin(views, library, tiny.name, tasks, "test", 7) is None  # other sample size
    # the user tunes mr on a third origin: the mr table would now include it, so the stored one is not shown
    run_tuning(library, tiny, [load_task("mr")], [5], CONFIG, n_tokens=4)
    assert stored_cross_origin(views, library, tiny.name, tasks, "test", 6) is None
    assert stored_cross_origin(views, library, tiny.name, ["uncertainty"], "test", 6) is not None
    assert stored_map(views, map_ids(library, tiny.name), "umap", 2, 0) is None
    assert load_views(tmp_path / "nowhere") == {}
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "views.json").write_text("{not json")
    assert load_views(tmp_path / "broken") == {}


@pytest.mark.parametrize("fault", ["missing", "broken"])
def test_views_without_umap_store_the_pca_maps_and_say_so(built, tiny, monkeypatch, capsys, fault):
    """A machine without a working umap-learn (a hand-made GPU environment, or numba at the wrong version) still
    finishes build-library: the PCA maps are stored, the UMAP ones left to the Map tab (which falls back to PCA
    with a message), with one line saying so."""
    import sys

    import studio.projection

    folder, _ = built
    if fault == "missing":
        monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError
    else:
        def broken(*args, **kwargs):
            raise RuntimeError("numba: cannot compile for this llvmlite")

        monkeypatch.setattr(studio.projection, "umap_coords", broken)
    views = compute_views(Library(folder, read_only=True), tiny, cross_limit=6, sweep_limit=4)
    assert set(views["map"]["coords"]) == {"pca2", "pca3"}
    ids = map_ids(Library(folder, read_only=True), tiny.name)
    assert stored_map(views, ids, "umap", 2, 0) is None and len(stored_map(views, ids, "pca", 2, 0)) == len(ids)
    assert "UMAP map is not stored" in capsys.readouterr().err
