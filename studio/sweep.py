"""Sweeps: a grid of tuning runs (models x tasks x origin seeds x recipe points) from one spec file, run here or
on a Ray cluster.

``load_spec`` reads and checks a TOML or YAML spec. ``plan`` packs it into groups, one per (model, recipe point),
each holding every task x seed of that point: the batched engine trains them together in one ``run_tuning`` call.
Every run's content ids are known before any model loads, so a group already in the library is skipped and a
rerun trains nothing. ``run_local`` tunes the groups here, one after another, straight into the library
(``submit_sweep``: as one background job of the ``JobRunner``).
``run_ray`` makes each group one Ray task that tunes into its own shard library; the driver merges a finished
shard into the library in one transaction and removes it, so a group is in the library whole or not at all.
Ray is imported only by ``run_ray``. The ``studio sweep`` command is in cli.py; docs/sweeps.md has the spec
format and the cluster set-up.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from studio import StudioError
from studio.config import hub_offline, is_hub_id
from studio.faults import kill_point
from studio.jobs import Job, JobRunner
from studio.library import Item, Library, NewItem, origin_id, tuned_prompt_id, vector_id
from studio.limits import check_prompt_length, parse_seeds
from studio.prompts import DEFAULT_INIT, TUNING_INITS
from studio.settings import TuneConfig
from studio.tasks import load_task, task_spec
from studio.tuning import has_checkpoint

# ---- the spec ----------------------------------------------------------------------------------------------------
SPEC_KEYS = ("models", "tasks", "seeds", "init", "recipe", "ray")
RECIPE_KEYS = {"lr": float, "steps": int, "batch_size": int, "n_tokens": int, "eval_every": int, "val_limit": int}
RAY_KEYS = {"num_cpus": float, "num_gpus": float, "shard_root": str}
MAX_RUNS = 10_000  # prompts in one sweep: a typo in a grid should not become a month of tuning


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep tunes. ``recipe`` maps a setting to its values (crossed); ``ray`` says how, not what."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    recipe: dict[str, tuple] = field(default_factory=dict)
    init: str = DEFAULT_INIT
    ray: dict = field(default_factory=dict)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a .toml/.yaml spec; any problem is one StudioError that names the file."""
    path = Path(path)
    data = _read_spec(path)
    try:
        spec = parse_spec(data)
    except StudioError as error:
        raise StudioError(f"{path.name}: {error}") from None
    root = spec.ray.get("shard_root")
    if root:  # relative to the spec, so the same spec works from any folder
        spec = replace(spec, ray={**spec.ray, "shard_root": str((path.parent / root).resolve())})
    return spec


def spec_syntax(path: str | Path) -> str:
    """"toml" or "yaml", from a spec file's name (the CLI's argument, the Tune tab's upload); any other is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise StudioError(f"a sweep spec is a .toml, .yaml or .yml file (got {Path(path).name!r})")
    return "toml" if suffix == ".toml" else "yaml"


MAX_SPEC_BYTES = 1024 * 1024  # a spec is a page of settings


def _read_spec(path: Path) -> dict:
    syntax = spec_syntax(path)
    if not path.is_file():  # a folder, or a pipe that would wait for a writer forever
        raise StudioError(f"cannot read the sweep spec {path}: " + ("it is not a file" if path.exists() else
                                                                     "there is no such file"))
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise StudioError(f"the sweep spec {path.name} is over {MAX_SPEC_BYTES // 1024} KB: a spec is a page of "
                          "settings")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise StudioError(f"cannot read the sweep spec {path}: {getattr(error, 'strerror', None) or error}") from None
    return spec_data(text, syntax, path.name)


def parse_spec_text(text: str | None, syntax: str) -> SweepSpec:
    """A spec from its text as written in an editor (the Tune tab's), checked exactly as a spec file is."""
    if not (text or "").strip():
        raise StudioError("write a sweep spec (or upload a .toml / .yaml file) first")
    return parse_spec(spec_data(text, syntax))


def spec_data(text: str, syntax: str, name: str = "the spec") -> dict:
    """The table a spec's text describes (``syntax`` "toml" or "yaml"); the Tune tab's editor uses it too."""
    if syntax not in ("toml", "yaml"):
        raise StudioError(f"unknown spec syntax {syntax!r}: toml or yaml")
    try:
        data = _parsed(text, syntax, name)
    except RecursionError:  # [[[[... thousands deep: no spec nests more than a few levels
        raise StudioError(f"{name} nests too deeply to be a sweep spec") from None
    if not isinstance(data, dict):
        raise StudioError(f"{name}: a sweep spec is a table of keys ({', '.join(SPEC_KEYS[:4])}, ...)")
    return data


def _parsed(text: str, syntax: str, name: str) -> object:
    if syntax == "toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise StudioError(f"{name}: TOML specs need Python 3.11 or later; write the spec as YAML") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise StudioError(f"{name} is not valid TOML: {error}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise StudioError(f"{name} is not valid YAML: {' '.join(str(error).split())}") from None
    return data


def parse_spec(data: dict) -> SweepSpec:
    """A spec from its parsed file: every key known, every list non-empty, every value of its type and in range."""
    _known_keys(data, SPEC_KEYS, "the spec")
    for key in ("models", "tasks", "seeds"):
        if key not in data:
            raise StudioError(f"the spec needs {key!r} (e.g. models = [\"smollm2-135m-instruct\"], tasks = [\"mr\"], "
                              "seeds = [0, 1])")
    models = tuple(_check_model(m) for m in _values("models", data["models"], str))
    tasks = tuple(task_spec(t).name for t in _values("tasks", data["tasks"], str))
    seeds = tuple(parse_seeds(",".join(str(s) for s in _values("seeds", data["seeds"], int))))
    init = data.get("init", DEFAULT_INIT)
    if init not in TUNING_INITS:
        raise StudioError(f"init must be one of {', '.join(TUNING_INITS)} (got {init!r})")
    recipe = data.get("recipe", {})
    if not isinstance(recipe, dict):
        raise StudioError("recipe must be a table of settings, e.g. [recipe] lr = [0.1, 0.2]")
    _known_keys(recipe, RECIPE_KEYS, "[recipe]")
    grid = {key: _values(f"recipe.{key}", recipe[key], RECIPE_KEYS[key]) for key in RECIPE_KEYS if key in recipe}
    for key, values in grid.items():
        for value in values:
            _check_setting(key, value)
    ray = data.get("ray", {})
    if not isinstance(ray, dict):
        raise StudioError("ray must be a table, e.g. [ray] num_gpus = 1")
    _known_keys(ray, RAY_KEYS, "[ray]")
    for key, value in ray.items():
        _check_ray_option(key, value)
    spec = SweepSpec(models, tasks, seeds, grid, init, dict(ray))
    runs = len(models) * len(tasks) * len(seeds) * math.prod(len(v) for v in grid.values())
    if runs > MAX_RUNS:
        raise StudioError(f"the sweep has {runs} runs; at most {MAX_RUNS} in one sweep: split it")
    return spec


def _known_keys(table: dict, known, where: str) -> None:
    unknown = [str(k) for k in table if k not in known]
    if unknown:
        raise StudioError(f"unknown key {unknown[0]!r} in {where}; the keys are {', '.join(known)}")


def _values(name: str, value: object, kind: type) -> tuple:
    """A scalar or a list of them, as a tuple in the given order without repeats."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise StudioError(f"{name} is an empty list: give at least one value")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else kind):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if kind is float and isinstance(v, str) else ""
            raise StudioError(f"{name} takes {'numbers' if kind is float else kind.__name__ + ' values'} "
                              f"or a list of them (got {v!r}){hint}")
        if kind is float and not math.isfinite(v):
            raise StudioError(f"{name} must be a finite number (got {v!r})")
    return tuple(dict.fromkeys(values))


def _check_setting(key: str, value) -> None:
    try:
        if key == "n_tokens":
            check_prompt_length(value, "recipe.n_tokens: a prompt")
        else:
            TuneConfig(**{key: value})
    except StudioError as error:
        raise StudioError(f"recipe.{key} = {value!r}: {error}") from None


def _check_ray_option(key: str, value) -> None:
    if key == "shard_root":
        if not isinstance(value, str) or not value.strip():
            raise StudioError("ray.shard_root must be a folder path (shared storage on a multi-node cluster)")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1024:
        raise StudioError(f"ray.{key} must be a number from 0 (per group; got {value!r})")


def _check_model(name: str) -> str:
    """A registry name, a local model folder, or (online) a hub id: what load_backbone accepts, checked cheaply."""
    from studio.weights import KNOWN_BACKBONES

    if not name.strip():
        raise StudioError("models cannot contain an empty name")
    if name in KNOWN_BACKBONES or Path(name).expanduser().is_dir():
        return name
    if not hub_offline() and is_hub_id(name):
        return name
    raise StudioError(f"unknown model {name!r}: use one of {', '.join(KNOWN_BACKBONES)}, a local model folder, or a "
                      "Hugging Face id with HF_HUB_OFFLINE=0")


def spec_hash(spec: SweepSpec) -> str:
    """A short id of what the spec tunes (not of how: the [ray] options are left out); names its shard folder."""
    what = {k: v for k, v in asdict(spec).items() if k != "ray"}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


# ---- the plan ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One prompt a sweep makes, by the content ids it will be stored under."""

    task: str
    seed: int
    origin_id: str
    prompt_id: str
    vector_id: str


@dataclass(frozen=True)
class RunGroup:
    """One ``run_tuning`` call: a model, a recipe point, and every task x seed of that point. Plain data, so it
    travels to a Ray worker as it is."""

    key: str
    model: str
    settings: dict  # TuneConfig keyword arguments
    n_tokens: int
    init: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: tuple[Run, ...]

    def config(self) -> TuneConfig:
        return TuneConfig(**self.settings)

    def label(self) -> str:
        recipe = " ".join(f"{k}={v}" for k, v in {**self.settings, "n_tokens": self.n_tokens}.items())
        return f"{self.model} {recipe}"


def grid(spec: SweepSpec, model: str) -> list[dict]:
    """The recipe points for one model: the spec's lists crossed, unset settings from the model's recipe."""
    from studio.backbones import recipe_for

    from_model = {key: (value,) for key, value in recipe_for(model).filled().items()}
    axes = {key: spec.recipe.get(key, from_model.get(key)) for key in RECIPE_KEYS}
    axes = {key: values for key, values in axes.items() if values is not None}
    return [dict(zip(axes, point)) for point in itertools.product(*axes.values())]


def plan(spec: SweepSpec, library: Library | None = None) -> list[RunGroup]:
    """The sweep as groups with the ids they will store. Needs the tasks' data (for their hash), never a model.

    With a library, an origin it already holds for (model, seed, length, init) keeps its id, as ``run_tuning``
    would reuse it."""
    tasks = [load_task(name) for name in spec.tasks]
    groups = []
    for model in spec.models:
        for point in grid(spec, model):
            n_tokens = point.pop("n_tokens")
            config = TuneConfig(**point)
            origins = {seed: _origin_id(library, model, seed, n_tokens, spec.init) for seed in spec.seeds}
            runs = []
            for task in tasks:
                for seed in spec.seeds:
                    prompt = tuned_prompt_id(origins[seed], task, config)
                    runs.append(Run(task.spec.name, seed, origins[seed], prompt, vector_id(prompt)))
            key = hashlib.sha256(json.dumps([r.prompt_id for r in runs]).encode()).hexdigest()[:10]
            groups.append(RunGroup(f"g-{key}", model, point, n_tokens, spec.init, spec.tasks, spec.seeds, tuple(runs)))
    return groups


def _origin_id(library: Library | None, model: str, seed: int, n_tokens: int, init: str) -> str:
    found = library.find_origin(model, seed, n_tokens, init) if library is not None else None
    return found.id if found else origin_id(model, seed, n_tokens, init)


def _stored(library: Library, item_id: str) -> bool:
    try:
        library.get(item_id)
    except StudioError:
        return False
    return True


def missing(group: RunGroup, library: Library) -> list[Run]:
    """The group's runs whose prompt is not in the library yet (a group with none is done)."""
    return [run for run in group.runs if not _stored(library, run.prompt_id)]


# ---- running -----------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How one group ended: done, skipped (already in the library), failed or cancelled, with a one-line reason."""

    group: RunGroup
    status: str
    message: str = ""
    seconds: float = 0.0


Progress = Callable[[dict], None]


def _report(progress: Progress | None, outcome: Outcome) -> Outcome:
    """Tell the progress callback about a group: {"event": "group", "group", "label", "prompts", "status", ...}."""
    if progress:
        progress({"event": "group", "group": outcome.group.key, "label": outcome.group.label(),
                  "prompts": len(outcome.group.runs), "status": outcome.status, "message": outcome.message,
                  "seconds": round(outcome.seconds, 1)})
    return outcome


def _one_line(error: BaseException) -> str:
    if isinstance(error, StudioError):
        return str(error)
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"


def run_local(spec: SweepSpec, library: Library, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[Outcome]:
    """Tune every group that is not in the library yet, here, one batched job after another.

    A failed group is reported and the next one runs; a stopped one keeps its checkpoint (rerun to resume)."""
    from studio.backbones import load_backbone
    from studio.jobs import run_tuning

    outcomes = []
    for group in plan(spec, library):
        if not missing(group, library):
            outcomes.append(_report(progress, Outcome(group, "skipped", "already in the library")))
            continue
        _report(progress, Outcome(group, "running"))
        started = time.monotonic()

        def on_step(event: dict, group: RunGroup = group) -> None:
            if progress:
                progress({"event": "step", "group": group.key, "step": event["step"],
                          "steps": group.settings["steps"]})

        try:
            backbone = load_backbone(group.model)
            _, status = run_tuning(library, backbone, [load_task(t) for t in group.tasks], list(group.seeds),
                                   group.config(), group.n_tokens, group.init, on_progress=on_step,
                                   should_stop=should_stop)
            outcome = Outcome(group, status, "" if status == "done" else "stopped: rerun to resume")
        except Exception as error:  # one group's problem is reported with the others' results, not instead
            outcome = Outcome(group, "failed", _one_line(error))
        outcome.seconds = time.monotonic() - started
        outcomes.append(_report(progress, outcome))
        if outcome.status == "cancelled":
            break
    return outcomes


def shard_root(spec: SweepSpec, library: Library) -> Path:
    """Where this sweep's workers keep their shard libraries: ``[ray] shard_root`` or ``<library>/sweeps``, then
    the spec's hash. On a multi-node cluster it must be storage every node and the driver share."""
    return Path(spec.ray.get("shard_root") or library.root / "sweeps").resolve() / spec_hash(spec)


def seed_shard(library: Library, shard: Path, group: RunGroup) -> Library:
    """A shard library holding what the target already has of the group (its origins, any finished prompts and
    their vectors), so the worker reuses those ids and tensors and trains only what is missing."""
    copies = []
    for seed in group.seeds:
        found = library.find_origin(group.model, seed, group.n_tokens, group.init)
        if found:
            copies.append(found)
    for run in group.runs:
        copies += [library.get(i) for i in (run.prompt_id, run.vector_id) if _stored(library, i)]
    target = Library(shard)
    target.add_together([_copy(library, item) for item in copies], exist_ok=True)
    return target


def _copy(library: Library, item: Item) -> NewItem:
    return NewItem(item.kind, library.tensor(item.id), item.model, item.name, item.task, item.seed, item.origin_id,
                   item.prompt_id, item.recipe, item.metrics, item.id)


def tune_shard(group: RunGroup, shard: str) -> dict:
    """What one Ray task runs: tune the group into its shard library. A retry resumes the shard's checkpoint."""
    from studio.backbones import load_backbone
    from studio.jobs import run_tuning

    quiet_model_loading()
    folder = Path(shard)
    backbone = load_backbone(group.model)
    items, status = run_tuning(Library(folder), backbone, [load_task(t) for t in group.tasks], list(group.seeds),
                               group.config(), group.n_tokens, group.init, checkpoint_dir=folder / "checkpoint")
    return {"status": status, "prompts": [i.id for i in items], "device": backbone.device}


def quiet_model_loading() -> None:
    """No "Loading weights" bars: beside the sweep's own bar (and in every worker's log) they are noise."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def merge_shard(library: Library, shard: Path, group: RunGroup) -> list[Item]:
    """Store a finished shard's items (origins, prompts, vectors with recipe, metrics, lineage) in the library in
    one transaction, then remove the shard. Merging the same shard twice adds nothing."""
    source = Library(shard)
    held = {item.id: item for item in source.items()}
    absent = [run.prompt_id for run in group.runs if run.prompt_id not in held]
    if absent:
        raise StudioError(f"the shard {shard} lacks {len(absent)} of the group's {len(group.runs)} prompts")
    order = {"origin": 0, "prompt": 1, "vector": 2}  # parents before what is made from them
    stored = library.add_together([_copy(source, item) for item in sorted(held.values(), key=lambda i: order[i.kind])],
                                  exist_ok=True)
    kill_point("sweep:merged")
    shutil.rmtree(shard, ignore_errors=True)  # the group is in the library now
    return stored


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (a failed group's checkpoint), or already gone
        pass


def run_ray(spec: SweepSpec, library: Library, address: str = "auto", progress: Progress | None = None,
            work: Callable[[RunGroup, str], dict] = tune_shard) -> list[Outcome]:
    """Tune every group that is not in the library yet as one Ray task each, merging each shard as it finishes.

    ``address``: ``auto`` (the cluster ``ray start`` runs here), ``host:port``, ``ray://host:10001``, or ``local``
    (a Ray started for this sweep); an already initialised Ray is used as it is. A worker that dies (killed, out
    of memory, node lost) is retried once and resumes its shard's checkpoint; an exception is not retried (a
    StudioError is bad input). ``work`` is what each task runs (tests wrap it to kill a worker)."""
    try:
        import ray
    except ImportError:
        raise StudioError("--ray needs Ray: pip install 'tpv-studio[cluster]'") from None
    outcomes, todo = [], []
    root = shard_root(spec, library)
    for group in plan(spec, library):
        if missing(group, library):
            todo.append(group)
        else:
            shutil.rmtree(root / group.key, ignore_errors=True)  # left by a driver stopped after merging it
            outcomes.append(_report(progress, Outcome(group, "skipped", "already in the library")))
    if not todo:
        return outcomes
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    try:
        remote = ray.remote(_in_worker).options(max_retries=1, retry_exceptions=False, **_resources(spec, ray))
        pending = {}
        for group in todo:
            seed_shard(library, root / group.key, group)
            pending[remote.remote(work, group, str(root / group.key))] = (group, time.monotonic())
            _report(progress, Outcome(group, "submitted"))
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            group, started = pending.pop(ref)
            outcome = _collect(ray, ref, library, root / group.key, group)
            outcome.seconds = time.monotonic() - started
            outcomes.append(_report(progress, outcome))
    finally:
        if started_here:
            ray.shutdown()
    _remove_if_empty(root)
    if not spec.ray.get("shard_root"):
        _remove_if_empty(root.parent)
    return outcomes


def _in_worker(work: Callable[[RunGroup, str], dict], group: RunGroup, shard: str) -> dict:
    """The Ray task itself: ``work`` travels as an argument, so any callable can be the work (a partial too)."""
    return work(group, shard)


def _connect(ray, address: str) -> None:
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False if address == "local"
                 else None, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise StudioError(f"cannot reach a Ray cluster at {address!r} ({_one_line(error)}): start one with "
                          "`ray start --head`, or use --ray local") from None


def _resources(spec: SweepSpec, ray) -> dict:
    """Per group: one GPU when the cluster has GPUs (each group is one batched job on one device), else one CPU;
    ``[ray] num_gpus`` / ``num_cpus`` override."""
    gpus = spec.ray.get("num_gpus")
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"num_cpus": spec.ray.get("num_cpus", 1), "num_gpus": gpus}


def _collect(ray, ref, library: Library, shard: Path, group: RunGroup) -> Outcome:
    """A finished task's outcome; its shard is merged when it holds the whole group, even if the worker failed
    after storing it (the shard's own transaction makes it all or nothing)."""
    reason = ""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # an exception in the worker: its cause, in one line
        reason = _one_line(getattr(error, "cause", None) or error)
    except ray.exceptions.RayError as error:  # the worker died twice: killed, out of memory, node lost
        reason = f"the worker died and its retry did too ({_one_line(error)})"
    try:
        merge_shard(library, shard, group)
        return Outcome(group, "done")
    except Exception as error:  # the shard is incomplete, or the library refused it: nothing of it was stored
        reason = reason or _one_line(error)
    if not has_checkpoint(shard / "checkpoint"):  # nothing to resume from: nothing worth keeping
        shutil.rmtree(shard, ignore_errors=True)
    else:
        reason += f" (its checkpoint is kept in {shard}: rerun the sweep to resume)"
    return Outcome(group, "failed", reason)


def summary(outcomes: list[Outcome]) -> str:
    """The sweep's last words: counts by status, then each failed group with its reason."""
    count = {s: [o for o in outcomes if o.status == s] for s in ("done", "skipped", "failed", "cancelled")}
    prompts = sum(len(o.group.runs) for o in outcomes)
    text = (f"{len(outcomes)} group(s), {prompts} prompt(s): {len(count['done'])} done, "
            f"{len(count['skipped'])} skipped (already done), {len(count['failed'])} failed")
    if count["cancelled"]:
        text += f", {len(count['cancelled'])} stopped"
    return "\n".join([text] + [f"  failed {o.group.key} ({o.group.label()}): {o.message}" for o in count["failed"]])


def submit_sweep(runner: JobRunner, library: Library, spec: SweepSpec) -> Job:
    """Run the sweep here as one background job on the runner, in the same queue as tuning jobs: its progress is
    the share of groups finished, each finished group lands in ``job.events``, and a failed group fails the job
    (after the other groups ran; rerunning trains only what is missing)."""
    groups = len(plan(spec, library))
    total = max(1, groups)

    def work(job: Job) -> list[str]:
        done = 0

        def progress(event: dict) -> None:
            nonlocal done
            if event["event"] == "group" and event["status"] not in ("running",):
                done += 1
                job.events.append(event)
            job.progress = min(1.0, done / total)
            job.message = (f"group {event['group']}: {event['status']}" if event["event"] == "group" else
                           f"group {event['group']}: step {event['step']}/{event['steps']}")

        outcomes = run_local(spec, library, progress, job.cancel.is_set)
        job.message = summary(outcomes).splitlines()[0]
        if any(o.status == "failed" for o in outcomes):
            raise StudioError(summary(outcomes).replace("\n", "; "))
        return [o.group.key for o in outcomes]

    return runner.submit(f"sweep {spec_hash(spec)[:8]}: {groups} group(s)", work, spec=spec)
