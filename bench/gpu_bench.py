"""GPU benchmark of the studio engine on a SmolLM2-135M-sized Llama with random weights (no downloads).

Self-contained: torch + transformers + peft + the ``studio`` package of this repository. Throughput does not depend
on the weights, so the model is built from a config; the inputs are synthetic sentences with SST-2-like lengths,
tokenised by a whitespace stand-in tokenizer (the real one is not on the GPU machine). Configurations, one JSON
line each (names select them: ``python bench/gpu_bench.py peft studio12``):

  peft           PEFT PromptTuningConfig CAUSAL_LM, fp32, batch 32, full logits (the reference setup, as in
                 ../shared/bench/peft_anchor_gpu_llama.py)
  studio1        studio ``tune``: 1 prompt x 32 per step, frozen bf16 backbone, TuneConfig defaults (micro_batch 16)
  studio1_mb32   the same with micro_batch=32 (the whole step in one forward)
  studio1_shared / studio12_shared  the same as studio1 / studio12 with the rows' shared prefix run once per
                 prompt (the CPU default; off in GPU tuning until these rows show it pays)
  studio12       studio ``tune``: 12 prompts x 32 per step (384 rows), micro_batch 16 (the default)
  studio12_mb384 the same with micro_batch=384 (one forward per step)
  bare12         a minimal frozen-bf16 loop, 12 prompts x 32 in one forward, answer-only logits (the anchor's
                 "frozen12"): what the engine could reach without its per-step overhead
  eval1 / eval12           studio ``evaluate`` (rank classification, single-token labels), 1 and 12 prompts,
                           batch_rows 32 (the default)
  eval1_b256 / eval12_b256 the same with batch_rows 256

    python bench/gpu_bench.py                       # all, ~3 min on an H100
    TINY=1 SECS=1 python bench/gpu_bench.py         # CPU smoke run with a tiny model (< 1 min; 1 thread,
                                                    # 4 prompts x 8 rows instead of 12 x 32)

Environment: SECS (timed seconds per training config, default 6), TINY=1, P (virtual tokens, default 50 as the
anchor; the CPU bench uses 20), TF32 (default 1, as the anchor sets for its fp32 PEFT run).
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from studio.backbones import Backbone, Row, compile_wanted  # noqa: E402
from studio.evaluation import evaluate  # noqa: E402
from studio.limits import MAX_STEPS  # noqa: E402
from studio.prompts import make_origin  # noqa: E402
from studio.tasks import Example, TaskData, TaskSpec  # noqa: E402
from studio.tuning import TrainingPrompt, TuneConfig, tune  # noqa: E402

TINY = os.environ.get("TINY") == "1"
SECS = float(os.environ.get("SECS", "6"))
P = int(os.environ.get("P", "50"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
WARMUP = 3
torch.backends.cuda.matmul.allow_tf32 = os.environ.get("TF32", "1") == "1"

KW = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
          num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048)
if TINY:
    KW.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=1000)
CFG = LlamaConfig(**KW, pad_token_id=0, eos_token_id=1)
PER = 8 if TINY else 32  # rows per prompt per step
MULTI = 4 if TINY else 12  # prompts in the multi-prompt configs
if DEV == "cpu":
    torch.set_num_threads(1)  # the smoke run: small ops, and 2-thread OpenMP barriers crawl on a busy CPU
INSTRUCTION = "Is the sentiment of this sentence negative or positive?"
N_TRAIN, N_TEST = (128, 32) if TINY else (4096, 1024)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEV == "cuda" else None


def reset_memory() -> None:
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---- a whitespace tokenizer stand-in: "w123" -> id 123, any other word -> a stable hashed id ---------------------
class WordTokenizer:
    pad_token_id = 0
    eos_token_id = 1
    chat_template = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def word_id(self, word: str) -> int:
        if word[:1] == "w" and word[1:].isdigit():
            return 2 + int(word[1:]) % (self.vocab_size - 2)
        return 2 + zlib.crc32(word.encode()) % (self.vocab_size - 2)

    def __call__(self, text: str, add_special_tokens: bool = False):
        return SimpleNamespace(input_ids=[self.word_id(w) for w in text.split()])


def synthetic_task(name: str, seed: int) -> TaskData:
    """Sentences of random words, lengths like the anchor's SST-2 stand-in (20-63 tokens with the template)."""
    g = torch.Generator().manual_seed(seed)
    template = len(INSTRUCTION.split()) + 2  # "sentence:" and "label:"

    def make(n: int) -> list[Example]:
        lens = (torch.randint(20, 50, (n,), generator=g) + torch.randint(0, 30, (n,), generator=g) // 2).tolist()
        out = []
        for length in lens:
            words = torch.randint(2, CFG.vocab_size, (max(3, length - template),), generator=g).tolist()
            out.append(Example((("sentence", " ".join(f"w{w}" for w in words)),), int(torch.randint(0, 2, (1,),
                                                                                                  generator=g))))
        return out

    spec = TaskSpec(name, name, "sentiment", INSTRUCTION, ("sentence",), ("negative", "positive"), "file")
    return TaskData(spec, make(N_TRAIN), make(64), make(N_TEST), data_hash=f"synthetic-{name}-{seed}")


def backbone(name: str) -> Backbone:
    torch.manual_seed(0)
    return Backbone(name, LlamaForCausalLM(CFG), WordTokenizer(CFG.vocab_size), DEV,
                    torch.bfloat16 if DEV == "cuda" else torch.float32)


# ---- studio tune, timed through on_progress ---------------------------------------------------------------------
class compiling:
    """Within the block, backbones made compile (``STUDIO_COMPILE=1``), do not (``0``) or follow the default (None)."""

    def __init__(self, switch: str | None):
        self.switch = switch

    def __enter__(self):
        self.before = os.environ.pop("STUDIO_COMPILE", None)
        if self.switch is not None:
            os.environ["STUDIO_COMPILE"] = self.switch

    def __exit__(self, *_):
        os.environ.pop("STUDIO_COMPILE", None)
        if self.before is not None:
            os.environ["STUDIO_COMPILE"] = self.before


def run_tune(n_prompts: int, per_prompt: int, micro_batch: int | None, compile_switch: str | None = None,
             shared_prefixes: bool | None = None) -> dict:
    with compiling(compile_switch):
        return _run_tune(n_prompts, per_prompt, micro_batch, shared_prefixes)


def _run_tune(n_prompts: int, per_prompt: int, micro_batch: int | None, shared_prefixes: bool | None) -> dict:
    bb = backbone(f"bench-{n_prompts}-{micro_batch}")
    if shared_prefixes is not None:  # None: the backbone's default for this device
        bb.shares_prefixes_in_training = shared_prefixes
    tasks = [synthetic_task("syn-a", 1), synthetic_task("syn-b", 2)]
    jobs = [TrainingPrompt(tasks[j % 2], make_origin(bb, j, P), j) for j in range(n_prompts)]
    stamps: list[float] = []

    def on_progress(event: dict) -> None:
        sync()
        stamps.append(time.perf_counter())

    def should_stop() -> bool:
        timed = len(stamps) - WARMUP
        return timed >= 3 and stamps[-1] - stamps[WARMUP - 1] >= SECS

    reset_memory()
    config = TuneConfig(steps=MAX_STEPS, batch_size=per_prompt, micro_batch=micro_batch, eval_every=MAX_STEPS,
                        val_limit=2)
    started = time.perf_counter()
    outcome = tune(bb, jobs, config, on_progress=on_progress, should_stop=should_stop)
    k = len(stamps) - WARMUP
    dt = stamps[-1] - stamps[WARMUP - 1]
    rows = n_prompts * per_prompt
    dtype = str(bb.dtype).split(".")[-1]
    shares = bb.shares_prefixes and bb.shares_prefixes_in_training
    del bb
    return dict(examples_per_s=round(k * rows / dt, 1), step_s=round(dt / k, 4), timed_steps=k,
                rows_per_step=rows, micro_batch=micro_batch, dtype=dtype, compiled=compile_wanted(DEV),
                first_step_s=round(stamps[0] - started, 1), peak_gib=peak_gib(), status=outcome.status,
                shared_prefixes=shares)


# ---- PEFT reference: CAUSAL_LM prompt tuning, fp32, full logits ------------------------------------------------------
def make_batch(g: torch.Generator, n: int):
    lens = (torch.randint(20, 50, (n,), generator=g) + torch.randint(0, 30, (n,), generator=g) // 2).tolist()
    L = max(lens) + 1
    ids = torch.zeros(n, L, dtype=torch.long)
    att = torch.zeros(n, L, dtype=torch.long)
    lab = torch.full((n, L), -100, dtype=torch.long)
    last = torch.zeros(n, dtype=torch.long)
    for i, length in enumerate(lens):
        ids[i, : length + 1] = torch.randint(2, CFG.vocab_size, (length + 1,), generator=g)
        att[i, : length + 1] = 1
        lab[i, length] = ids[i, length]
        last[i] = length - 1
    return ids.to(DEV), att.to(DEV), lab.to(DEV), last.to(DEV)


def timed(step, rows: int) -> dict:
    for _ in range(WARMUP):
        step()
    sync()
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < SECS or k < 3:
        step()
        k += 1
    sync()
    dt = time.perf_counter() - t0
    return dict(examples_per_s=round(k * rows / dt, 1), step_s=round(dt / k, 4), timed_steps=k, rows_per_step=rows,
                peak_gib=peak_gib())


def run_peft() -> dict:
    from peft import PromptTuningConfig, TaskType, get_peft_model

    reset_memory()
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(CFG).to(DEV),
                           PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=P))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.03)
    g = torch.Generator().manual_seed(0)
    batches = [make_batch(g, PER) for _ in range(8)]
    it = [0]

    def step():
        ids, att, lab, _ = batches[it[0] % 8]
        it[0] += 1
        model(input_ids=ids, attention_mask=att, labels=lab).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = timed(step, PER)
    return out


def run_bare(n_prompts: int, per: int) -> dict:
    """The anchor's minimal frozen-bf16 loop (no engine): all rows in one forward, logits at the answer only."""
    reset_memory()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if DEV == "cuda" else torch.float32
    base = LlamaForCausalLM(CFG).to(DEV).to(dtype).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    emb = base.get_input_embeddings()
    prompts = torch.nn.Parameter(torch.randn(n_prompts, P, CFG.hidden_size, device=DEV) * 0.02)
    opt = torch.optim.AdamW([prompts], lr=0.03)
    bs = n_prompts * per
    g = torch.Generator().manual_seed(0)
    batches = [make_batch(g, bs) for _ in range(8)]
    which = torch.arange(n_prompts, device=DEV).repeat_interleave(per)
    it = [0]

    def step():
        ids, att, lab, last = batches[it[0] % 8]
        it[0] += 1
        x = torch.cat([prompts[which].to(dtype), emb(ids)], 1)
        a = torch.cat([torch.ones(bs, P, dtype=att.dtype, device=DEV), att], 1)
        h = base.model(inputs_embeds=x, attention_mask=a).last_hidden_state
        h = h[torch.arange(bs, device=DEV), last + P]
        tgt = lab.gather(1, (last + 1).unsqueeze(1)).squeeze(1)
        (torch.nn.functional.cross_entropy(base.lm_head(h).float(), tgt) * n_prompts).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = timed(step, bs)
    return out


# ---- evaluation throughput ----------------------------------------------------------------------------------------
def run_eval(n_prompts: int, batch_rows: int | None, compile_switch: str | None = None) -> dict:
    with compiling(compile_switch):
        return _run_eval(n_prompts, batch_rows)


def _run_eval(n_prompts: int, batch_rows: int | None) -> dict:
    bb = backbone(f"bench-eval-{n_prompts}-{batch_rows}")
    task = synthetic_task("syn-eval", 3)
    prompts = torch.stack([make_origin(bb, j, P) for j in range(n_prompts)])
    reset_memory()
    started = time.perf_counter()
    evaluate(bb, prompts, task, "validation", batch_rows=batch_rows, keep_records=False)  # warm-up
    sync()
    warmup_s = time.perf_counter() - started
    t0 = time.perf_counter()
    rounds = 0
    while True:  # whole test split per round, at least once and for SECS / 2
        evaluate(bb, prompts, task, "test", batch_rows=batch_rows, keep_records=False)
        rounds += 1
        sync()
        if time.perf_counter() - t0 >= SECS / 2:
            break
    dt = time.perf_counter() - t0
    rows = rounds * n_prompts * len(task.test)
    del bb
    return dict(examples_per_s=round(rows / dt, 1), rows=rows, batch_rows=batch_rows, compiled=compile_wanted(DEV),
                warmup_s=round(warmup_s, 1), peak_gib=peak_gib())


def run_parity() -> dict:
    """The compiled forward/backward against the eager one on the same model and rows: the answer log-probabilities
    and the prompts' gradients (bf16 on a GPU: fused kernels round differently, so a small difference is expected)."""
    bb = backbone("bench-parity")
    task = synthetic_task("syn-a", 1)
    target = bb.encode_target(bb.render_target("positive"))
    rows = [Row(i % MULTI, bb.encode_input(bb.render_input(INSTRUCTION, e.body()), 384), target)
            for i, e in enumerate(task.train[: MULTI * PER])]
    prompts = torch.nn.Parameter(torch.stack([make_origin(bb, j, P) for j in range(MULTI)]).to(DEV))
    out = {}
    for switch in ("0", "1"):
        with compiling(switch):
            bb._body_module, prompts.grad = None, None
            logprobs, _ = bb.target_logprobs(prompts, rows)
            logprobs.sum().backward()
            out[switch] = (logprobs.detach().float().cpu(), prompts.grad.detach().float().cpu())
    (eager_lp, eager_grad), (compiled_lp, compiled_grad) = out["0"], out["1"]
    return dict(rows=len(rows), logprob_max_abs_diff=float((eager_lp - compiled_lp).abs().max()),
                logprob_mean_abs=float(eager_lp.abs().mean()),
                grad_rel_diff=float((eager_grad - compiled_grad).norm() / eager_grad.norm()))


def run_profile(n_prompts: int, compile_switch: str | None) -> dict:
    """Where a tuning step's time goes: torch.profiler over 5 steps after 3 warm ones, the top operators by their
    own GPU time and by their own CPU time (a launch-bound step shows CPU time far above GPU time)."""
    with compiling(compile_switch):
        bb = backbone(f"bench-profile-{n_prompts}")
        tasks = [synthetic_task("syn-a", 1), synthetic_task("syn-b", 2)]
        jobs = [TrainingPrompt(tasks[j % 2], make_origin(bb, j, P), j) for j in range(n_prompts)]
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                              if DEV == "cuda" else [])
        profiler = torch.profiler.profile(activities=activities)
        seen = [0]

        def on_progress(event: dict) -> None:
            seen[0] += 1
            sync()
            if seen[0] == WARMUP:
                profiler.start()
            elif seen[0] == WARMUP + 5:
                profiler.stop()

        tune(bb, jobs, TuneConfig(steps=WARMUP + 5, batch_size=PER, eval_every=MAX_STEPS, val_limit=2),
             on_progress=on_progress)
        table = profiler.key_averages()
        device_time = "self_device_time_total" if DEV == "cuda" else "self_cpu_time_total"

        def top(key: str) -> list:
            rows = sorted(table, key=lambda e: -getattr(e, key))[:15]
            return [[e.key[:60], round(getattr(e, key) / 5e3, 2), round(e.count / 5, 1)] for e in rows]

        return dict(steps=5, ms_per_step_by="own time / 5 steps, calls per step",
                    cpu_ms_per_step=round(sum(e.self_cpu_time_total for e in table) / 5e3, 1),
                    gpu_ms_per_step=round(sum(getattr(e, device_time) for e in table) / 5e3, 1),
                    ops_per_step=round(sum(e.count for e in table) / 5), top_gpu=top(device_time),
                    top_cpu=top("self_cpu_time_total"))


CONFIGS = {
    "peft": (f"PEFT CAUSAL_LM fp32 bs{PER}, full logits", run_peft),
    "studio1": (f"studio tune bf16, 1 prompt x {PER}, defaults", lambda: run_tune(1, PER, None)),
    "studio1_eager": (f"studio tune bf16, 1 prompt x {PER}, STUDIO_COMPILE=0", lambda: run_tune(1, PER, None, "0")),
    "studio1_compiled": (f"studio tune bf16, 1 prompt x {PER}, STUDIO_COMPILE=1",
                         lambda: run_tune(1, PER, None, "1")),
    "studio1_mb16": (f"studio tune bf16, 1 prompt x {PER}, micro_batch 16 (the old default)",
                     lambda: run_tune(1, PER, 16)),
    "studio1_mb32": (f"studio tune bf16, 1 prompt x {PER}, micro_batch {PER}", lambda: run_tune(1, PER, PER)),
    "studio1_shared": (f"studio tune bf16, 1 prompt x {PER}, the rows' shared prefix run once (as on a CPU)",
                       lambda: run_tune(1, PER, None, shared_prefixes=True)),
    "studio12": (f"studio tune bf16, {MULTI} prompts x {PER}, defaults", lambda: run_tune(MULTI, PER, None)),
    "studio12_shared": (f"studio tune bf16, {MULTI} prompts x {PER}, the rows' shared prefix run once (as on a CPU)",
                        lambda: run_tune(MULTI, PER, None, shared_prefixes=True)),
    "studio12_eager": (f"studio tune bf16, {MULTI} prompts x {PER}, STUDIO_COMPILE=0",
                       lambda: run_tune(MULTI, PER, None, "0")),
    "studio12_compiled": (f"studio tune bf16, {MULTI} prompts x {PER}, STUDIO_COMPILE=1",
                          lambda: run_tune(MULTI, PER, None, "1")),
    "studio12_mb384": (f"studio tune bf16, {MULTI} prompts x {PER}, micro_batch {MULTI * PER}",
                       lambda: run_tune(MULTI, PER, MULTI * PER)),
    "bare12": (f"minimal frozen bf16 loop, {MULTI} prompts x {PER}, one forward (no engine)",
               lambda: run_bare(MULTI, PER)),
    "eval1": ("studio evaluate bf16, 1 prompt, defaults", lambda: run_eval(1, None)),
    "eval1_eager": ("studio evaluate bf16, 1 prompt, STUDIO_COMPILE=0", lambda: run_eval(1, None, "0")),
    "eval1_b32": ("studio evaluate bf16, 1 prompt, batch_rows 32 (the old default)", lambda: run_eval(1, 32)),
    "eval1_b256": ("studio evaluate bf16, 1 prompt, batch_rows 256", lambda: run_eval(1, 256)),
    "eval12": (f"studio evaluate bf16, {MULTI} prompts, defaults", lambda: run_eval(MULTI, None)),
    "eval12_eager": (f"studio evaluate bf16, {MULTI} prompts, STUDIO_COMPILE=0", lambda: run_eval(MULTI, None, "0")),
    "eval12_compiled": (f"studio evaluate bf16, {MULTI} prompts, STUDIO_COMPILE=1",
                        lambda: run_eval(MULTI, None, "1")),
    "parity": ("compiled vs eager: answer log-probabilities and prompt gradients", run_parity),
    "profile1_eager": (f"torch.profiler: studio tune, 1 prompt x {PER}, STUDIO_COMPILE=0",
                       lambda: run_profile(1, "0")),
    "profile1_compiled": (f"torch.profiler: studio tune, 1 prompt x {PER}, STUDIO_COMPILE=1",
                          lambda: run_profile(1, "1")),
    "eval12_b256": (f"studio evaluate bf16, {MULTI} prompts, batch_rows 256", lambda: run_eval(MULTI, 256)),
}


def main() -> None:
    started = time.perf_counter()
    names = sys.argv[1:] or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    import peft
    import transformers

    print(json.dumps(dict(config="machine", device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
                          torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                          params_m=round(sum(p.numel() for p in LlamaForCausalLM(CFG).parameters()) / 1e6, 1),
                          virtual_tokens=P, secs=SECS, tiny=TINY, tf32=torch.backends.cuda.matmul.allow_tf32)),
          flush=True)
    for name in names:
        note, fn = CONFIGS[name]
        t0 = time.perf_counter()
        try:
            result = fn()
            print(json.dumps(dict(config=name, note=note, **result, wall_s=round(time.perf_counter() - t0, 1))),
                  flush=True)
        except Exception as error:  # one failing config must not hide the others
            print(json.dumps(dict(config=name, note=note, error=repr(error)[:300])), flush=True)
    print(json.dumps(dict(config="done", total_s=round(time.perf_counter() - started, 1))), flush=True)


if __name__ == "__main__":
    main()
