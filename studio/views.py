"""Results on first view: what the prebuilt library's tabs show before anyone presses a button.

``build-library`` computes once the views that need the model or a slow projection (the cross-origin table, the
default pair's coefficient sweep, the map's UMAP and PCA coordinates) and ships them beside the catalog as
``views.json``: numbers, not images. A tab draws a stored view only while it still describes what the tab would
compute now: every view records the item ids it came from, and once the library's default selection differs (a
user tuned more prompts of a task, say) the tab computes live instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from studio.analysis import (
    MIN_CROSS_ORIGINS,
    coefficient_sweep,
    cross_origin_table,
    map_points,
    tuned_prompts_by_origin,
)
from studio.backbones import Backbone
from studio.files import atomic_write_text
from studio.library import Library

VIEWS_FILE = "views.json"
CROSS_ORIGIN_LIMIT = 120  # test examples per cell, as in docs/findings.md
SWEEP_LIMIT = 32  # validation examples per task: the Arithmetic tab's default sweep sample
MAP_SETTINGS = [("umap", 2), ("pca", 2), ("umap", 3), ("pca", 3)]


# ---- the default selections (shared with the UI, so a stored view and a live one start from the same items) --------
def cross_origin_tasks(library: Library, model: str) -> list[str]:
    """Tasks with single-task prompts tuned on at least two origins (``analysis.MIN_CROSS_ORIGINS``)."""
    tasks = dict.fromkeys(i.task for i in library.items(kind="prompt", model=model) if i.task)
    return [t for t in tasks if len(tuned_prompts_by_origin(library, model, t)) >= MIN_CROSS_ORIGINS]


def cross_origin_key(library: Library, model: str, tasks: list[str]) -> dict[str, list[str]]:
    """What a cross-origin table of ``tasks`` is computed from: the prompt id used per origin, per task."""
    return {t: sorted(p.id for p in tuned_prompts_by_origin(library, model, t).values()) for t in tasks}


def vectors_from(library: Library, model: str, origin_id: str | None, count: int = 2,
                 exclude_task: str | None = None) -> list[str]:
    """One TPV per task (the first stored, up to ``count`` tasks) tuned from ``origin_id``."""
    chosen: dict[str, str] = {}
    for item in library.items(kind="vector", model=model):
        if item.origin_id == origin_id and item.task and item.task != exclude_task and item.task not in chosen:
            chosen[item.task] = item.id
    return list(chosen.values())[:count]


def default_pair(library: Library, model: str, count: int = 2) -> tuple[str | None, list[str]]:
    """The Arithmetic tab's first selection: the lowest-seed origin, and one TPV per task from it."""
    origins = sorted(library.items(kind="origin", model=model), key=lambda i: (i.seed is None, i.seed, i.id))
    origin_id = origins[0].id if origins else None
    return origin_id, vectors_from(library, model, origin_id, count)


def map_ids(library: Library, model: str) -> list[str]:
    """The Map tab's default items: every TPV and prompt of the model."""
    return [i.id for kind in ("vector", "prompt") for i in library.items(kind=kind, model=model)]


# ---- computing and storing ----------------------------------------------------------------------------------------
def compute_views(library: Library, backbone: Backbone, cross_limit: int = CROSS_ORIGIN_LIMIT,
                  sweep_limit: int = SWEEP_LIMIT) -> dict:
    """Every stored view of ``library`` (which should be the prebuilt library itself, read-only)."""
    model = backbone.name
    tasks = cross_origin_tasks(library, model)
    views: dict = {"model": model}
    if tasks:
        views["cross_origin"] = {"key": cross_origin_key(library, model, tasks), "split": "test",
                                 "limit": cross_limit,
                                 "rows": cross_origin_table(library, backbone, tasks, "test", cross_limit)}
    origin_id, vector_ids = default_pair(library, model)
    if origin_id and vector_ids:
        vector_tasks = list(dict.fromkeys(library.get(v).task for v in vector_ids))
        sweep = coefficient_sweep(library, backbone, origin_id, vector_ids, [1.0] * len(vector_ids), vector_tasks,
                                  limit=sweep_limit)
        views["sweep"] = {"origin": origin_id, "vectors": vector_ids, "tasks": vector_tasks, "limit": sweep_limit,
                          **{k: v for k, v in sweep.items() if k != "recipe"}}
    ids = map_ids(library, model)
    if ids:
        coords = {}
        for method, dims in MAP_SETTINGS:
            try:
                coords[f"{method}{dims}"] = map_points(library, ids, method, dims, 0).coords.round(5).tolist()
            except Exception as error:  # umap-learn missing or broken (a hand-made environment): the Map tab
                if method != "umap":  # works it out, falling back to PCA with a message
                    raise
                print(f"[studio] the {dims}-D {method.upper()} map is not stored ({error}): the Map tab computes "
                      "it when opened", file=sys.stderr)
        views["map"] = {"ids": ids, "seed": 0, "coords": coords}
    return views


def save_views(folder: str | Path, views: dict) -> Path:
    return atomic_write_text(Path(folder) / VIEWS_FILE, json.dumps(views))


def load_views(folder: str | Path | None) -> dict:
    """The stored views of a library folder; {} when there are none or the file is unreadable."""
    if folder is None:
        return {}
    try:
        views = json.loads((Path(folder) / VIEWS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return views if isinstance(views, dict) else {}


# ---- using them ---------------------------------------------------------------------------------------------------
def stored_cross_origin(views: dict, library: Library, model: str, tasks: list[str], split: str,
                        limit: int) -> list[dict] | None:
    """The stored rows when they were computed from exactly these prompts, split and sample size; else None."""
    stored = views.get("cross_origin")
    if not stored or views.get("model") != model or (stored["split"], stored["limit"]) != (split, limit):
        return None
    key = cross_origin_key(library, model, tasks)
    if any(stored["key"].get(t) != key[t] for t in tasks):
        return None
    return [row for row in stored["rows"] if row["task"] in tasks]


def stored_map(views: dict, ids: list[str], method: str, dims: int, seed: int) -> list[list[float]] | None:
    stored = views.get("map")
    if not stored or stored["ids"] != list(ids) or stored["seed"] != seed:
        return None
    return stored["coords"].get(f"{method}{dims}")


def stored_sweep(views: dict, origin_id: str, vector_ids: list[str], weights: list[float], tasks: list[str],
                 method: str, limit: int) -> dict | None:
    """The stored sweep of the default pair at equal weights with the plain sum; else None."""
    stored = views.get("sweep")
    if (not stored or stored["origin"] != origin_id or stored["vectors"] != list(vector_ids)
            or stored["tasks"] != list(tasks) or stored["limit"] != limit or method != "weighted_sum"
            or len(set(weights)) != 1 or not weights[0]):
        return None
    return stored
