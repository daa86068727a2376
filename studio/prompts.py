"""Soft prompts, origins and task prompt vectors, with their algebra, merges and similarity.

A soft prompt is a matrix [n_virtual_tokens, hidden]. An *origin* is its random initialisation P0; a *task prompt
vector* is tau = P_tuned - P0. Vectors add, negate and scale like the paper writes them::

    tau = TaskPromptVector.between(tuned, origin)
    multi = 0.5 * tau_a + 0.5 * tau_b
    prompt = multi.apply_to(origin)

Merges beyond the weighted sum (TIES, DARE...) are PEFT's ``merge_utils`` functions, not rewritten here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from studio import HEAVY_IMPORT_LOCK, StudioError
from studio.limits import check_prompt_length

TOP_K_VOCAB = 5000  # the reference's "Lester et al." heuristic: sample init tokens from the first 5,000 ids
INIT_METHODS = ("top5000", "sample_vocab", "text", "normal")
TUNING_INITS = tuple(m for m in INIT_METHODS if m != "text")  # a job's origins are random draws; "text" is not one
DEFAULT_INIT = "top5000"  # the reference's origins: a tuning job's, a sweep's and the CLI's unless told otherwise


def make_origin(backbone, seed: int, n_tokens: int, method: str = DEFAULT_INIT,
                text: str | None = None) -> torch.Tensor:
    """The random initialisation P0 for ``seed``: embeddings of sampled token ids, through the model's own layer.

    - ``top5000``: ids uniform over the first 5,000 of the vocabulary (the reference's init),
    - ``sample_vocab``: ids uniform over the whole vocabulary (PEFT's SAMPLE_VOCAB),
    - ``text``: the embeddings of ``text``, repeated or truncated to ``n_tokens`` (PEFT's TEXT),
    - ``normal``: N(0, 1) values (PEFT's RANDOM; far from the embedding manifold, learns poorly).
    """
    check_prompt_length(n_tokens, "a soft prompt")
    generator = torch.Generator().manual_seed(int(seed))
    if method == "normal":
        return torch.randn(n_tokens, backbone.hidden_size, generator=generator)
    if method == "top5000":
        ids = torch.randint(0, min(TOP_K_VOCAB, backbone.vocab_size), (n_tokens,), generator=generator)
    elif method == "sample_vocab":
        ids = torch.randint(0, backbone.vocab_size, (n_tokens,), generator=generator)
    elif method == "text":
        if not text or not text.strip():
            raise StudioError("text init needs a non-empty init text")
        token_ids = backbone.tokenizer(text, add_special_tokens=False).input_ids
        ids = torch.tensor((token_ids * (n_tokens // len(token_ids) + 1))[:n_tokens])
    else:
        raise StudioError(f"unknown init method {method!r}: use one of {', '.join(INIT_METHODS)}")
    with torch.no_grad():
        return backbone.embed(ids).float().cpu()


def check_prompt_shape(shape: Sequence[int], hidden_size: int | None = None, what: str = "prompt",
                       halves: int = 1) -> None:
    """Reject shapes that cannot be a soft prompt: not 2-D, too long, or another model's width. ``halves``: PEFT
    stores an encoder-decoder prompt of n tokens as [2 n, d] (its encoder half, then its decoder half)."""
    if len(shape) != 2:
        raise StudioError(f"{what} must be a 2-D [virtual tokens, hidden] matrix, got shape {tuple(shape)}")
    check_prompt_length(shape[0] // halves if shape[0] % halves == 0 else shape[0], what)
    if hidden_size is not None and shape[1] != hidden_size:
        raise StudioError(
            f"{what} has hidden size {shape[1]} but the model has {hidden_size}: it was made for another model"
        )


def check_prompt_tensor(tensor: torch.Tensor, hidden_size: int | None = None, what: str = "prompt",
                        halves: int = 1) -> torch.Tensor:
    """Reject tensors that cannot be a soft prompt: wrong rank, length or width, NaN or infinite values."""
    check_prompt_shape(tuple(tensor.shape), hidden_size, what, halves)
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise StudioError(f"{what} contains {bad} NaN or infinite values: it cannot be used")
    return tensor


@dataclass(frozen=True)
class TaskPromptVector:
    """tau = P_tuned - P0 for one model; arithmetic keeps track of the model so mismatches fail loudly."""

    delta: torch.Tensor
    model: str

    @classmethod
    def between(cls, tuned: torch.Tensor, origin: torch.Tensor, model: str) -> TaskPromptVector:
        if tuned.shape != origin.shape:
            raise StudioError(f"tuned prompt {tuple(tuned.shape)} and origin {tuple(origin.shape)} differ in shape")
        return cls(tuned.float() - origin.float(), model)

    def _check(self, other: TaskPromptVector) -> None:
        if self.model != other.model:
            raise StudioError(f"cannot combine vectors of different models ({self.model} and {other.model})")
        if self.delta.shape != other.delta.shape:
            raise StudioError(
                f"cannot combine vectors of shapes {tuple(self.delta.shape)} and {tuple(other.delta.shape)}: "
                "they need the same number of virtual tokens"
            )

    def __add__(self, other: TaskPromptVector) -> TaskPromptVector:
        if isinstance(other, int) and other == 0:  # lets sum() start from 0
            return self
        self._check(other)
        return TaskPromptVector(self.delta + other.delta, self.model)

    __radd__ = __add__

    def __neg__(self) -> TaskPromptVector:
        return TaskPromptVector(-self.delta, self.model)

    def __sub__(self, other: TaskPromptVector) -> TaskPromptVector:
        return self + (-other)

    def __mul__(self, coefficient: float) -> TaskPromptVector:
        return TaskPromptVector(self.delta * float(coefficient), self.model)

    __rmul__ = __mul__

    def apply_to(self, origin: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
        """P = P0 + c * tau: the prompt this vector gives on ``origin`` (its own or another one)."""
        if origin.shape != self.delta.shape:
            raise StudioError(
                f"origin {tuple(origin.shape)} and vector {tuple(self.delta.shape)} differ in shape: "
                "use an origin with the same number of virtual tokens"
            )
        return origin.float() + float(coefficient) * self.delta


def scale_ratio(tau: torch.Tensor, origin: torch.Tensor) -> float:
    """|tau| / |P0| (Frobenius norms): how far tuning moved a prompt relative to the size of its origin.

    On SmolLM2-135M a TPV transferred to another origin only when this was large (docs/findings.md)."""
    origin_norm = float(origin.float().norm())
    return float(tau.float().norm()) / origin_norm if origin_norm > 0 else float("inf")


# ---- merges: one registry, one signature --------------------------------------------------------------------
def _peft_merge(name: str) -> Callable:
    with HEAVY_IMPORT_LOCK:  # a model may be loading on another thread (see studio.HEAVY_IMPORT_LOCK)
        from peft.utils import merge_utils

    return getattr(merge_utils, name)


class Merge(NamedTuple):
    """One merge method: ``function(tensors, weights, density) -> tensor`` and what it does, for people."""

    function: Callable[[list[torch.Tensor], torch.Tensor, float], torch.Tensor]
    description: str


def _peft_method(name: str) -> Callable[[list[torch.Tensor], torch.Tensor, float], torch.Tensor]:
    """PEFT's ``merge_utils.<name>``, imported on first use (PEFT is heavy); task arithmetic takes no density."""
    if name == "task_arithmetic":
        return lambda tensors, weights, density: _peft_merge(name)(tensors, weights)
    return lambda tensors, weights, density: _peft_merge(name)(tensors, weights, density)


# the registry: add a method here and it appears in the Arithmetic tab, the CLI and the findings
MERGES: dict[str, Merge] = {
    "weighted_sum": Merge(_peft_method("task_arithmetic"),
                          "sum of weight x vector (task arithmetic; the paper's method)"),
    "ties": Merge(_peft_method("ties"), "TIES: keep the top-density magnitudes per vector, elect a sign per entry, "
                                        "average the agreeing ones"),
    "dare_linear": Merge(_peft_method("dare_linear"),
                         "DARE: randomly drop (1 - density) of each vector's entries, rescale, weighted sum"),
    "dare_ties": Merge(_peft_method("dare_ties"), "DARE pruning followed by TIES sign election"),
    "magnitude_prune": Merge(_peft_method("magnitude_prune"), "keep the top-density magnitudes per vector, weighted sum"),
}
MERGE_METHODS: dict[str, str] = {name: entry.description for name, entry in MERGES.items()}  # name -> description


def merge(
    vectors: Sequence[TaskPromptVector], weights: Sequence[float], method: str = "weighted_sum",
    density: float = 0.5, seed: int = 0,
) -> TaskPromptVector:
    """Merge vectors with PEFT's merge utilities. DARE's random drop is seeded so results are reproducible."""
    if not vectors:
        raise StudioError("choose at least one task prompt vector to combine")
    if len(weights) != len(vectors):
        raise StudioError(f"got {len(weights)} weights for {len(vectors)} vectors")
    if method not in MERGES:
        raise StudioError(f"unknown merge method {method!r}: use one of {', '.join(MERGES)}")
    if not 0.0 < density <= 1.0:
        raise StudioError(f"density must be in (0, 1], got {density}")
    for other in vectors[1:]:
        vectors[0]._check(other)
    tensors = [v.delta.float() for v in vectors]
    weight_tensor = torch.tensor([float(w) for w in weights])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        merged = MERGES[method].function(tensors, weight_tensor, density)
    return TaskPromptVector(merged, vectors[0].model)


# ---- similarity -----------------------------------------------------------------------------------------------
class Measure(NamedTuple):
    """One similarity (or distance) measure: ``function(rows [k, m]) -> [k, k]``, on token means or flat rows."""

    function: Callable[[torch.Tensor], torch.Tensor]
    description: str
    token_mean: bool = False  # compare the token-averaged matrices (any lengths) instead of the flattened ones
    cosine: bool = False  # a similarity in [-1, 1] (1: the same direction); the others are distances (0: equal)


def _cosine(rows: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(rows, dim=1)
    return (unit @ unit.T).clamp(-1, 1)


def _l2(rows: torch.Tensor) -> torch.Tensor:
    return torch.cdist(rows[None], rows[None])[0]


def _mean_abs_diff(rows: torch.Tensor) -> torch.Tensor:
    return (rows[:, None, :] - rows[None, :, :]).abs().mean(-1)


def _norm_gap(rows: torch.Tensor) -> torch.Tensor:
    norms = rows.norm(dim=1)
    return (norms[:, None] - norms[None, :]).abs()


MEASURES: dict[str, Measure] = {
    "token_mean_cosine": Measure(_cosine, "cosine of the token-averaged matrices, cos(P1.mean(0), P2.mean(0)) "
                                          "(the paper's main one)", token_mean=True, cosine=True),
    "flat_cosine": Measure(_cosine, "cosine of the flattened matrices", cosine=True),
    "l2": Measure(_l2, "Euclidean distance of the flattened matrices"),
    "mean_abs_diff": Measure(_mean_abs_diff, "mean |P1 - P2| over all entries"),
    "norm_gap": Measure(_norm_gap, "| ||P1|| - ||P2|| | of the flattened matrices"),
}
SIMILARITY_MEASURES: dict[str, str] = {name: entry.description for name, entry in MEASURES.items()}


def is_cosine(measure: str) -> bool:
    """Whether ``measure`` is a cosine (drawn on a fixed -1..1 scale, clustered by 1 - cosine) or a distance."""
    return MEASURES[measure].cosine


def similarity_matrix(tensors: Sequence[torch.Tensor], measure: str = "token_mean_cosine") -> torch.Tensor:
    """Pairwise similarity (or distance) of prompts or vectors, [k, k]. All must share one shape for the flat ones."""
    if measure not in MEASURES:
        raise StudioError(f"unknown measure {measure!r}: use one of {', '.join(MEASURES)}")
    if not tensors:
        raise StudioError("choose at least one prompt or vector")
    if MEASURES[measure].token_mean:
        rows = torch.stack([t.float().mean(0) for t in tensors])
    else:
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise StudioError(f"{measure} needs prompts of one shape, got {sorted(shapes)}; use token_mean_cosine")
        rows = torch.stack([t.float().flatten() for t in tensors])
    return MEASURES[measure].function(rows)


def nearest_tokens(backbone, prompt: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """For each virtual token, the k vocabulary tokens whose input embeddings are closest by cosine."""
    table = torch.nn.functional.normalize(backbone.model.get_input_embeddings().weight.detach().float(), dim=1)
    scores = torch.nn.functional.normalize(prompt.float().to(table.device), dim=1) @ table.T
    top = scores.topk(k, dim=1)
    return [
        [(backbone.tokenizer.decode([int(i)]), float(s)) for s, i in zip(values, indices)]
        for values, indices in zip(top.values.cpu(), top.indices.cpu())
    ]
