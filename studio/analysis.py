"""Library-level analyses shared by the CLI and the UI: similarity tables, combinations, cross-origin tables.

Each function takes item ids, reads tensors from the library and calls the pure functions in ``prompts`` and
``evaluation``; none of them draws or prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import torch

from studio import StudioError
from studio.backbones import Backbone
from studio.evaluation import evaluate, evaluate_many
from studio.library import Item, Library, content_id, split_metrics
from studio.limits import TASK_JOINER
from studio.prompts import MERGE_METHODS, is_cosine, merge, scale_ratio, similarity_matrix
from studio.tasks import load_task


def item_label(item: Item) -> str:
    origin = f" o{item.seed}" if item.seed is not None else ""
    return f"{item.task or item.name}{origin} ({item.kind})" if item.kind != "origin" else f"origin {item.seed}"


@dataclass
class SimilarityTable:
    matrix: np.ndarray
    items: list[Item]
    labels: list[str]
    measure: str
    as_vectors: bool


SIMILARITY_VIEWS = ("vectors", "prompts")  # what a table compares: tau = prompt - origin, or the prompts P
SIMILARITY_ORDERS = ("task", "origin", "cluster")


def compared_ids(ids: list[str] | None) -> list[str]:
    """The items a similarity table compares: blanks dropped, an id named twice one row (not a duplicate block),
    and at least two of them (a table of one says nothing)."""
    named = [i for i in (ids or []) if i]
    distinct = list(dict.fromkeys(named))
    if len(distinct) < 2:
        raise StudioError("choose at least two different prompts or vectors to compare" if len(named) >= 2 else
                          "choose at least two prompts or vectors to compare")
    return distinct


def compares_vectors(view: str) -> bool:
    """A view's name (the Similarity tab's, the agents' tool's) as ``similarity_table``'s ``as_vectors``."""
    if view not in SIMILARITY_VIEWS:
        raise StudioError(f"unknown view {view!r}: use vectors or prompts")
    return view == "vectors"


def check_one_model(items: list[Item], action: str) -> None:
    """Items compared or drawn together were made for one model: another model's embeddings live in another
    space. ``action``: what the message asks to do one model at a time."""
    models = {i.model for i in items}
    if len(models) > 1:
        raise StudioError(f"items come from different models ({', '.join(sorted(models))}): {action} one at a time")


def similarity_table(library: Library, ids: list[str], measure: str = "token_mean_cosine",
                     as_vectors: bool = True, order: str = "task") -> SimilarityTable:
    """Similarity of the chosen items (``compared_ids``), as task prompt vectors (tau) or as raw prompts (P).

    ``order``: "task" (task, then origin), "origin" (origin, then task) or "cluster" (hierarchical, average link).
    """
    ids = compared_ids(ids)
    if order not in SIMILARITY_ORDERS:
        raise StudioError(f"unknown order {order!r}: use task, origin or cluster")
    items = [library.get(i) for i in ids]
    if as_vectors:
        tensors = [library.vector(i.id).delta for i in items]
    else:
        tensors = [library.tensor(i.prompt_id) if i.kind == "vector" and i.prompt_id else library.tensor(i.id)
                   for i in items]
    check_one_model(items, "compare")
    matrix = similarity_matrix(tensors, measure).numpy()
    index = list(range(len(items)))
    if order == "task":
        index.sort(key=lambda k: (items[k].task or "", items[k].seed or 0))
    elif order == "origin":
        index.sort(key=lambda k: (items[k].seed or 0, items[k].task or ""))
    elif order == "cluster":
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        distance = (1 - matrix) if is_cosine(measure) else matrix.copy()
        np.fill_diagonal(distance, 0)
        index = list(leaves_list(linkage(squareform(np.clip(distance, 0, None), checks=False), "average")))
    matrix = matrix[np.ix_(index, index)]
    items = [items[k] for k in index]
    labels = [item_label(i) for i in items]
    return SimilarityTable(matrix, items, labels, measure, as_vectors)


def combine(library: Library, origin_id: str, vector_ids: list[str], weights: list[float],
            method: str = "weighted_sum", density: float = 0.5) -> tuple[torch.Tensor, dict]:
    """P = P0 + merge(weights x tau_i): the prompt, and the recipe to store it with."""
    origin = library.get(origin_id)
    if origin.kind != "origin":
        raise StudioError(f"{origin_id} is a {origin.kind}; choose an origin to apply vectors to")
    vectors = []
    for vector_id in vector_ids:
        vector = library.vector(vector_id)
        if vector.model != origin.model:
            raise StudioError(f"{vector_id} belongs to {vector.model} but origin {origin_id} to {origin.model}")
        vectors.append(vector)
    merged = merge(vectors, weights, method, density)
    prompt = merged.apply_to(library.tensor(origin_id))
    recipe = {"combination": {"origin": origin_id, "vectors": vector_ids, "weights": [float(w) for w in weights],
                              "method": method, "density": density}}
    return prompt, recipe


def combination_id(recipe: dict) -> str:
    """The content id of a combined prompt: the same origin, vectors, weights and merge are the same prompt."""
    return content_id("prompt", recipe["combination"])


# ---- combinations: the rules the Arithmetic tab, its shared links and `studio combine` share --------------------
MAX_VECTORS = 6  # task prompt vectors in one combination: one weight slider each
WEIGHT_RANGE = (-1.5, 1.5)  # what a weight slider, and so a shared link, holds; the API takes any finite weight
MAX_LIMIT = 2000  # validation examples per task a live evaluation (API included) may score
LINK_LIMITS = (16, 512)  # the sample slider's range, which a shared link must fit
MAX_SWEEP_LIMIT = 500  # examples per task of a sweep: every point scores them all
SWEEPS = ("coefficient", "grid")
LIVE_METRICS = ("accuracy", "accuracy_se", "n")  # what the live view measures, and what a saved combination keeps


def sample_size(value, most: int, what: str) -> int:
    """``value`` (a form's or the API's) as a sample of 1 to ``most`` examples per task, or one clear error:
    the one rule of the live evaluation's, a sweep's and the cross-origin table's sample sizes."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise StudioError(f"{what} must be a whole number of examples") from None
    if not 1 <= size <= most:
        raise StudioError(f"{what} must be between 1 and {most} examples per task, got {size}")
    return size


@dataclass
class Combination:
    """A checked combination and where to evaluate it: what every Arithmetic event and a shared link carry."""

    origin_id: str
    vector_ids: list[str]
    weights: list[float]
    method: str
    density: float
    tasks: list[str]
    limit: int


def check_vector_ids(vector_ids: list[str] | None) -> list[str]:
    """The chosen vector ids without blanks, at most ``MAX_VECTORS`` (one slider each)."""
    ids = [v for v in (vector_ids or []) if v]
    if len(ids) > MAX_VECTORS:
        raise StudioError(f"choose at most {MAX_VECTORS} task prompt vectors (got {len(ids)})")
    return ids


def parse_weighted(parts: list[str], what: str) -> tuple[list[str], list[float]]:
    """``ID`` or ``ID:WEIGHT`` texts (a link's ``vectors=``, ``studio combine --vector``) as ids and weights; a
    missing weight is 1."""
    ids, weights = [], []
    for part in parts:
        vector_id, _, weight = part.partition(":")
        try:
            weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise StudioError(f"{what} are ID or ID:WEIGHT; {part[:60]!r} has no number as its weight") from None
        ids.append(vector_id)
    return ids, weights


def check_combination(library: Library, origin_id: str | None, vector_ids: list[str] | None, method: str,
                      density, tasks: list[str] | None, limit, weights: list, model: str | None = None,
                      scored: bool = True) -> Combination:
    """Form, API, link or command-line input as a ``Combination``, or one clear error. ``weights`` may be longer
    than the vectors (one per slider, hidden ones included); tasks default to the vectors' own tasks. With
    ``model``, every item must have been made for it (``check_model``). ``scored=False`` (``studio combine``
    without ``--eval-task``): nothing is evaluated, so neither tasks nor a sample size are needed."""
    if not origin_id:
        raise StudioError("choose an origin to apply the vectors to")
    vector_ids = check_vector_ids(vector_ids)
    if not vector_ids:
        raise StudioError("choose at least one task prompt vector")
    if len(set(vector_ids)) != len(vector_ids):
        raise StudioError("each vector can be chosen once: use its weight to count it more")
    if method not in MERGE_METHODS:
        raise StudioError(f"unknown merge method {method!r}: use one of {', '.join(MERGE_METHODS)}")
    try:
        density = float(density)
        limit = int(limit)
        weights = [float(w) for w in weights[: len(vector_ids)]]
    except (TypeError, ValueError):
        raise StudioError("weights, density and sample size must be numbers") from None
    if len(weights) < len(vector_ids) or not all(math.isfinite(w) for w in weights):
        raise StudioError("every chosen vector needs a finite weight")
    if not 0 < density <= 1:
        raise StudioError(f"density must be in (0, 1], got {density}")
    if scored:
        sample_size(limit, MAX_LIMIT, "the evaluation sample")
    library.get(origin_id)  # an unknown origin is named before the vectors
    vectors = [library.get(v) for v in vector_ids]
    if any(v.kind != "vector" for v in vectors):
        wrong = next(v for v in vectors if v.kind != "vector")
        raise StudioError(f"{wrong.id} is a {wrong.kind}, not a task prompt vector")
    tasks = [t for t in (tasks or []) if t] or list(dict.fromkeys(v.task for v in vectors if v.task))
    if scored and not tasks:
        raise StudioError("choose at least one dataset to evaluate on")
    combination = Combination(origin_id, vector_ids, weights, method, density, tasks, limit)
    if model is not None:
        check_model(library, combination, model)
    return combination


def check_model(library: Library, combination: Combination, model: str) -> None:
    """The origin is an origin, and it and every vector were made for ``model`` (the one that will evaluate)."""
    origin = library.get(combination.origin_id)
    if origin.kind != "origin":
        raise StudioError(f"{origin.id} is a {origin.kind}, not an origin")
    for item in (origin, *(library.get(v) for v in combination.vector_ids)):
        if item.model != model:
            raise StudioError(f"{item.id} was made for {item.model}, but this studio runs {model}")


def check_sweep(mode: str, limit) -> int:
    """The sweep's sample size per task, checked with its mode."""
    limit = sample_size(limit, MAX_SWEEP_LIMIT, "the sweep sample")
    if mode not in SWEEPS:
        raise StudioError(f"unknown sweep {mode!r}: use {' or '.join(SWEEPS)}")
    return limit


REFERENCES = ("origin alone", "own tuned prompt")


def reference_items(library: Library, model: str, combination: Combination) -> dict[str, dict[str, str | None]]:
    """Per evaluated task, the items a combination is measured against: the origin alone, and the task's own tuned
    prompt (the tuned prompt behind the chosen TPV of that task, else a single-task prompt tuned from the origin)."""
    vectors = [library.get(v) for v in combination.vector_ids]
    found: dict[str, dict[str, str | None]] = {}
    for task in combination.tasks:
        own = next((v.prompt_id for v in vectors if v.task == task and v.prompt_id), None)
        if own is None:
            own = next((p.id for p in tuned_prompts_by_origin(library, model, task).values()
                        if p.origin_id == combination.origin_id), None)
        found[task] = {REFERENCES[0]: combination.origin_id, REFERENCES[1]: own}
    return found


# saving a combination (the Arithmetic tab's Save and `studio combine`)
def stored_combination(library: Library, recipe: dict) -> Item | None:
    """The prompt already stored for this combination (same origin, vectors, weights and merge), if any."""
    return library.find(combination_id(recipe))


def reuse_evaluation(evaluated: dict | None, recipe: dict, tasks: list[str]) -> tuple[dict[str, dict], int] | None:
    """The live view's last full evaluation (``{"recipe", "tasks", "limit", "metrics": {task: metrics}}``) as the
    metrics to save, when it scored exactly this combination on at least ``tasks``: (metrics per task, sample)."""
    if not evaluated or evaluated["recipe"] != recipe or not set(tasks) <= set(evaluated["tasks"]):
        return None
    return {t: {k: evaluated["metrics"][t][k] for k in LIVE_METRICS} for t in tasks}, evaluated["limit"]


def score_combination(backbone: Backbone, prompt: torch.Tensor, tasks: list[str], split: str = "validation",
                      limit: int = 128) -> dict[str, dict]:
    """``LIVE_METRICS`` per task on the sample the live view uses (the class-balanced first ``limit`` examples)."""
    result = evaluate_many(backbone, [prompt], tasks, split, limit)
    return {t: {"accuracy": float(result["accuracy"][0, k]), "accuracy_se": float(result["se"][0, k]),
                "n": result["n"][k]} for k, t in enumerate(tasks)}


def combination_name(library: Library, recipe: dict) -> str:
    """A saved combination's default name, readable as its formula: "origin 0 + 0.5 mr + 1 tweets (ties)"."""
    combination = recipe["combination"]
    origin = library.get(combination["origin"])
    vectors = [library.get(v) for v in combination["vectors"]]
    method = combination["method"]
    return (f"origin {origin.seed} + " + " + ".join(f"{w:g} {v.task or v.id}" for w, v in
                                                     zip(combination["weights"], vectors))
            + (f" ({method})" if method != "weighted_sum" else ""))


def keyed_metrics(split: str, metrics_by_task: dict[str, dict]) -> dict:
    """Per-task metrics under their catalog keys (``validation_accuracy/mr``...)."""
    keyed: dict = {}
    for task, metrics in metrics_by_task.items():
        keyed.update(split_metrics(split, metrics, task))
    return keyed


def save_combination(library: Library, prompt: torch.Tensor, recipe: dict, metrics_by_task: dict[str, dict],
                     split: str = "validation", limit: int | None = None, name: str | None = None) -> Item:
    """Store a combined prompt (``combine``'s prompt and recipe) with its metrics per task, under its content id:
    the same combination saved twice is one item (the stored one is returned as it is). The recipe records what
    the metrics were measured on; the task is the vectors' tasks joined by ``TASK_JOINER``, in their order."""
    combination = recipe["combination"]
    origin = library.get(combination["origin"])
    task = TASK_JOINER.join(dict.fromkeys(library.get(v).task or v for v in combination["vectors"]))
    if metrics_by_task:
        recipe = {**recipe, "evaluation": {"split": split, "limit": limit, "tasks": list(metrics_by_task)}}
    return library.add("prompt", prompt, origin.model, name=(name or "").strip() or combination_name(library, recipe),
                       task=task, seed=origin.seed, origin_id=origin.id, recipe=recipe,
                       metrics=keyed_metrics(split, metrics_by_task), item_id=combination_id(recipe), exist_ok=True)


def save_scored_combination(library: Library, backbone: Backbone, combination: Combination, name: str | None = None,
                            evaluated: dict | None = None, split: str = "validation") -> tuple[Item, bool]:
    """What every Save does (the Arithmetic tab, the agents' tool, ``studio combine --eval-task``): the combined
    prompt stored with ``LIVE_METRICS`` on the live view's sample of ``split`` (reused from ``evaluated`` when
    that scored exactly this combination, else scored now). Returns the item and whether it was stored already
    (then as it was: the same combination is one item, measured once)."""
    prompt, recipe = combine(library, combination.origin_id, combination.vector_ids, combination.weights,
                             combination.method, combination.density)
    if (known := stored_combination(library, recipe)) is not None:
        return known, True
    reused = reuse_evaluation(evaluated, recipe, combination.tasks) if split == "validation" else None
    metrics, limit = reused or (score_combination(backbone, prompt, combination.tasks, split, combination.limit),
                                combination.limit)
    return save_combination(library, prompt, recipe, metrics, split, limit, name), False


# shared links: a combination as a URL's query
LINK_TAB = "arithmetic"
LINK_DEFAULTS = {"method": "weighted_sum", "density": "0.5", "limit": "128"}


def _number(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (0.5, not 0.5000)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def _check_link_ranges(combination: Combination) -> None:
    """A link restores sliders, so its weights and sample size must fit them."""
    low, high = WEIGHT_RANGE
    for vector_id, weight in zip(combination.vector_ids, combination.weights):
        if not low <= weight <= high:
            raise StudioError(f"the weight {weight:g} of {vector_id} is outside the sliders' range {low:g} to {high:g}")
    if not LINK_LIMITS[0] <= combination.limit <= LINK_LIMITS[1]:
        raise StudioError(f"a link's evaluation sample must be between {LINK_LIMITS[0]} and {LINK_LIMITS[1]} "
                          f"examples, got {combination.limit}")
    if any("," in t for t in combination.tasks):
        raise StudioError("a task whose name has a comma cannot go into a link")


def combination_url(page_url: str, combination: Combination) -> str:
    """A link to ``page_url`` (its own query dropped) that reopens the Arithmetic tab on ``combination``. Item ids
    are content ids, so the link holds wherever the same items exist (after a rebuild, on another copy)."""
    _check_link_ranges(combination)
    query = urlencode({"tab": LINK_TAB, "origin": combination.origin_id,
                       "vectors": ",".join(f"{v}:{_number(w)}" for v, w in zip(combination.vector_ids,
                                                                                combination.weights)),
                       "method": combination.method, "density": _number(combination.density),
                       "tasks": ",".join(combination.tasks), "limit": str(combination.limit)}, safe=":,")
    return urlunsplit(urlsplit(page_url or "")._replace(query=query, fragment=""))


def combination_from_link(library: Library, model: str, params: Mapping[str, str]) -> Combination | None:
    """The combination a link's query names, checked as any input is (ids, kinds, model, counts, ranges); None
    when the query is not an Arithmetic link (no ``tab=arithmetic``)."""
    params = {k: str(v) for k, v in dict(params).items()}
    if params.get("tab") != LINK_TAB:
        return None
    if any(len(v) > 4000 for v in params.values()):
        raise StudioError("the link is too long to be one combination")
    if not params.get("origin") or not params.get("vectors"):
        raise StudioError("the link names no origin or no vectors (it needs origin=ID&vectors=ID:WEIGHT,...)")
    ids, weights = parse_weighted(params["vectors"].split(","), "the link's vectors")
    value = {**LINK_DEFAULTS, **params}
    tasks = [t for t in value.get("tasks", "").split(",") if t]
    combination = check_combination(library, params["origin"], ids, value["method"], value["density"], tasks,
                                    value["limit"], weights, model=model)
    _check_link_ranges(combination)
    return combination


def is_single_task_prompt(item: Item) -> bool:
    """A prompt tuned on one task from an origin: not a combination from the Arithmetic tab, not a mixture."""
    return (item.kind == "prompt" and bool(item.origin_id) and "combination" not in item.recipe
            and "mixture" not in item.recipe)


MIN_CROSS_ORIGINS = 2  # origins a task needs tuned prompts on before its TPVs can move between them
CROSS_ORIGIN_SPLITS = ("validation", "test")


def check_cross_origin(tasks: list[str] | None, split: str, limit) -> tuple[list[str], int]:
    """Form or API input for a cross-origin table as (tasks without blanks, sample size per task), or one clear
    error. Whether each task has prompts on enough origins is ``cross_origin_table``'s to say."""
    tasks = [t for t in (tasks or []) if t]
    if not tasks:
        raise StudioError("choose at least one task with prompts tuned on two or more origins")
    if split not in CROSS_ORIGIN_SPLITS:
        raise StudioError(f"unknown split {split!r}: use validation or test")
    return tasks, sample_size(limit, MAX_LIMIT, "the cross-origin sample")


def tuned_prompts_by_origin(library: Library, model: str, task: str) -> dict[str, Item]:
    """The tuned prompt per origin id that a cross-origin table uses for ``task``: the first stored per origin,
    among prompts of one length (a TPV only moves to an origin of its own shape): the length tuned on the most
    origins, and on a tie the one the prebuilt library uses."""
    by_length: dict[int, dict[str, Item]] = {}
    for prompt in library.items(kind="prompt", model=model, task=task):
        if is_single_task_prompt(prompt):
            by_length.setdefault(prompt.n_tokens, {}).setdefault(prompt.origin_id, prompt)
    if not by_length:
        return {}
    return max(by_length.values(),
               key=lambda group: (len(group), sum(p.source == "prebuilt" for p in group.values())))


def cross_origin_table(library: Library, backbone: Backbone, tasks: list[str], split: str = "test",
                       limit: int | None = 200) -> list[dict]:
    """For each task and each ordered origin pair (A, B): accuracy of P0(A) + tau(B) vs A's own tuned prompt.

    Each row also carries ``tau_ratio`` = |tau(B)| / |P0(B)|: how far tuning moved the prompt from its own origin,
    the quantity that decides whether a TPV transfers on a small model (docs/findings.md)."""
    rows = []
    for task_name in tasks:
        by_origin = tuned_prompts_by_origin(library, backbone.name, task_name)
        if len(by_origin) < MIN_CROSS_ORIGINS:
            raise StudioError(f"task {task_name!r} needs tuned prompts on at least two origins for a cross-origin table")
        task = load_task(task_name)
        vectors = {origin: library.vector(prompt.id).delta for origin, prompt in by_origin.items()}
        ratios = {origin: scale_ratio(vectors[origin], library.tensor(origin)) for origin in by_origin}
        pairs, tensors = [], []
        for a_origin, a_prompt in by_origin.items():
            pairs.append((a_origin, a_origin))
            tensors.append(library.tensor(a_prompt.id))
            for b_origin in by_origin:
                if b_origin != a_origin:
                    pairs.append((a_origin, b_origin))
                    tensors.append(library.tensor(a_origin) + vectors[b_origin])
        results = evaluate(backbone, tensors, task, split, limit, keep_records=False)
        for (a, b), result in zip(pairs, results):
            rows.append({"task": task_name, "origin": library.get(a).seed, "vector_from": library.get(b).seed,
                         "own": a == b, "prompt_id": by_origin[b].id, "tau_ratio": ratios[b],
                         **{k: result.metrics[k] for k in ("accuracy", "macro_f1", "n")}})
    return rows


# ---- similarity summary -----------------------------------------------------------------------------------------
def same_vs_different(table: SimilarityTable) -> dict:
    """Mean similarity of pairs of the same task (across origins) vs pairs of different tasks: the paper's point.

    Pairs are distinct items (i < j); items without a task are left out. A mean is NaN when there are no pairs.
    """
    same, different = [], []
    tasks = [item.task for item in table.items]
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            if tasks[i] and tasks[j]:
                (same if tasks[i] == tasks[j] else different).append(float(table.matrix[i, j]))
    return {"measure": table.measure, "same_task": float(np.mean(same)) if same else float("nan"),
            "different_task": float(np.mean(different)) if different else float("nan"),
            "n_same": len(same), "n_different": len(different)}


# ---- map (projection of items) ----------------------------------------------------------------------------------
MAP_VIEWS = ("items", "tokens")  # one point per item (its flattened matrix), or one per virtual token
MAP_COLOURS = ("task", "origin", "kind")  # the fields of a point's record (``_point_record``) a map is coloured by


def drawn_ids(ids: list[str] | None) -> list[str]:
    """The items a map draws: blanks dropped, an id named twice one point, and at least one of them."""
    distinct = list(dict.fromkeys(i for i in (ids or []) if i))
    if not distinct:
        raise StudioError("choose at least one prompt or vector to draw")
    return distinct


class MapRequest(NamedTuple):
    """A map's checked input (``check_map``): what ``map_points`` is asked for."""

    ids: list[str]
    dims: int
    seed: int
    per_token: bool


def check_map(ids: list[str] | None, dims, colour: str, view: str, seed) -> MapRequest:
    """Form or API input for a map as a ``MapRequest``, or one clear error: the items (``drawn_ids``), a colour
    among the points' record fields, one of ``MAP_VIEWS``, and the dimensions and seed
    (``projection.map_settings``). The projection itself is ``projection.choose_method``'s to check."""
    from studio.projection import map_settings

    ids = drawn_ids(ids)
    if colour not in MAP_COLOURS:
        raise StudioError(f"colour by one of {', '.join(MAP_COLOURS)}, not {colour!r}")
    if view not in MAP_VIEWS:
        raise StudioError(f"unknown view {view!r}: use items or tokens")
    dims, seed = map_settings(dims, seed)
    return MapRequest(ids, dims, seed, per_token=view == "tokens")


@dataclass
class MapPoints:
    coords: np.ndarray  # [points, dims]
    records: list[dict]  # one per point: id, name, kind, task, origin, token (per-token view) and metrics
    note: str


def _metrics_summary(metrics: dict) -> str:
    shown = [f"{k} {v:.3f}" for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and "accuracy" in k and not k.endswith("_se")]
    return ", ".join(shown[:4])


def map_points(library: Library, ids: list[str], method: str = "umap", dims: int = 2, seed: int = 0,
               per_token: bool = False, stored: list[list[float]] | None = None) -> MapPoints:
    """Project items (vectors as tau, prompts and origins as P) to 2-D or 3-D: one point per item (flattened
    matrix) or, with ``per_token``, one point per virtual token. ``stored``: coordinates computed earlier for
    exactly these points (``studio.views``), used instead of projecting again."""
    from studio.projection import project

    ids = drawn_ids(ids)
    items = [library.get(i) for i in ids]
    check_one_model(items, "draw")
    tensors = [library.vector(i.id).delta if i.kind == "vector" else library.tensor(i.id) for i in items]
    records = []
    if per_token:
        matrix = torch.cat([t.float() for t in tensors]).numpy()
        for item, tensor in zip(items, tensors):
            records += [_point_record(item, token) for token in range(tensor.shape[0])]
    else:
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise StudioError(f"items have different shapes {sorted(shapes)}: choose items of one length, "
                              "or use the per-token view")
        matrix = torch.stack([t.float().flatten() for t in tensors]).numpy()
        records = [_point_record(item, None) for item in items]
    if stored is not None and np.shape(stored) == (len(records), dims):
        name = "UMAP" if method == "umap" else "PCA"
        return MapPoints(np.asarray(stored, dtype=np.float64), records,
                         f"{name} of {len(records)} points (seed {seed}), stored with the prebuilt library")
    coords, note = project(matrix, method, dims, seed)
    return MapPoints(coords, records, note)


def _point_record(item: Item, token: int | None) -> dict:
    return {"id": item.id, "name": item.name, "kind": item.kind, "task": item.task or "(none)",
            "origin": "(none)" if item.seed is None else str(item.seed), "token": token,
            "metrics": _metrics_summary(item.metrics)}


# ---- evaluating many prompts: sweeps and landscapes --------------------------------------------------------------
SWEEP_COEFFICIENTS = tuple(round(0.05 * k, 2) for k in range(21))  # the reference's grid: 0, 0.05, ..., 1.0


def coefficient_sweep(library: Library, backbone: Backbone, origin_id: str, vector_ids: list[str],
                      weights: list[float], tasks: list[str], method: str = "weighted_sum", density: float = 0.5,
                      coefficients=SWEEP_COEFFICIENTS, split: str = "validation", limit: int | None = 32,
                      on_progress=None, should_stop=None) -> dict:
    """Accuracy along one shared coefficient: P = P0 + c * merge(w / max|w| x tau_i), c over ``coefficients``.

    With equal weights this is the reference's search (P0 + c * sum tau_i); the current sliders sit at
    c = max|w|. Returns coefficients, per-task and mean accuracy, the current c and the best c (best mean).
    """
    if len(vector_ids) != len(weights):
        raise StudioError(f"got {len(weights)} weights for {len(vector_ids)} vectors")
    scale = max((abs(float(w)) for w in weights), default=0.0)
    if scale == 0:
        raise StudioError("set at least one weight to a non-zero value: the sweep scales the current direction")
    coefficients = [float(c) for c in coefficients]
    if not coefficients:
        raise StudioError("the sweep needs at least one coefficient")
    direction, recipe = combine(library, origin_id, vector_ids, [w / scale for w in weights], method, density)
    origin = library.tensor(origin_id)
    tau = direction - origin
    prompts = [origin + c * tau for c in coefficients]
    result = evaluate_many(backbone, prompts, tasks, split, limit, on_progress=on_progress, should_stop=should_stop)
    mean = result["accuracy"].mean(1)
    best = int(np.argmax(mean))
    return {"coefficients": coefficients, "tasks": list(tasks),
            "accuracy": {name: result["accuracy"][:, t].tolist() for t, name in enumerate(tasks)},
            "se": {name: result["se"][:, t].tolist() for t, name in enumerate(tasks)},
            "mean": mean.tolist(), "current": scale, "best": coefficients[best], "best_mean": float(mean[best]),
            "n": result["n"], "recipe": recipe}


GRID_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


def weight_grid(library: Library, backbone: Backbone, origin_id: str, vector_ids: list[str], weights: list[float],
                tasks: list[str], method: str = "weighted_sum", density: float = 0.5, values=GRID_VALUES,
                split: str = "validation", limit: int | None = 32, on_progress=None, should_stop=None) -> dict:
    """Mean accuracy over a grid of the first two vectors' weights (the others keep their weights).

    ``mean[i][j]`` is for weight ``values[i]`` on the second vector (rows, y) and ``values[j]`` on the first (x).
    """
    if len(vector_ids) < 2:
        raise StudioError("the weight landscape needs at least two task prompt vectors")
    if len(vector_ids) != len(weights):
        raise StudioError(f"got {len(weights)} weights for {len(vector_ids)} vectors")
    values = [float(v) for v in values]
    prompts, cells = [], []
    for i, b in enumerate(values):
        for j, a in enumerate(values):
            prompt, _ = combine(library, origin_id, vector_ids, [a, b, *weights[2:]], method, density)
            prompts.append(prompt)
            cells.append((i, j))
    result = evaluate_many(backbone, prompts, tasks, split, limit, on_progress=on_progress, should_stop=should_stop)
    mean = np.zeros((len(values), len(values)))
    for (i, j), row in zip(cells, result["accuracy"]):
        mean[i, j] = row.mean()
    i, j = np.unravel_index(int(np.argmax(mean)), mean.shape)
    return {"values": values, "mean": mean.tolist(), "tasks": list(tasks), "current": [float(weights[0]),
            float(weights[1])], "best": [values[j], values[i]], "best_mean": float(mean[i, j]), "n": result["n"]}


def flipped(before: list[dict], after: list[dict], task: str = "") -> list[dict]:
    """Examples (matched by exact input text) whose prediction changed between two evaluations."""
    previous = {record["input"]: record for record in before}
    return [{"task": task, "input": record["input"], "fields": record.get("fields", record["input"]),
             "label": record["label"],
             "before": previous[record["input"]]["prediction"], "after": record["prediction"]}
            for record in after
            if record["input"] in previous and previous[record["input"]]["prediction"] != record["prediction"]]


# ---- cross-origin summary ---------------------------------------------------------------------------------------
def cross_origin_summary(rows: list[dict], metric: str = "accuracy") -> list[dict]:
    """Per task: mean and std of ``metric`` with the own tuned prompt vs with TPVs from other origins."""
    summary = []
    for task_name in dict.fromkeys(row["task"] for row in rows):
        own = [row[metric] for row in rows if row["task"] == task_name and row["own"]]
        other = [row[metric] for row in rows if row["task"] == task_name and not row["own"]]
        ratios = [row["tau_ratio"] for row in rows if row["task"] == task_name and "tau_ratio" in row]
        summary.append({"task": task_name, "own_mean": float(np.mean(own)), "own_std": float(np.std(own)),
                        "other_mean": float(np.mean(other)) if other else float("nan"),
                        "other_std": float(np.std(other)) if other else float("nan"),
                        "gap": float(np.mean(own) - np.mean(other)) if other else float("nan"),
                        "tau_ratio": float(np.mean(ratios)) if ratios else float("nan"),
                        "n_own": len(own), "n_other": len(other)})
    return summary
