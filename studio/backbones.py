"""Frozen language models that soft prompts are tuned for.

A ``Backbone`` wraps a frozen model and its tokenizer and knows the one thing the rest of the studio needs:
the log-probability of answer tokens after ``[soft prompt] + input``. Decoder-only models (Llama, Gemma...)
and T5-style encoder-decoders are supported; for T5 the soft prompt goes in front of the encoder input only
(one prompt, unlike PEFT's hidden encoder/decoder split, whose decoder half never affects predictions).

``load_backbone`` loads a model by name from where ``studio.weights`` says its weights are (a known model's
converted cache, a local folder, or online a Hugging Face id) and keeps one per process.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio import HEAVY_IMPORT_LOCK, StudioError
from studio.config import DEFAULT_MODEL, on_zero_gpu
from studio.faults import kill_point
from studio.settings import SMALL_DECODER_RECIPE, T5_RECIPE, Recipe
from studio.weights import KNOWN_BACKBONES, model_source


def recipe_for(model: str) -> Recipe:
    """The default tuning recipe of a model: its registry entry's, else the paper's T5 recipe for encoder-decoders
    (read from a local folder's config.json, or guessed from a hub id's name) and the small-decoder one otherwise."""
    if model in KNOWN_BACKBONES:
        return KNOWN_BACKBONES[model].recipe
    config = Path(model).expanduser() / "config.json"
    try:
        seq2seq = bool(json.loads(config.read_text()).get("is_encoder_decoder"))
    except (OSError, ValueError, AttributeError):
        seq2seq = "t5" in model.lower()
    return T5_RECIPE if seq2seq else SMALL_DECODER_RECIPE


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 for the frozen backbone where the hardware does bf16 matmuls fast (CUDA, or a CPU with AMX/AVX512-BF16).

    ``STUDIO_DTYPE=float32`` forces full precision. Prompts and optimiser state always stay fp32.
    """
    forced = os.environ.get("STUDIO_DTYPE")
    if forced:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[
            forced
        ]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    try:
        fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        fast_bf16 = False
    return torch.bfloat16 if fast_bf16 else torch.float32


def compile_wanted(device: str) -> bool:
    """Whether the backbone's forward runs through ``torch.compile``: only when asked (``STUDIO_COMPILE=1``) and
    never on ZeroGPU, whose GPU calls are too short to amortise it. Measured on an H200 (docs/performance.md): 12
    prompts tune 1.6x faster compiled and evaluation of 12 prompts reaches 5,450 examples/s, but the first step
    compiled for over four minutes and one prompt per step ran slower, so interactive use stays eager."""
    return os.environ.get("STUDIO_COMPILE") == "1" and not on_zero_gpu()


PREFIX_SHARING_MODELS = ("llama", "gpt2")


@dataclass
class Row:
    """One sequence to score: ``[prompt #prompt_index] + input_ids``, then the answer ``target_ids``."""

    prompt_index: int
    input_ids: list[int]
    target_ids: list[int]


# padded tokens per forward pass (``Backbone.batch_tokens``), measured: on an H100 a 384-row step in one forward ran
# 10x faster than in 16-row micro-batches; on this project's 2-core CPU a training step is fastest at 16 rows of ~100
# tokens, and a pass without gradients costs least per token near 1,024 (docs/performance.md)
GPU_BATCH_TOKENS = 65536
CPU_TRAINING_BATCH_TOKENS = 2048
CPU_EVAL_BATCH_TOKENS = 1024
# what one more CPU pass without gradients costs in padded tokens: ~45 ms against ~0.28 ms per token
CPU_PASS_COST_TOKENS = 160


def plan_batches(lengths: list[int], budget: int, pass_cost: int, max_rows: int | None = None) -> list[range]:
    """Consecutive groups of rows (sorted by length, either way), one forward pass each: of the groupings whose
    passes fit ``budget`` padded tokens (and ``max_rows`` rows), the one that computes the fewest padded tokens,
    counting each pass as ``pass_cost`` more (dynamic programming over where groups end)."""
    if not lengths:
        return []
    size = np.asarray(lengths, dtype=np.int64)
    best = np.zeros(len(size) + 1)  # best[i]: the cheapest grouping of rows[:i]
    start_of = np.zeros(len(size) + 1, dtype=np.int64)
    first = 0  # the earliest row a group ending here may start at (moves forward only: rows are sorted)
    for stop in range(1, len(size) + 1):
        while stop - first > 1 and ((stop - first) * max(size[first], size[stop - 1]) > budget
                                    or (max_rows and stop - first > max_rows)):
            first += 1
        starts = np.arange(first, stop)
        longest = np.maximum(size[starts], size[stop - 1])
        costs = best[starts] + (stop - starts) * longest + pass_cost
        pick = int(np.argmin(costs))
        best[stop], start_of[stop] = costs[pick], starts[pick]
    groups, stop = [], len(size)
    while stop:
        groups.append(range(int(start_of[stop]), stop))
        stop = int(start_of[stop])
    return groups[::-1]


class Backbone:
    """A frozen model plus tokenizer. Every parameter has ``requires_grad=False``."""

    def __init__(self, name: str, model, tokenizer, device: str, dtype: torch.dtype):
        self.name = name
        # made on first use: the eager-attention twin tuning runs on, the (maybe compiled) body, the fp32 LM head
        self._training_twin: Backbone | None = None
        self._body_module = None
        self._head_weight: torch.Tensor | None = None
        self.model = model.to(device=device, dtype=dtype).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.hidden_size = int(self.model.get_input_embeddings().weight.shape[1])
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])
        self.uses_chat_template = bool(getattr(tokenizer, "chat_template", None)) and not self.is_seq2seq
        # on a GPU every batch is padded to a multiple of 32 tokens: PyTorch's cuDNN attention builds a plan per new
        # shape (~1 ms of CPU per layer and pass, half a launch-bound step on an H200: docs/performance.md), and
        # rounded lengths repeat. A CPU computes every padded token, so it pads only to the longest row.
        self.pad_multiple = 32 if str(device).startswith("cuda") else 1
        # rows behind one prompt share their leading tokens (template, instruction): computed once per prompt. On for
        # the decoder families the tests check it against the plain path with (Llama: SmolLM2; GPT-2)
        self.shares_prefixes = str(getattr(model.config, "model_type", "")) in PREFIX_SHARING_MODELS
        # in tuning, only where it was measured to pay (a CPU: 3.5x PEFT against 2.9x). A launch-bound GPU step may
        # lose more to the prefix's extra forward and backward launches than the tokens save; bench/gpu_bench.py's
        # *_shared rows measure it against the default on the next GPU run
        self.shares_prefixes_in_training = not str(device).startswith("cuda")
        # the key/value cache's argument and output name: "past_key_values" until transformers 5.2x renamed it
        self._cache_name = "cache" if "cache" in inspect.signature(self.model.base_model.forward).parameters \
            else "past_key_values"
        # decoders whose tokenizer starts every text with BOS (Gemma) were trained with it: the input text gets the
        # BOS token written in, so the text still tokenises (without special tokens) to exactly the ids scored
        bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
        adds_bos = bool(bos) and bos_id is not None and not self.is_seq2seq and tokenizer("a").input_ids[:1] == [bos_id]
        self.bos_prefix = bos if adds_bos else ""

    def __repr__(self) -> str:
        kind = "encoder-decoder" if self.is_seq2seq else "decoder-only"
        return f"Backbone({self.name!r}, {kind}, hidden={self.hidden_size}, {self.device}, {self.dtype})"

    def for_training(self) -> Backbone:
        """The backbone that tuning runs its forward and backward passes on: this one, except on a CPU with a bf16
        backbone, where it is a twin with eager attention over the very same weights (no copy). There, PyTorch's
        SDPA backward in bf16 is slow: eager attention made a tuning step 1.5x faster on this project's Xeon
        (docs/performance.md). Evaluation keeps SDPA, so scores do not depend on whether a job is running."""
        if self.device != "cpu" or self.dtype != torch.bfloat16 or self.is_seq2seq:
            return self
        if self._training_twin is None:
            shared = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
            model = copy.deepcopy(self.model, memo=shared)  # new modules and config, the same tensors
            try:
                model.set_attn_implementation("eager")
            except (AttributeError, ValueError):  # a model without the switch keeps its attention
                self._training_twin = self
                return self
            twin = copy.copy(self)
            twin.model, twin._training_twin, twin._body_module = model, twin, None  # its own body, not ours
            self._training_twin = twin
        return self._training_twin

    def _body(self):
        """The decoder without its LM head (``.model`` for Llama/Gemma, ``.transformer`` for GPT-2...); compiled with
        ``torch.compile`` when ``compile_wanted`` says so (a launch-bound GPU step fuses its kernels). Shapes are
        dynamic, so new batch sizes and lengths do not recompile; a first call in a new grad mode does."""
        if self._body_module is None:
            body = self.model.base_model
            self._body_module = torch.compile(body, dynamic=True) if compile_wanted(self.device) else body
        return self._body_module

    def _head_fp32(self) -> torch.Tensor:
        if self._head_weight is None:
            self._head_weight = self.model.get_output_embeddings().weight.detach().float()
        return self._head_weight

    # ---- text -> token ids -------------------------------------------------------------------------
    def render_input(self, instruction: str, body: str) -> str:
        """The exact text placed after the soft prompt: a chat turn for instruct models, plain text otherwise."""
        if self.uses_chat_template:
            messages = [{"role": "system", "content": instruction}, {"role": "user", "content": body}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{instruction}\n{body}\nlabel:"
        return text if text.startswith(self.bos_prefix) else self.bos_prefix + text

    def render_target(self, label_word: str) -> str:
        """The exact text scored after the input (a leading space for plain decoder prompts ending in 'label:')."""
        if self.is_seq2seq or self.uses_chat_template:
            return label_word
        return " " + label_word

    def encode_input(self, text: str, max_tokens: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=self.is_seq2seq).input_ids
        if len(ids) > max_tokens:  # keep the end (chat templates put the answer cue last) and a leading BOS
            keep_first = self.is_seq2seq or bool(self.bos_prefix)
            ids = ids[:1] + ids[len(ids) - max_tokens + 1 :] if keep_first else ids[len(ids) - max_tokens :]
        return ids

    def encode_target(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if self.is_seq2seq:
            ids = ids + [self.tokenizer.eos_token_id]
        if not ids:
            raise StudioError(f"the label word {text!r} encodes to no tokens; choose a non-empty label word")
        return ids

    # ---- the forward pass ------------------------------------------------------------------------------
    def batch_tokens(self, training: bool = True) -> int:
        """Padded tokens per forward pass: small on a CPU (cache-friendly), large on a GPU (one launch per step; the
        measurements are at ``GPU_BATCH_TOKENS`` and its neighbours). ``STUDIO_BATCH_TOKENS`` overrides both."""
        forced = os.environ.get("STUDIO_BATCH_TOKENS")
        if forced:
            return int(forced)
        if self.device.startswith("cuda"):
            return GPU_BATCH_TOKENS
        return CPU_TRAINING_BATCH_TOKENS if training else CPU_EVAL_BATCH_TOKENS

    @property
    def budget_counts_prefix(self) -> bool:
        """Whether a row's cached shared prefix counts toward ``batch_tokens``: on a GPU the budget bounds memory,
        and every row holds its own copy of the prefix's keys and values; on a CPU it bounds compute, and the prefix
        is not computed again."""
        return self.device != "cpu"

    def pass_cost_tokens(self, training: bool = True) -> int:
        """What one more forward pass costs, in padded tokens: on this project's CPU a pass without gradients takes
        about 45 ms plus 0.28 ms per token, so ~160 tokens. A GPU is launch-bound, and a training pass also runs
        its prompts' shared prefixes and a backward again: there, as few passes as fit the budget."""
        return CPU_PASS_COST_TOKENS if self.device == "cpu" and not training else self.batch_tokens(training)

    def batches(self, lengths: list[int], max_rows: int | None = None, training: bool = True) -> list[range]:
        """The rows' forward passes on this backbone (``plan_batches`` with its token budget and cost per pass)."""
        return plan_batches(lengths, self.batch_tokens(training), self.pass_cost_tokens(training), max_rows)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings through the model's own layer (so models that scale embeddings, like Gemma, agree)."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def target_logprobs(
        self, prompts: torch.Tensor | None, rows: list[Row], candidates: torch.Tensor | None = None,
        prefix: SharedPrefix | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of each row's target tokens, shape [rows, max_target_len], plus their mask.

        ``prompts`` is a [J, n, d] fp32 table (row i uses ``prompts[rows[i].prompt_index]``) or None for no soft
        prompt. Gradients flow back into ``prompts``; the backbone stays frozen. Logits are computed only at the
        answer positions, never over the whole sequence. With ``candidates`` (token ids), return instead the
        [rows, len(candidates)] log-probabilities of each candidate as the first answer token: one forward ranks
        labels that are single tokens. ``prefix`` (from ``shared_prefix`` over these rows and maybe more, without
        gradients) is reused instead of running the rows' common prefix again.
        """
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = len(rows)
        max_target = max(len(r.target_ids) for r in rows)
        targets = torch.full((batch, max_target), pad_id, dtype=torch.long)
        target_mask = torch.zeros(batch, max_target, dtype=torch.bool)
        for i, row in enumerate(rows):
            targets[i, : len(row.target_ids)] = torch.tensor(row.target_ids)
            target_mask[i, : len(row.target_ids)] = True
        targets, target_mask = targets.to(self.device), target_mask.to(self.device)

        if self.is_seq2seq:
            ids, mask = _pad([r.input_ids for r in rows], pad_id, self.pad_multiple)
            embeds, mask = self._with_prompts(prompts, [r.prompt_index for r in rows], self.embed(ids),
                                              mask.to(self.device))
            start = self.model.config.decoder_start_token_id
            start = pad_id if start is None else start  # T5's own convention: the decoder starts at the pad token
            decoder_ids = torch.cat([torch.full((batch, 1), start, device=self.device), targets[:, :-1]], dim=1)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        else:
            answer_hidden = self._answer_hidden(prompts, rows, max_target, pad_id, prefix)
            logits = answer_hidden.float() @ self._head_fp32().T  # bf16 logits are too coarse to rank labels
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        if candidates is not None:
            return logprobs[:, 0, candidates.to(self.device)], target_mask[:, :1]
        logprobs = logprobs.gather(2, targets[..., None]).squeeze(-1)
        return logprobs * target_mask, target_mask


    def _with_prompts(self, prompts: torch.Tensor | None, owners: list[int], embeds: torch.Tensor,
                      mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``embeds`` [B, L, d] with each row's soft prompt (``prompts[owners[i]]``) in front, and the mask to match."""
        if prompts is None:
            return embeds, mask
        index = torch.tensor(owners, device=prompts.device)
        soft = prompts[index].to(device=self.device, dtype=self.dtype)
        if mask is not None:
            mask = torch.cat([torch.ones(len(owners), prompts.shape[1], dtype=mask.dtype, device=self.device), mask], 1)
        return torch.cat([soft, embeds], dim=1), mask

    def shared_prefix(self, prompts: torch.Tensor | None, rows: list[Row]) -> SharedPrefix | None:
        """Run the leading input tokens that the rows of each prompt share (``shared_prefix_length``: the chat template
        and the task's instruction, up to half of a short example) once per prompt, behind its soft prompt; None
        when sharing does not pay or this model cannot continue rows from a cache."""
        shared = shared_prefix_length(rows) if self.shares_prefixes and rows else 0
        if not shared:
            return None
        owners = sorted({r.prompt_index for r in rows})
        first_row = {r.prompt_index: r for r in reversed(rows)}
        prefix_ids = torch.tensor([first_row[j].input_ids[:shared] for j in owners], device=self.device)
        embeds, _ = self._with_prompts(prompts, owners, self.embed(prefix_ids), None)
        cache = getattr(self._body()(inputs_embeds=embeds, use_cache=True), self._cache_name, None)
        if not hasattr(cache, "batch_select_indices"):  # a model or transformers version without a selectable cache:
            # every row is computed whole from now on. The cache's kind is the model class's and the transformers
            # version's, the same for every call (not the rows', prompts' or grad mode's), so this call speaks for
            # all later ones, and none of them runs a prefix pass it could not use
            self.shares_prefixes = False
            return None
        return SharedPrefix(shared, embeds.shape[1], cache, {j: g for g, j in enumerate(owners)}, self.device)

    def _sharing_here(self, prompts: torch.Tensor | None) -> bool:
        training = torch.is_grad_enabled() and prompts is not None and prompts.requires_grad
        return self.shares_prefixes_in_training or not training

    def _answer_hidden(self, prompts: torch.Tensor | None, rows: list[Row], max_target: int,
                       pad_id: int, prefix: SharedPrefix | None = None) -> torch.Tensor:
        """The decoder's last hidden states at each row's answer positions, [rows, max_target, d]: the model reads
        the answer up to its last token and predicts each next one.

        The rows' shared prefix (``shared_prefix``, computed here unless given) runs once per prompt, and every row
        continues from its keys and values; gradients reach the prompt through both parts."""
        n_virtual = 0 if prompts is None else prompts.shape[1]
        cache = None
        if prefix is not None:  # reused across calls: each call continues from its own copy
            cache = prefix.rows_cache(rows, copy_first=True)
        elif self._sharing_here(prompts) and (own := self.shared_prefix(prompts, rows)) is not None:
            prefix, cache = own, own.rows_cache(rows, copy_first=False)
        shared = prefix.length if cache is not None else 0
        ids, mask = _pad([r.input_ids[shared:] + r.target_ids[:-1] for r in rows], pad_id, self.pad_multiple)
        embeds, mask = self.embed(ids), mask.to(self.device)
        if cache is None:
            embeds, mask = self._with_prompts(prompts, [r.prompt_index for r in rows], embeds, mask)
            skipped = 0
        else:  # the mask covers the cached prefix too
            skipped = prefix.cached_tokens
            mask = torch.cat([torch.ones(len(rows), skipped, dtype=mask.dtype, device=self.device), mask], dim=1)
        continued = {} if cache is None else {self._cache_name: cache}
        hidden = self._body()(inputs_embeds=embeds, attention_mask=mask, **continued).last_hidden_state
        first = torch.tensor([n_virtual + len(r.input_ids) - 1 - skipped for r in rows], device=self.device)
        positions = (first[:, None] + torch.arange(max_target, device=self.device)[None, :]).clamp(
            max=hidden.shape[1] - 1
        )
        return hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))


@dataclass
class SharedPrefix:
    """The keys and values of each prompt's ``[soft prompt] + first length input tokens``, computed once."""

    length: int  # input tokens shared by every row of a prompt
    cached_tokens: int  # virtual tokens + length
    cache: object  # the model's key/value cache, one batch entry per prompt
    group: dict[int, int]  # prompt index -> its batch entry
    device: str

    def rows_cache(self, rows: list[Row], copy_first: bool):
        """The cache with one entry per row (its prompt's). The model appends to the cache it continues from, so a
        prefix reused by several calls is copied first (no gradients there: a prompt's graph cannot be copied)."""
        cache = copy.deepcopy(self.cache) if copy_first else self.cache
        cache.batch_select_indices(torch.tensor([self.group[r.prompt_index] for r in rows], device=self.device))
        return cache


MIN_SHARED_PREFIX = 8  # tokens: below this, a second forward pass costs more than the tokens it saves


def shared_prefix_length(rows: list[Row]) -> int:
    """How many leading input tokens every row shares with the other rows of its prompt (the same count for all
    prompts, so the prefixes form one batch), keeping at least one own input token per row; 0 when sharing would
    not pay: fewer than ``MIN_SHARED_PREFIX`` tokens, or no prompt with two rows."""
    by_prompt: dict[int, list[int]] = {}
    common = min(len(r.input_ids) for r in rows) - 1
    for row in rows:
        reference = by_prompt.setdefault(row.prompt_index, row.input_ids)
        if reference is not row.input_ids:
            same = 0
            while same < common and reference[same] == row.input_ids[same]:
                same += 1
            common = same
    if len(by_prompt) == len(rows) or common < MIN_SHARED_PREFIX:
        return 0
    return common


def _pad(sequences: list[list[int]], pad_id: int, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence in this batch (dynamic padding), rounded up to ``multiple`` tokens."""
    longest = -(-max(len(s) for s in sequences) // multiple) * multiple
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


# ---- loading -------------------------------------------------------------------------------------------
_LOADED: dict[tuple[str, str, torch.dtype], Backbone] = {}


def load_backbone(name: str = DEFAULT_MODEL, device: str | None = None, dtype: torch.dtype | None = None) -> Backbone:
    """Load a backbone by registry name, local folder or Hugging Face id (cached per process).

    Offline, a known name loads from the studio cache or its embedded GGUF; a hub id works only when the hub
    is reachable (``HF_HUB_OFFLINE=0``).
    """
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    key = (name, device, dtype)
    with HEAVY_IMPORT_LOCK:  # one model load at a time, and no PEFT import beside it
        if key not in _LOADED:
            model, tokenizer = _load_weights(name)
            _LOADED[key] = Backbone(name, model, tokenizer, device, dtype)
            kill_point("model:loaded")
        return _LOADED[key]


def _load_weights(name: str):
    """The model (fp32) and tokenizer of ``name``, read from where ``weights.model_source`` says they are."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = model_source(name)
    try:
        config = AutoConfig.from_pretrained(folder)
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = auto.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # transformers and safetensors raise many kinds for a damaged or foreign folder
        first = (str(error).splitlines() or [type(error).__name__])[0]
        hint = (f": delete {folder} and run again (it is rebuilt from the embedded model)"
                if name in KNOWN_BACKBONES else "")
        raise StudioError(f"could not load model {name!r} ({first[:300]}){hint}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
