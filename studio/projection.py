"""Low-dimensional maps of prompts and task prompt vectors: UMAP and PCA, with fallbacks for a handful of points.

``project`` is a pure function of a [n, D] matrix. UMAP (umap-learn) needs a few points and a JIT warm-up: its
first import and first fit take tens of seconds, so ``warm_umap`` runs one tiny fit on a background thread at
start-up and ``umap_ready`` tells when it can stop showing PCA instead: ``choose_method`` is that rule (UMAP when
asked and ready, else PCA and why). Fewer than 4 points always use PCA (UMAP fails on 2 points and on 3 with its
default init), padded with zero columns to the requested dimensions.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import NamedTuple

import numpy as np

from studio import StudioError

METHODS = ("umap", "pca")
MIN_UMAP_POINTS = 4
SMALL_N = 10  # below this, UMAP's spectral init is fragile: start from a random layout instead
MAX_SEED = 2**32 - 1  # the largest seed UMAP's random_state (numpy's RandomState) takes

_ready = threading.Event()
_failed: list[str] = []
_warm_thread: threading.Thread | None = None
_warm_lock = threading.Lock()
warm_seconds: list[float] = []  # how long the warm-up fit took, once done


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise StudioError(f"unknown projection {method!r}: use one of {', '.join(METHODS)}")


def _check_dims(dims: int) -> None:
    if dims not in (2, 3):
        raise StudioError(f"a map has 2 or 3 dimensions, got {dims}")


def map_settings(dims, seed) -> tuple[int, int]:
    """A map's dimensions and seed as a form or the API sends them (3, "3"; no seed is seed 0) as whole numbers,
    or one clear error: 2 or 3 dimensions, a seed from 0 to ``MAX_SEED``."""
    try:
        dims, seed = int(dims), int(seed if seed is not None else 0)
    except (TypeError, ValueError):
        raise StudioError("dimensions must be 2 or 3 and the seed a whole number") from None
    _check_dims(dims)
    if not 0 <= seed <= MAX_SEED:
        raise StudioError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {seed}")
    return dims, seed


def _check(matrix: np.ndarray, method: str, dims: int) -> np.ndarray:
    _check_method(method)
    _check_dims(dims)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise StudioError(f"projection needs a [points, features] matrix, got shape {matrix.shape}")
    if matrix.shape[0] < 1:
        raise StudioError("nothing to project: choose at least one prompt or vector")
    if not np.isfinite(matrix).all():
        raise StudioError("some values are NaN or infinite: those items cannot be drawn")
    return matrix


def _pad(coords: np.ndarray, dims: int) -> np.ndarray:
    if coords.shape[1] >= dims:
        return coords[:, :dims]
    return np.hstack([coords, np.zeros((coords.shape[0], dims - coords.shape[1]))])


def pca(matrix: np.ndarray, dims: int = 2) -> tuple[np.ndarray, list[float]]:
    """PCA coordinates [n, dims] and the explained-variance ratio per shown component (0 for padding)."""
    from sklearn.decomposition import PCA

    n, features = matrix.shape
    components = min(dims, n - 1, features)  # n points span at most n - 1 directions
    if components < 1:
        return np.zeros((n, dims)), [0.0] * dims
    model = PCA(n_components=components, svd_solver="full")
    coords = model.fit_transform(matrix)
    ratios = [float(r) for r in model.explained_variance_ratio_] + [0.0] * (dims - components)
    return _pad(coords, dims), ratios


def umap_coords(matrix: np.ndarray, dims: int = 2, seed: int = 0, metric: str = "euclidean") -> np.ndarray:
    """UMAP coordinates [n, dims]; ``n_neighbors = min(15, n - 1)`` and a random init for small n (n >= 4)."""
    import umap

    n = matrix.shape[0]
    model = umap.UMAP(n_components=dims, n_neighbors=min(15, n - 1), random_state=int(seed), metric=metric,
                      init="random" if n < SMALL_N else "spectral", min_dist=0.1)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state", small-graph notes: expected here
        warnings.simplefilter("ignore")
        return np.asarray(model.fit_transform(matrix), dtype=np.float64)


def project(matrix: np.ndarray, method: str = "umap", dims: int = 2, seed: int = 0) -> tuple[np.ndarray, str]:
    """Coordinates [n, dims] for the rows of ``matrix`` and a one-line note on what was drawn.

    Deterministic for a given seed. Fewer than 4 points fall back to PCA (padded to ``dims`` columns).
    """
    matrix = _check(matrix, method, dims)
    n = matrix.shape[0]
    if method == "umap" and n >= MIN_UMAP_POINTS:
        return umap_coords(matrix, dims, seed), f"UMAP of {n} points (n_neighbors={min(15, n - 1)}, seed {seed})"
    coords, ratios = pca(matrix, dims)
    explained = ", ".join(f"{r:.0%}" for r in ratios)
    note = f"PCA of {n} point{'s' if n != 1 else ''} (explained variance per axis: {explained})"
    if method == "umap":
        note = f"UMAP needs at least {MIN_UMAP_POINTS} points, so this is a {note}"
    if n < dims + 1 and n > 0:
        spanned = max(n - 1, 0)
        note += f"; {n} point{'s' if n != 1 else ''} span at most {spanned} ax{'i' if spanned == 1 else 'e'}s, the rest are 0"
    return coords, note


class MethodChoice(NamedTuple):
    """The projection a map can draw now, and why it is not the one asked for ("" when it is)."""

    method: str
    why: str


def choose_method(method: str, n_points: int | None = None, stored: bool = False) -> MethodChoice:
    """UMAP when it is asked for and its coordinates are ``stored`` or it has warmed up; otherwise PCA, at once:
    for fewer than ``MIN_UMAP_POINTS`` points, while UMAP warms up (this starts the warm-up: its first fit compiles
    for about half a minute, which no visitor should wait for), or when its warm-up failed. ``n_points``: the
    points to draw, where known before their matrix is."""
    _check_method(method)
    if method != "umap" or stored:
        return MethodChoice(method, "")
    if n_points is not None and n_points < MIN_UMAP_POINTS:
        return MethodChoice("pca", f"UMAP needs at least {MIN_UMAP_POINTS} points, so this is PCA: ")
    if umap_ready():
        return MethodChoice("umap", "")
    warm_umap()
    problem = umap_problem()
    return MethodChoice("pca", f"UMAP is unavailable ({problem}); " if problem else
                        "UMAP is still warming up (its first run compiles code, about half a minute after start-up), "
                        "so this is PCA: draw again in a moment for UMAP. ")


# ---- warm-up ---------------------------------------------------------------------------------------------------
def _warm() -> None:
    try:  # lowest CPU priority for this thread only (Linux): the JIT must not slow a live evaluation down
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass
    try:
        started = time.time()
        rng = np.random.default_rng(0)
        umap_coords(rng.normal(size=(20, 8)), 2, 0)
        umap_coords(rng.normal(size=(20, 8)), 3, 0)
        _ready.set()
        _failed.clear()
        warm_seconds.append(time.time() - started)
    except Exception as error:  # umap missing or broken: the UI keeps PCA and says why
        _failed.append(f"{type(error).__name__}: {error}")



def warm_umap() -> threading.Thread:
    """Import umap and JIT-compile it with one tiny fit on a daemon thread (idempotent)."""
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None or (not _warm_thread.is_alive() and not _ready.is_set()):
            _warm_thread = threading.Thread(target=_warm, daemon=True, name="warm-umap")
            _warm_thread.start()
        return _warm_thread


def umap_ready() -> bool:
    """True once a UMAP fit has run in this process, so the next one takes well under a second."""
    return _ready.is_set()


def umap_problem() -> str | None:
    """Why UMAP is unavailable, if its warm-up failed."""
    return _failed[-1] if _failed else None
