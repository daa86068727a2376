"""Export to a PEFT prompt-tuning adapter: PEFT loads it on the same base and predicts exactly what the studio does."""

from __future__ import annotations

import json

import pytest
import torch

from studio import StudioError
from studio.backbones import load_backbone
from studio.evaluation import evaluate
from studio.library import Library
from studio.prompts import make_origin
from studio.tasks import load_task
from studio.weights import KNOWN_BACKBONES, _cached_known_backbone


def peft_scores(peft_model, tokenizer, text: str, targets: list[str], n_virtual: int, seq2seq: bool) -> dict:
    """Each target's summed log-probability from PEFT's own full forward (logits at every position)."""
    scores = {}
    input_ids = tokenizer(text, add_special_tokens=seq2seq).input_ids
    for target in targets:
        target_ids = tokenizer(target, add_special_tokens=False).input_ids
        with torch.no_grad():
            if seq2seq:
                target_ids = target_ids + [tokenizer.eos_token_id]
                out = peft_model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([target_ids]))
                logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
                positions = range(len(target_ids))
            else:
                out = peft_model(input_ids=torch.tensor([input_ids + target_ids]))
                logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
                # PEFT's logits include the virtual tokens: the answer starts after prompt + input
                assert logprobs.shape[0] == n_virtual + len(input_ids) + len(target_ids)
                first = n_virtual + len(input_ids) - 1
                positions = range(first, first + len(target_ids))
        scores[target] = float(sum(logprobs[p, t] for p, t in zip(positions, target_ids)))
    return scores


def check_export(backbone, base_model, tmp_path, tasks: dict[str, int], n_tokens: int, atol: float):
    from peft import PeftModel

    library = Library(tmp_path / "lib")
    tensor = make_origin(backbone, 3, n_tokens) + 0.02 * torch.randn(n_tokens, backbone.hidden_size,
                                                                    generator=torch.Generator().manual_seed(0))
    item = library.add("prompt", tensor, backbone.name, task="mr")
    folder = library.export_peft(item.id, tmp_path / "adapter", backbone)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == n_tokens
    assert config["token_dim"] == backbone.hidden_size and config["num_transformer_submodules"] == 1
    peft_model = PeftModel.from_pretrained(base_model, str(folder)).eval()
    torch.testing.assert_close(peft_model.get_prompt(1)[0].float(), tensor)
    for task_name, limit in tasks.items():
        records = evaluate(backbone, [library.tensor(item.id)], load_task(task_name), "test", limit)[0].records
        for record in records:
            theirs = peft_scores(peft_model, backbone.tokenizer, record["input"], list(record["scores"]), n_tokens,
                                 backbone.is_seq2seq)
            assert max(theirs, key=theirs.get) == record["prediction"], (record, theirs)
            for target, score in record["scores"].items():
                assert theirs[target] == pytest.approx(score, abs=atol), (target, theirs, record["scores"])
    return folder


def test_peft_export_tiny_llama(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    backbone = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    # mr: single-token labels (one forward ranks them); spam: "spam" is two tokens (the general path)
    check_export(backbone, base, tmp_path, {"mr": 6, "spam": 2}, n_tokens=5, atol=1e-4)


def test_peft_export_tiny_t5(tiny_t5_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    backbone = load_backbone(str(tiny_t5_dir), dtype=torch.float32)
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, dtype=torch.float32)
    folder = check_export(backbone, base, tmp_path, {"mr": 4}, n_tokens=4, atol=1e-4)
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"


def test_peft_export_embedded_model(tmp_path):
    """The real default model: PEFT on the fp32 base agrees with the studio's fp32 evaluation."""
    from transformers import AutoModelForCausalLM

    backbone = load_backbone(dtype=torch.float32)
    folder = _cached_known_backbone(KNOWN_BACKBONES[backbone.name])
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    adapter = check_export(backbone, base, tmp_path, {"mr": 6, "spam": 1}, n_tokens=8, atol=2e-3)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config["task_type"] == "CAUSAL_LM"


def test_export_refusals(tiny_llama_dir, tiny_t5_dir, tmp_path):
    llama = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    t5 = load_backbone(str(tiny_t5_dir), dtype=torch.float32)
    library = Library(tmp_path / "lib")
    origin = library.add("origin", make_origin(llama, 0, 4), llama.name)
    vector = library.add("vector", torch.ones(4, 32), llama.name, origin_id=origin.id)
    with pytest.raises(StudioError, match="task prompt vector"):
        library.export_peft(vector.id, tmp_path / "out", llama)
    with pytest.raises(StudioError, match="was made for"):
        library.export_peft(origin.id, tmp_path / "out", t5)
    assert not (tmp_path / "out").exists()
