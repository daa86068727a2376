"""The few-shot study: the experiment, what it may compare, the recipes its runs tune with, and its run as a job.

``few_shot_study`` does the experiment (the starts, k-shot tuning, test scores; ``tune_and_test`` is one run of it).
The rules every entry point checks before it starts live here too: ``plan_few_shot`` turns a request (as typed into a
form: text, numbers or nothing) into a checked ``FewShotPlan`` (known target task, source TPVs, an origin, shots and
budgets in range, the ``TuneConfig`` of the runs and of SPoT's multi-task prompt), so a mistake shows before anything
is queued, and ``submit_few_shot`` runs it on the ``JobRunner`` with its progress and a one-line ending.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from studio import StudioError
from studio.analysis import combine
from studio.backbones import Backbone
from studio.evaluation import evaluate, stratified_order
from studio.jobs import Job, JobRunner
from studio.library import Item, Library, content_id, metric_key, result_settings
from studio.limits import TASK_JOINER, whole_number
from studio.settings import TuneConfig
from studio.tasks import TaskData, load_task
from studio.tuning import TrainingPrompt, tune

MAX_SHOTS = 1000  # training examples per run
MAX_TEST_EXAMPLES = 2000
MAX_MIXTURE_STEPS = 5000  # steps of the multi-task prompt (0 leaves it out)
VAL_LIMIT = 32  # validation examples while a run tunes: few-shot runs are short, the test split decides


@dataclass(frozen=True)
class FewShotPlan:
    """A checked few-shot study: what ``few_shot_study`` gets, and how many rows a finished one has."""

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
    what runs each tuning-and-testing run (``tune_and_test``; on ZeroGPU ``space.few_shot_runner()``)."""
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


# ---- the experiment: the starts, k-shot tuning and test scores --------------------------------------------------
def tune_and_test(backbone: Backbone, jobs: list, config, test_task=None, eval_limit: int | None = None,
                  on_progress=None, should_stop=None) -> tuple:
    """One run of the few-shot study or the multi-task prompt: ``tune`` the jobs and, when it finished, score their
    best prompts on ``test_task``'s test split; with ``config`` None nothing is tuned and the jobs' starting prompts
    are scored. Returns (TuneOutcome or None, [EvalResult]). This is the unit that runs on one GPU call on ZeroGPU
    (``space.tune_and_test_on_gpu``, with the same arguments)."""
    if config is None:
        outcome, prompts = None, [j.init if j.init is not None else j.origin for j in jobs]
    else:
        outcome = tune(backbone, jobs, config, on_progress, should_stop)
        prompts = [r.best_prompt for r in outcome.results]
        if outcome.status != "done":
            return outcome, []
    if test_task is None:
        return outcome, []
    return outcome, evaluate(backbone, prompts, test_task, "test", eval_limit, keep_records=False)


def multitask_prompt(library: Library, backbone: Backbone, origin_id: str, tasks: list[str | TaskData], config,
                     on_progress=None, should_stop=None, run=tune_and_test) -> Item | None:
    """SPoT's multi-task baseline: ONE prompt tuned from the origin on the mixture of ``tasks`` (equal shares of
    every batch), stored in the library as a prompt whose task is "A+B". Reused when it is already there (same
    origin, data and settings); None when ``should_stop`` cancelled the tuning. ``tasks``: names, or the tasks'
    data itself (a planned study keeps the data it was planned on)."""
    if len(tasks) < 2:
        raise StudioError("a multi-task prompt needs at least two tasks")
    origin = library.get(origin_id)
    if origin.kind != "origin":
        raise StudioError(f"{origin_id} is a {origin.kind}; choose an origin to start from")
    data = [t if isinstance(t, TaskData) else load_task(t) for t in tasks]
    names = [t.spec.name for t in data]
    name = TASK_JOINER.join(names)
    recipe = {"mixture": names, "data_hashes": [t.data_hash for t in data], "model": backbone.name,
              **result_settings(config)}
    for item in library.items(kind="prompt", task=name):
        if item.origin_id == origin_id and all(item.recipe.get(k) == v for k, v in recipe.items()):
            return item
    p0 = library.tensor(origin_id)
    jobs = [TrainingPrompt(task, p0, origin.seed or 0, mixture=name, label=task.spec.name) for task in data]
    outcome, _ = run(backbone, jobs, config, None, None, on_progress, should_stop)
    if outcome.status != "done":
        return None
    metrics = {metric_key("validation", "accuracy", r.job.task.spec.name): r.best_metrics["accuracy"]
               for r in outcome.results}
    return library.add("prompt", outcome.results[0].best_prompt, origin.model,
                       name=f"multi-task {name} / origin {origin.seed}", task=name, seed=origin.seed,
                       origin_id=origin_id, recipe={**recipe, "best_step": outcome.results[0].best_step},
                       metrics=metrics, item_id=content_id("prompt", origin_id, recipe), exist_ok=True)


def few_shot_inits(library: Library, origin_id: str, source_vector_ids: list[str],
                   multitask_id: str | None = None) -> dict[str, torch.Tensor]:
    """The starting points compared: the random origin P0, P0 + tau_s for each source (SPoT-style single source:
    the source's own tuned prompt when tau_s comes from this origin), P0 + sum tau_s (the paper's TPV init) and,
    when given, a prompt tuned on the sources' mixture (SPoT's multi-task init, see ``multitask_prompt``)."""
    if not source_vector_ids:
        raise StudioError("choose at least one source task prompt vector")
    origin = library.get(origin_id)
    if origin.kind != "origin":
        raise StudioError(f"{origin_id} is a {origin.kind}; choose an origin to start from")
    p0 = library.tensor(origin_id)
    inits = {"random origin": p0}
    for vector_id in source_vector_ids:
        item = library.get(vector_id)
        prompt, _ = combine(library, origin_id, [vector_id], [1.0])
        inits[f"single source: {item.task or item.name} (o{item.seed})"] = prompt
    if len(source_vector_ids) > 1:
        inits["TPV sum: " + " + ".join(library.get(v).task or v for v in source_vector_ids)], _ = combine(
            library, origin_id, source_vector_ids, [1.0] * len(source_vector_ids))
    if multitask_id:
        item = library.get(multitask_id)
        if item.kind != "prompt":
            raise StudioError(f"{multitask_id} is a {item.kind}; the multi-task init must be a tuned prompt")
        if item.origin_id != origin_id:
            raise StudioError(f"{multitask_id} was tuned from another origin than {origin_id}: the starts must share "
                              "the origin to be compared")
        inits[f"multi-task prompt: {item.task or item.name}"] = library.tensor(multitask_id)
    return inits


def mixture_task_names(library: Library, source_vector_ids: list[str]) -> list[str]:
    """The tasks a few-shot study's multi-task start mixes: those of its source TPVs, in their order."""
    return list(dict.fromkeys(t for t in (library.get(v).task for v in source_vector_ids) if t))


def few_shot_study(library: Library, backbone: Backbone, target: str | TaskData, source_vector_ids: list[str], origin_id: str,
                   shots: list[int], config, mixture_config=None, on_progress=None, should_stop=None,
                   eval_limit: int | None = 200, run=tune_and_test,
                   mixture_tasks: list[TaskData] | None = None) -> list[dict] | None:
    """``few_shot_experiment`` plus, with ``mixture_config``, SPoT's multi-task start: one prompt tuned from the
    origin on the source vectors' tasks mixed (reused when stored), compared as one more init. None when
    ``should_stop`` cancelled the multi-task tuning (nothing else ran). ``mixture_tasks``: those tasks' data as
    planned (else loaded by name now)."""
    multitask_id = None
    if mixture_config is not None:
        tasks = mixture_tasks or mixture_task_names(library, source_vector_ids)
        if len(tasks) < 2:
            raise StudioError("a multi-task prompt needs source TPVs of two or more tasks")

        def mixture_progress(event: dict) -> None:
            if on_progress:
                on_progress({"stage": "tuning the multi-task prompt", "step": event["step"], "steps": event["steps"]})

        multitask = multitask_prompt(library, backbone, origin_id, tasks, mixture_config, mixture_progress,
                                     should_stop, run)
        if multitask is None:
            return None
        multitask_id = multitask.id
    return few_shot_experiment(library, backbone, target, source_vector_ids, origin_id, shots, config, on_progress,
                               should_stop, eval_limit, multitask_id=multitask_id, run=run)


def few_shot_experiment(library: Library, backbone: Backbone, target: str | TaskData, source_vector_ids: list[str],
                        origin_id: str, shots: list[int], config, on_progress=None, should_stop=None,
                        eval_limit: int | None = 200, seed: int = 0, multitask_id: str | None = None,
                        run=tune_and_test) -> list[dict]:
    """Tune the target task from each init on its first k (class-balanced) training examples, for each k in
    ``shots``, and score the best prompt on the test split. 0 shots = the init evaluated as it is. ``target``: a
    task name, or the task's data itself (a planned study keeps the data it was planned on).

    ``config`` is a ``TuneConfig``; its batch size is capped at k. Returns one row per (shots, init). Stops
    early (returning the rows so far) when ``should_stop`` says so.
    """
    shots = sorted({int(k) for k in shots})
    if not shots or shots[0] < 0:
        raise StudioError("shots must be whole numbers >= 0, e.g. 0, 10, 50")
    task = target if isinstance(target, TaskData) else load_task(target)
    train = stratified_order(task.train, seed)
    if shots[-1] > len(train):
        raise StudioError(f"{task.spec.name} has {len(train)} training examples; choose shots up to that")
    inits = few_shot_inits(library, origin_id, source_vector_ids, multitask_id)
    for name, tensor in inits.items():
        if tensor.shape[1] != backbone.hidden_size:
            raise StudioError(f"{name} has width {tensor.shape[1]} but {backbone.name} has {backbone.hidden_size}")
    origin_seed = library.get(origin_id).seed or 0
    p0 = library.tensor(origin_id)
    names = list(inits)
    rows: list[dict] = []

    def report(stage: str, k: int, event: dict | None = None) -> None:
        if on_progress:
            on_progress({"stage": stage, "shots": k, "rows": list(rows), **(event or {})})

    for k in shots:
        if should_stop and should_stop():
            break
        jobs = [TrainingPrompt(task, p0, origin_seed, init=inits[n], train_examples=train[:k], label=n)
                for n in names]
        if k == 0:
            report("evaluating the inits (0 shots)", 0)
            _, results = run(backbone, jobs, None, task, eval_limit)
            steps = [0] * len(names)
        else:
            report(f"tuning {len(names)} prompts on {k} shots", k)
            outcome, results = run(backbone, jobs, replace(config, batch_size=min(config.batch_size, k)), task,
                                   eval_limit, lambda event, k=k: report(f"tuning on {k} shots", k, event),
                                   should_stop)
            if outcome.status != "done":
                break
            steps = [result.best_step for result in outcome.results]
        for name, step, result in zip(names, steps, results):
            rows.append({"shots": k, "init": name, "best_step": step,
                         **{m: result.metrics[m] for m in ("accuracy", "accuracy_se", "macro_f1", "n")}})
        report(f"{k} shots done", k)
    return rows
