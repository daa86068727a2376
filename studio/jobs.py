"""Tuning jobs end to end (origins -> tuning -> library), and a background runner the UI queues them on.

``run_tuning`` is what the CLI, the UI and ``build-library`` all call: it makes (or reuses) the origins, trains
every (task, seed) prompt in one batched job, and stores origin, best prompt and task prompt vector with their
recipe and lineage. ``tune_request`` checks what a tuning job tunes and ``submit_tuning`` queues it on a
``JobRunner``, which runs such calls one at a time on a worker thread, with status, a live history for the curves,
cancel and resume (once per stopped job).
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import queue
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from studio import StudioError
from studio.backbones import Backbone
from studio.faults import kill_point
from studio.library import (
    Item,
    Library,
    NewItem,
    content_id,
    origin_id,
    prompt_and_vector,
    split_metrics,
    tuned_prompt_id,
)
from studio.limits import check_prompt_length, parse_seeds, whole_number
from studio.prompts import DEFAULT_INIT, make_origin
from studio.settings import TuneConfig
from studio.tasks import TaskData
from studio.tuning import TrainingPrompt, TuneOutcome, TuneResult, clear_checkpoint, tune


# ---- tune and store ----------------------------------------------------------------------------------------------
class _Wanted(NamedTuple):
    """One prompt a tuning job is asked for, and the content id it is stored under (``tuned_prompt_id``)."""

    task: TaskData
    seed: int
    prompt_id: str


def origin_entry(library: Library, backbone: Backbone, seed: int, n_tokens: int, init: str = DEFAULT_INIT) -> NewItem:
    """The origin for (model, seed, length, init) as it is stored: the library's own under its id when it has one (a
    pulled origin may carry another), else made now under its content id. Tuning jobs store it with their first
    result, so a job cancelled before it finishes writes nothing."""
    found = library.find_origin(backbone.name, seed, n_tokens, init)
    tensor = library.tensor(found.id) if found else make_origin(backbone, seed, n_tokens, init)
    return NewItem("origin", tensor, backbone.name, f"origin {seed} ({n_tokens} tokens)", seed=seed,
                   recipe={"init": init, "seed": seed, "n_tokens": n_tokens},
                   item_id=found.id if found else origin_id(backbone.name, seed, n_tokens, init))


def origin_item(library: Library, backbone: Backbone, seed: int, n_tokens: int, init: str = DEFAULT_INIT) -> Item:
    """The library's origin for (model, seed, length, init), stored on first use so every TPV shares it."""
    found = library.find_origin(backbone.name, seed, n_tokens, init)
    return found or library.add_together([origin_entry(library, backbone, seed, n_tokens, init)], exist_ok=True)[0]


def run_tuning(
    library: Library, backbone: Backbone, tasks: list[TaskData], seeds: list[int], config: TuneConfig,
    n_tokens: int = 20, init: str = DEFAULT_INIT, on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None, checkpoint_dir: Path | None = None, name_prefix: str = "",
    keep_partial: bool = False,
) -> tuple[list[Item], str]:
    """Tune every task x seed in one batched job and store the results; returns (prompt items, status).

    Checkpoints go to a folder named after the job in the library's ``CHECKPOINTS`` folder, so running the same job
    again after a crash resumes it.
    """
    if not tasks or not seeds:
        raise StudioError("choose at least one task and one origin seed")
    tasks = list({(t.spec.name, t.data_hash): t for t in tasks}.values())  # the same task twice is one task
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    origins = {seed: origin_entry(library, backbone, seed, n_tokens, init) for seed in seeds}
    library.check_storable(list(origins.values()), exist_ok=True)  # before any tuning, not after it
    wanted = [_Wanted(task, seed, tuned_prompt_id(origins[seed].item_id, task, config))
              for task in tasks for seed in seeds]
    stored = {w.prompt_id: item for w in wanted if (item := library.find(w.prompt_id))}
    todo = [w for w in wanted if w.prompt_id not in stored]
    own_checkpoint_dir = checkpoint_dir is None
    if not todo:  # this exact job ran before: its results are in the library already
        if own_checkpoint_dir:  # a run killed after storing them left its checkpoint behind
            shutil.rmtree(_checkpoint_dir(library, backbone, wanted, n_tokens, init, config), ignore_errors=True)
        return [stored[w.prompt_id] for w in wanted], "done"
    jobs = [TrainingPrompt(w.task, origins[w.seed].tensor, w.seed) for w in todo]
    if checkpoint_dir is None:
        checkpoint_dir = _checkpoint_dir(library, backbone, todo, n_tokens, init, config)
        if checkpoint_dir.is_dir():  # resumed: the newest now, so another process's sweep leaves it too
            os.utime(checkpoint_dir)
        sweep_checkpoints(library, sparing=checkpoint_dir)
    outcome = tune(backbone, jobs, config, on_progress, should_stop, checkpoint_dir)
    if outcome.status != "done" and not keep_partial:  # cancelled: the checkpoint stays for a resume
        return [], outcome.status
    stored |= _store_outcome(library, backbone, todo, outcome, origins, config, init, n_tokens, name_prefix)
    kill_point("store:committed")
    if own_checkpoint_dir:  # the job is in the library now
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    else:
        clear_checkpoint(checkpoint_dir)
    return [stored[w.prompt_id] for w in wanted], "done"


CHECKPOINTS = "checkpoints"  # the folder in a library of its jobs' checkpoints (running, cancelled, failed)
CHECKPOINTS_KEPT = 32  # per library: the most recently written; older ones go (``sweep_checkpoints``)
CHECKPOINT_DAYS = 30  # ... and none unwritten for longer: a cancelled job can be resumed for a month


def pulled_note(items: Sequence[Item]) -> str:
    """What a job says of the results it found stored that were pulled, not tuned here (their id is this job's:
    whoever pushed them says they ran the same job), so that nobody takes them for their own run."""
    pulled = [i for i in items if i.pulled_from]
    if not pulled:
        return ""
    sources = ", ".join(dict.fromkeys(i.pulled_from for i in pulled))
    one = len(pulled) == 1
    return (f"{', '.join(i.id for i in pulled)} {'was' if one else 'were'} pulled from {sources}, not tuned here: "
            f"delete {'it' if one else 'them'} with {'its' if one else 'their'} TPV and run again to tune your own")


def stored_message(items: Sequence[Item], started: str) -> str:
    """What a finished job says it stored: the prompts it added, those it found in the library already (the
    same job ran before: stored before ``started``, or pulled), and where pulled ones came from."""
    added = [i.id for i in items if not i.pulled_from and i.created >= started]
    found = [i.id for i in items if i.id not in added]
    parts = [f"added {len(added)} prompt(s) and their TPVs to the library: {', '.join(added)}"] if added else []
    if found:
        parts.append(f"{len(found)} prompt(s) were in the library already: {', '.join(found)}")
    return "; ".join(parts + ([note] if (note := pulled_note(items)) else []))


def _checkpoint_dir(library: Library, backbone: Backbone, wanted: list[_Wanted], n_tokens: int, init: str,
                    config: TuneConfig) -> Path:
    """Where a job keeps its checkpoint: one folder per job (tasks x seeds, recipe), inside its library, so that
    the checkpoints go with the library (a visitor's, swept when they leave) and never outlive it."""
    pairs = [(w.task.spec.name, w.task.data_hash, w.seed) for w in wanted]
    key = repr((backbone.name, pairs, n_tokens, init, asdict(config)))
    return library.root / CHECKPOINTS / hashlib.sha256(key.encode()).hexdigest()[:16]


def sweep_checkpoints(library: Library, keep: int = CHECKPOINTS_KEPT, days: float = CHECKPOINT_DAYS,
                      sparing: Path | None = None) -> list[Path]:
    """Remove a library's job checkpoints past the ``keep`` most recently written, or unwritten for ``days``: a
    cancelled job keeps its checkpoint for a resume, and on a public Space anyone may start and cancel jobs, so
    what they take on disk must stay bounded. A running job writes its checkpoint at every validation; ``sparing``
    is the one of the job about to start (an old job resumed)."""
    folder = library.root / CHECKPOINTS
    if not folder.is_dir():
        return []

    def written(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile (its job finished)
            return 0.0

    checkpoints = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p != sparing]  # ours only
    newest_first = sorted(checkpoints, key=written, reverse=True)
    oldest_kept = time.time() - days * 86400
    removed = [p for n, p in enumerate(newest_first) if n >= keep or written(p) < oldest_kept]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _store_outcome(library: Library, backbone: Backbone, todo: list[_Wanted], outcome: TuneOutcome,
                   origins: dict[int, NewItem], config: TuneConfig, init: str, n_tokens: int,
                   name_prefix: str) -> dict[str, Item]:
    """Store a job's results in one transaction (all of it or nothing, never half): the origins they start from,
    then each prompt with its TPV. Returns the stored prompts by the id each was wanted under."""
    pairs = [_result_items(result, wanted.prompt_id, origins[wanted.seed].item_id, backbone, config, outcome, init,
                           n_tokens, name_prefix) for wanted, result in zip(todo, outcome.results)]
    new = [origins[seed] for seed in dict.fromkeys(w.seed for w in todo)] + [item for pair in pairs for item in pair]
    by_id = {item.id: item for item in library.add_together(new, exist_ok=True)}
    return {wanted.prompt_id: by_id[prompt.item_id] for wanted, (prompt, _) in zip(todo, pairs)}


def _result_items(result: TuneResult, prompt_id: str, origin: str, backbone: Backbone, config: TuneConfig,
                  outcome: TuneOutcome, init: str, n_tokens: int, name_prefix: str) -> tuple[NewItem, NewItem]:
    """A tuned prompt and its TPV, with the recipe and metrics they are stored under; a partial result (a job
    stopped early whose results are kept) gets an id of its own: it is not the finished job's result."""
    task, seed, model = result.job.task, result.job.origin_seed, backbone.name
    recipe = {"model": model, "task": task.spec.name, "data_hash": task.data_hash, "seed": seed, "init": init,
              "n_tokens": n_tokens, **asdict(config), "best_step": result.best_step, "steps_done": outcome.steps_done,
              "dtype": str(backbone.dtype).replace("torch.", ""), "device": backbone.device,
              "seconds": round(outcome.seconds, 1), "history": result.history}  # thinned as it is stored (``library.thinned_history``)
    label = f"{name_prefix}{task.spec.name} / origin {seed}"
    if outcome.steps_done < config.steps:
        prompt_id = content_id("prompt", prompt_id, outcome.steps_done)
    return prompt_and_vector(model, result.best_prompt, result.job.origin, name=label, prompt_id=prompt_id,
                             origin_id=origin, task=task.spec.name, seed=seed, recipe=recipe,
                             metrics=split_metrics("validation", result.best_metrics))


# ---- what a tuning job tunes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneRequest:
    """Everything a tuning job needs, checked (``tune_request``); the runner keeps it with the job, so a cancelled
    or failed job can be resumed and its curves are labelled by task and origin."""

    tasks: tuple[TaskData, ...]
    seeds: tuple[int, ...]
    config: TuneConfig
    n_tokens: int
    title: str
    init: str = DEFAULT_INIT

    def labels(self) -> list[str]:  # run_tuning trains prompts in this order: task-major, then seed
        return [f"{t.spec.name} / origin {s}" for t in self.tasks for s in self.seeds]


def tune_request(tasks: list[TaskData], seeds: str | list[int], config: TuneConfig, n_tokens: object,
                 init: str = DEFAULT_INIT) -> TuneRequest:
    """A tuning job checked before anything is queued: at least one task, no two tasks of one name (a file task
    named like a bundled one would be stored under the same name), seeds and prompt length in their limits."""
    if not tasks:
        raise StudioError("choose at least one task (or upload your own CSV / JSONL file)")
    names = [t.spec.name for t in tasks]
    if len(set(names)) != len(names):
        raise StudioError(f"a task is chosen twice ({', '.join(names)}): choose each task once (a file named like "
                          "another task: give it another task name)")
    seeds = parse_seeds(seeds if isinstance(seeds, str) else ",".join(str(s) for s in seeds))
    n = check_prompt_length(whole_number(n_tokens, "prompt length"), "a prompt")
    title = f"{', '.join(names)} x origin{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}: " \
            f"{config.steps} steps, {n} tokens"
    return TuneRequest(tuple(tasks), tuple(seeds), config, n, title, init)


def submit_tuning(runner: JobRunner, library: Library, backbone: Callable[[], Backbone], request: TuneRequest,
                  tuner: Callable[..., tuple[list[Item], str]] | None = None) -> Job:
    """Queue ``run_tuning`` for ``request`` on the runner (resumable: a resumed job continues from the checkpoint);
    each step lands in ``job.events``, the prompt ids in ``job.result``. ``backbone`` loads the model when the job
    starts, not when it is queued. ``tuner``: what runs it, with ``run_tuning``'s arguments (on ZeroGPU,
    ``studio.space.tuner()`` runs it as GPU-sized calls)."""
    tuner = tuner or run_tuning

    def work(job: Job) -> list[str]:
        def on_progress(event: dict) -> None:
            job.events.append(event)
            job.progress = event["step"] / max(event["steps"], 1)

        started = time.strftime("%Y-%m-%dT%H:%M:%S")  # as an item's ``created``: what is older was there before
        items, status = tuner(library, backbone(), list(request.tasks), list(request.seeds), request.config,
                              request.n_tokens, request.init, on_progress=on_progress, should_stop=job.cancel.is_set)
        if items:
            job.progress = 1.0
            job.message = stored_message(items, started)
        else:
            job.message = (f"{status} at step {job.events[-1]['step'] if job.events else 0}: the checkpoint is "
                           "kept; Resume (or Start with the same settings) continues from it")
        return [i.id for i in items]

    return runner.submit(request.title, work, spec=request, resumable=True)


def progress_summary(job: Job | Sequence[dict]) -> dict:
    """Where a tuning job stands, from the step events ``tune`` reports into ``job.events``: {} before its first
    step, else "step", "steps", "train_loss" (mean over its prompts at the last step; None without losses),
    "examples_per_s", "eta_s" (None where the event has none), and from the last validation "val_accuracies" (one per
    prompt) and "val_accuracy" (their mean), both None before the first. The Tune tab, the MCP tool, the CLI and
    build-library all show these numbers, so they are computed here once. ``job`` may be a list of events instead:
    a progress callback has no ``Job`` (the CLI's bars pass the event just reported)."""
    events = job.events if isinstance(job, Job) else job
    if not events:
        return {}
    event = events[-1]
    losses = event.get("train_loss") or []
    validated = next((e["validation"] for e in reversed(events) if e.get("validation")), None)
    accuracies = [v["val_accuracy"] for v in validated] if validated else None
    return {"step": event["step"], "steps": event["steps"],
            "train_loss": sum(losses) / len(losses) if losses else None,
            "examples_per_s": event["examples_per_s"], "eta_s": event.get("eta_s"),
            "val_accuracies": accuracies, "val_accuracy": sum(accuracies) / len(accuracies) if accuracies else None}


# ---- the background runner ------------------------------------------------------------------------------------
FINISHED = ("done", "cancelled", "failed")
ACTIVE = ("queued", "running")


@dataclass
class Job:
    """A queued piece of work with what the UI shows about it."""

    id: str
    title: str
    status: str = "queued"  # queued, running, done, cancelled, failed
    message: str = ""
    progress: float = 0.0
    events: list[dict] = field(default_factory=list)
    result: object = None
    created: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)
    spec: object = None  # what the job runs (a ``TuneRequest`` for tuning jobs)
    resumes: str | None = None  # the stopped job this one resumes
    resumed_by: str | None = None  # the job that resumes this one: a job is resumed once
    owner: str | None = None  # who started it (a public Space's visitor, ``studio.ui.visitors``); None: anyone


class JobRunner:
    """One worker thread, a FIFO queue. ``submit(title, fn)`` where ``fn(job)`` reports into ``job.events``; ``fn``
    runs in the context (``contextvars``) of the call that queued it, so it acts for whoever asked (on a Space: that
    visitor's library and GPU quota).

    The runner owns the rules about its jobs, whoever calls it: a finished job cannot be cancelled, and only a
    cancelled or failed resumable job can be resumed, once (a second resume would run and store the work twice)."""

    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self._work_of: dict[str, Callable[[Job], object]] = {}
        self._lock = threading.Lock()  # two clicks on Resume at once must not both pass the check
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, daemon=True, name="studio-jobs")
        self._worker.start()

    def submit(self, title: str, work: Callable[[Job], object], spec: object = None, resumable: bool = False,
               owner: str | None = None) -> Job:
        """Queue ``work(job)``; ``resumable``: running it again continues it (``resume``), so it is kept."""
        job = Job(uuid.uuid4().hex[:8], title, spec=spec, owner=owner)
        with self._lock:
            self.jobs[job.id] = job
            if resumable:
                self._work_of[job.id] = work
        self._queue.put((job, work, contextvars.copy_context()))
        return job

    def ahead_of(self, job: Job) -> int:
        """How many jobs wait or run before ``job``, for "N job(s) ahead of it" (``jobs_ahead``)."""
        return jobs_ahead(self.jobs.values(), job)

    def get(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise StudioError(f"no job {job_id!r} in this session: the jobs table lists them")
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        """Stop a job: a queued one never starts, a running one stops after its current step."""
        job = self.get(job_id)
        if job.status in FINISHED:
            raise StudioError(f"job {job.id} already finished ({job.status}): nothing to cancel")
        job.cancel.set()
        if job.status == "queued":
            job.status = "cancelled"
        return job

    def resume(self, job_id: str) -> Job:
        """Queue a cancelled or failed job's work again as a new job (it continues from its checkpoint), once."""
        with self._lock:
            job = self.get(job_id)
            if job.status not in ("cancelled", "failed"):
                raise StudioError(f"job {job.id} is {job.status}: only a cancelled or failed job can be resumed")
            if job.id not in self._work_of:
                raise StudioError(f"job {job.id} ({job.title}) cannot be resumed: start it again with the same "
                                  "settings")
            if job.resumed_by:
                raise StudioError(f"job {job.id} was already resumed as {job.resumed_by}: watch that one")
            again = Job(uuid.uuid4().hex[:8], job.title, spec=job.spec, resumes=job.id, owner=job.owner)
            job.resumed_by = again.id
            self.jobs[again.id] = again
            self._work_of[again.id] = self._work_of[job.id]
        self._queue.put((again, self._work_of[again.id], contextvars.copy_context()))
        return again

    def _work(self) -> None:
        while True:
            job, work, context = self._queue.get()
            if job.cancel.is_set():
                continue
            job.status = "running"
            try:
                job.result = context.run(work, job)
                # a cancel that arrives after the work stored its results does not undo them
                job.status = "cancelled" if job.cancel.is_set() and not job.result else "done"
            except StudioError as error:
                job.status, job.message = "failed", str(error)
            except Exception as error:  # a bug: keep the worker alive, show one line, log the rest
                job.status, job.message = "failed", f"{type(error).__name__}: {error}"
                traceback.print_exc()


def jobs_ahead(jobs: Iterable[Job], job: Job) -> int:
    """Of ``jobs`` (in the order they were queued: a runner's ``jobs``), those queued or running before ``job``. The
    queue is FIFO, so these are the jobs it waits for; ``VisitorJobs`` counts a visitor's own jobs with it."""
    ahead = 0
    for other in list(jobs):  # a copy: another thread may queue a job meanwhile
        if other is job:
            return ahead
        ahead += other.status in ACTIVE
    return ahead
