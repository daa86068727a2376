"""Library-level analyses shared by the CLI and the UI: similarity tables, combinations, cross-origin tables.

Each function takes item ids, reads tensors from the library and calls the pure functions in ``prompts`` and
``evaluation``; none of them draws or prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from studio import StudioError
from studio.backbones import Backbone
from studio.evaluation import evaluate
from studio.library import Item, Library
from studio.prompts import merge, similarity_matrix
from studio.tasks import load_task


def item_label(item: Item) -> str:
    origin = f" o{item.origin}" if item.origin is not None else ""
    return f"{item.task or item.name}{origin} ({item.kind})" if item.kind != "origin" else f"origin {item.origin}"


@dataclass
class SimilarityTable:
    matrix: np.ndarray
    items: list[Item]
    labels: list[str]
    measure: str
    as_vectors: bool


def similarity_table(library: Library, ids: list[str], measure: str = "token_mean_cosine",
                     as_vectors: bool = True, order: str = "task") -> SimilarityTable:
    """Similarity of the chosen items, as task prompt vectors (tau) or as raw prompts (P).

    ``order``: "task" (task, then origin), "origin" (origin, then task) or "cluster" (hierarchical, average link).
    """
    if len(ids) < 2:
        raise StudioError("choose at least two prompts or vectors to compare")
    items = [library.get(i) for i in ids]
    if as_vectors:
        tensors = [library.vector(i.id).delta for i in items]
    else:
        tensors = [library.tensor(i.prompt_id) if i.kind == "vector" and i.prompt_id else library.tensor(i.id)
                   for i in items]
    models = {i.model for i in items}
    if len(models) > 1:
        raise StudioError(f"items come from different models ({', '.join(sorted(models))}): compare one at a time")
    matrix = similarity_matrix(tensors, measure).numpy()
    index = list(range(len(items)))
    if order == "task":
        index.sort(key=lambda k: (items[k].task or "", items[k].origin or 0))
    elif order == "origin":
        index.sort(key=lambda k: (items[k].origin or 0, items[k].task or ""))
    elif order == "cluster":
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        is_similarity = measure.endswith("cosine")
        distance = (1 - matrix) if is_similarity else matrix.copy()
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


def cross_origin_table(library: Library, backbone: Backbone, tasks: list[str], split: str = "test",
                       limit: int | None = 200) -> list[dict]:
    """For each task and each ordered origin pair (A, B): accuracy of P0(A) + tau(B) vs A's own tuned prompt."""
    rows = []
    for task_name in tasks:
        prompts = [i for i in library.items(kind="prompt", model=backbone.name, task=task_name)
                   if i.origin_id and "combination" not in i.recipe]
        by_origin = {}
        for prompt in prompts:  # the first (oldest) tuned prompt per origin
            by_origin.setdefault(prompt.origin_id, prompt)
        if len(by_origin) < 2:
            raise StudioError(f"task {task_name!r} needs tuned prompts on at least two origins for a cross-origin table")
        task = load_task(task_name)
        pairs, tensors = [], []
        for a_origin, a_prompt in by_origin.items():
            pairs.append((a_origin, a_origin))
            tensors.append(library.tensor(a_prompt.id))
            for b_origin, b_prompt in by_origin.items():
                if b_origin != a_origin:
                    pairs.append((a_origin, b_origin))
                    tensors.append(library.tensor(a_origin) + library.vector(b_prompt.id).delta)
        results = evaluate(backbone, tensors, task, split, limit, keep_records=False)
        for (a, b), result in zip(pairs, results):
            rows.append({"task": task_name, "origin": library.get(a).origin, "vector_from": library.get(b).origin,
                         "own": a == b, **{k: result.metrics[k] for k in ("accuracy", "macro_f1", "n")}})
    return rows
