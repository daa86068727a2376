"""Tuning jobs end to end (origins -> tuning -> library), and a background runner the UI queues them on.

``run_tuning`` is what the CLI, the UI and ``build-library`` all call: it makes (or reuses) the origins, trains
every (task, seed) prompt in one batched job, and stores origin, best prompt and task prompt vector with their
recipe and lineage. ``JobRunner`` runs such calls one at a time on a worker thread, with status, a live
history for the curves, and cancel.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio import StudioError
from studio.backbones import Backbone
from studio.config import cache_dir
from studio.library import Item, Library
from studio.prompts import TaskPromptVector, make_origin
from studio.tasks import TaskData
from studio.tuning import PromptJob, TuneConfig, tune


def origin_item(library: Library, backbone: Backbone, seed: int, n_tokens: int, init: str = "top5000") -> Item:
    """The library's origin for (model, seed, length, init), created on first use so every TPV shares it."""
    found = library.find_origin(backbone.name, seed, n_tokens, init)
    if found:
        return found
    tensor = make_origin(backbone, seed, n_tokens, init)
    return library.add("origin", tensor, backbone.name, name=f"origin {seed} ({n_tokens} tokens)", origin=seed,
                       recipe={"init": init, "seed": seed, "n_tokens": n_tokens})


def run_tuning(
    library: Library, backbone: Backbone, tasks: list[TaskData], seeds: list[int], config: TuneConfig,
    n_tokens: int = 20, init: str = "top5000", on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None, checkpoint_dir: Path | None = None, name_prefix: str = "",
    keep_partial: bool = False,
) -> tuple[list[Item], str]:
    """Tune every task x seed in one batched job and store the results; returns (prompt items, status).

    Checkpoints go to a folder named after the job, so running the same job again after a crash resumes it.
    """
    if not tasks or not seeds:
        raise StudioError("choose at least one task and one origin seed")
    origins = {seed: origin_item(library, backbone, seed, n_tokens, init) for seed in seeds}
    jobs = [PromptJob(task, library.tensor(origins[seed].id), seed) for task in tasks for seed in seeds]
    own_checkpoint_dir = checkpoint_dir is None
    if checkpoint_dir is None:
        key = repr((backbone.name, [(t.spec.name, t.data_hash) for t in tasks], seeds, n_tokens, init, asdict(config)))
        checkpoint_dir = cache_dir("checkpoints") / hashlib.sha256(key.encode()).hexdigest()[:16]
    outcome = tune(backbone, jobs, config, on_progress, should_stop, checkpoint_dir)
    if outcome.status != "done" and not keep_partial:  # cancelled: the checkpoint stays for a resume
        return [], outcome.status
    items = []
    for result in outcome.results:
        task, seed = result.job.task, result.job.origin_seed
        recipe = {"model": backbone.name, "task": task.spec.name, "data_hash": task.data_hash, "seed": seed,
                  "init": init, "n_tokens": n_tokens, **asdict(config), "best_step": result.best_step,
                  "steps_done": outcome.steps_done,
                  "dtype": str(backbone.dtype).replace("torch.", ""), "device": backbone.device,
                  "seconds": round(outcome.seconds, 1), "history": result.history}
        metrics = {f"validation_{k[4:]}": v for k, v in result.best_metrics.items() if k.startswith("val_")}
        label = f"{name_prefix}{task.spec.name} / origin {seed}"
        prompt = library.add("prompt", result.best_prompt, backbone.name, name=label, task=task.spec.name,
                             origin=seed, origin_id=origins[seed].id, recipe=recipe, metrics=metrics)
        vector = TaskPromptVector.between(result.best_prompt, result.job.origin, backbone.name)
        library.add("vector", vector.delta, backbone.name, name=f"TPV {label}", task=task.spec.name, origin=seed,
                    origin_id=origins[seed].id, prompt_id=prompt.id, recipe={"from": prompt.id}, metrics=metrics)
        items.append(prompt)
    if own_checkpoint_dir:  # the job is in the library now
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    else:
        for path in checkpoint_dir.glob("state.*"):
            path.unlink()
    return items, "done"


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


class JobRunner:
    """One worker thread, a FIFO queue. ``submit(title, fn)`` where ``fn(job)`` reports into ``job.events``."""

    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, daemon=True, name="studio-jobs")
        self._worker.start()

    def submit(self, title: str, work: Callable[[Job], object]) -> Job:
        job = Job(uuid.uuid4().hex[:8], title)
        self.jobs[job.id] = job
        self._queue.put((job, work))
        return job

    def cancel(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise StudioError(f"no job {job_id!r}")
        job = self.jobs[job_id]
        job.cancel.set()
        if job.status == "queued":
            job.status = "cancelled"
        return job

    def _work(self) -> None:
        while True:
            job, work = self._queue.get()
            if job.cancel.is_set():
                continue
            job.status = "running"
            try:
                job.result = work(job)
                # a cancel that arrives after the work stored its results does not undo them
                job.status = "cancelled" if job.cancel.is_set() and not job.result else "done"
            except StudioError as error:
                job.status, job.message = "failed", str(error)
            except Exception as error:  # a bug: keep the worker alive, show one line, log the rest
                job.status, job.message = "failed", f"{type(error).__name__}: {error}"
                traceback.print_exc()
