"""The few-shot study as a job: what it may compare, the recipes its runs tune with, and its run on the job queue.

``analysis.few_shot_study`` does the experiment (the starts, k-shot tuning, test scores). This module holds the rules
every entry point checks before it starts: ``plan_few_shot`` turns a request (as typed into a form: text, numbers or
nothing) into a checked ``FewShotPlan`` (known target task, source TPVs, an origin, shots and budgets in range, the
``TuneConfig`` of the runs and of SPoT's multi-task prompt), so a mistake shows before anything is queued, and
``submit_few_shot`` runs it on the ``JobRunner`` with its progress and a one-line ending.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from studio import StudioError
from studio.analysis import few_shot_inits, few_shot_study, mixture_task_names, tune_and_test
from studio.backbones import Backbone
from studio.jobs import Job, JobRunner
from studio.library import Library
from studio.tasks import TaskData, load_task
from studio.tuning import TuneConfig, whole_number

MAX_SHOTS = 1000  # training examples per run
MAX_TEST_EXAMPLES = 2000
MAX_MIXTURE_STEPS = 5000  # steps of the multi-task prompt (0 leaves it out)
VAL_LIMIT = 32  # validation examples while a run tunes: few-shot runs are short, the test split decides


@dataclass(frozen=True)
class FewShotPlan:
    """A checked few-shot study: what ``analysis.few_shot_study`` gets, and how many rows a finished one has."""

    target: str
    sources: tuple[str, ...]
    origin_id: str
    shots: tuple[int, ...]
    config: TuneConfig  # each k-shot run's recipe
    mixture: TuneConfig | None  # the multi-task prompt's recipe; None leaves that start out
    eval_limit: int  # test examples per run
    starts: int  # the starts compared besides the multi-task prompt (origin, each source, the sum)
    # the target's data as it was when the study was planned: the job, which may start later, runs on it (an
    # upload replaced or dropped meanwhile changes nothing)
    target_data: TaskData = field(repr=False, compare=False)
    mixture_data: tuple[TaskData, ...] = field(default=(), repr=False, compare=False)  # the multi-task start's

    @property
    def title(self) -> str:
        return f"few-shot {self.target} from {len(self.sources)} TPV(s), shots {list(self.shots)}"

    def rows(self) -> int:
        """Rows of a study that ran to the end: one per (shots, start)."""
        return len(self.shots) * (self.starts + (1 if self.mixture else 0))


def parse_shots(text: str | None) -> list[int]:
    """'0, 10, 50' -> [0, 10, 50]: whole numbers from 0 to MAX_SHOTS, sorted, repeats dropped."""
    try:
        shots = sorted({int(part) for part in (text or "").replace(";", ",").split(",") if part.strip()})
    except ValueError:
        raise StudioError(f"shots must be whole numbers separated by commas, e.g. 0, 10, 50 (got {text!r})") from None
    if not shots or shots[0] < 0 or shots[-1] > MAX_SHOTS:
        raise StudioError(f"give one or more shot counts between 0 and {MAX_SHOTS}, e.g. 0, 10, 50")
    return shots


def few_shot_configs(steps: object, lr: object, batch_size: object, eval_limit: int,
                     mixture_steps: int = 0) -> tuple[TuneConfig, TuneConfig | None]:
    """The recipes: each k-shot run validates twice (halfway and at the end) on at most ``VAL_LIMIT`` examples; the
    multi-task prompt (SPoT's start; None with 0 steps) tunes with the same lr and batch, validating four times."""
    typed = TuneConfig.parse(steps=steps, batch_size=batch_size, lr=lr)  # read and checked as any config is
    config = replace(typed, eval_every=max(1, typed.steps // 2), val_limit=min(VAL_LIMIT, eval_limit))
    mixture = TuneConfig(steps=mixture_steps, batch_size=config.batch_size, lr=config.lr,
                         eval_every=max(1, mixture_steps // 4), val_limit=min(VAL_LIMIT, eval_limit)) \
        if mixture_steps else None
    return config, mixture


def _counts(eval_limit: object, mixture_steps: object) -> tuple[int, int]:
    """Test examples and multi-task steps, as typed (an empty multi-task field is 0), in their ranges."""
    mixture_steps = 0 if mixture_steps in (None, "") else whole_number(mixture_steps, "multi-task prompt steps")
    if not 0 <= mixture_steps <= MAX_MIXTURE_STEPS:
        raise StudioError(f"multi-task prompt steps must be between 0 (leave it out) and {MAX_MIXTURE_STEPS}")
    eval_limit = whole_number(eval_limit, "test examples")
    if not 1 <= eval_limit <= MAX_TEST_EXAMPLES:
        raise StudioError(f"test on 1 to {MAX_TEST_EXAMPLES} examples")
    return eval_limit, mixture_steps


def plan_few_shot(library: Library, target: str | None, sources: list[str] | None, origin_id: str | None,
                  shots: str | list[int], steps: object, lr: object, batch_size: object, eval_limit: object,
                  mixture_steps: object = 0) -> FewShotPlan:
    """Check a few-shot request against the library and derive its recipes; any problem is one StudioError."""
    if not target:
        raise StudioError("choose a target task")
    target_data = load_task(target)  # an unknown target fails now, not in the job (a name is never read as a path)
    sources = [s for s in (sources or []) if s]
    if not sources:
        raise StudioError("choose at least one source task prompt vector")
    if not origin_id:
        raise StudioError("choose an origin to start from")
    shots = parse_shots(shots if isinstance(shots, str) else ",".join(str(k) for k in shots))
    eval_limit, mixture_steps = _counts(eval_limit, mixture_steps)
    config, mixture = few_shot_configs(steps, lr, batch_size, eval_limit, mixture_steps)
    source_items = [library.get(source) for source in sources]
    for item in source_items:
        if item.kind != "vector":
            raise StudioError(f"{item.id} is not a task prompt vector")
    if library.get(origin_id).kind != "origin":
        raise StudioError(f"{origin_id} is not an origin")
    starts = few_shot_inits(library, origin_id, sources)  # shape and kind problems show now
    mixed = mixture_task_names(library, sources) if mixture else []
    if mixture and len(mixed) < 2:
        raise StudioError("a multi-task prompt needs source TPVs of two or more tasks (or set its steps to 0)")
    return FewShotPlan(target, tuple(sources), origin_id, tuple(shots), config, mixture, eval_limit, len(starts),
                       target_data, tuple(load_task(task) for task in mixed))


def submit_few_shot(runner: JobRunner, library: Library, backbone: Callable[[], Backbone], plan: FewShotPlan,
                    run: Callable | None = None) -> Job:
    """Queue the study; the job's progress runs over the shot counts, each event with rows lands in ``job.events``
    (the table so far), and ``job.result`` is the rows. ``backbone`` loads the model when the job starts. ``run``:
    what runs each tuning-and-testing run (``analysis.tune_and_test``; on ZeroGPU ``space.few_shot_runner()``)."""
    shots = list(plan.shots)

    def work(job: Job) -> list[dict]:
        def progress(event: dict) -> None:
            index = shots.index(event["shots"]) if event.get("shots") in shots else 0
            within = event["step"] / event["steps"] if event.get("steps") else 0.0
            job.progress = min(1.0, (index + within) / len(shots))
            job.message = event["stage"] + (f", step {event['step']}/{event['steps']}" if event.get("steps") else "")
            if "step" not in event:
                job.events.append({"stage": event["stage"], "rows": event["rows"]})

        rows = few_shot_study(library, backbone(), plan.target_data, list(plan.sources), plan.origin_id, shots,
                              plan.config, plan.mixture, progress, job.cancel.is_set, plan.eval_limit,
                              run=run or tune_and_test, mixture_tasks=list(plan.mixture_data))
        if rows is None:  # cancelled while tuning the multi-task prompt: nothing else ran
            job.message = "cancelled while tuning the multi-task prompt"
            return []
        job.progress, job.message = (1.0, "finished") if len(rows) == plan.rows() else (
            job.progress, f"stopped after {len({r['shots'] for r in rows})} of {len(shots)} shot counts")
        return rows

    return runner.submit(plan.title, work, spec=plan)
