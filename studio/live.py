"""Live evaluation for many visitors at once: one worker, newest position wins, fresh moves first.

A slider move asks for the accuracy of one combined prompt on a few tasks, refined in rounds (16 examples, then
twice as many, ... up to the sample size). With a classroom moving sliders, evaluations running side by side fight
for the same cores and a stale position keeps computing after a newer one arrived. So every request goes to ONE
worker thread that:

- drops a visitor's older request the moment a newer one arrives (``submit`` supersedes it; its stream ends);
- runs, each turn, the next chunk of the request that has the least done (a fresh move gets its first estimate
  after at most one turn of somebody else's work, and a turn scores at most ``MAX_TURN_ROWS`` rows), batched with
  every other request whose next chunk covers the same examples of the same task (their prompts go through the
  model together);
- hands each request its refined results as they come (``stream``);
- remembers the scores of recent (prompt, task) pairs: a position set again (a slider dragged back, the same
  weights another visitor chose) continues from what was scored for it, and equal prompts in one turn run once.

Beside the worker: the accuracies of stored library items on the live view's sample (``item_accuracies``: the
Arithmetic chart's marks, computed once for every visitor), and the warm-ups that let a first move pay only for its
own forward passes (``start_warm_up``, ``start_samples_warm_up``).
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from studio.backbones import Backbone
from studio.evaluation import EncodedTask, EvalResult, encode_task, results_from_scores, score_examples
from studio.tasks import TaskData, load_task

SUPERSEDED = "superseded"
DONE = "done"
# rows (prompts x examples) per model call: a fresh move waits for at most one such call before its own first
# chunk, about 2-3 s on a 2-core CPU; a whole 64-example chunk of 8 visitors was 512 rows (over 15 s in the
# classroom benchmark, docs/robustness.md)
MAX_TURN_ROWS = 64
# (prompt, task, sample size) score tables kept for positions set again; each is [1, examples, labels] floats
REMEMBERED_SCORES = 512


@dataclass(eq=False)
class LiveRequest:
    """One visitor's evaluation of one prompt on some tasks, refined chunk by chunk."""

    key: str  # the visitor (a browser session); a newer request with the same key supersedes this one
    prompt: torch.Tensor
    tasks: list[str]
    limit: int
    first: int = 16
    growth: float = 2.0
    submitted: float = field(default_factory=time.monotonic)
    order: int = 0
    done: dict[str, int] = field(default_factory=dict)  # task -> examples scored
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> [1, done, labels]
    results: dict[str, EvalResult] = field(default_factory=dict)
    updates: queue.Queue = field(default_factory=queue.Queue)
    outcome: object = None  # DONE, SUPERSEDED or the exception that ended it; None while it runs
    digest: str = ""  # the prompt's content: equal prompts share their scores
    data: dict[str, TaskData] = field(default_factory=dict)  # task -> its data, read in the visitor's own call

    def __post_init__(self) -> None:
        self.digest = prompt_digest(self.prompt)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def progress(self) -> float:
        return sum(self.done.get(t, 0) for t in self.tasks) / (self.limit * len(self.tasks))

    def next_chunk(self, sizes: dict[str, int]) -> tuple[str, int, int] | None:
        """(task, start, stop) of the next round to score (the task with the fewest examples scored, so every
        task gets its first estimate early), or None when every task is fully scored."""
        open_tasks = [(self.done.get(t, 0), k, t) for k, t in enumerate(self.tasks)
                      if self.done.get(t, 0) < min(self.limit, sizes[t])]
        if not open_tasks:
            return None
        done, _, task = min(open_tasks)
        stop = self.first if done == 0 else int(done * self.growth)
        return task, done, min(max(stop, done + 1), self.limit, sizes[task])


def prompt_digest(prompt: torch.Tensor) -> str:
    """A short fingerprint of a prompt's exact values (and shape): the key under which its scores are kept."""
    values = prompt.detach().float().cpu().contiguous()
    return hashlib.sha1(str(tuple(values.shape)).encode() + values.numpy().tobytes()).hexdigest()


def warm_up_model(model: str) -> None:
    """Load the model and PEFT's merges and run one tiny evaluation, so that the first slider move pays only for its
    own forward passes (the first forward pass of a process is several times slower than the next). Problems are
    left for the first real use, which reports them with a clear message."""
    from studio import HEAVY_IMPORT_LOCK
    from studio.backbones import load_backbone

    try:
        backbone = load_backbone(model)
        with HEAVY_IMPORT_LOCK:
            import peft.utils.merge_utils  # noqa: F401
        encoded = encode_task(backbone, load_task("mr"), "validation", 4)
        score_examples(backbone, None, encoded, encoded.examples)
    except Exception:  # see the docstring
        pass


def start_warm_up(model: str) -> threading.Thread:
    """``warm_up_model`` on a background thread (``launch.py`` starts it once Gradio is imported)."""
    thread = threading.Thread(target=warm_up_model, args=(model,), daemon=True, name="warm-model")
    thread.start()
    return thread


def warm_up_samples(backbone: Callable[[], Backbone], tasks: list[str], limit: int) -> None:
    """Load the model and tokenise the validation samples a live view scores (``limit`` examples of each task,
    stratified, as ``LiveEvaluator`` draws them), so the first slider move only pays for the forward passes.
    Problems are left for the live evaluation, which reports them with a clear message."""
    try:
        model = backbone()
        for name in tasks:
            encode_task(model, load_task(name), "validation", limit, stratified=True)
    except Exception:  # see the docstring
        pass


def start_samples_warm_up(backbone: Callable[[], Backbone], tasks: list[str], limit: int) -> threading.Thread:
    """``warm_up_samples`` on a background thread (the Arithmetic tab starts it for the selection it opens on)."""
    thread = threading.Thread(target=warm_up_samples, args=(backbone, tasks, limit), daemon=True,
                              name="warm-arithmetic")
    thread.start()
    return thread


class LiveEvaluator:
    """The one worker that evaluates every visitor's slider positions (see the module docstring)."""

    def __init__(self, backbone: Callable[[], Backbone], split: str = "validation", max_turn_rows: int = MAX_TURN_ROWS,
                 remember: int = REMEMBERED_SCORES):
        self._backbone = backbone  # one model for the evaluator's lifetime: remembered scores belong to it
        self._split = split
        self.max_turn_rows = max_turn_rows
        self._remember = remember
        self._remembered: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # least recent first
        self.rows_scored = 0  # for tests and benchmarks: (prompt, example) pairs the model scored
        self.largest_turn_rows = 0  # for tests and benchmarks: the most rows one model call scored
        self._active: dict[str, LiveRequest] = {}  # visitor -> their newest unfinished request
        self._wake = threading.Condition(threading.RLock())
        self._counter = itertools.count()
        self.chunks_run = 0  # for tests and benchmarks: model calls made
        self._thread = threading.Thread(target=self._work, daemon=True, name="live-evaluator")
        self._thread.start()

    def submit(self, key: str, prompt: torch.Tensor, tasks: list[str], limit: int, first: int = 16) -> LiveRequest:
        """Queue an evaluation for visitor ``key``; an unfinished older one of theirs stops at once."""
        data = {task: load_task(task) for task in tasks}  # in the visitor's own call: an unknown task fails here,
        # and a visitor's own file task is theirs (``tasks.set_task_owner``); the worker thread asks no one
        request = LiveRequest(key, prompt.detach().float().cpu(), list(tasks), int(limit), first,
                              order=next(self._counter), data=data)
        with self._wake:
            old = self._active.get(key)
            if old is not None:
                old.outcome = SUPERSEDED
                old.updates.put(SUPERSEDED)
            self._active[key] = request
            self._adopt_remembered(request)  # a position seen before shows its results at once
            self._wake.notify()
        return request

    @contextmanager
    def together(self) -> Iterator[None]:
        """Submit several requests as one arrival: the worker sees all of them at its next turn, so their equal
        chunks run as one batch from the first."""
        with self._wake:  # a re-entrant lock: ``submit`` inside takes it again
            yield

    def accuracies(self, prompts: dict[str, torch.Tensor], task: str, limit: int) -> list[float]:
        """The accuracy of each of ``prompts`` (library items, by id) on the whole sample: ``limit`` examples of
        ``task``. Submitted as one arrival, so they run as one batch, queued with every visitor's moves; each under a
        key of its own, so that none supersedes another."""
        with self.together():  # one batch
            requests = [self.submit(f"reference {item_id} {task} {limit}", prompt, [task], limit, first=limit)
                        for item_id, prompt in prompts.items()]
        accuracies = []
        for request in requests:
            final = list(self.stream(request))[-1:]
            if isinstance(request.outcome, BaseException):
                raise request.outcome
            accuracies.append(final[0][task].metrics["accuracy"] if final else float("nan"))
        return accuracies

    def stream(self, request: LiveRequest, timeout: float = 600.0) -> Iterator[dict[str, EvalResult]]:
        """The request's results after each chunk (all tasks seen so far); ends when it is complete
        (``request.outcome`` DONE) or superseded (SUPERSEDED: its last results are not the final ones)."""
        while True:
            update = request.updates.get(timeout=timeout)
            if update in (SUPERSEDED, DONE):
                return
            if isinstance(update, BaseException):
                raise update
            yield update

    def _sizes(self, request: LiveRequest) -> dict[str, int]:
        return {t: len(self._encoding(request, t).examples) for t in request.tasks}

    def _encoding(self, request: LiveRequest, task: str) -> EncodedTask:
        """The request's sample of ``task``, tokenised once (``encode_task`` keeps it by the task's data), stratified:
        every prefix is class-balanced."""
        return encode_task(self._backbone(), request.data[task], self._split, request.limit, stratified=True)

    @staticmethod
    def _remembered_key(request: LiveRequest, task: str) -> tuple:
        """What a score table is kept under: the prompt's content, the task's data and the sample size."""
        return request.digest, task, request.data[task].data_hash, request.limit

    # ---- the worker -------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._active:
                    self._wake.wait()
                requests = list(self._active.values())
            self._run_one_turn(requests)

    def _run_one_turn(self, requests: list[LiveRequest]) -> None:
        """Score one chunk: the least advanced request's next one, with every request that needs the same."""
        chunks: dict[LiveRequest, tuple[str, int, int]] = {}
        for request in requests:
            with self._wake:
                self._adopt_remembered(request)  # what an equal prompt scored since
            try:
                chunk = request.next_chunk(self._sizes(request))
            except Exception as error:  # e.g. a task whose data went missing: that visitor gets the message
                self._finish(request, error)
                continue
            if chunk is None:
                self._finish(request, DONE)
            else:
                chunks[request] = chunk
        if not chunks:
            return
        lead = min(chunks, key=lambda r: (r.progress(), r.order))  # the freshest move first
        batch = [r for r in chunks if chunks[r] == chunks[lead] and r.limit == lead.limit
                 and r.prompt.shape == lead.prompt.shape
                 and r.data[chunks[r][0]].data_hash == lead.data[chunks[r][0]].data_hash]
        task, start, stop = chunks[lead]
        prompts = {r.digest: r.prompt for r in batch}  # equal prompts (the same weights) run once
        stop = min(stop, start + max(1, self.max_turn_rows // len(prompts)))  # the rest in a later turn
        self.largest_turn_rows = max(self.largest_turn_rows, len(prompts) * (stop - start))
        try:
            encoded = self._encoding(lead, task)
            scores = score_examples(self._backbone(), torch.stack(list(prompts.values())), encoded,
                                    encoded.examples[start:stop])
        except Exception as error:  # one bad request must not stop the classroom: its batch gets the error
            for request in batch:
                self._finish(request, error)
            return
        self.chunks_run += 1
        self.rows_scored += len(prompts) * (stop - start)
        row_of = {digest: k for k, digest in enumerate(prompts)}
        for request in batch:
            self._record(request, task, scores[row_of[request.digest]][None].clone(), encoded)  # not a view of all

    def _record(self, request: LiveRequest, task: str, scores: torch.Tensor, encoded: EncodedTask) -> None:
        with self._wake:
            previous = request.scores.get(task)
            combined = scores if previous is None else torch.cat([previous, scores], dim=1)
            key = self._remembered_key(request, task)
            known = self._remembered.pop(key, None)  # kept even when superseded: the position may come back
            self._remembered[key] = combined if known is None or known.shape[1] < combined.shape[1] else known
            while len(self._remembered) > self._remember:
                self._remembered.popitem(last=False)
            if not request.finished:  # superseded while its chunk ran: nobody reads it any more
                self._update(request, task, combined, encoded)
                request.updates.put(dict(request.results))

    def _adopt_remembered(self, request: LiveRequest) -> None:
        """Take over the scores kept for this prompt where they reach further than the request has (lock held)."""
        adopted = False
        for task in request.tasks:
            key = self._remembered_key(request, task)
            known = self._remembered.get(key)
            if known is not None and known.shape[1] > request.done.get(task, 0):
                self._remembered.move_to_end(key)
                self._update(request, task, known, self._encoding(request, task))
                adopted = True
        if adopted:
            request.updates.put(dict(request.results))

    @staticmethod
    def _update(request: LiveRequest, task: str, scores: torch.Tensor, encoded: EncodedTask) -> None:
        request.scores[task] = scores
        request.done[task] = scores.shape[1]
        request.results[task] = results_from_scores(encoded, encoded.examples[:request.done[task]], scores)[0]

    def _finish(self, request: LiveRequest, outcome: object) -> None:
        with self._wake:
            if not request.finished:
                request.outcome = outcome
                request.updates.put(outcome)
            if self._active.get(request.key) is request:
                del self._active[request.key]


# ---- the accuracies of stored library items on the live view's sample ----------------------------------------------
# (item id, task, the task's data, sample size) -> validation accuracy. Content ids never change, so one table serves
# every visitor of this process.
_item_accuracy: dict[tuple[str, str, str, int], float] = {}
_item_accuracy_lock = threading.Lock()

Scorer = Callable[[list[str], str, int], list[float]]  # (item ids, task, sample size) -> their accuracies, in order


def item_accuracies(items: dict[str, list[str]], limit: int,
                    score: Scorer | None = None) -> dict[tuple[str, str], float]:
    """The accuracies known of ``items`` (task -> item ids) on the live view's sample of ``limit`` examples, by (item
    id, task). With ``score``, the missing ones are scored first, one call per task (``LiveEvaluator.accuracies``
    batches them): one visitor computes a missing accuracy, the others wait and then find it kept."""
    data = {task: load_task(task).data_hash for task in items}  # two visitors' files may share a name
    if score is not None:
        with _item_accuracy_lock:
            for task, item_ids in items.items():
                missing = [i for i in dict.fromkeys(item_ids) if (i, task, data[task], limit) not in _item_accuracy]
                if missing:
                    for item_id, accuracy in zip(missing, score(missing, task, limit)):
                        _item_accuracy[(item_id, task, data[task], limit)] = accuracy
    return {(item_id, task): _item_accuracy[(item_id, task, data[task], limit)]
            for task, item_ids in items.items() for item_id in item_ids
            if (item_id, task, data[task], limit) in _item_accuracy}
