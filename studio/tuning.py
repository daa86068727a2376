"""The tuning engine: train one or many soft prompts in one batched job on one frozen backbone.

Each prompt j has its own task, origin and training examples; every step draws ``batch_size`` examples per prompt
and all rows go through the frozen backbone together, each row behind its own prompt. The prompts live in one
[J, n, d] fp32 parameter; AdamW is element-wise and gradients are clipped per prompt, so each prompt learns
exactly as it would alone, only J times cheaper in overhead.

Read ``tune``'s loop top to bottom, as in nanoGPT: rows for the step -> forward/backward in length-sorted
micro-batches -> clip per prompt -> optimizer step -> every ``eval_every`` steps validate, keep the best and save a
checkpoint. Everything the loop changes is one ``TrainState`` plus the optimizer's ``state_dict()``, which is
exactly what a checkpoint holds. Sampling is a pure function of (seed, step), so a job resumed from its checkpoint
continues exactly where it stopped, and a prompt sees the same batches alone or in a job.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from studio import StudioError
from studio.backbones import Backbone, Row
from studio.evaluation import (
    EncodedTask,
    encode_example,
    encode_task,
    results_from_scores,
    row_tokens,
    score_examples,
)
from studio.faults import kill_point
from studio.files import atomic_write, atomic_write_text
from studio.settings import SelectBy, TuneConfig
from studio.tasks import Example, TaskData


# ---- the jobs -------------------------------------------------------------------------------------------------
@dataclass
class TrainingPrompt:
    """One prompt to train: its task, its origin P0, where it starts (P0 unless given) and its examples."""

    task: TaskData
    origin: torch.Tensor
    origin_seed: int
    init: torch.Tensor | None = None  # e.g. P0 + tau_A + tau_B for few-shot initialisation
    train_examples: list[Example] | None = None  # default: the task's whole train split
    label: str = ""
    # jobs that name the same mixture train ONE prompt on the union of their batches (SPoT's multi-task prompt):
    # their gradients are averaged, so from a shared start they stay equal, and they keep one best step
    mixture: str | None = None

    def examples(self) -> list[Example]:
        return self.train_examples if self.train_examples is not None else self.task.train

    def task_key(self) -> tuple[str, str]:
        return self.task.spec.name, self.task.data_hash


@dataclass
class TuneResult:
    job: TrainingPrompt
    best_prompt: torch.Tensor
    final_prompt: torch.Tensor
    best_step: int
    best_metrics: dict[str, float]  # the validation at best_step: loss, accuracy, macro_f1 (evaluation's names)
    history: list[dict] = field(default_factory=list)  # the curves (``history_point``), stored with the prompt


@dataclass
class TuneOutcome:
    results: list[TuneResult]
    status: str  # "done" or "cancelled"
    steps_done: int
    seconds: float


def _check_jobs(backbone: Backbone, jobs: list[TrainingPrompt]) -> None:
    if not jobs:
        raise StudioError("nothing to tune: choose at least one task and origin")
    shapes = {tuple(j.origin.shape) for j in jobs}
    if len(shapes) != 1:
        raise StudioError(f"all prompts in one job need the same shape, got {sorted(shapes)}")
    for job in jobs:
        if not job.examples():
            raise StudioError(f"task {job.task.spec.name!r} has no training examples")
        if job.origin.shape[1] != backbone.hidden_size:
            raise StudioError(f"origin width {job.origin.shape[1]} does not match the model ({backbone.hidden_size})")


def mixture_groups(jobs: list[TrainingPrompt], starts: torch.Tensor) -> list[list[int]]:
    """Indices of the jobs that share each mixture's prompt; their starts must be the same tensor."""
    groups: dict[str, list[int]] = {}
    for j, job in enumerate(jobs):
        if job.mixture:
            groups.setdefault(job.mixture, []).append(j)
    for name, members in groups.items():
        if any(not torch.equal(starts[members[0]], starts[k]) for k in members[1:]):
            raise StudioError(f"the prompts of mixture {name!r} must start from the same tensor")
    return [members for members in groups.values() if len(members) > 1]


def _job_signature(jobs: list[TrainingPrompt], config: TuneConfig) -> str:
    return json.dumps(
        {"config": asdict(config),
         "jobs": [[j.task.spec.name, j.task.data_hash, j.origin_seed, len(j.examples()), list(j.origin.shape)]
                  + ([j.mixture] if j.mixture else []) for j in jobs]},
        sort_keys=True,
    )


# ---- data -------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _epoch_order(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    order = list(range(n))
    # the "/0/" held a prompt index once; kept so that every data order, and so every stored result, stays the same
    random.Random(f"{seed}/0/{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> list[int]:
    """Examples for ``step``: consecutive slices of seeded per-epoch permutations, stateless for resume. The order
    does not depend on the prompt's place in the job: each prompt sees exactly the batches it would see tuned
    alone (and, like the reference, every origin sees the same order)."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return [_epoch_order(seed, p // n, n)[p % n] for p in positions]


class EncodedJobs:
    """The jobs' token ids, encoded once: each task's validation split up front, train examples on first use."""

    def __init__(self, backbone: Backbone, jobs: list[TrainingPrompt], val_limit: int):
        self.backbone, self.jobs = backbone, jobs
        self.validation: dict[tuple[str, str], EncodedTask] = {}
        for job in jobs:
            if job.task_key() not in self.validation:
                self.validation[job.task_key()] = encode_task(backbone, job.task, "validation", val_limit)
        self._inputs: dict[tuple[int, int], list[int]] = {}

    def members(self, key: tuple[str, str]) -> list[int]:
        return [j for j, job in enumerate(self.jobs) if job.task_key() == key]

    def rows(self, step: int, seed: int, batch_size: int) -> list[Row]:
        """Every prompt's ``batch_size`` rows for ``step``, in job order."""
        rows = []
        for j, job in enumerate(self.jobs):
            examples, targets = job.examples(), self.validation[job.task_key()].target_ids
            for index in batch_indices(seed, step, batch_size, len(examples)):
                rows.append(Row(j, self._input_ids(j, index), targets[examples[index].label]))
        return rows

    def _input_ids(self, j: int, index: int) -> list[int]:
        if (j, index) not in self._inputs:
            job = self.jobs[j]
            self._inputs[(j, index)] = encode_example(self.backbone, job.task, job.examples()[index]).input_ids
        return self._inputs[(j, index)]


# ---- the state and one step ---------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything the loop changes besides the optimizer's own state; a checkpoint holds exactly this."""

    step: int
    params: torch.nn.Parameter  # [J, n, d] fp32: every job's prompt
    best: torch.Tensor  # each prompt at its best validation so far
    best_scores: list[float]  # lower is better: validation loss, or minus accuracy
    best_steps: list[int]
    best_metrics: list[dict[str, float]]  # each prompt's validation at its best step (evaluation's names)
    histories: list[list[dict]]  # the curves: one point per validation
    train_losses: list[float]  # summed since the last validation, for the curves

    @classmethod
    def start(cls, prompts: torch.Tensor) -> TrainState:
        n = len(prompts)
        params = torch.nn.Parameter(prompts.clone())
        return cls(0, params, params.detach().clone(), [math.inf] * n, [0] * n, [{} for _ in range(n)],
                   [[] for _ in range(n)], [0.0] * n)


def forward_backward(backbone: Backbone, params: torch.nn.Parameter, rows: list[Row],
                     micro_batch: int | None) -> torch.Tensor:
    """Accumulate into ``params.grad`` the gradient of each prompt's own mean loss; return those losses, [J].

    A row's loss is divided by its prompt's target-token count, so the sum over all rows is the sum of the prompts'
    mean losses and no prompt's gradient depends on another's rows. Rows run in length-sorted micro-batches."""
    tokens_per_prompt = torch.zeros(params.shape[0])
    for row in rows:
        tokens_per_prompt[row.prompt_index] += len(row.target_ids)
    rows = sorted(rows, key=lambda r: row_tokens(r, params.shape[1]))
    losses = torch.zeros(params.shape[0])
    lengths = [row_tokens(r, params.shape[1]) for r in rows]
    for group in backbone.batches(lengths, micro_batch):
        micro = rows[group.start : group.stop]
        logprobs, _ = backbone.target_logprobs(params, micro)
        owner = torch.tensor([r.prompt_index for r in micro], device=logprobs.device)
        row_loss = -logprobs.sum(1) / tokens_per_prompt.to(logprobs.device)[owner]
        row_loss.sum().backward()
        losses.index_add_(0, owner.cpu(), row_loss.detach().float().cpu())
    return losses


@torch.no_grad()
def clip_per_prompt(grad: torch.Tensor, mixtures: list[list[int]], max_norm: float) -> None:
    """Clip each prompt's gradient on its own, as if it trained alone; a mixture's prompt first takes the mean of
    its tasks' gradients (it follows the mean of their losses)."""
    for members in mixtures:
        grad[members] = grad[members].mean(0, keepdim=True)
    norms = grad.flatten(1).norm(dim=1)
    grad.mul_((max_norm / (norms + 1e-6)).clamp(max=1.0)[:, None, None])


def check_finite(params: torch.Tensor, step: int) -> None:
    """Stop at once on NaN or inf, before anything is saved: the last checkpoint keeps the last good state."""
    if not torch.isfinite(params).all():
        raise StudioError(f"tuning diverged at step {step} (NaN or infinite prompt values): lower the learning rate")


# the metrics a validation keeps (evaluation's names), and their names in the curves, where they sit beside the
# training loss: the history stored with every tuned prompt and the step events the Tune tab plots
CURVE_NAMES = {"loss": "val_loss", "accuracy": "val_accuracy", "macro_f1": "val_macro_f1"}


def validate(backbone: Backbone, params: torch.Tensor, encoded: EncodedJobs) -> list[dict[str, float]]:
    """Validation loss, accuracy and macro-F1 for every prompt, grouped by task (one batched pass per task)."""
    out: list[dict[str, float]] = [{} for _ in encoded.jobs]
    for key, task in encoded.validation.items():
        members = encoded.members(key)
        scores = score_examples(backbone, params.detach()[members], task, task.examples)
        for j, result in zip(members, results_from_scores(task, task.examples, scores, False)):
            out[j] = {name: result.metrics[name] for name in CURVE_NAMES}
    return out


def curve_point(step: int, metrics: dict[str, float]) -> dict:
    """A validation as the curves name it: ``{"step", "val_loss", "val_accuracy", "val_macro_f1"}``."""
    return {"step": step, **{CURVE_NAMES[name]: value for name, value in metrics.items()}}


def history_point(step: int, train_loss: float | None, metrics: dict[str, float]) -> dict:
    """One point of a prompt's stored curves: the validation at ``step`` and the mean training loss since the one
    before (None at the start)."""
    return {"step": step, "train_loss": train_loss, **curve_point(step, metrics)}


def update_best(state: TrainState, validation: list[dict[str, float]], mixtures: list[list[int]],
                select_by: str) -> None:
    """Add a validation to the curves and keep each prompt's best; a mixture's prompts choose by their mean."""
    since = state.step - (state.histories[0][-1]["step"] if state.histories[0] else 0)
    scores = [m["loss"] if select_by == SelectBy.LOSS else -m["accuracy"] for m in validation]
    for members in mixtures:  # one prompt, one choice
        shared = sum(scores[k] for k in members) / len(members)
        for j in members:
            scores[j] = shared
    for j, (metrics, score) in enumerate(zip(validation, scores)):
        state.histories[j].append(history_point(state.step, state.train_losses[j] / max(since, 1), metrics))
        if score < state.best_scores[j]:
            state.best_scores[j], state.best_steps[j], state.best_metrics[j] = score, state.step, metrics
            state.best[j] = state.params.detach()[j]
    state.train_losses = [0.0] * len(validation)


def _progress_event(step: int, config: TuneConfig, losses: torch.Tensor, rows_per_step: int,
                    examples_per_s: float) -> dict:
    return {"step": step, "steps": config.steps, "train_loss": losses.tolist(), "examples_per_s": examples_per_s,
            "eta_s": (config.steps - step) * rows_per_step / max(examples_per_s, 1e-9)}


# ---- checkpoints --------------------------------------------------------------------------------------------------
# state.safetensors: params, best and the optimizer's tensors (flat keys "optimizer.state.<param id>.<name>"), with a
# copy of state.json in its metadata; state.json: the rest of TrainState, the signature and the optimizer's
# param_groups and non-tensor state. The tensors file is written first and wins: a kill between the two writes
# cannot pair tensors with another step's state.
TENSORS_FILE, STATE_FILE = "state.safetensors", "state.json"
_OPTIMIZER_KEY = "optimizer.state."


def save_checkpoint(folder: Path, signature: str, state: TrainState, optimizer: torch.optim.Optimizer) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    optimizer_tensors, optimizer_rest = _split_optimizer_state(optimizer.state_dict())
    tensors = {"params": state.params.detach().cpu().contiguous(), "best": state.best.cpu().contiguous(),
               **optimizer_tensors}
    text = json.dumps({"signature": signature, "step": state.step, "best_scores": state.best_scores,
                       "best_steps": state.best_steps, "best_metrics": state.best_metrics,
                       "histories": state.histories, "train_losses": state.train_losses,
                       "optimizer": optimizer_rest})
    atomic_write(folder / TENSORS_FILE, lambda path: save_file(tensors, str(path), metadata={"state": text}))
    atomic_write_text(folder / STATE_FILE, text)


def resume(folder: Path, signature: str, state: TrainState, optimizer: torch.optim.Optimizer) -> None:
    """Continue from the checkpoint in ``folder``, if there is one; refuse one that another job wrote."""
    if not (folder / STATE_FILE).exists():
        return
    with safe_open(str(folder / TENSORS_FILE), framework="pt") as handle:
        embedded = (handle.metadata() or {}).get("state")
    saved = json.loads(embedded or (folder / STATE_FILE).read_text())
    if saved["signature"] != signature:
        raise StudioError(f"checkpoint in {folder} belongs to a different job; choose another folder")
    tensors = load_file(folder / TENSORS_FILE)
    with torch.no_grad():
        state.params.copy_(tensors["params"].to(state.params.device))
    state.best = tensors["best"].to(state.params.device)
    state.step, state.best_scores, state.best_steps = saved["step"], saved["best_scores"], saved["best_steps"]
    state.best_metrics, state.histories = _saved_best_metrics(saved), saved["histories"]
    state.train_losses = saved.get("train_losses") or [0.0] * len(state.best_scores)
    if "optimizer" in saved:
        optimizer.load_state_dict(_join_optimizer_state(saved["optimizer"], tensors))
    else:
        optimizer.load_state_dict(_first_format_optimizer_state(saved, tensors, optimizer))


def _saved_best_metrics(saved: dict) -> list[dict[str, float]]:
    """The checkpoint's best validations. Checkpoints written before these kept evaluation's names held each as its
    curve point (``curve_point``, with a "step"): read back under evaluation's names, a resumed job stores the same
    metrics either way."""
    return [{name: best[curve] for name, curve in CURVE_NAMES.items() if curve in best} if "step" in best else best
            for best in saved["best_metrics"]]


def checkpoint_step(folder: Path) -> int | None:
    """The step the checkpoint in ``folder`` holds (None if there is none): a resumed job starts there, so a caller
    that stops at a step (``build_library``'s ``stop_after``) counts it without opening the tensors."""
    state = folder / STATE_FILE
    return json.loads(state.read_text()).get("step", 0) if state.exists() else None


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds any checkpoint file: a failed sweep group's shard is kept for a resume only then."""
    return any((folder / name).exists() for name in (STATE_FILE, TENSORS_FILE))


def clear_checkpoint(folder: Path) -> None:
    """Remove the checkpoint's files from a folder the caller owns (it may hold more): once the job is stored, a
    rerun must not resume it. ``STATE_FILE`` goes first: it is what ``resume`` looks for, so a kill between the two
    removals leaves a folder that starts afresh, never one whose state names missing tensors."""
    for name in (STATE_FILE, TENSORS_FILE):
        (folder / name).unlink(missing_ok=True)


def _split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's ``state_dict()`` as safetensors-ready tensors under flat keys and a JSON-ready rest."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict] = {}
    for param_id, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIMIZER_KEY}{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(param_id), {})[name] = value
    return tensors, {"state": rest, "param_groups": state_dict["param_groups"]}


def _join_optimizer_state(rest: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The inverse of ``_split_optimizer_state``: a state dict for ``optimizer.load_state_dict``."""
    state = {int(param_id): dict(entry) for param_id, entry in rest["state"].items()}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER_KEY):
            param_id, name = key[len(_OPTIMIZER_KEY):].split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def _first_format_optimizer_state(saved: dict, tensors: dict[str, torch.Tensor],
                                  optimizer: torch.optim.Optimizer) -> dict:
    """Checkpoints written before the optimizer was saved whole kept AdamW's moments as "exp_avg"/"exp_avg_sq"
    and its step count as the job's step; their groups are this optimizer's own, as the signature matched."""
    adam = {"step": torch.tensor(float(saved["step"])), "exp_avg": tensors["exp_avg"],
            "exp_avg_sq": tensors["exp_avg_sq"]}
    return {"state": {0: adam}, "param_groups": optimizer.state_dict()["param_groups"]}


# ---- the loop -------------------------------------------------------------------------------------------------------
def _start(backbone: Backbone, jobs: list[TrainingPrompt], config: TuneConfig, checkpoint: Path | None,
           signature: str) -> tuple[TrainState, torch.optim.AdamW, list[list[int]], EncodedJobs]:
    """Everything the loop starts from: the state (fresh, or the checkpoint's), AdamW, the mixtures, the encodings,
    and on a fresh start the curves' first point: each prompt as it starts."""
    _check_jobs(backbone, jobs)
    prompts = torch.stack([(j.init if j.init is not None else j.origin).float() for j in jobs])
    mixtures = mixture_groups(jobs, prompts)
    state = TrainState.start(prompts.to(backbone.device))
    optimizer = torch.optim.AdamW([state.params], lr=config.lr, weight_decay=config.weight_decay)
    if checkpoint:
        resume(checkpoint, signature, state, optimizer)
    encoded = EncodedJobs(backbone, jobs, config.val_limit)
    if not state.histories[0]:
        for j, metrics in enumerate(validate(backbone, state.params, encoded)):
            state.histories[j].append(history_point(0, None, metrics))
    return state, optimizer, mixtures, encoded


def tune(
    backbone: Backbone,
    jobs: list[TrainingPrompt],
    config: TuneConfig = TuneConfig(),
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TuneOutcome:
    """Train all ``jobs`` together. With ``checkpoint_dir``, progress is saved at every validation and a later
    call with the same jobs and config resumes from it. ``should_stop`` cancels cleanly (checkpoint kept)."""
    started = time.time()
    checkpoint, signature = Path(checkpoint_dir) if checkpoint_dir else None, _job_signature(jobs, config)
    state, optimizer, mixtures, encoded = _start(backbone, jobs, config, checkpoint, signature)
    status, window_started, window_examples = "done", time.time(), 0
    while state.step < config.steps:
        if should_stop and should_stop():
            status = "cancelled"
            break
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(state.step)
        rows = encoded.rows(state.step, config.seed, config.batch_size)
        losses = forward_backward(backbone.for_training(), state.params, rows, config.micro_batch)
        clip_per_prompt(state.params.grad, mixtures, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        check_finite(state.params, state.step + 1)
        state.step += 1
        kill_point("tune:step")
        state.train_losses = [a + float(b) for a, b in zip(state.train_losses, losses)]
        window_examples += len(rows)
        event = _progress_event(state.step, config, losses, len(rows),
                                window_examples / max(time.time() - window_started, 1e-9))
        if state.step % config.eval_every == 0 or state.step == config.steps:
            validation = validate(backbone, state.params, encoded)
            event["validation"] = [curve_point(state.step, metrics) for metrics in validation]
            update_best(state, validation, mixtures, config.select_by)
            if checkpoint:
                save_checkpoint(checkpoint, signature, state, optimizer)
            kill_point("tune:validated")
        if on_progress:
            on_progress(event)
    if status == "cancelled" and checkpoint:
        save_checkpoint(checkpoint, signature, state, optimizer)
    # no end-of-run NaN check: check_finite ran after every step, and only checked states reach a checkpoint
    results = [TuneResult(job, state.best[j].detach().cpu().clone(), state.params.detach()[j].cpu().clone(),
                          state.best_steps[j], state.best_metrics[j], state.histories[j])
               for j, job in enumerate(jobs)]
    return TuneOutcome(results, status, state.step, time.time() - started)
