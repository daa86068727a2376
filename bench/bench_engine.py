"""CPU benchmark of the studio's tuning engine on the embedded SmolLM2-135M-Instruct, in one process.

Configurations (one JSON line each, then a summary table):

  a. ``studio_bf16_1p``     the studio engine (``tune``), one prompt, frozen backbone as ``load_backbone`` picks it
                            (bf16 on a CPU with AMX / AVX512-BF16), batch 8, 20 virtual tokens;
  b. ``peft_fp32_1p``       a plain PEFT prompt-tuning loop (PromptTuningConfig CAUSAL_LM, fp32 model from the cached
                            folder, AdamW lr 0.03, labels -100 except the answer tokens, dynamic padding) on exactly
                            the same batches, chat-template inputs and origin;
     ``studio_fp32_1p``     (extra) the studio engine on an fp32 backbone: separates "answer-only logits" from bf16;
  c. ``studio_bf16_6p_one_job``     6 prompts (2 tasks x 3 origins) trained in one ``tune`` call;
     ``studio_bf16_6p_sequential``  the same 6 prompts as 6 one-prompt ``tune`` calls, on the same batches;
  e. ``studio_bf16_eager_1p`` / ``studio_bf16_eager_6p_one_job``  the same as a / c with the whole backbone on
                            eager attention (a and c already tune on ``Backbone.for_training``, an eager twin on a
                            bf16 CPU; ``bench/attention_ab.py`` compares with SDPA): on CPU, SDPA's bf16 flash-attention
                            backward is slow;
  d. ``accuracy_bf16`` / ``accuracy_fp32``  the studio engine tuned for ``--acc-steps`` steps from the same origin
                            and data order on a bf16 and on an fp32 backbone; test accuracy (binomial SE) of each
                            prompt evaluated on both backbones, and how many test predictions agree.

Timing: every throughput configuration runs ``--warmup`` untimed steps, then ``--steps`` timed steps (the same
for all). For ``tune`` the timestamps come from ``on_progress``; ``tune`` runs one extra final step (it always
validates after its last step) that is not timed, and validation uses 2 examples at step 0 only. Tokenisation
of each step's examples happens inside the step for both engines (the studio encodes lazily; the PEFT loop
tokenises its batch like a collator). examples/s counts training rows: prompts x batch size x timed steps.

    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
        .venv/bin/python bench/bench_engine.py                  # full run (~15-20 min on 2 idle cores)
    .venv/bin/python bench/bench_engine.py --quick              # smoke run (~3 min)
    .venv/bin/python bench/bench_engine.py --only a,b --steps 30 --json-out /tmp/bench.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

for _key, _value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                     "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from studio.backbones import Backbone, _load_weights, load_backbone  # noqa: E402
from studio.config import DEFAULT_MODEL  # noqa: E402
from studio.evaluation import MAX_INPUT_TOKENS, evaluate  # noqa: E402
from studio.prompts import make_origin  # noqa: E402
from studio.tasks import load_task  # noqa: E402
from studio.tuning import TrainingPrompt, TuneConfig, batch_indices, tune  # noqa: E402
from studio.weights import KNOWN_BACKBONES, _cached_known_backbone  # noqa: E402

BATCH = 8
N_VIRTUAL = 20
LR = 0.03
RESULTS: list[dict] = []
JSON_OUT: list[Path] = []  # --json-out: every line is appended as soon as it is measured


def emit(record: dict) -> dict:
    record = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
    RESULTS.append(record)
    print(json.dumps(record), flush=True)
    for path in JSON_OUT:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
    return record


def machine() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    import peft
    import transformers

    return {"config": "machine", "cpu": model, "cpus": os.cpu_count(), "amx_bf16": "amx_bf16" in flags,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "loadavg_start": loadavg()}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---- the studio engine ------------------------------------------------------------------------------------
@contextmanager
def prefix_sharing(backbone, on: bool):
    """Within the block, the backbone (and its training twin) share rows' common prefixes or not."""
    twins = {backbone, backbone.for_training()}
    before = {twin: twin.shares_prefixes for twin in twins}
    for twin in twins:
        twin.shares_prefixes = on
    try:
        yield
    finally:
        for twin, value in before.items():
            twin.shares_prefixes = value


def run_studio(backbone, jobs: list[TrainingPrompt], steps: int, warmup: int, seed: int = 0) -> dict:
    """Time ``steps`` training steps of one ``tune`` call after ``warmup`` untimed ones."""
    stamps: dict[int, float] = {}
    first_loss: list[float] = []

    def on_progress(event: dict) -> None:
        stamps[event["step"]] = time.perf_counter()
        if event["step"] == 1:
            first_loss.extend(event["train_loss"])

    total = warmup + steps + 1  # the last step validates inside tune: never timed
    config = TuneConfig(steps=total, batch_size=BATCH, lr=LR, eval_every=total + 1, val_limit=2, seed=seed)
    started = time.perf_counter()
    tune(backbone, jobs, config, on_progress=on_progress)
    wall = time.perf_counter() - started
    window = stamps[warmup + steps] - stamps[warmup]
    per_step = [stamps[k] - stamps[k - 1] for k in range(warmup + 1, warmup + steps + 1)]
    rows = len(jobs) * BATCH * steps
    return {"examples_per_s": rows / window, "timed_s": window, "median_step_s": statistics.median(per_step),
            "rows_timed": rows, "tune_wall_s": wall, "first_step_loss": statistics.fmean(first_loss)}


# ---- plain PEFT prompt tuning -------------------------------------------------------------------------------
def load_peft_model(origin: torch.Tensor):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = _cached_known_backbone(KNOWN_BACKBONES[DEFAULT_MODEL])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=N_VIRTUAL))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(origin)
    return peft_model


def run_peft(peft_model, backbone, task, origin: torch.Tensor, steps: int, warmup: int, seed: int = 0) -> dict:
    """A textbook PEFT loop on the same batches, inputs and origin as ``run_studio`` for one prompt."""
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(origin)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR)
    peft_model.train()
    tokenizer = backbone.tokenizer
    pad = tokenizer.pad_token_id
    examples = task.train
    stamps = [time.perf_counter()]
    losses = []
    for step in range(warmup + steps):
        sequences, labels = [], []
        for index in batch_indices(seed, step, BATCH, len(examples)):
            example = examples[index]
            text = backbone.render_input(task.spec.instruction, example.body())
            input_ids = tokenizer(text, add_special_tokens=False).input_ids[-MAX_INPUT_TOKENS:]
            target = tokenizer(backbone.render_target(task.spec.label_words[example.label]),
                               add_special_tokens=False).input_ids
            sequences.append(input_ids + target)
            labels.append([-100] * len(input_ids) + target)
        longest = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        label_tensor = torch.full_like(ids, -100)
        for i, (seq, lab) in enumerate(zip(sequences, labels)):
            ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            label_tensor[i, : len(lab)] = torch.tensor(lab)
        loss = peft_model(input_ids=ids, attention_mask=attention, labels=label_tensor).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        stamps.append(time.perf_counter())
    window = stamps[warmup + steps] - stamps[warmup]
    per_step = [stamps[k] - stamps[k - 1] for k in range(warmup + 1, warmup + steps + 1)]
    rows = BATCH * steps
    return {"examples_per_s": rows / window, "timed_s": window, "median_step_s": statistics.median(per_step),
            "rows_timed": rows, "first_step_loss": losses[0]}


# ---- accuracy -----------------------------------------------------------------------------------------------
def accuracy_check(bf16, fp32, task, origin, steps: int, test_limit: int, val_limit: int) -> None:
    prompts, val = {}, {}
    for name, backbone in (("bf16", bf16), ("fp32", fp32)):
        config = TuneConfig(steps=steps, batch_size=BATCH, lr=LR, eval_every=steps, val_limit=val_limit, seed=0)
        started = time.perf_counter()
        outcome = tune(backbone, [TrainingPrompt(task, origin, 0)], config)
        result = outcome.results[0]
        prompts[name] = result.final_prompt
        val[name] = (result.history[0], result.history[-1], time.perf_counter() - started)
    evals = {}
    for evaluated_on, backbone in (("bf16", bf16), ("fp32", fp32)):
        table = {"origin": origin, "tuned_bf16": prompts["bf16"], "tuned_fp32": prompts["fp32"]}
        started = time.perf_counter()
        results = evaluate(backbone, list(table.values()), task, "test", limit=test_limit)
        seconds = time.perf_counter() - started
        for key, result in zip(table, results):
            evals[(key, evaluated_on)] = result
        evals[("seconds", evaluated_on)] = seconds
    for name in ("bf16", "fp32"):
        first, last, seconds = val[name]
        own = evals[(f"tuned_{name}", name)]
        other_name = "fp32" if name == "bf16" else "bf16"
        other = evals[(f"tuned_{name}", other_name)]
        emit({"config": f"accuracy_{name}", "backbone_dtype": name, "steps": steps, "tune_s": seconds,
              "val_n": val_limit, "val_acc_step0": first["val_accuracy"], "val_acc_final": last["val_accuracy"],
              "val_loss_final": last["val_loss"],
              "test_n": own.metrics["n"],
              "test_acc_origin": evals[("origin", name)].metrics["accuracy"],
              "test_acc": own.metrics["accuracy"], "test_acc_se": own.metrics["accuracy_se"],
              f"test_acc_on_{other_name}": other.metrics["accuracy"],
              "eval_s": evals[("seconds", name)],
              "eval_examples_per_s": 3 * own.metrics["n"] / evals[("seconds", name)]})
    a, b = evals[("tuned_bf16", "bf16")], evals[("tuned_fp32", "fp32")]
    agree = sum(x["prediction"] == y["prediction"] for x, y in zip(a.records, b.records))
    diff = a.metrics["accuracy"] - b.metrics["accuracy"]
    se = math.sqrt(a.metrics["accuracy_se"] ** 2 + b.metrics["accuracy_se"] ** 2)
    drift = (prompts["bf16"] - prompts["fp32"]).norm() / (prompts["fp32"] - origin).norm()
    emit({"config": "accuracy_bf16_vs_fp32", "acc_diff": diff, "diff_se_unpaired": se,
          "within_2se": abs(diff) <= 2 * se, "prediction_agreement": agree / len(a.records),
          "disagreements": len(a.records) - agree,
          "prompt_gap_rel": float(drift)})


# ---- main ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per throughput configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (the same for all)")
    parser.add_argument("--acc-steps", type=int, default=60, help="tuning steps for the accuracy check")
    parser.add_argument("--test-limit", type=int, default=200, help="test examples for the accuracy check")
    parser.add_argument("--val-limit", type=int, default=100, help="validation examples for the accuracy check")
    parser.add_argument("--multi-tasks", default="mr,uncertainty", help="tasks for the 6-prompt job (x 3 origins)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate a/b this many times (pooled)")
    parser.add_argument("--only", default="a,a1,b,c,d,e",
                        help="comma list of sections: a (studio bf16), a0 (a without prefix sharing), a1 (studio fp32), b (PEFT), c (c1: one job only), d, e")
    parser.add_argument("--sequential-first", action="store_true",
                        help="in c, run the 6 one-prompt jobs before the 6-prompt job (order check)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 timed steps, 1 warm-up, tiny accuracy")
    parser.add_argument("--json-out", default=None, help="also write the JSON lines to this file (as they come)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.acc_steps, args.test_limit, args.val_limit = 3, 1, 4, 16, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    sections = set(args.only.split(","))
    if args.json_out:
        JSON_OUT.append(Path(args.json_out))
        JSON_OUT[0].write_text("")

    emit(machine())
    started = time.perf_counter()
    bf16 = load_backbone()
    task = load_task("mr")
    origin = make_origin(bf16, seed=0, n_tokens=N_VIRTUAL)
    emit({"config": "setup", "backbone": repr(bf16), "task": "mr", "train_examples": len(task.train),
          "batch": BATCH, "virtual_tokens": N_VIRTUAL, "steps_timed": args.steps, "warmup": args.warmup,
          "load_s": time.perf_counter() - started})
    fp32 = load_backbone(dtype=torch.float32) if {"a1", "d"} & sections else None
    common = {"batch": BATCH, "virtual_tokens": N_VIRTUAL, "steps_timed": args.steps, "warmup": args.warmup}

    summary: dict[str, dict] = {}
    if {"a", "b"} & sections:
        peft_model = load_peft_model(origin) if "b" in sections else None
        runs: dict[str, list[dict]] = {"studio_bf16_1p": [], "studio_bf16_1p_unshared": [], "peft_fp32_1p": []}
        for _ in range(args.repeats):
            if "a" in sections:
                runs["studio_bf16_1p"].append(
                    run_studio(bf16, [TrainingPrompt(task, origin, 0)], args.steps, args.warmup))
            if "a0" in sections:  # the same without sharing the rows' common prefix (Backbone.shares_prefixes)
                with prefix_sharing(bf16, False):
                    runs["studio_bf16_1p_unshared"].append(
                        run_studio(bf16, [TrainingPrompt(task, origin, 0)], args.steps, args.warmup))
            if "b" in sections:
                runs["peft_fp32_1p"].append(run_peft(peft_model, bf16, task, origin, args.steps, args.warmup))
        del peft_model
        notes = {"studio_bf16_1p": f"studio tune, 1 prompt, frozen {str(bf16.dtype).split('.')[-1]} backbone, "
                                   "answer-only logits",
                 "studio_bf16_1p_unshared": "the same, every row computed whole (no shared prefix)",
                 "peft_fp32_1p": "PEFT PromptTuningConfig CAUSAL_LM, fp32, full logits, AdamW"}
        for name, results in runs.items():
            if results:  # pooled over the repeats: all timed rows / all timed seconds
                pooled = dict(results[-1])
                pooled["timed_s"] = sum(r["timed_s"] for r in results)
                pooled["rows_timed"] = sum(r["rows_timed"] for r in results)
                pooled["examples_per_s"] = pooled["rows_timed"] / pooled["timed_s"]
                pooled["median_step_s"] = statistics.median(r["median_step_s"] for r in results)
                pooled["first_step_loss"] = results[0]["first_step_loss"]
                summary[name] = emit({"config": name, "note": notes[name], "prompts": 1, **common, **pooled,
                                      "repeats": [round(r["examples_per_s"], 2) for r in results]})
    if "a1" in sections:
        summary["studio_fp32_1p"] = emit({
            "config": "studio_fp32_1p", "note": "studio tune, 1 prompt, frozen fp32 backbone, answer-only logits",
            "prompts": 1, **common, **run_studio(fp32, [TrainingPrompt(task, origin, 0)], args.steps, args.warmup)})
    if {"c", "e"} & sections:
        tasks = [load_task(name) for name in args.multi_tasks.split(",")]
        jobs = [TrainingPrompt(t, make_origin(bf16, seed, N_VIRTUAL), seed, label=f"{t.spec.name}/{seed}")
                for t in tasks for seed in range(6 // len(tasks))]
    def one_job() -> None:
        summary["studio_bf16_6p_one_job"] = emit({
            "config": "studio_bf16_6p_one_job", "note": f"{len(jobs)} prompts ({args.multi_tasks} x origins) in one "
            "tune call", "prompts": len(jobs), **common, **run_studio(bf16, jobs, args.steps, args.warmup)})

    if {"c", "c1"} & sections and not args.sequential_first:  # c1: the one-job half of c only
        one_job()
    if "c" in sections:
        parts = []
        for job in jobs:
            # the data order does not depend on a prompt's place in a job: alone, it sees the same batches
            alone = TrainingPrompt(job.task, job.origin, job.origin_seed, label=job.label)
            parts.append(run_studio(bf16, [alone], args.steps, args.warmup))
        timed = sum(p["timed_s"] for p in parts)
        rows = sum(p["rows_timed"] for p in parts)
        summary["studio_bf16_6p_sequential"] = emit({
            "config": "studio_bf16_6p_sequential", "note": f"the same {len(jobs)} prompts as {len(jobs)} one-prompt "
            "tune calls, same batches", "prompts": len(jobs), **common, "examples_per_s": rows / timed,
            "timed_s": timed, "rows_timed": rows, "tune_wall_s": sum(p["tune_wall_s"] for p in parts),
            "per_job_examples_per_s": [round(p["examples_per_s"], 2) for p in parts],
            "order": "sequential first" if args.sequential_first else "one job first"})
    if {"c", "c1"} & sections and args.sequential_first:
        one_job()
    if "e" in sections:
        model, tokenizer = _load_weights(DEFAULT_MODEL)
        model.set_attn_implementation("eager")
        eager = Backbone(DEFAULT_MODEL, model, tokenizer, bf16.device, bf16.dtype)
        summary["studio_bf16_eager_1p"] = emit({
            "config": "studio_bf16_eager_1p", "note": "as studio_bf16_1p, eager attention instead of SDPA (proposal)",
            "prompts": 1, **common, **run_studio(eager, [TrainingPrompt(task, origin, 0)], args.steps, args.warmup)})
        summary["studio_bf16_eager_6p_one_job"] = emit({
            "config": "studio_bf16_eager_6p_one_job", "note": "as studio_bf16_6p_one_job, eager attention "
            "(proposal)", "prompts": len(jobs), **common, **run_studio(eager, jobs, args.steps, args.warmup)})
        del eager, model
    if "d" in sections:
        accuracy_check(bf16, fp32, task, origin, args.acc_steps, args.test_limit, args.val_limit)

    ratios = {}
    if "studio_bf16_1p" in summary and "peft_fp32_1p" in summary:
        ratios["studio_bf16_1p / peft_fp32_1p"] = (summary["studio_bf16_1p"]["examples_per_s"]
                                                   / summary["peft_fp32_1p"]["examples_per_s"])
    if "studio_fp32_1p" in summary and "peft_fp32_1p" in summary:
        ratios["studio_fp32_1p / peft_fp32_1p"] = (summary["studio_fp32_1p"]["examples_per_s"]
                                                   / summary["peft_fp32_1p"]["examples_per_s"])
    if "studio_bf16_6p_sequential" in summary:
        ratios["6p one job / 6p sequential"] = (summary["studio_bf16_6p_one_job"]["examples_per_s"]
                                                / summary["studio_bf16_6p_sequential"]["examples_per_s"])
        if "peft_fp32_1p" in summary:
            ratios["6p one job / peft_fp32_1p"] = (summary["studio_bf16_6p_one_job"]["examples_per_s"]
                                                   / summary["peft_fp32_1p"]["examples_per_s"])
    if "studio_bf16_6p_one_job" in summary and "studio_bf16_1p" in summary:
        ratios["6p one job / studio_bf16_1p"] = (summary["studio_bf16_6p_one_job"]["examples_per_s"]
                                                 / summary["studio_bf16_1p"]["examples_per_s"])
    if "studio_bf16_eager_1p" in summary and "studio_bf16_1p" in summary:
        ratios["studio_bf16_eager_1p / studio_bf16_1p"] = (summary["studio_bf16_eager_1p"]["examples_per_s"]
                                                           / summary["studio_bf16_1p"]["examples_per_s"])
    if "studio_bf16_eager_1p" in summary and "peft_fp32_1p" in summary:
        ratios["studio_bf16_eager_1p / peft_fp32_1p"] = (summary["studio_bf16_eager_1p"]["examples_per_s"]
                                                         / summary["peft_fp32_1p"]["examples_per_s"])
    if "studio_bf16_eager_6p_one_job" in summary and "studio_bf16_6p_one_job" in summary:
        ratios["eager 6p one job / 6p one job"] = (summary["studio_bf16_eager_6p_one_job"]["examples_per_s"]
                                                   / summary["studio_bf16_6p_one_job"]["examples_per_s"])
    emit({"config": "ratios", **ratios, "loadavg_end": loadavg(), "total_s": time.perf_counter() - started})

    print(f"\n{'configuration':<28} {'prompts':>7} {'examples/s':>11} {'s/step (median)':>16} {'timed s':>8}")
    for name, record in summary.items():
        step = record.get("median_step_s")
        print(f"{name:<28} {record['prompts']:>7} {record['examples_per_s']:>11.2f} "
              f"{(f'{step:.3f}' if step else '-'):>16} {record['timed_s']:>8.1f}")
    for name, value in ratios.items():
        print(f"ratio {name:<40} {value:.2f}x")
    for record in RESULTS:
        if record["config"] in ("accuracy_bf16", "accuracy_fp32"):
            print(f"{record['config']:<16} test acc {record['test_acc']:.3f} +- {record['test_acc_se']:.3f} "
                  f"(n={record['test_n']}, origin {record['test_acc_origin']:.3f}); val acc "
                  f"{record['val_acc_step0']:.3f} -> {record['val_acc_final']:.3f}")
        if record["config"] == "accuracy_bf16_vs_fp32":
            print(f"bf16 - fp32 test acc {record['acc_diff']:+.3f} (unpaired SE {record['diff_se_unpaired']:.3f}); "
                  f"predictions agree on {record['prediction_agreement']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
