"""Each visitor of a public Space in their own space: their own library and their own jobs.

Off a Space the studio is one person's workbench: one library, one job list (``STUDIO_VISITORS=shared``, the
default there). On a Space (``STUDIO_VISITORS=own``, the default there) every visitor gets a user library of their
own, keyed by their Hugging Face login when they sign in (it is there again on their next visit) and by their browser
session otherwise (it lasts while the page stays open: Download my library keeps it), with the prebuilt library
shared read-only beneath it. The job queue stays one (one worker, first come first served), but a visitor lists,
watches, cancels and resumes only the jobs they started, and may have at most ``MAX_ACTIVE_JOBS`` waiting or running.

Who is asking is read from the event being handled (Gradio's request: ``username`` once signed in, else
``session_hash``); a job runs in the context of the event that started it (``JobRunner``), so its results land in
its starter's library although it runs on the worker thread.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

from studio import StudioError
from studio.files import scratch_name
from studio.jobs import Job, JobRunner, jobs_ahead
from studio.library import Library

MAX_ACTIVE_JOBS = 2  # a visitor's jobs waiting or running at once, so that one visitor cannot fill the queue
MAX_JOB_STEPS = 1000  # training steps of one job (each run of a few-shot study)
MAX_JOB_PROMPTS = 8  # prompts one tuning job trains together (tasks x seeds)
MAX_JOB_EXAMPLES = 1000  # test examples per few-shot run
MAX_JOB_ROWS = 100_000  # example rows a job's model passes read (training and validation); 8 prompts x 1000 steps at
# the default batch of 8, validated every 50 steps on 100 examples, read 80,000
MAX_JOB_VIRTUAL_TOKENS = 100  # a prompt's length (the paper's prompts: 50 to 100 tokens); each row carries them
SESSION_LIBRARY_IDLE_S = 24 * 3600  # a signed-out visitor's library is removed this long after its last use
EMPTY_LIBRARY_IDLE_S = 3600  # ... and sooner when it holds nothing (each new session makes one, even to look)
SWEEP_EVERY_S = 60  # at most one sweep a minute: a burst of new sessions must not scan the folder each time
SWEEPS_OFF = "sweeps run on your own machine or a private Space (STUDIO_VISITORS=shared), not on a public one"
OPEN_LIBRARIES = 256  # visitor libraries kept open (opening one again is cheap; this only bounds memory)


def visitor_mode(environ: MutableMapping[str, str] = os.environ) -> str:
    """"own" (a library and job list per visitor) or "shared" (one of each): ``STUDIO_VISITORS``, else "own" on a
    Hugging Face Space and "shared" everywhere else."""
    from studio.space import on_space

    mode = (environ.get("STUDIO_VISITORS") or ("own" if on_space(environ) else "shared")).strip().lower()
    if mode not in ("own", "shared"):
        raise StudioError(f"STUDIO_VISITORS must be 'own' or 'shared' (got {mode[:40]!r})")
    return mode


def current_request():
    """The Gradio request of the event being handled on this thread (None outside an event, e.g. while the page
    is laid out). Gradio keeps it in a context variable for its own helpers, and Hugging Face's ``spaces`` package
    reads the same variable to charge ZeroGPU time to the visitor; this is the one place the studio reads it
    (tests/test_visitors.py fails if a Gradio upgrade moves it)."""
    from gradio.context import LocalContext

    return LocalContext.request.get(None)


_ACTING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("studio_acting_for", default=None)


@contextmanager
def acting_for(key: str | None) -> Iterator[None]:
    """Act for visitor ``key`` where Gradio's request is not at hand: ZeroGPU runs a ``@gpu`` handler in another
    process and hands it no request (``common.gpu_for_visitor`` reads the visitor before and passes it on)."""
    token = _ACTING_FOR.set(key)
    try:
        yield
    finally:
        _ACTING_FOR.reset(token)


def asking_visitor() -> str | None:
    """The visitor this code acts for: the one ``acting_for`` names, else the one of the event being handled."""
    return _ACTING_FOR.get() or visitor_key(current_request())


def visitor_key(request) -> str | None:
    """"user:NAME" for a signed-in visitor, "session:HASH" otherwise; None without a request."""
    if request is None:
        return None
    username = getattr(request, "username", None)
    if username:
        return f"user:{username}"
    session = getattr(request, "session_hash", None)
    return f"session:{session}" if session else None


def folder_name(key: str) -> str:
    """A visitor's library folder: a hash of the key (a login or session id never becomes a path), "u-" for
    signed-in visitors (kept) and "s-" for sessions (swept when idle)."""
    return ("u-" if key.startswith("user:") else "s-") + hashlib.sha256(key.encode()).hexdigest()[:20]


def sweep_idle_sessions(root: Path, keep: set[str], idle_s: float = SESSION_LIBRARY_IDLE_S,
                        empty_idle_s: float = EMPTY_LIBRARY_IDLE_S) -> list[str]:
    """Remove signed-out visitors' libraries not used for ``idle_s``, or ``empty_idle_s`` when they hold no item
    (never a signed-in visitor's, never one in ``keep``): a public Space's disk does not fill up with abandoned
    sessions, nor with the empty libraries of sessions that only looked (or a script opening sessions)."""
    removed, now = [], time.time()
    for folder in root.glob("s-*"):
        if folder.name in keep or not (folder / "catalog.sqlite").is_file():  # only libraries this module made
            continue
        used = max((p.stat().st_mtime for p in (folder, *folder.glob("catalog.sqlite*"))), default=now)
        empty = not any((folder / "items").glob("*.safetensors"))
        if now - used >= (empty_idle_s if empty else idle_s):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


class Visitors:
    """The visitors' libraries under ``home.root / "visitors"`` and their share of the one job queue."""

    def __init__(self, home: Library, runner: JobRunner, max_active_jobs: int = MAX_ACTIVE_JOBS):
        self.home = home
        self.root = home.root / "visitors"
        self.runner = runner
        self.max_active_jobs = max_active_jobs
        self._libraries: OrderedDict[str, Library] = OrderedDict()
        self._lock = threading.Lock()
        self._swept_at = 0.0
        self._page: Library | None = None

    def key(self) -> str | None:
        """The asking visitor; None only outside any event (the page being laid out). An event whose request
        names no visitor (a direct REST call carries no session) is refused: it would otherwise act on the home
        library and share one job list and one set of uploads with every such call."""
        key = asking_visitor()
        if key is None and current_request() is not None:
            raise StudioError("this call names no visitor (no session): use the page, or gradio_client, which "
                              "joins the queue with a session")
        return key

    def library(self) -> Library:
        """The asking visitor's library; outside an event (laying out the page) ``page``, what a new visitor sees."""
        key = self.key()
        if key is None:
            return self.page
        with self._lock:
            library = self._libraries.get(key)
            if library is None:
                name = folder_name(key)
                if not (self.root / name).exists() and time.monotonic() - self._swept_at >= SWEEP_EVERY_S:
                    self._swept_at = time.monotonic()
                    sweep_idle_sessions(self.root, self._in_use())
                library = Library(self.root / name, parents=self.home.parents)
                self._libraries[key] = library
                while len(self._libraries) > OPEN_LIBRARIES:
                    self._libraries.popitem(last=False)
            self._libraries.move_to_end(key)
            return library

    @property
    def page(self) -> Library:
        """The library the page is laid out from: an empty one over the prebuilt library, as a new visitor's is.
        Never the home library: its items (ids, names, scores) would be in the page's config for every visitor.
        Nothing writes to it (every write is an event, which has its visitor), so it lives in a temporary folder:
        a read-only home library lays the page out too."""
        with self._lock:
            if self._page is None:
                folder = Path(tempfile.mkdtemp(prefix=scratch_name("page")))  # swept once this process is gone
                self._page = Library(folder, parents=self.home.parents)
            return self._page

    def _in_use(self) -> set[str]:
        """Folders a sweep must leave: the libraries open now, and those of visitors with a job waiting or running
        (a job writes into the library it was started from, maybe after hours in the queue)."""
        owners = {job.owner for job in list(self.runner.jobs.values())
                  if job.owner and job.status in ("queued", "running")}
        return {folder_name(key) for key in (*self._libraries, *owners)}

    def jobs(self) -> VisitorJobs:
        return VisitorJobs(self, self.key())


def job_too_big(spec: object) -> str | None:
    """Why a visitor may not queue the job ``spec`` describes (None: they may): one visitor's job must not hold
    the one queue for hours."""
    from studio.fewshot import FewShotPlan
    from studio.jobs import TuneRequest

    if isinstance(spec, TuneRequest):
        prompts = len(spec.tasks) * len(spec.seeds)
        if prompts > MAX_JOB_PROMPTS:
            return f"{prompts} prompts in one job (tasks x seeds); at most {MAX_JOB_PROMPTS} per job here"
        if spec.n_tokens > MAX_JOB_VIRTUAL_TOKENS:
            return f"prompts of {spec.n_tokens} virtual tokens; at most {MAX_JOB_VIRTUAL_TOKENS} here"
        steps = spec.config.steps
        rows = prompts * _rows_per_prompt(spec.config)
    elif isinstance(spec, FewShotPlan):
        if spec.eval_limit > MAX_JOB_EXAMPLES:
            return f"{spec.eval_limit} test examples per run; at most {MAX_JOB_EXAMPLES} here"
        steps = max(spec.config.steps, spec.mixture.steps if spec.mixture else 0)
        rows = (spec.rows() * (_rows_per_prompt(spec.config) + spec.eval_limit)  # each (shots, start) run
                + (_rows_per_prompt(spec.mixture) if spec.mixture else 0))  # tuning the multi-task start
    else:
        return SWEEPS_OFF
    if steps > MAX_JOB_STEPS:
        return f"{steps} steps; at most {MAX_JOB_STEPS} per job here"
    if rows > MAX_JOB_ROWS:
        return (f"about {rows:,} example rows to read (prompts x steps x batch size, plus every validation); at most "
                f"{MAX_JOB_ROWS:,} per job here: fewer steps, a smaller batch, fewer validation examples or a "
                "longer interval between validations")
    return None


def _rows_per_prompt(config) -> int:
    """The rows one prompt's tuning reads: its batches, and its validation sample at every validation."""
    return config.steps * config.batch_size + math.ceil(config.steps / config.eval_every) * config.val_limit


def limits_text(max_active_jobs: int = MAX_ACTIVE_JOBS) -> str:
    """The per-visitor limits, as the banner states them."""
    return (f"at most {max_active_jobs} of your jobs wait or run at once, each with at most {MAX_JOB_STEPS} steps, "
            f"{MAX_JOB_PROMPTS} prompts of at most {MAX_JOB_VIRTUAL_TOKENS} virtual tokens and {MAX_JOB_ROWS:,} "
            f"example rows read (few-shot runs: {MAX_JOB_EXAMPLES} test examples); sweeps are off")


class VisitorJobs:
    """The shared ``JobRunner`` as one visitor sees it: the same ``jobs`` / ``get`` / ``submit`` / ``cancel`` /
    ``resume``, over their own jobs only, with at most ``max_active_jobs`` of them waiting or running."""

    def __init__(self, visitors: Visitors, key: str | None):
        self._visitors, self.key = visitors, key
        self._runner = visitors.runner

    @property
    def jobs(self) -> dict[str, Job]:
        return {i: job for i, job in list(self._runner.jobs.items()) if job.owner == self.key}

    def get(self, job_id: str) -> Job:
        job = self._runner.jobs.get(job_id)
        if job is None or job.owner != self.key:  # another visitor's job does not exist for this one
            raise StudioError(f"no job {job_id!r} in this session: the jobs table lists them")
        return job

    def ahead_of(self, job: Job) -> int:
        """Every job waiting or running before ``job`` in the one queue, other visitors' too: their job waits for
        all of them (only the count is told, nothing about the jobs)."""
        return jobs_ahead(list(self._runner.jobs.values()), job)

    def _room_for_one_more(self) -> None:
        active = sum(job.status in ("queued", "running") for job in self.jobs.values())
        if active >= self._visitors.max_active_jobs:
            raise StudioError(f"you already have {active} job(s) waiting or running (at most "
                              f"{self._visitors.max_active_jobs} per visitor here): wait for one, or cancel one")

    def submit(self, title: str, work: Callable[[Job], object], spec: object = None, resumable: bool = False) -> Job:
        problem = job_too_big(spec)
        if problem:
            raise StudioError(f"this public studio limits each visitor's jobs: {problem}. Make the job smaller, or "
                              "run the studio on your own machine (README, Quick start) for bigger ones")
        with self._visitors._lock:  # two quick clicks must not both pass the count
            self._room_for_one_more()
            return self._runner.submit(title, work, spec, resumable, owner=self.key)

    def cancel(self, job_id: str) -> Job:
        return self._runner.cancel(self.get(job_id).id)

    def resume(self, job_id: str) -> Job:
        with self._visitors._lock:
            self.get(job_id)
            self._room_for_one_more()
            return self._runner.resume(job_id)
