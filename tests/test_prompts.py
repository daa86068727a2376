"""Prompt algebra, merges, similarity and origins, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio import StudioError
from studio.prompts import (
    INIT_METHODS,
    MERGE_METHODS,
    TOP_K_VOCAB,
    TaskPromptVector,
    check_prompt_tensor,
    make_origin,
    merge,
    similarity_matrix,
)

MODEL = "test-model"


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from studio.backbones import load_backbone

    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- algebra ----------------------------------------------------------------------------------------------------
def test_vector_is_tuned_minus_origin():
    origin, tuned = rand(3, 4, seed=1), rand(3, 4, seed=2)
    tau = TaskPromptVector.between(tuned, origin, MODEL)
    expected = tuned.numpy() - origin.numpy()
    np.testing.assert_allclose(tau.delta.numpy(), expected, rtol=0, atol=1e-7)
    assert tau.model == MODEL
    # applying the vector to its own origin gives the tuned prompt back
    torch.testing.assert_close(tau.apply_to(origin), tuned)


def test_add_negate_scale_subtract_by_hand():
    a = TaskPromptVector(torch.tensor([[1.0, -2.0], [3.0, 0.5]]), MODEL)
    b = TaskPromptVector(torch.tensor([[0.5, 4.0], [-1.0, 2.0]]), MODEL)
    assert (a + b).delta.tolist() == [[1.5, 2.0], [2.0, 2.5]]
    assert (-a).delta.tolist() == [[-1.0, 2.0], [-3.0, -0.5]]
    assert (2 * a).delta.tolist() == [[2.0, -4.0], [6.0, 1.0]]
    assert (a * 0.5).delta.tolist() == [[0.5, -1.0], [1.5, 0.25]]
    assert (a - b).delta.tolist() == [[0.5, -6.0], [4.0, -1.5]]
    for result in (a + b, -a, 2 * a, a - b):
        assert isinstance(result, TaskPromptVector) and result.model == MODEL


def test_sum_of_vectors_equals_hand_sum():
    vectors = [TaskPromptVector(rand(4, 3, seed=s), MODEL) for s in range(3)]
    total = sum(vectors)
    assert isinstance(total, TaskPromptVector)
    expected = vectors[0].delta.numpy() + vectors[1].delta.numpy() + vectors[2].delta.numpy()
    np.testing.assert_allclose(total.delta.numpy(), expected, atol=1e-6)
    # the paper's P = P0 + c * sum(tau_i)
    origin = rand(4, 3, seed=9)
    applied = total.apply_to(origin, 0.3)
    np.testing.assert_allclose(applied.numpy(), origin.numpy() + 0.3 * expected, atol=1e-6)


def test_apply_to_with_coefficient_and_cross_origin():
    origin_a, origin_b, tuned = rand(5, 2, seed=1), rand(5, 2, seed=2), rand(5, 2, seed=3)
    tau = TaskPromptVector.between(tuned, origin_a, MODEL)
    np.testing.assert_allclose(tau.apply_to(origin_b, 0.0).numpy(), origin_b.numpy())
    np.testing.assert_allclose(
        tau.apply_to(origin_b, 0.25).numpy(), origin_b.numpy() + 0.25 * (tuned.numpy() - origin_a.numpy()), atol=1e-6
    )


def test_mismatched_model_or_shape_raises():
    a = TaskPromptVector(torch.zeros(4, 3), "model-a")
    other_model = TaskPromptVector(torch.zeros(4, 3), "model-b")
    other_shape = TaskPromptVector(torch.zeros(5, 3), "model-a")
    with pytest.raises(StudioError, match="different models"):
        a + other_model
    with pytest.raises(StudioError, match="different models"):
        a - other_model
    with pytest.raises(StudioError, match="shape"):
        a + other_shape
    with pytest.raises(StudioError, match="different models"):
        sum([a, other_model])
    with pytest.raises(StudioError, match="shape"):
        a.apply_to(torch.zeros(5, 3))
    with pytest.raises(StudioError, match="shape"):
        TaskPromptVector.between(torch.zeros(4, 3), torch.zeros(5, 3), "model-a")
    with pytest.raises(StudioError, match="different models"):
        merge([a, other_model], [1.0, 1.0])
    with pytest.raises(StudioError, match="shape"):
        merge([a, other_shape], [1.0, 1.0], "ties")


# ---- merges -----------------------------------------------------------------------------------------------------
def test_weighted_sum_equals_hand_sum():
    vectors = [TaskPromptVector(rand(6, 4, seed=s), MODEL) for s in range(3)]
    weights = [0.5, -1.0, 2.0]
    merged = merge(vectors, weights, "weighted_sum")
    expected = sum(w * v.delta.numpy() for w, v in zip(weights, vectors))
    np.testing.assert_allclose(merged.delta.numpy(), expected, atol=1e-6)
    assert merged.model == MODEL
    # the same as the operator algebra
    np.testing.assert_allclose((0.5 * vectors[0] - vectors[1] + 2 * vectors[2]).delta.numpy(), expected, atol=1e-6)


TIES_A = [[4.0, -1.0], [0.5, 2.0]]
TIES_B = [[3.0, 2.0], [-1.0, -0.1]]
TIES_C = [[-1.0, -3.0], [2.0, 0.2]]


@pytest.mark.parametrize(
    "weights, expected",
    [
        # keep top-2 magnitudes per vector: A -> [[4,0],[0,2]], B -> [[3,2],[0,0]], C -> [[0,-3],[2,0]];
        # elected signs (sum of the pruned entries): + - + +; average of the agreeing, non-zero entries
        ([1.0, 1.0, 1.0], [[3.5, -3.0], [2.0, 2.0]]),
        # weights scale the entries after the sign election: (8 + 3) / 2, -3, 2, 4
        ([2.0, 1.0, 1.0], [[5.5, -3.0], [2.0, 4.0]]),
    ],
)
def test_ties_hand_example(weights, expected):
    vectors = [TaskPromptVector(torch.tensor(t), MODEL) for t in (TIES_A, TIES_B, TIES_C)]
    merged = merge(vectors, weights, "ties", density=0.5)
    np.testing.assert_allclose(merged.delta.numpy(), np.array(expected), atol=1e-6)


def test_magnitude_prune_hand_example():
    vectors = [TaskPromptVector(torch.tensor(t), MODEL) for t in (TIES_A, TIES_B, TIES_C)]
    merged = merge(vectors, [1.0, 1.0, 1.0], "magnitude_prune", density=0.5)
    # pruned: [[4,0],[0,2]] + [[3,2],[0,0]] + [[0,-3],[2,0]]
    np.testing.assert_allclose(merged.delta.numpy(), np.array([[7.0, -1.0], [2.0, 2.0]]), atol=1e-6)


@pytest.mark.parametrize("method", sorted(MERGE_METHODS))
def test_every_merge_keeps_shape_and_model(method):
    vectors = [TaskPromptVector(rand(7, 5, seed=s), MODEL) for s in range(3)]
    merged = merge(vectors, [0.3, 0.3, 0.4], method, density=0.5, seed=1)
    assert merged.delta.shape == (7, 5)
    assert merged.model == MODEL
    assert torch.isfinite(merged.delta).all()


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_is_seeded_and_reproducible(method):
    vectors = [TaskPromptVector(rand(20, 8, seed=s), MODEL) for s in range(2)]
    torch.manual_seed(123)
    state_before = torch.random.get_rng_state()
    first = merge(vectors, [1.0, 1.0], method, density=0.5, seed=7)
    # the global RNG is left alone (the drop mask comes from the merge's own seed)
    assert torch.equal(torch.random.get_rng_state(), state_before)
    torch.manual_seed(999)  # a different global state must not matter
    second = merge(vectors, [1.0, 1.0], method, density=0.5, seed=7)
    other_seed = merge(vectors, [1.0, 1.0], method, density=0.5, seed=8)
    assert torch.equal(first.delta, second.delta)
    assert not torch.equal(first.delta, other_seed.delta)
    if method == "dare_linear":
        # about half the entries of each vector survive, rescaled by 1 / density
        dropped = (first.delta == 0).float().mean().item()
        assert 0.1 < dropped < 0.45  # both vectors dropped at the same entry: ~25%


@pytest.mark.filterwarnings("ignore:The density")
def test_dare_linear_full_density_is_weighted_sum():
    vectors = [TaskPromptVector(rand(6, 4, seed=s), MODEL) for s in range(2)]
    dare = merge(vectors, [0.5, 2.0], "dare_linear", density=1.0)
    plain = merge(vectors, [0.5, 2.0], "weighted_sum")
    torch.testing.assert_close(dare.delta, plain.delta)


def test_merge_argument_errors():
    vector = TaskPromptVector(torch.ones(2, 2), MODEL)
    with pytest.raises(StudioError, match="at least one"):
        merge([], [])
    with pytest.raises(StudioError, match="weights"):
        merge([vector, vector], [1.0])
    with pytest.raises(StudioError, match="unknown merge method"):
        merge([vector], [1.0], "average-ish")
    with pytest.raises(StudioError, match="density"):
        merge([vector], [1.0], "ties", density=0.0)


# ---- similarity -----------------------------------------------------------------------------------------------------
def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similarity_token_mean_cosine_by_hand():
    tensors = [rand(5, 6, seed=s) for s in range(4)]
    matrix = similarity_matrix(tensors, "token_mean_cosine").numpy()
    means = [t.numpy().mean(0) for t in tensors]
    expected = np.array([[_cos(a, b) for b in means] for a in means])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    # token-mean cosine accepts prompts of different lengths (same width)
    mixed = similarity_matrix([rand(5, 6, seed=1), rand(9, 6, seed=2)], "token_mean_cosine").numpy()
    assert mixed[0, 1] == pytest.approx(_cos(rand(5, 6, seed=1).numpy().mean(0), rand(9, 6, seed=2).numpy().mean(0)),
                                        abs=1e-5)


def test_similarity_flat_cosine_l2_and_gaps_by_hand():
    tensors = [rand(5, 6, seed=s) for s in range(3)]
    flats = [t.numpy().ravel().astype(np.float64) for t in tensors]
    flat = similarity_matrix(tensors, "flat_cosine").numpy()
    np.testing.assert_allclose(flat, [[_cos(a, b) for b in flats] for a in flats], atol=1e-5)
    l2 = similarity_matrix(tensors, "l2").numpy()
    np.testing.assert_allclose(l2, [[np.linalg.norm(a - b) for b in flats] for a in flats], atol=1e-4)
    mad = similarity_matrix(tensors, "mean_abs_diff").numpy()
    np.testing.assert_allclose(mad, [[np.abs(a - b).mean() for b in flats] for a in flats], atol=1e-5)
    gap = similarity_matrix(tensors, "norm_gap").numpy()
    np.testing.assert_allclose(
        gap, [[abs(np.linalg.norm(a) - np.linalg.norm(b)) for b in flats] for a in flats], atol=1e-4
    )
    # a known pair: orthogonal flat vectors have cosine 0, opposite ones -1
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    sim = similarity_matrix([x, y, -x], "flat_cosine").numpy()
    np.testing.assert_allclose(sim[0], [1.0, 0.0, -1.0], atol=1e-6)
    assert similarity_matrix([x, y], "l2").numpy()[0, 1] == pytest.approx(np.sqrt(2), abs=1e-6)


def test_similarity_errors():
    with pytest.raises(StudioError, match="unknown measure"):
        similarity_matrix([torch.ones(2, 2)], "jaccard")
    with pytest.raises(StudioError):
        similarity_matrix([], "flat_cosine")
    with pytest.raises(StudioError, match="one shape"):
        similarity_matrix([torch.ones(2, 2), torch.ones(3, 2)], "flat_cosine")


def test_check_prompt_tensor():
    check_prompt_tensor(torch.zeros(3, 4), 4)
    with pytest.raises(StudioError, match="2-D"):
        check_prompt_tensor(torch.zeros(3), 4)
    with pytest.raises(StudioError, match="hidden size"):
        check_prompt_tensor(torch.zeros(3, 5), 4)
    bad = torch.zeros(3, 4)
    bad[1, 2] = float("nan")
    bad[0, 0] = float("inf")
    with pytest.raises(StudioError, match="2 NaN or infinite"):
        check_prompt_tensor(bad, 4)


# ---- origins --------------------------------------------------------------------------------------------------------
def test_origin_deterministic_per_seed_and_different_across_seeds(tiny):
    a = make_origin(tiny, seed=0, n_tokens=8)
    b = make_origin(tiny, seed=0, n_tokens=8)
    c = make_origin(tiny, seed=1, n_tokens=8)
    assert a.shape == (8, tiny.hidden_size) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a global RNG state does not leak into the origin
    torch.manual_seed(1234)
    assert torch.equal(make_origin(tiny, seed=0, n_tokens=8), a)


def _nearest_rows(tiny, prompt):
    table = tiny.model.get_input_embeddings().weight.detach().float()
    distances = torch.cdist(prompt.float(), table)
    distance, ids = distances.min(dim=1)
    exact = torch.tensor([torch.equal(row, table[i]) for row, i in zip(prompt.float(), ids)])
    return torch.where(exact, torch.zeros_like(distance), distance), ids


def test_top5000_rows_are_embeddings_of_ids_in_range(tiny):
    origin = make_origin(tiny, seed=3, n_tokens=64, method="top5000")
    distance, ids = _nearest_rows(tiny, origin)
    assert torch.all(distance < 1e-6), "every row is exactly one vocabulary embedding"
    assert ids.max().item() < TOP_K_VOCAB
    assert len(set(ids.tolist())) > 32  # sampled, not one repeated token
    torch.testing.assert_close(origin, tiny.embed(ids).float())


def test_sample_vocab_and_normal_origins(tiny):
    sampled = make_origin(tiny, seed=0, n_tokens=64, method="sample_vocab")
    distance, ids = _nearest_rows(tiny, sampled)
    assert torch.all(distance < 1e-6)
    assert ids.max().item() >= TOP_K_VOCAB  # 64 uniform draws over 49k ids: some land past 5,000
    normal = make_origin(tiny, seed=0, n_tokens=64, method="normal")
    assert normal.shape == (64, tiny.hidden_size)
    assert abs(normal.mean().item()) < 0.1 and 0.9 < normal.std().item() < 1.1


def test_text_origin_repeats_and_truncates(tiny):
    text = "classify the sentiment"
    ids = tiny.tokenizer(text, add_special_tokens=False).input_ids
    assert 1 < len(ids) < 7
    origin = make_origin(tiny, seed=0, n_tokens=7, method="text", text=text)
    expected_ids = (ids * 7)[:7]
    torch.testing.assert_close(origin, tiny.embed(torch.tensor(expected_ids)).float())
    short = make_origin(tiny, seed=5, n_tokens=1, method="text", text=text)
    torch.testing.assert_close(short, tiny.embed(torch.tensor(ids[:1])).float())
    # the seed plays no part in a text init
    torch.testing.assert_close(make_origin(tiny, seed=9, n_tokens=7, method="text", text=text), origin)


def test_origin_errors(tiny):
    with pytest.raises(StudioError, match="unknown init method"):
        make_origin(tiny, 0, 4, method="xavier")
    with pytest.raises(StudioError, match="init text"):
        make_origin(tiny, 0, 4, method="text", text="  ")
    with pytest.raises(StudioError, match="between 1 and 1000 virtual tokens"):
        make_origin(tiny, 0, 0)
    with pytest.raises(StudioError, match="between 1 and 1000 virtual tokens"):
        make_origin(tiny, 0, 100_000)
    assert set(INIT_METHODS) == {"top5000", "sample_vocab", "text", "normal"}


def test_merge_and_measure_registries_are_the_one_list():
    """Every registered method runs through ``merge``/``similarity_matrix``; the UI's choices come from them."""
    from studio.prompts import MEASURES, MERGE_METHODS, MERGES, SIMILARITY_MEASURES

    assert list(MERGE_METHODS) == list(MERGES) and list(SIMILARITY_MEASURES) == list(MEASURES)
    g = torch.Generator().manual_seed(0)
    vectors = [TaskPromptVector(torch.randn(3, 8, generator=g), "m") for _ in range(2)]
    for name, entry in MERGES.items():
        merged = merge(vectors, [0.5, 1.0], name, density=1.0 if name.startswith("dare") else 0.5)
        assert merged.delta.shape == (3, 8) and entry.description
    # the paper's method is the plain weighted sum
    assert torch.allclose(merge(vectors, [0.5, 1.0]).delta, 0.5 * vectors[0].delta + vectors[1].delta)
    tensors = [v.delta for v in vectors]
    for name in MEASURES:
        assert similarity_matrix(tensors, name).shape == (2, 2)
    with pytest.raises(StudioError, match="unknown merge method"):
        merge(vectors, [1, 1], "nope")
