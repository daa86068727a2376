"""Engine-level analysis on the tiny model: the multi-task (SPoT) prompt, the few-shot comparison, and the rules of
a combination (its limits, how it is saved, its shared link)."""

from __future__ import annotations

import re

import pytest
import torch

from studio import StudioError
from studio.backbones import load_backbone
from studio.evaluation import evaluate
from studio.fewshot import few_shot_experiment, few_shot_inits, multitask_prompt
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
    assert all(isinstance(value, float) for value in item.metrics.values())
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


# ---- combinations: the rules behind the Arithmetic tab and `studio combine` -------------------------------------
def combination_args(origin_id, vector_ids, weights, method="weighted_sum", density=0.5, tasks=(), limit=64):
    """``check_combination``'s arguments in the form's order (weights last, one per slider)."""
    return origin_id, list(vector_ids), method, density, list(tasks), limit, list(weights) + [1.0] * 4


def test_check_combination_holds_the_forms_limits(setup):
    from studio.analysis import MAX_VECTORS, check_combination, check_sweep, check_vector_ids

    _, library, origin_id, vectors = setup
    combination = check_combination(library, *combination_args(origin_id, vectors, [0.5, "-1"]))
    assert combination.weights == [0.5, -1.0] and combination.limit == 64  # one weight per vector, as numbers
    assert combination.tasks == ["mr", "tweets"]  # no tasks chosen: the vectors' own, in their order
    assert check_combination(library, *combination_args(origin_id, vectors, [1, 1], tasks=["", "bbc"])).tasks == ["bbc"]
    refused = {
        "choose an origin": combination_args("", vectors, [1, 1]),
        "at least one task prompt vector": combination_args(origin_id, ["", None], []),
        f"at most {MAX_VECTORS}": combination_args(origin_id, [vectors[0]] * (MAX_VECTORS + 1), [1] * 7),
        "chosen once": combination_args(origin_id, [vectors[0], vectors[0]], [1, 1]),
        "unknown merge method 'sum'": combination_args(origin_id, vectors, [1, 1], method="sum"),
        "must be numbers": combination_args(origin_id, vectors, ["heavy", 1]),
        "finite weight": combination_args(origin_id, vectors, [float("nan"), 1]),
        "density must be in (0, 1]": combination_args(origin_id, vectors, [1, 1], density=0),
        "between 1 and 2000 examples per task, got 2001": combination_args(origin_id, vectors, [1, 1], limit=2001),
        f"{origin_id} is a origin, not a task prompt vector": combination_args(origin_id, [origin_id], [1]),
        "no library item 'v-nothing'": combination_args(origin_id, ["v-nothing"], [1]),
    }
    for message, args in refused.items():
        with pytest.raises(StudioError, match=re.escape(message)):
            check_combination(library, *args)
    with pytest.raises(StudioError, match="needs a finite weight"):  # fewer weights than vectors
        check_combination(library, origin_id, vectors, "weighted_sum", 0.5, [], 64, [1.0])
    # nothing scored (`studio combine` without --eval-task): no sample is needed, but what is given is still a number
    assert check_combination(library, *combination_args(origin_id, vectors, [1, 1], limit=12.0), scored=False).limit == 12
    with pytest.raises(StudioError, match="weights, density and sample size must be numbers"):
        check_combination(library, *combination_args(origin_id, vectors, [1, 1], limit="x"), scored=False)
    assert check_vector_ids(["", vectors[0], None]) == [vectors[0]]
    assert check_sweep("grid", "8") == 8
    for mode, limit, message in (("grid", 0, "between 1 and 500"), ("grid", "many", "whole number"),
                                 ("spiral", 8, "unknown sweep 'spiral'")):
        with pytest.raises(StudioError, match=message):
            check_sweep(mode, limit)


def test_save_combination_names_keys_and_stores_once(setup):
    from studio.analysis import (
        LIVE_METRICS,
        combination_id,
        combine,
        reuse_evaluation,
        save_combination,
        score_combination,
        stored_combination,
    )
    from studio.library import metric_key

    tiny, library, origin_id, vectors = setup
    prompt, recipe = combine(library, origin_id, vectors, [0.5, 1.0], "ties", 0.4)
    assert stored_combination(library, recipe) is None
    metrics = score_combination(tiny, prompt, ["mr"], "validation", 8)
    assert set(metrics["mr"]) == set(LIVE_METRICS) and metrics["mr"]["n"] == 8
    before = len(library.items())
    item = save_combination(library, prompt, recipe, metrics, "validation", 8)
    assert item.id == combination_id(recipe) and item.kind == "prompt" and item.origin_id == origin_id
    assert item.name == "origin 0 + 0.5 mr + 1 tweets (ties)" and item.task == "mr+tweets"
    assert item.metrics == {metric_key("validation", k, "mr"): v for k, v in metrics["mr"].items()}
    assert item.recipe["evaluation"] == {"split": "validation", "limit": 8, "tasks": ["mr"]}
    torch.testing.assert_close(library.tensor(item.id), prompt)
    # the same combination again (another name, other metrics) is the stored item, untouched
    again = save_combination(library, prompt, recipe, {}, name="another name")
    assert again.id == item.id and again.name == item.name and len(library.items()) == before + 1
    assert stored_combination(library, recipe).id == item.id
    # a different weight is a different prompt, named as the user asked; no metrics, no evaluation entry
    prompt2, recipe2 = combine(library, origin_id, vectors[:1], [0.25])
    named = save_combination(library, prompt2, recipe2, {}, name="  my mix  ")
    assert named.name == "my mix" and named.task == "mr" and "evaluation" not in named.recipe and not named.metrics
    # the live view's last evaluation is reused only for exactly this combination, covering the tasks
    evaluated = {"recipe": recipe, "tasks": ["mr", "tweets"], "limit": 32,
                 "metrics": {t: {"accuracy": 0.5, "accuracy_se": 0.1, "n": 32, "macro_f1": 0.4} for t in ("mr", "tweets")}}
    assert reuse_evaluation(evaluated, recipe, ["tweets"]) == ({"tweets": {"accuracy": 0.5, "accuracy_se": 0.1,
                                                                          "n": 32}}, 32)
    assert reuse_evaluation(evaluated, recipe, ["mr", "bbc"]) is None
    assert reuse_evaluation(evaluated, recipe2, ["mr"]) is None and reuse_evaluation(None, recipe, ["mr"]) is None


def test_a_link_round_trips_a_combination_and_refuses_what_the_tab_cannot_show(setup):
    from urllib.parse import parse_qsl, urlsplit

    from studio.analysis import check_combination, combination_from_link, combination_url

    tiny, library, origin_id, vectors = setup
    combination = check_combination(library, *combination_args(origin_id, vectors, [0.35, -1.5], "dare_ties", 0.3,
                                                                ["tweets"], 48))
    url = combination_url("http://127.0.0.1:7860/?__sign=secret&tab=map#top", combination)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("http", "127.0.0.1:7860", "/", "")
    assert "secret" not in url and f"vectors={vectors[0]}:0.35,{vectors[1]}:-1.5" in url  # readable, exact
    params = dict(parse_qsl(parts.query))
    assert combination_from_link(library, tiny.name, params) == combination
    assert combination_url("", combination).startswith("?tab=arithmetic&origin=")
    # only defaults left out: the vectors' tasks, weighted_sum, density 0.5, 128 examples
    short = combination_from_link(library, tiny.name, {"tab": "arithmetic", "origin": origin_id,
                                                       "vectors": f"{vectors[0]}:1"})
    assert (short.method, short.density, short.limit, short.tasks) == ("weighted_sum", 0.5, 128, ["mr"])
    assert combination_from_link(library, tiny.name, {}) is None  # a page opened without a link
    assert combination_from_link(library, tiny.name, {"origin": origin_id}) is None
    refused = {
        "no library item 'v-gone'": {"vectors": "v-gone:1"},
        "outside the sliders' range -1.5 to 1.5": {"vectors": f"{vectors[0]}:2"},
        "has no number as its weight": {"vectors": f"{vectors[0]}:lots"},
        f"{vectors[0]} is a vector, not an origin": {"origin": vectors[0]},
        "at most 6": {"vectors": ",".join(f"{vectors[0]}:1" for _ in range(7))},
        "between 16 and 512": {"limit": "1000"},
        "no origin or no vectors": {"vectors": ""},
        "too long": {"origin": "o" * 5000},
        "unknown merge method": {"method": "mean"},
        f"was made for {tiny.name}, but this studio runs other-model": {"model": "other-model"},
    }
    for message, change in refused.items():
        model = change.pop("model", tiny.name)
        with pytest.raises(StudioError, match=re.escape(message)):
            combination_from_link(library, model, {**params, **change})
    with pytest.raises(StudioError, match="outside the sliders' range"):  # a link that could not be opened is not made
        combination_url("", check_combination(library, *combination_args(origin_id, vectors[:1], [3.0])))
