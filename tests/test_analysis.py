"""Engine-level analysis on the tiny model: the multi-task (SPoT) prompt and the few-shot comparison."""

from __future__ import annotations

import pytest
import torch

from studio import StudioError
from studio.analysis import few_shot_experiment, few_shot_inits, multitask_prompt
from studio.backbones import load_backbone
from studio.evaluation import evaluate
from studio.jobs import origin_item, run_tuning
from studio.library import Library
from studio.tasks import load_task
from studio.tuning import TuneConfig

SMALL = TuneConfig(steps=4, batch_size=3, lr=0.05, eval_every=2, val_limit=6, micro_batch=16)


@pytest.fixture(scope="module")
def setup(tiny_llama_dir, tmp_path_factory):
    tiny = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    library = Library(tmp_path_factory.mktemp("analysis-library"))
    items, status = run_tuning(library, tiny, [load_task("mr"), load_task("tweets")], [0], SMALL, n_tokens=4)
    assert status == "done"
    vectors = [v.id for p in items for v in library.dependents(p.id) if v.kind == "vector"]
    return tiny, library, items[0].origin_id, vectors


def test_multitask_prompt_is_tuned_once_and_reused(setup):
    tiny, library, origin_id, _ = setup
    item = multitask_prompt(library, tiny, origin_id, ["mr", "tweets"], SMALL)
    assert item.kind == "prompt" and item.task == "mr+tweets" and item.origin_id == origin_id
    assert set(item.metrics) == {"validation_accuracy/mr", "validation_accuracy/tweets"}
    assert not torch.equal(library.tensor(item.id), library.tensor(origin_id))
    assert multitask_prompt(library, tiny, origin_id, ["mr", "tweets"], SMALL).id == item.id
    before = len(library.items())
    assert multitask_prompt(library, tiny, origin_id, ["tweets", "mr"], SMALL, should_stop=lambda: True) is None
    assert len(library.items()) == before  # a cancelled mixture stores nothing
    with pytest.raises(StudioError, match="at least two tasks"):
        multitask_prompt(library, tiny, origin_id, ["mr"], SMALL)


def test_few_shot_experiment_compares_every_init(setup):
    tiny, library, origin_id, vectors = setup
    multitask = multitask_prompt(library, tiny, origin_id, ["mr", "tweets"], SMALL)
    inits = few_shot_inits(library, origin_id, vectors, multitask.id)
    assert len(inits) == 5 and any(name.startswith("multi-task prompt") for name in inits)
    rows = few_shot_experiment(library, tiny, "movie-reviews", vectors, origin_id, [0, 4], SMALL, eval_limit=8,
                               multitask_id=multitask.id)
    assert [(r["shots"], r["init"]) for r in rows] == [(k, name) for k in (0, 4) for name in inits]
    zero = next(r for r in rows if r["shots"] == 0 and r["init"].startswith("multi-task"))
    expected = evaluate(tiny, [library.tensor(multitask.id)], load_task("movie-reviews"), "test", 8)[0]
    assert zero["accuracy"] == pytest.approx(expected.metrics["accuracy"])
    with pytest.raises(StudioError, match="must be a tuned prompt"):
        few_shot_inits(library, origin_id, vectors, origin_id)
    other = origin_item(library, tiny, 1, 4)
    with pytest.raises(StudioError, match="another origin"):
        few_shot_inits(library, other.id, vectors, multitask.id)


def test_similarity_table_refuses_an_unknown_order(setup):
    from studio.analysis import similarity_table

    _, library, _, vectors = setup
    assert similarity_table(library, vectors, order="origin").matrix.shape == (2, 2)
    with pytest.raises(StudioError, match="unknown order 'size'"):
        similarity_table(library, vectors, order="size")


def test_an_id_named_twice_is_one_row_or_point(setup):
    from studio.analysis import map_points, similarity_table

    _, library, _, vectors = setup
    assert similarity_table(library, vectors + vectors[:1]).matrix.shape == (2, 2)
    with pytest.raises(StudioError, match="two different"):
        similarity_table(library, [vectors[0]] * 300)
    assert len(map_points(library, vectors * 3, "pca").records) == 2


def test_cross_origin_uses_prompts_of_one_length(setup, tmp_path):
    """Short prompts of a task beside longer ones (on other origins) never meet in one cross-origin table."""
    from studio.analysis import cross_origin_table, tuned_prompts_by_origin

    tiny = setup[0]
    library = Library(tmp_path / "lib")
    run_tuning(library, tiny, [load_task("mr")], [0, 1], SMALL, n_tokens=4)  # two origins at 4 tokens
    run_tuning(library, tiny, [load_task("mr")], [2], SMALL, n_tokens=6)  # one more at 6: fewer origins
    chosen = tuned_prompts_by_origin(library, tiny.name, "mr")
    assert len(chosen) == 2 and {p.n_tokens for p in chosen.values()} == {4}
    rows = cross_origin_table(library, tiny, ["mr"], "validation", 8)
    assert len(rows) == 4 and {(r["own"]) for r in rows} == {True, False}
