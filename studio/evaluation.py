"""Evaluation by rank classification: the label whose words are most likely after ``[prompt] + input`` wins.

Multi-token label words are scored by their summed log-probability. Many prompts are evaluated in one batch
(each row carries its own prompt), and when every label is a single token one forward pass ranks them all.
Results keep one record per example (exact input text, gold label, prediction, score per exact target text), so
the UI can list flipped predictions and anyone can recompute a score with the tokenizer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from studio import StudioError
from studio.backbones import Backbone, Row
from studio.tasks import Example, TaskData, load_task

MAX_INPUT_TOKENS = 384


@dataclass
class EncodedExample:
    example: Example
    text: str  # the exact text placed after the soft prompt
    input_ids: list[int]


@dataclass
class EncodedTask:
    """A split's examples tokenised once for one backbone, plus the label targets."""

    task: TaskData
    examples: list[EncodedExample]
    targets: list[str]  # exact target text per label
    target_ids: list[list[int]]

    @property
    def single_token_labels(self) -> bool:
        firsts = [ids[0] for ids in self.target_ids]
        return all(len(ids) == 1 for ids in self.target_ids) and len(set(firsts)) == len(firsts)


_ENCODED: dict[tuple, EncodedTask] = {}  # oldest first
MAX_ENCODED = 128  # splits kept tokenised (a public Space's visitors bring their own files: the oldest go)


def encode_task(backbone: Backbone, task: TaskData, split: str, limit: int | None = None,
                stratified: bool = False) -> EncodedTask:
    """Tokenise (and cache) a split. ``stratified`` orders examples so that every prefix is class-balanced."""
    key = (backbone.name, task.spec.name, task.data_hash, split, limit, stratified)
    cached = _ENCODED.get(key)  # a local: another thread may drop the entry meanwhile
    if cached is None:
        examples = task.split(split)
        if stratified:
            examples = stratified_order(examples)
        if limit is not None:
            if limit < 1:
                raise StudioError(f"limit must be at least 1, got {limit}")
            examples = examples[:limit]
        encoded = [encode_example(backbone, task, example) for example in examples]
        targets = [backbone.render_target(word) for word in task.spec.label_words]
        cached = EncodedTask(task, encoded, targets, [backbone.encode_target(t) for t in targets])
        while len(_ENCODED) >= MAX_ENCODED:
            _ENCODED.pop(next(iter(_ENCODED)), None)
        _ENCODED[key] = cached
    return cached


def encode_example(backbone: Backbone, task: TaskData, example: Example) -> EncodedExample:
    """An example as it is placed after the soft prompt, text and token ids: scoring and tuning both read it here,
    so a prompt is tuned on exactly the inputs it is scored on."""
    text = backbone.render_input(task.spec.instruction, example.body())
    return EncodedExample(example, text, backbone.encode_input(text, MAX_INPUT_TOKENS))


def stratified_order(examples: Sequence[Example], seed: int = 0) -> list[Example]:
    """Seeded round-robin over classes: the first k examples are as balanced as the data allows."""
    by_label: dict[int, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    rng = random.Random(seed)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_label.items())]
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop())
    return ordered


@dataclass
class EvalResult:
    task: str
    metrics: dict[str, float]
    records: list[dict] = field(default_factory=list)


def metrics_for(labels: list[int], predictions: list[int], n_labels: int, losses: list[float]) -> dict[str, float]:
    """Accuracy with its binomial standard error, macro-F1 (scikit-learn), mean gold-label loss."""
    # imported here: a GPU box without scikit-learn can still tune
    from sklearn.metrics import accuracy_score, f1_score

    accuracy = float(accuracy_score(labels, predictions))
    n = len(labels)
    return {
        "accuracy": accuracy,
        "accuracy_se": math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / n) if n else float("nan"),
        "macro_f1": float(f1_score(labels, predictions, labels=list(range(n_labels)), average="macro",
                                   zero_division=0)),
        "loss": float(sum(losses) / n) if n else float("nan"),
        "n": n,
    }


def row_tokens(row: Row, extra: int) -> int:
    """The tokens a row puts through the model: its input and its answer but the last answer token (the model reads
    the answer up to it and predicts each next one), plus ``extra``: its soft prompt or, where it continues from a
    shared prefix, the cached tokens it holds less the input tokens it skips. Scoring and tuning plan their forward
    passes (``Backbone.batches``) by this one count."""
    return len(row.input_ids) + len(row.target_ids) - 1 + extra


@torch.no_grad()
def score_examples(backbone: Backbone, prompts: torch.Tensor | None, encoded: EncodedTask,
                   examples: Sequence[EncodedExample], batch_rows: int | None = None) -> torch.Tensor:
    """Summed log-probability of every label for every (prompt, example): a [J, len(examples), K] tensor."""
    n_prompts = 1 if prompts is None else prompts.shape[0]
    n_labels = len(encoded.targets)
    scores = torch.empty(n_prompts, len(examples), n_labels)
    if not examples:
        return scores
    if encoded.single_token_labels:
        candidates = torch.tensor([ids[0] for ids in encoded.target_ids])
        jobs = [(j, i, None) for i in range(len(examples)) for j in range(n_prompts)]
    else:
        candidates = None
        jobs = [(j, i, k) for i in range(len(examples)) for j in range(n_prompts) for k in range(n_labels)]
    rows = [Row(j, examples[i].input_ids, encoded.target_ids[k or 0]) for j, i, k in jobs]
    # the leading tokens every example shares (template, instruction) run once per prompt for the whole call
    prefix = backbone.shared_prefix(prompts, rows)
    if prefix is None:
        counted = n_virtual_tokens(prompts)
    else:  # what each row adds, plus its copy of the cached prefix where the budget bounds memory (a GPU)
        counted = (prefix.cached_tokens if backbone.budget_counts_prefix else 0) - prefix.length
    lengths = [row_tokens(row, counted) for row in rows]
    # longest first (memory peaks early), so that a pass holds rows of similar length: little padding
    order = sorted(range(len(rows)), key=lambda r: -lengths[r])
    jobs, rows, lengths = [jobs[r] for r in order], [rows[r] for r in order], [lengths[r] for r in order]
    for group in backbone.batches(lengths, batch_rows, training=False):  # rows per forward pass
        chunk = jobs[group.start : group.stop]
        logprobs, mask = backbone.target_logprobs(prompts, rows[group.start : group.stop], candidates, prefix)
        j, i, k = (torch.tensor(column) for column in zip(*((j, i, k or 0) for j, i, k in chunk)))
        if candidates is not None:  # one row ranks every label
            scores[j, i] = logprobs.float().cpu()
        else:  # one row per label
            scores[j, i, k] = logprobs.sum(1).float().cpu()
    return scores


def results_from_scores(encoded: EncodedTask, examples: Sequence[EncodedExample], scores: torch.Tensor,
                        keep_records: bool = True) -> list[EvalResult]:
    """Turn [J, n, K] label scores into metrics (and per-example records) for each prompt."""
    words = encoded.task.spec.label_words
    labels = [e.example.label for e in examples]
    gold_lengths = [len(encoded.target_ids[label]) for label in labels]
    results = []
    for prompt_scores in scores:
        predictions = prompt_scores.argmax(-1).tolist()
        losses = [-float(prompt_scores[i, label]) / gold_lengths[i] for i, label in enumerate(labels)]
        result = EvalResult(encoded.task.spec.name, metrics_for(labels, predictions, len(words), losses))
        if keep_records:
            result.records = [
                {
                    "input": e.text,
                    "fields": e.example.body(),  # what a person reads: the example without the chat template
                    "label": words[e.example.label],
                    "prediction": words[p],
                    "correct": p == e.example.label,
                    "scores": {target: float(s) for target, s in zip(encoded.targets, row)},
                }
                for e, p, row in zip(examples, predictions, prompt_scores)
            ]
        results.append(result)
    return results


def n_virtual_tokens(prompts: torch.Tensor | None) -> int:
    return 0 if prompts is None else int(prompts.shape[1])


def stack_prompts(prompts: Sequence[torch.Tensor | None] | torch.Tensor | None) -> torch.Tensor | None:
    if prompts is None or isinstance(prompts, torch.Tensor):
        return prompts
    if any(p is None for p in prompts):
        raise StudioError("cannot mix 'no prompt' with soft prompts in one evaluation")
    shapes = {tuple(p.shape) for p in prompts}
    if len(shapes) > 1:
        raise StudioError(f"prompts of different shapes {sorted(shapes)} must be evaluated separately")
    return torch.stack([p.float() for p in prompts])


def evaluate(backbone: Backbone, prompts, task: TaskData, split: str = "test", limit: int | None = None,
             batch_rows: int | None = None, keep_records: bool = True) -> list[EvalResult]:
    """Evaluate one or many prompts (a list, a [J, n, d] tensor, or None for the template alone) on a task."""
    table = stack_prompts(prompts)
    encoded = encode_task(backbone, task, split, limit)
    scores = score_examples(backbone, table, encoded, encoded.examples, batch_rows)
    return results_from_scores(encoded, encoded.examples, scores, keep_records)


def evaluate_progressively(
    backbone: Backbone, prompts, task: TaskData, split: str = "validation", limit: int | None = 200,
    first: int = 16, growth: float = 2.0, batch_rows: int | None = None, should_stop: Callable[[], bool] | None = None,
) -> Iterator[list[EvalResult]]:
    """Yield refining results on a stratified sample: first ``first`` examples, then x``growth`` each round.

    Used by the live arithmetic panel: a quick estimate appears at once and sharpens; ``should_stop`` lets a
    newer slider position cancel a stale evaluation between rounds.
    """
    table = stack_prompts(prompts)
    encoded = encode_task(backbone, task, split, limit, stratified=True)
    n_prompts = 1 if table is None else table.shape[0]
    scores = torch.empty(n_prompts, 0, len(encoded.targets))
    done, size = 0, first
    while done < len(encoded.examples):
        if should_stop and should_stop():
            return
        chunk = encoded.examples[done:size]
        scores = torch.cat([scores, score_examples(backbone, table, encoded, chunk, batch_rows)], dim=1)
        done += len(chunk)
        size = int(done * growth)
        yield results_from_scores(encoded, encoded.examples[:done], scores)


def evaluate_many(backbone: Backbone, prompts: list[torch.Tensor], tasks: list[str], split: str = "validation",
                  limit: int | None = 32, chunk: int = 6, on_progress=None, should_stop=None) -> dict:
    """Accuracy (and its standard error) of every prompt on every task, on the class-balanced first ``limit``
    examples, in batched chunks of prompts. Returns {"accuracy": [prompts, tasks], "se": ..., "n": [tasks]}."""
    if not prompts:
        raise StudioError("nothing to evaluate")
    if not tasks:
        raise StudioError("choose at least one dataset to evaluate on")
    accuracy = np.zeros((len(prompts), len(tasks)))
    errors = np.zeros_like(accuracy)
    sizes = []
    total, done = len(prompts) * len(tasks), 0
    for t, name in enumerate(tasks):
        encoded = encode_task(backbone, load_task(name), split, limit, stratified=True)
        sizes.append(len(encoded.examples))
        for start in range(0, len(prompts), chunk):
            if should_stop and should_stop():
                raise StudioError("stopped")
            table = stack_prompts(prompts[start : start + chunk])
            scores = score_examples(backbone, table, encoded, encoded.examples)
            for k, result in enumerate(results_from_scores(encoded, encoded.examples, scores, keep_records=False)):
                accuracy[start + k, t] = result.metrics["accuracy"]
                errors[start + k, t] = result.metrics["accuracy_se"]
            done += table.shape[0]
            if on_progress:
                on_progress(done, total)
    return {"accuracy": accuracy, "se": errors, "n": sizes}
