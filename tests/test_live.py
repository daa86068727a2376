"""The live evaluator a classroom shares: results equal a plain progressive evaluation, a newer move supersedes
an older one at once, equal chunks of different visitors run as one batch, and fresh moves go first."""

from __future__ import annotations

import threading

import pytest
import torch

from studio import StudioError
from studio.backbones import load_backbone
from studio.evaluation import evaluate_progressively
from studio.live import DONE, SUPERSEDED, LiveEvaluator
from studio.tasks import load_task


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


def prompt(seed: int, width: int) -> torch.Tensor:
    return torch.randn(4, width, generator=torch.Generator().manual_seed(seed))


def gated(backbone):
    """A backbone getter that holds the worker until the test opens the gate (so requests queue up first)."""
    gate = threading.Event()

    def get():
        gate.wait(60)
        return backbone

    return get, gate


def test_results_equal_a_progressive_evaluation(tiny):
    evaluator = LiveEvaluator(lambda: tiny)
    p = prompt(0, tiny.hidden_size)
    request = evaluator.submit("visitor", p, ["mr", "tweets"], 40)
    updates = list(evaluator.stream(request))
    assert request.outcome == DONE and set(updates[-1]) == {"mr", "tweets"}
    for task in ("mr", "tweets"):
        expected = list(evaluate_progressively(tiny, [p], load_task(task), "validation", 40))[-1][0]
        got = updates[-1][task]
        assert got.metrics["n"] == 40 and got.metrics["accuracy"] == pytest.approx(expected.metrics["accuracy"])
        assert got.metrics["loss"] == pytest.approx(expected.metrics["loss"], rel=1e-4)
    sizes = [u["mr"].metrics["n"] for u in updates if "mr" in u]
    assert sizes[0] == 16 and sizes == sorted(sizes)  # a quick estimate first, then refinements


def test_a_newer_move_supersedes_the_older_one_at_once(tiny):
    get, gate = gated(tiny)
    evaluator = LiveEvaluator(get)
    old = evaluator.submit("visitor", prompt(1, tiny.hidden_size), ["mr"], 64)
    new = evaluator.submit("visitor", prompt(2, tiny.hidden_size), ["mr"], 64)
    assert old.outcome == SUPERSEDED and list(evaluator.stream(old)) == []  # ends before any model call
    gate.set()
    assert list(evaluator.stream(new))[-1]["mr"].metrics["n"] == 64 and new.outcome == DONE
    other = evaluator.submit("someone else", prompt(3, tiny.hidden_size), ["mr"], 16)
    list(evaluator.stream(other))
    assert other.outcome == DONE and new.outcome == DONE  # another visitor's move supersedes nothing of theirs


def test_equal_chunks_of_different_visitors_run_as_one_batch(tiny):
    evaluator = LiveEvaluator(lambda: tiny, max_turn_rows=10_000)  # whole chunks: see the next test for the cap
    with evaluator.together():  # four visitors moving at the same moment
        requests = [evaluator.submit(f"visitor {k}", prompt(10 + k, tiny.hidden_size), ["mr"], 64) for k in range(4)]
    finals = [list(evaluator.stream(r))[-1]["mr"] for r in requests]
    assert evaluator.chunks_run == 3  # 16, 32, 64: three model calls for four visitors, not twelve
    alone = LiveEvaluator(lambda: tiny)
    solo = alone.submit("solo", prompt(12, tiny.hidden_size), ["mr"], 64)
    assert list(alone.stream(solo))[-1]["mr"].metrics["accuracy"] == finals[2].metrics["accuracy"]


def test_a_turn_scores_at_most_its_row_cap_and_results_stay_the_same(tiny):
    """A fresh move waits for at most one turn, so a turn is capped (prompts x examples): 4 visitors' 16-example
    chunks split into calls of 8 examples each, and the final results equal those of whole chunks."""
    capped = LiveEvaluator(lambda: tiny, max_turn_rows=32)
    whole = LiveEvaluator(lambda: tiny, max_turn_rows=10_000)
    finals = {}
    for name, evaluator in (("capped", capped), ("whole", whole)):
        with evaluator.together():
            requests = [evaluator.submit(f"v{k}", prompt(20 + k, tiny.hidden_size), ["mr"], 48) for k in range(4)]
        finals[name] = [list(evaluator.stream(r))[-1]["mr"].metrics for r in requests]
    assert capped.largest_turn_rows == 32 and whole.largest_turn_rows == 4 * 16
    assert capped.chunks_run == 48 // 8 and whole.chunks_run == 3  # 16, 16 (to 32), 16 (to 48)
    for capped_metrics, whole_metrics in zip(finals["capped"], finals["whole"]):  # other batch shapes round apart
        assert capped_metrics == pytest.approx(whole_metrics, rel=1e-6)


def test_a_fresh_move_gets_its_first_estimate_before_a_long_one_finishes(tiny):
    evaluator = LiveEvaluator(lambda: tiny)
    order: list[tuple[str, int]] = []
    long = evaluator.submit("long", prompt(4, tiny.hidden_size), ["mr", "tweets"], 200, first=8)
    stream = evaluator.stream(long)
    next(stream)  # the long evaluation is under way
    fresh = evaluator.submit("fresh", prompt(5, tiny.hidden_size), ["mr"], 16)

    def read(name, request, updates):
        for update in updates:
            order.append((name, sum(r.metrics["n"] for r in update.values())))

    readers = [threading.Thread(target=read, args=("long", long, stream)),
               threading.Thread(target=read, args=("fresh", fresh, evaluator.stream(fresh)))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(120)
    assert long.outcome == DONE and fresh.outcome == DONE
    assert order.index(("fresh", 16)) < len(order) - 3  # long still had several chunks to go


def test_bad_requests_fail_alone(tiny):
    evaluator = LiveEvaluator(lambda: tiny)
    with pytest.raises(StudioError):
        evaluator.submit("visitor", prompt(6, tiny.hidden_size), ["no-such-task"], 16)
    wrong = evaluator.submit("a", torch.randn(4, tiny.hidden_size + 1), ["mr"], 16)
    fine = evaluator.submit("b", prompt(7, tiny.hidden_size), ["mr"], 16)
    with pytest.raises((RuntimeError, StudioError)):  # torch's shape error, passed to that visitor only
        list(evaluator.stream(wrong))
    assert list(evaluator.stream(fine))[-1]["mr"].metrics["n"] == 16 and fine.outcome == DONE


def test_a_position_set_again_continues_from_its_remembered_scores(tiny):
    """A slider dragged back to where it was, or the weights another visitor chose: the prompt's scores are
    remembered, so its results come at once and the model scores nothing twice."""
    evaluator = LiveEvaluator(lambda: tiny)
    first, second = prompt(30, tiny.hidden_size), prompt(31, tiny.hidden_size)
    done = evaluator.submit("visitor", first, ["mr", "tweets"], 32)
    final = list(evaluator.stream(done))[-1]
    list(evaluator.stream(evaluator.submit("visitor", second, ["mr"], 32)))
    scored = evaluator.rows_scored
    assert scored == 32 * 2 + 32
    again = evaluator.submit("someone else", first.clone(), ["mr", "tweets"], 32)  # equal values, another tensor
    updates = list(evaluator.stream(again))
    assert again.outcome == DONE and evaluator.rows_scored == scored
    assert {t: r.metrics for t, r in updates[0].items()} == {t: r.metrics for t, r in final.items()}
    # another sample size is another evaluation
    larger = evaluator.submit("visitor", first, ["mr"], 48)
    assert list(evaluator.stream(larger))[-1]["mr"].metrics["n"] == 48 and evaluator.rows_scored == scored + 48


def test_equal_prompts_in_one_turn_run_once_and_a_superseded_position_resumes(tiny):
    get, gate = gated(tiny)
    evaluator = LiveEvaluator(get)
    same = prompt(32, tiny.hidden_size)
    with evaluator.together():  # two visitors set the same weights at the same moment
        a = evaluator.submit("a", same, ["mr"], 32)
        b = evaluator.submit("b", same.clone(), ["mr"], 32)
    gate.set()
    results = [list(evaluator.stream(r))[-1]["mr"].metrics for r in (a, b)]
    assert results[0] == results[1] and evaluator.rows_scored == 32  # one prompt's rows, not two
    # a move superseded after its first estimate: set again, it starts from those 16 examples, not from 0
    moving = evaluator.submit("c", prompt(33, tiny.hidden_size), ["mr"], 64)
    stream = evaluator.stream(moving)
    assert next(stream)["mr"].metrics["n"] == 16
    evaluator.submit("c", prompt(34, tiny.hidden_size), ["mr"], 64)
    back = evaluator.submit("c", prompt(33, tiny.hidden_size), ["mr"], 64)
    assert back.updates.get(timeout=1)["mr"].metrics["n"] >= 16  # shown at once, before any model call of its own
    assert list(evaluator.stream(back))[-1]["mr"].metrics["n"] == 64 and back.outcome == DONE


def test_two_visitors_files_under_one_name_are_scored_on_their_own_data(tiny, tmp_path):
    """The worker thread asks no visitor who it is: each request carries the data its visitor's call resolved, and
    encodings and remembered scores are kept by the data, not only the task name."""
    import csv

    from studio.task_files import load_file_task
    from studio.tasks import set_task_owner

    asking = {"who": "a"}
    set_task_owner(lambda: asking["who"])
    try:
        sizes = {}
        for who, rows in (("a", 40), ("b", 80)):
            asking["who"] = who
            (tmp_path / who).mkdir()
            with (tmp_path / who / "notes.csv").open("w", newline="") as handle:
                csv.writer(handle).writerows([("text", "label")] + [(f"{who} note {i}", "yes" if i % 2 else "no")
                                                                    for i in range(rows)])
            sizes[who] = len(load_file_task(tmp_path / who / "notes.csv").validation)
        evaluator = LiveEvaluator(lambda: tiny)
        same = prompt(70, tiny.hidden_size)
        requests = {}
        for who in ("a", "b"):
            asking["who"] = who
            requests[who] = evaluator.submit(who, same, ["file:notes"], 16)
        finals = {who: list(evaluator.stream(r))[-1]["file:notes"] for who, r in requests.items()}
    finally:
        set_task_owner(None)
    assert sizes["a"] != sizes["b"]
    assert {who: f.metrics["n"] for who, f in finals.items()} == sizes
    assert all(f"{who} note" in record["input"] for who, f in finals.items() for record in f.records)
