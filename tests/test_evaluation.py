"""Evaluation: per-example records, scores recomputed by hand, multi-token labels, batched prompts, metrics."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import f1_score

from studio import StudioError
from studio.backbones import Row, load_backbone
from studio.evaluation import encode_task, evaluate, evaluate_progressively, stack_prompts, stratified_order
from studio.prompts import make_origin
from studio.tasks import load_task


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


@pytest.fixture(scope="module")
def prompts(tiny):
    return [make_origin(tiny, seed, 5) for seed in range(3)]


def hand_score(backbone, prompt: torch.Tensor | None, text: str, target: str) -> float:
    """Summed log-probability of ``target`` after ``[prompt] + text``: tokenizer + the model's full forward."""
    tokenizer = backbone.tokenizer
    input_ids = tokenizer(text, add_special_tokens=False).input_ids
    target_ids = tokenizer(target, add_special_tokens=False).input_ids
    ids = torch.tensor([input_ids + target_ids], device=backbone.device)  # on the model's device: GPU runs too
    with torch.no_grad():
        embeds = backbone.model.get_input_embeddings()(ids)
        offset = 0
        if prompt is not None:
            embeds = torch.cat([prompt[None].to(embeds), embeds], dim=1)
            offset = prompt.shape[0]
        logits = backbone.model(inputs_embeds=embeds).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    first = offset + len(input_ids) - 1
    return float(sum(logprobs[first + t, token] for t, token in enumerate(target_ids)))


def test_records_have_exact_texts_and_scores(tiny, prompts):
    task = load_task("mr")
    result = evaluate(tiny, [prompts[0]], task, "test", limit=6)[0]
    assert result.task == "mr" and len(result.records) == 6
    for record, example in zip(result.records, task.test[:6]):
        assert set(record) >= {"input", "label", "prediction", "scores", "correct"}
        assert example.fields[0][1] in record["input"]
        assert record["input"] == tiny.render_input(task.spec.instruction, example.body())
        assert record["fields"] == example.body()
        assert record["label"] == task.spec.label_words[example.label]
        assert set(record["scores"]) == {"negative", "positive"}  # exact target texts (chat template: no space)
        assert record["prediction"] == max(record["scores"], key=record["scores"].get)
        assert record["correct"] == (record["prediction"] == record["label"])
        assert all(s <= 0 for s in record["scores"].values())


@pytest.mark.parametrize("use_prompt", [True, False])
def test_score_recomputed_by_hand(tiny, prompts, use_prompt):
    task = load_task("mr")
    prompt = prompts[1] if use_prompt else None
    result = evaluate(tiny, None if prompt is None else [prompt], task, "test", limit=3)[0]
    for record in result.records:
        for target, score in record["scores"].items():
            assert score == pytest.approx(hand_score(tiny, prompt, record["input"], target), abs=1e-4)


def test_multi_token_labels_agree_with_per_example_scoring(tiny, prompts):
    task = load_task("spam")  # "spam" is two tokens for SmolLM2's tokenizer: the general path
    encoded = encode_task(tiny, task, "test", 3)
    assert not encoded.single_token_labels
    assert max(len(ids) for ids in encoded.target_ids) > 1
    result = evaluate(tiny, [prompts[2]], task, "test", limit=3)[0]
    for record in result.records:
        assert set(record["scores"]) == {"spam", "ham"}
        for target, score in record["scores"].items():
            assert score == pytest.approx(hand_score(tiny, prompts[2], record["input"], target), abs=1e-4)


def test_multi_word_file_labels(tiny, prompts, tmp_path):
    path = tmp_path / "phrases.csv"
    rows = ["text,label"] + [f"item {i},{'very good indeed' if i % 2 else 'rather bad'}" for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    from studio.task_files import load_file_task

    task = load_file_task(path)
    result = evaluate(tiny, [prompts[0]], task, "train", limit=2)[0]
    for record in result.records:
        assert set(record["scores"]) == {"rather bad", "very good indeed"}
        for target, score in record["scores"].items():
            assert score == pytest.approx(hand_score(tiny, prompts[0], record["input"], target), abs=1e-4)


@pytest.mark.parametrize("task_name", ["mr", "spam"])
def test_batched_prompts_equal_each_prompt_alone(tiny, prompts, task_name):
    task = load_task(task_name)
    together = evaluate(tiny, prompts, task, "validation", limit=5, batch_rows=7)
    assert len(together) == 3
    for prompt, joint in zip(prompts, together):
        alone = evaluate(tiny, [prompt], task, "validation", limit=5)[0]
        assert [r["prediction"] for r in alone.records] == [r["prediction"] for r in joint.records]
        for a, b in zip(alone.records, joint.records):
            for target in a["scores"]:
                assert a["scores"][target] == pytest.approx(b["scores"][target], abs=1e-4)
        assert alone.metrics["accuracy"] == joint.metrics["accuracy"]
    # a [J, n, d] tensor works like the list
    stacked = evaluate(tiny, torch.stack(prompts), task, "validation", limit=5)
    assert [r.metrics["loss"] for r in stacked] == pytest.approx([r.metrics["loss"] for r in together], abs=1e-5)


def test_metrics_from_records(tiny, prompts):
    task = load_task("bbc")
    result = evaluate(tiny, [prompts[0]], task, "test", limit=10)[0]
    records = result.records
    words = list(task.spec.label_words)
    gold = [words.index(r["label"]) for r in records]
    predicted = [words.index(r["prediction"]) for r in records]
    accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
    assert result.metrics["accuracy"] == pytest.approx(accuracy)
    assert result.metrics["accuracy_se"] == pytest.approx(math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / 10))
    assert result.metrics["macro_f1"] == pytest.approx(
        f1_score(gold, predicted, labels=list(range(5)), average="macro", zero_division=0))
    encoded = encode_task(tiny, task, "test", 10)
    loss = sum(-r["scores"][encoded.targets[g]] / len(encoded.target_ids[g]) for r, g in zip(records, gold)) / 10
    assert result.metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert result.metrics["n"] == 10
    assert evaluate(tiny, [prompts[0]], task, "test", limit=10, keep_records=False)[0].records == []


def test_progressive_evaluation(tiny, prompts):
    task = load_task("tweets")
    rounds = list(evaluate_progressively(tiny, prompts[:2], task, "validation", limit=12, first=3, growth=2.0))
    sizes = [r[0].metrics["n"] for r in rounds]
    assert sizes == [3, 6, 12]
    # the first examples are class-balanced: one of each of the 3 labels
    assert sorted(rec["label"] for rec in rounds[0][0].records) == ["negative", "neutral", "positive"]
    # the final round scores the same examples as a direct evaluation of the same stratified sample
    final = rounds[-1]
    examples = stratified_order(task.validation)[:12]
    for j in range(2):
        for record, example in zip(final[j].records, examples):
            assert record["label"] == task.spec.label_words[example.label]
            assert example.fields[0][1] in record["input"]
    stopped = list(evaluate_progressively(tiny, prompts[:1], task, "validation", limit=12, first=3,
                                          should_stop=lambda: True))
    assert stopped == []


def test_stack_prompts_errors(tiny, prompts):
    with pytest.raises(StudioError, match="different shapes"):
        stack_prompts([prompts[0], make_origin(tiny, 0, 6)])
    with pytest.raises(StudioError, match="no prompt"):
        stack_prompts([prompts[0], None])
    with pytest.raises(StudioError, match="limit"):
        evaluate(tiny, [prompts[0]], load_task("mr"), "test", limit=0)
    with pytest.raises(StudioError, match="unknown split"):
        evaluate(tiny, [prompts[0]], load_task("mr"), "dev", limit=2)


def test_the_shared_prefix_runs_once_per_evaluation(tiny, prompts, monkeypatch):
    """The template and instruction that every example shares run once per prompt for a whole evaluation, not once
    per forward pass; every score still equals the model's own full forward."""
    calls = []
    original = type(tiny).shared_prefix

    def counted(self, table, rows):
        calls.append(len(rows))
        return original(self, table, rows)

    monkeypatch.setattr(type(tiny), "shared_prefix", counted)
    results = evaluate(tiny, prompts[:2], load_task("mr"), "validation", limit=6, batch_rows=4)  # 3 passes
    assert calls == [12]
    for prompt, result in zip(prompts, results):
        for record in result.records[:2]:
            for target, score in record["scores"].items():
                assert score == pytest.approx(hand_score(tiny, prompt, record["input"], target), abs=1e-4)


def test_passes_hold_rows_sorted_by_their_whole_length_and_no_rows_is_no_pass(tiny, prompts, planned_passes):
    """Rows go to forward passes sorted by everything a pass computes (input and answer tokens), so that a pass's
    longest row is at its end and the token budget holds also when labels differ in length; no examples: no pass."""
    from studio.evaluation import score_examples

    seen = planned_passes
    encoded = encode_task(tiny, load_task("spam"), "test", 6)
    assert len({len(ids) for ids in encoded.target_ids}) > 1  # "spam" and "ham" differ in length
    score_examples(tiny, torch.stack(prompts[:2]), encoded, encoded.examples)
    assert seen and seen[0] == sorted(seen[0], reverse=True)
    assert score_examples(tiny, torch.stack(prompts), encoded, []).shape == (3, 0, 2) and len(seen) == 1


def test_on_a_gpu_the_budget_counts_each_rows_copy_of_the_cached_prefix(tiny, prompts, monkeypatch):
    """A GPU's token budget bounds memory, and every row holds its own copy of the prefix's keys and values
    (``Backbone.budget_counts_prefix``); a CPU's bounds compute, and the prefix runs once. Same scores either way."""
    from studio.backbones import Backbone
    from studio.evaluation import score_examples

    encoded = encode_task(tiny, load_task("mr"), "validation", 12)
    table = torch.stack(prompts[:2])
    rows = [Row(j, e.input_ids, encoded.target_ids[0]) for e in encoded.examples for j in range(2)]
    prefix = tiny.shared_prefix(table, rows)
    assert prefix is not None and prefix.cached_tokens > prefix.length > 0
    seen, scores = {}, {}
    original = Backbone.batches
    for on_gpu in (False, True):
        def spy(self, lengths, *args, on_gpu=on_gpu, **kwargs):
            seen[on_gpu] = list(lengths)
            return original(self, lengths, *args, **kwargs)

        monkeypatch.setattr(Backbone, "budget_counts_prefix", property(lambda self, on_gpu=on_gpu: on_gpu))
        monkeypatch.setattr(Backbone, "batches", spy)
        scores[on_gpu] = score_examples(tiny, table, encoded, encoded.examples)
    assert [n + prefix.cached_tokens for n in seen[False]] == seen[True]
    torch.testing.assert_close(scores[True], scores[False])


def test_scoring_plans_its_passes_by_each_rows_tokens(tiny, prompts, monkeypatch):
    """Without a shared prefix a row counts its soft prompt, its input and its answer but the last answer token
    (``row_tokens``: tuning plans its micro-batches by the same count)."""
    from studio.backbones import Backbone
    from studio.evaluation import row_tokens, score_examples

    seen = []
    original = Backbone.batches

    def spy(self, lengths, *args, **kwargs):
        seen.append(list(lengths))
        return original(self, lengths, *args, **kwargs)

    monkeypatch.setattr(Backbone, "shared_prefix", lambda self, table, rows: None)  # every row computed whole
    monkeypatch.setattr(Backbone, "batches", spy)
    encoded = encode_task(tiny, load_task("spam"), "test", 4)  # labels of different lengths: one row per label
    score_examples(tiny, torch.stack(prompts[:2]), encoded, encoded.examples)
    rows = [Row(j, e.input_ids, ids) for e in encoded.examples for j in range(2) for ids in encoded.target_ids]
    assert seen == [sorted((row_tokens(row, 5) for row in rows), reverse=True)]
    assert row_tokens(Row(0, [1, 2, 3], [4, 5]), 5) == 5 + 3 + 2 - 1
