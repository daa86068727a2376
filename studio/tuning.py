"""The tuning engine: train one or many soft prompts in one batched job on one frozen backbone.

Each prompt j has its own task, origin and training examples; every step draws ``batch_size`` examples per prompt
and all rows go through the frozen backbone together, each row behind its own prompt. The prompts live in one
[J, n, d] fp32 parameter; AdamW is element-wise and gradients are clipped per prompt, so each prompt learns
exactly as it would alone, only J times cheaper in overhead.

Read ``tune`` top to bottom: sample -> forward/backward in length-sorted micro-batches -> clip -> step ->
validate and keep the best -> checkpoint. Sampling is a pure function of (seed, step), so a job resumed
from its checkpoint continues exactly where it stopped, and a prompt sees the same batches alone or in a job.
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
from studio.evaluation import MAX_INPUT_TOKENS, encode_task, results_from_scores, score_examples
from studio.faults import kill_point
from studio.files import atomic_write, atomic_write_text
from studio.limits import MAX_STEPS
from studio.tasks import Example, TaskData


@dataclass(frozen=True)
class TuneConfig:
    """The recipe. Defaults fit the embedded model on a CPU; the paper's values are in the comments."""

    steps: int = 200
    batch_size: int = 8  # examples per prompt per step (paper: 32 for T5, 4 for 8B decoders)
    lr: float = 0.03  # paper: 0.3 for T5; SmolLM2 diverges there, 0.03 works
    weight_decay: float = 1e-5
    warmup_ratio: float = 0.03  # the decoder reference's 0.03
    schedule: str = "cosine"  # cosine (decoder reference) | linear (T5 reference) | constant
    eval_every: int = 50
    val_limit: int = 100
    select_by: str = "loss"  # best checkpoint by validation "loss" (reference) or "accuracy"
    max_grad_norm: float = 1.0  # per prompt
    micro_batch: int | None = None  # max rows per forward pass (None: the backbone's token budget decides)
    seed: int = 0  # data order

    def __post_init__(self):
        problems = []
        if not 1 <= self.steps <= MAX_STEPS:
            problems.append(f"steps must be between 1 and {MAX_STEPS}")
        if self.batch_size < 1:
            problems.append("batch size must be >= 1")
        if not (0 < self.lr < 10):
            problems.append("learning rate must be in (0, 10)")
        if self.schedule not in ("cosine", "linear", "constant"):
            problems.append("schedule must be cosine, linear or constant")
        if self.select_by not in ("loss", "accuracy"):
            problems.append("select_by must be loss or accuracy")
        if self.eval_every < 1 or self.val_limit < 1 or (self.micro_batch is not None and self.micro_batch < 1):
            problems.append("eval_every, val_limit and micro_batch must be >= 1")
        if problems:
            raise StudioError("bad tuning settings: " + "; ".join(problems))

    def lr_at(self, step: int) -> float:
        warmup = max(1, round(self.warmup_ratio * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * progress))
        if self.schedule == "linear":
            return self.lr * (1 - progress)
        return self.lr


@dataclass
class PromptJob:
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


@dataclass
class TuneResult:
    job: PromptJob
    best_prompt: torch.Tensor
    final_prompt: torch.Tensor
    best_step: int
    best_metrics: dict
    history: list[dict] = field(default_factory=list)


@dataclass
class TuneOutcome:
    results: list[TuneResult]
    status: str  # "done" or "cancelled"
    steps_done: int
    seconds: float


@functools.lru_cache(maxsize=64)
def _epoch_order(seed: int, prompt: int, epoch: int, n: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}/{prompt}/{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(seed: int, prompt: int, step: int, batch_size: int, n: int) -> list[int]:
    """Examples for (prompt, step): consecutive slices of seeded per-epoch permutations, stateless for resume."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return [_epoch_order(seed, prompt, p // n, n)[p % n] for p in positions]


def _job_signature(jobs: list[PromptJob], config: TuneConfig) -> str:
    return json.dumps(
        {"config": asdict(config),
         "jobs": [[j.task.spec.name, j.task.data_hash, j.origin_seed, len(j.examples()), list(j.origin.shape)]
                  + ([j.mixture] if j.mixture else []) for j in jobs]},
        sort_keys=True,
    )


def tune(
    backbone: Backbone,
    jobs: list[PromptJob],
    config: TuneConfig = TuneConfig(),
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TuneOutcome:
    """Train all ``jobs`` together. With ``checkpoint_dir``, progress is saved at every validation and a later
    call with the same jobs and config resumes from it. ``should_stop`` cancels cleanly (checkpoint kept)."""
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
    started = time.time()
    start_tensor = torch.stack([(j.init if j.init is not None else j.origin).float() for j in jobs])
    mixtures = mixture_groups(jobs, start_tensor)
    params = torch.nn.Parameter(start_tensor.clone().to(backbone.device))
    optimizer = torch.optim.AdamW([params], lr=config.lr, weight_decay=config.weight_decay)
    best = params.detach().clone()
    best_scores = [math.inf] * len(jobs)
    best_steps = [0] * len(jobs)
    best_metrics: list[dict] = [{} for _ in jobs]
    histories: list[list[dict]] = [[] for _ in jobs]
    step = 0
    resumed_train_losses = None

    checkpoint = Path(checkpoint_dir) if checkpoint_dir else None
    signature = _job_signature(jobs, config)
    if checkpoint and (checkpoint / "state.json").exists():
        with safe_open(str(checkpoint / "state.safetensors"), framework="pt") as handle:
            embedded_state = (handle.metadata() or {}).get("state")
        # the tensors file carries its own copy of the state: a kill between the two writes cannot mismatch them
        state = json.loads(embedded_state or (checkpoint / "state.json").read_text())
        if state["signature"] != signature:
            raise StudioError(f"checkpoint in {checkpoint} belongs to a different job; choose another folder")
        tensors = load_file(checkpoint / "state.safetensors")
        with torch.no_grad():
            params.copy_(tensors["params"].to(backbone.device))
        best = tensors["best"].to(backbone.device)
        optimizer.state[params] = {"step": torch.tensor(float(state["step"])),
                                   "exp_avg": tensors["exp_avg"].to(backbone.device),
                                   "exp_avg_sq": tensors["exp_avg_sq"].to(backbone.device)}
        step, best_scores, best_steps = state["step"], state["best_scores"], state["best_steps"]
        best_metrics, histories = state["best_metrics"], state["histories"]
        resumed_train_losses = state.get("train_losses")

    encoded_tasks = {}
    for job in jobs:
        key = (job.task.spec.name, job.task.data_hash)
        if key not in encoded_tasks:
            encoded_tasks[key] = encode_task(backbone, job.task, "validation", config.val_limit)
    train_cache: dict[tuple[int, int], list[int]] = {}

    def encoded_train(j: int, index: int) -> tuple[list[int], list[int]]:
        job = jobs[j]
        if (j, index) not in train_cache:
            example = job.examples()[index]
            text = backbone.render_input(job.task.spec.instruction, example.body())
            train_cache[(j, index)] = backbone.encode_input(text, MAX_INPUT_TOKENS)
        target = encoded_tasks[(job.task.spec.name, job.task.data_hash)].target_ids[job.examples()[index].label]
        return train_cache[(j, index)], target

    def validate(at_step: int) -> list[dict]:
        """Validation loss and accuracy for every prompt, grouped by task (one batched pass per task)."""
        out: list[dict] = [{} for _ in jobs]
        for key, encoded in encoded_tasks.items():
            members = [j for j, job in enumerate(jobs) if (job.task.spec.name, job.task.data_hash) == key]
            scores = score_examples(backbone, params.detach()[members], encoded, encoded.examples)
            for j, result in zip(members, results_from_scores(encoded, encoded.examples, scores, False)):
                out[j] = {"step": at_step, "val_loss": result.metrics["loss"],
                          "val_accuracy": result.metrics["accuracy"], "val_macro_f1": result.metrics["macro_f1"]}
        return out

    def save_checkpoint() -> None:
        if not checkpoint:
            return
        checkpoint.mkdir(parents=True, exist_ok=True)
        adam = optimizer.state.get(params, {})
        tensors = {"params": params.detach().cpu().contiguous(), "best": best.cpu().contiguous(),
                   "exp_avg": adam.get("exp_avg", torch.zeros_like(params)).detach().cpu().contiguous(),
                   "exp_avg_sq": adam.get("exp_avg_sq", torch.zeros_like(params)).detach().cpu().contiguous()}
        state = {"signature": signature, "step": step, "best_scores": best_scores, "best_steps": best_steps,
                 "best_metrics": best_metrics, "histories": histories, "train_losses": train_losses}
        atomic_write(checkpoint / "state.safetensors",
                lambda path: save_file(tensors, str(path), metadata={"state": json.dumps(state)}))
        atomic_write_text(checkpoint / "state.json", json.dumps(state))

    if step == 0:  # where each prompt starts: the curve's first point
        for j, metrics in enumerate(validate(0)):
            histories[j].append({"step": 0, "train_loss": None, **metrics})

    status = "done"
    window_started, window_examples = time.time(), 0
    train_losses = resumed_train_losses or [0.0] * len(jobs)  # since the last validation, for the curves
    while step < config.steps:
        if should_stop and should_stop():
            status = "cancelled"
            break
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        rows = []
        for j, job in enumerate(jobs):
            # the data order does not depend on the prompt's place in the job: each prompt sees exactly the
            # batches it would see tuned alone (and, like the reference, every origin sees the same order)
            for index in batch_indices(config.seed, 0, step, config.batch_size, len(job.examples())):
                input_ids, target_ids = encoded_train(j, index)
                rows.append(Row(j, input_ids, target_ids))
        tokens_per_prompt = torch.zeros(len(jobs))
        for row in rows:
            tokens_per_prompt[row.prompt_index] += len(row.target_ids)
        rows.sort(key=lambda r: len(r.input_ids) + len(r.target_ids))
        step_loss = torch.zeros(len(jobs))
        lengths = [len(r.input_ids) + len(r.target_ids) + params.shape[1] for r in rows]
        for group in backbone.batches(lengths, config.micro_batch):
            micro = rows[group.start : group.stop]
            logprobs, _ = backbone.target_logprobs(params, micro)
            owner = torch.tensor([r.prompt_index for r in micro], device=logprobs.device)
            row_loss = -logprobs.sum(1) / tokens_per_prompt.to(logprobs.device)[owner]
            row_loss.sum().backward()  # sum over prompts: each prompt's gradient is its own mean loss's
            step_loss.index_add_(0, owner.cpu(), row_loss.detach().float().cpu())
        with torch.no_grad():  # clip each prompt's gradient on its own, as if it trained alone
            for members in mixtures:  # a mixture's prompt follows the mean of its tasks' losses
                params.grad[members] = params.grad[members].mean(0, keepdim=True)
            norms = params.grad.flatten(1).norm(dim=1)
            params.grad.mul_((config.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)[:, None, None])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(params).all():  # stop at once; the last checkpoint keeps the last good state
            raise StudioError(f"tuning diverged at step {step + 1} (NaN or infinite prompt values): "
                              "lower the learning rate")
        step += 1
        kill_point("tune:step")
        window_examples += len(rows)
        train_losses = [a + float(b) for a, b in zip(train_losses, step_loss)]

        event = {"step": step, "steps": config.steps, "train_loss": step_loss.tolist(),
                 "examples_per_s": window_examples / max(time.time() - window_started, 1e-9)}
        event["eta_s"] = (config.steps - step) * len(rows) / max(event["examples_per_s"], 1e-9)
        if step % config.eval_every == 0 or step == config.steps:
            validation = validate(step)
            since = step - (histories[0][-1]["step"] if histories[0] else 0)
            scores = [m["val_loss"] if config.select_by == "loss" else -m["val_accuracy"] for m in validation]
            for members in mixtures:  # one prompt, one choice: the mean over the mixture's tasks
                shared = sum(scores[k] for k in members) / len(members)
                for j in members:
                    scores[j] = shared
            for j, (metrics, score) in enumerate(zip(validation, scores)):
                histories[j].append({"step": step, "train_loss": train_losses[j] / max(since, 1), **metrics})
                if score < best_scores[j]:
                    best_scores[j], best_steps[j], best_metrics[j] = score, step, metrics
                    best[j] = params.detach()[j]
            train_losses = [0.0] * len(jobs)
            event["validation"] = validation
            save_checkpoint()
            kill_point("tune:validated")
        if on_progress:
            on_progress(event)
    if status == "cancelled":
        save_checkpoint()
    results = [
        TuneResult(job, best[j].detach().cpu().clone(), params.detach()[j].cpu().clone(), best_steps[j],
                   best_metrics[j], histories[j])
        for j, job in enumerate(jobs)
    ]
    if any(not torch.isfinite(r.final_prompt).all() for r in results):
        raise StudioError("tuning diverged (NaN or infinite prompt values): lower the learning rate")
    return TuneOutcome(results, status, step, time.time() - started)


def mixture_groups(jobs: list[PromptJob], starts: torch.Tensor) -> list[list[int]]:
    """Indices of the jobs that share each mixture's prompt; their starts must be the same tensor."""
    groups: dict[str, list[int]] = {}
    for j, job in enumerate(jobs):
        if job.mixture:
            groups.setdefault(job.mixture, []).append(j)
    for name, members in groups.items():
        if any(not torch.equal(starts[members[0]], starts[k]) for k in members[1:]):
            raise StudioError(f"the prompts of mixture {name!r} must start from the same tensor")
    return [members for members in groups.values() if len(members) > 1]
