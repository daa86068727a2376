"""UMAP / PCA projections: shapes for tiny and normal n, 2-D and 3-D, fallbacks, determinism, validation."""

from __future__ import annotations

import numpy as np
import pytest

from studio import StudioError, projection
from studio.projection import choose_method, project, umap_ready, warm_umap


def points(n: int, features: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, features))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dims", [2, 3])
def test_few_points_fall_back_to_padded_pca(n, dims):
    coords, note = project(points(n), "umap", dims)
    assert coords.shape == (n, dims)
    assert np.isfinite(coords).all()
    assert "PCA" in note and "at least 4" in note


@pytest.mark.parametrize("dims", [2, 3])
def test_pca_shapes_and_padding(dims):
    coords, note = project(points(2), "pca", dims)
    assert coords.shape == (2, dims)
    assert np.allclose(coords[:, 1:], 0)  # two points span one axis
    assert coords[0, 0] == pytest.approx(-coords[1, 0])
    coords, _ = project(points(30), "pca", dims)
    assert coords.shape == (30, dims)


@pytest.mark.parametrize("n", [4, 30])
@pytest.mark.parametrize("dims", [2, 3])
def test_umap_shapes(n, dims):
    coords, note = project(points(n), "umap", dims, seed=0)
    assert coords.shape == (n, dims)
    assert np.isfinite(coords).all()
    assert note.startswith("UMAP")


@pytest.mark.parametrize("method", ["umap", "pca"])
def test_deterministic_for_a_seed(method):
    first, _ = project(points(30), method, 2, seed=3)
    again, _ = project(points(30), method, 2, seed=3)
    assert np.allclose(first, again)


def test_umap_separates_two_clusters():
    data = np.vstack([points(15, seed=1) + 8, points(15, seed=2) - 8])
    coords, _ = project(data, "umap", 2, seed=0)
    a, b = coords[:15].mean(0), coords[15:].mean(0)
    spread = max(coords[:15].std(0).max(), coords[15:].std(0).max())
    assert np.linalg.norm(a - b) > 2 * spread


@pytest.mark.parametrize("bad", [
    dict(matrix=np.zeros((0, 4))), dict(matrix=np.zeros(4)), dict(dims=4), dict(method="tsne"),
    dict(matrix=np.array([[0.0, np.nan], [1.0, 2.0]])),
])
def test_bad_input_is_a_studio_error(bad):
    args = {"matrix": points(5), "method": "pca", "dims": 2, **bad}
    with pytest.raises(StudioError):
        project(**args)


def test_choose_method_says_what_a_map_can_draw_now_and_why():
    """UMAP only when it is ready (or its coordinates are stored); PCA at once otherwise, never a wait."""
    assert choose_method("pca", 2) == ("pca", "")
    assert choose_method("umap", 2, stored=True) == ("umap", "")  # stored coordinates need no fit
    method, why = choose_method("umap", 3)
    assert method == "pca" and f"at least {projection.MIN_UMAP_POINTS} points" in why
    with pytest.raises(StudioError, match="unknown projection 'tsne'"):
        choose_method("tsne")
    was_ready = umap_ready()
    method, why = choose_method("umap", 30)
    if not was_ready and method == "pca":  # cold: PCA now, and the warm-up has been started
        assert "warming up" in why and (projection._warm_thread is not None or umap_ready())
    warm_umap().join(timeout=120)
    assert choose_method("umap", 30) == ("umap", "") and choose_method("umap") == ("umap", "")


def test_warm_up_marks_umap_ready():
    warm_umap().join(timeout=120)
    assert umap_ready()
