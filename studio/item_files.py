"""The files an item travels in: the studio's own safetensors prompt file and PEFT's prompt-tuning adapter folder.

Both come from strangers (an import, a pull, a download), so everything a file's header says is checked before its
tensor is read, and nothing is ever unpickled: pickle weights are named and refused, never opened. ``library`` stores
items in the first format; the second is what ``peft.PeftModel.from_pretrained`` loads on the same base model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from studio import HEAVY_IMPORT_LOCK, StudioError
from studio.files import atomic_write
from studio.limits import MAX_HIDDEN, MAX_ITEM_JSON_BYTES, MAX_NAME
from studio.prompts import check_prompt_shape, check_prompt_tensor

TENSOR_KEY = "prompt"  # our files; PEFT adapters use "prompt_embeddings"
PEFT_KEY = "prompt_embeddings"
PEFT_EXPORT_FILES = {"adapter_config.json", "adapter_model.safetensors", "studio_item.json", "README.md"}
PROMPT_DTYPES = ("F32", "F16", "BF16", "F64")  # a prompt is floating point; anything else is refused unread
PICKLE_STARTS = (b"\x80", b"PK")  # a pickle (protocol 2+) and torch.save's zip


def _check_file_head(path: Path) -> None:
    """Refuse a pickle / torch.save file from its first bytes, and a safetensors header over what a prompt file needs
    (metadata is a few strings). A safetensors file starts with its header's length (8 bytes) and then ``{``: one
    whose length begins with byte 0x80 (128, 384... bytes) is not a pickle."""
    with path.open("rb") as handle:
        head = handle.read(9)
    header_bytes = int.from_bytes(head[:8], "little")
    if len(head) < 9 or head[8:] != b"{" or header_bytes > path.stat().st_size - 8:
        if head.startswith(PICKLE_STARTS):
            raise StudioError(
                f"{path.name} looks like a pickle / torch.save file: it is refused, never loaded (pickles can run "
                "code). Save the tensor with safetensors.torch.save_file instead")
        return  # not safetensors either: safe_open says what is wrong
    if header_bytes > MAX_ITEM_JSON_BYTES:
        raise StudioError(f"{path.name} has a {header_bytes:,}-byte safetensors header, over the {MAX_ITEM_JSON_BYTES:,}"
                          " a prompt file needs: it is refused unread; re-export the prompt without extra metadata")


def _check_prompt_header(shape: list[int], dtype: str, hidden_size: int | None, what: str, halves: int) -> None:
    """What the header answers (dtype, rank, length, width), checked before the tensor is read: a small zip can hold
    a file of hundreds of MB that is no prompt at all."""
    if dtype not in PROMPT_DTYPES:
        raise StudioError(f"{what} holds a {dtype} tensor; a prompt is floating point ({', '.join(PROMPT_DTYPES)}): "
                          "re-export it")
    check_prompt_shape(shape, hidden_size, what, halves)
    if hidden_size is None and not 1 <= shape[1] <= MAX_HIDDEN:
        raise StudioError(f"{what} has hidden size {shape[1]}; a model's is 1 to {MAX_HIDDEN}: it is not a prompt")


def read_prompt_file(path: str | Path, hidden_size: int | None = None, halves: int = 1) -> tuple[torch.Tensor, dict]:
    """Read one prompt matrix from a safetensors file (ours or a PEFT adapter), refusing anything unsafe or odd.
    Everything the header tells is checked before the tensor is read, so memory stays that of one prompt.
    ``halves``: rows per virtual token (an encoder-decoder PEFT adapter's 2)."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"file {path} not found")
    _check_file_head(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            metadata = handle.metadata() or {}
            key = next((k for k in (TENSOR_KEY, PEFT_KEY) if k in keys), None)
            if key is None:
                raise StudioError(
                    f"{path.name} has no {TENSOR_KEY!r} or {PEFT_KEY!r} tensor (it has: {', '.join(keys) or 'none'})"
                )
            header = handle.get_slice(key)
            _check_prompt_header(header.get_shape(), header.get_dtype(), hidden_size, path.name, halves)
            tensor = handle.get_tensor(key).float()
    except SafetensorError as error:
        raise StudioError(f"{path.name} is not a valid safetensors file ({error}): re-export it") from None
    except (OSError, ValueError) as error:
        raise StudioError(f"{path.name} could not be read as safetensors ({error})") from None
    check_prompt_tensor(tensor, hidden_size, what=path.name, halves=halves)
    return tensor, metadata


def write_prompt_file(tensor: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    """The studio's own prompt file: one float32 tensor under ``TENSOR_KEY``, written whole or not at all."""
    data = {TENSOR_KEY: tensor.detach().float().cpu().contiguous()}
    atomic_write(path, lambda partial: save_file(data, str(partial), metadata=metadata))


def is_peft_export(folder: Path) -> bool:
    """A folder ``write_peft_adapter`` wrote (and an export may replace): its files and nothing else."""
    names = {p.name for p in folder.iterdir()}
    return "studio_item.json" in names and names <= PEFT_EXPORT_FILES


def write_peft_adapter(folder: Path, tensor: torch.Tensor, item: dict, backbone) -> None:
    """Fill ``folder`` with the PEFT prompt-tuning adapter of a prompt (``item``: its catalog entry, kept beside as
    ``studio_item.json`` so that an import remembers its task, name and origin)."""
    with HEAVY_IMPORT_LOCK:  # see studio.HEAVY_IMPORT_LOCK
        from peft import PromptTuningConfig, TaskType
    from studio.weights import KNOWN_BACKBONES

    config = backbone.model.config
    base = KNOWN_BACKBONES[item["model"]].hub_id if item["model"] in KNOWN_BACKBONES else item["model"]
    peft_config = PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if backbone.is_seq2seq else TaskType.CAUSAL_LM,
        num_virtual_tokens=item["n_tokens"], token_dim=item["hidden"], num_transformer_submodules=1,
        num_attention_heads=getattr(config, "num_attention_heads", getattr(config, "num_heads", 1)),
        num_layers=getattr(config, "num_hidden_layers", getattr(config, "num_layers", 1)),
        base_model_name_or_path=base, inference_mode=True,
    )
    peft_config.save_pretrained(str(folder))
    save_file({PEFT_KEY: tensor.contiguous()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt", "studio_id": item["id"], "task": item["task"] or ""})
    (folder / "studio_item.json").write_text(json.dumps(item, indent=1))


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PEFT_TASK_TYPES = {"SEQ_2_SEQ_LM": True, "CAUSAL_LM": False}  # PEFT task type -> made for an encoder-decoder model


def read_peft_adapter(folder: str | Path, backbone, label: str | None = None) -> tuple[torch.Tensor, dict, dict]:
    """The prompt of a PEFT prompt-tuning adapter folder, checked against ``backbone``, with the studio's metadata
    (``studio_item.json``, if the studio exported it) and what the import decided, as recipe entries.

    PEFT stores an encoder-decoder prompt as [2 n, d] (``num_transformer_submodules`` 2: encoder half, then decoder
    half). Only the encoder half changes predictions (PEFT prepends it to the encoder input), so it is the prompt
    kept, and the recipe says so. ``label`` names the folder in messages (default: its name)."""
    folder = Path(folder)
    label = label or folder.name
    config_path = folder / "adapter_config.json"
    if not config_path.exists():
        raise StudioError(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
    config = _json_object(config_path, f"{config_path.name} in {label} is not valid JSON: re-export the adapter")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise StudioError(f"{label} is a {config.get('peft_type')} adapter; only PROMPT_TUNING imports")
    _check_peft_task_type(config, backbone, label)
    halves = config.get("num_transformer_submodules") or 1
    if not isinstance(halves, int) or isinstance(halves, bool) or halves not in (1, 2):
        raise StudioError(f"{label}: adapter_config.json has no valid num_transformer_submodules (1 or 2)")
    try:
        tensor, metadata = read_prompt_file(_peft_weights(folder, label), backbone.hidden_size, halves)
    except StudioError as error:
        raise StudioError(f"{label}: {error}") from None
    n_tokens = config.get("num_virtual_tokens", tensor.shape[0] // halves)
    if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens <= 0:
        raise StudioError(f"{label}: adapter_config.json has no valid num_virtual_tokens / num_transformer_submodules")
    if tensor.shape[0] != n_tokens * halves:
        raise StudioError(f"{label}: {tensor.shape[0]} prompt rows but the config says {n_tokens * halves}")
    base = config.get("base_model_name_or_path")  # kept where it is a plain name: it is only shown
    decisions = {"peft_base_model": base if isinstance(base, str) and len(base) <= MAX_NAME and base.isprintable() else None}
    if halves != 1:
        tensor = tensor[:n_tokens]
        decisions["peft_halves"] = (
            f"kept the encoder half (rows 0..{n_tokens - 1} of {halves} x {n_tokens}), the half that drives "
            "predictions; the decoder half was dropped")
    return tensor, {**metadata, **_studio_item(folder / "studio_item.json")}, decisions


def _peft_weights(folder: Path, label: str) -> Path:
    """The adapter's safetensors weights; PEFT's older pickle weights are named as refused, never opened."""
    weights = folder / "adapter_model.safetensors"
    if weights.exists():
        return weights
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise StudioError(
            f"{label}/{pickled[0]} holds pickle weights: they are refused, never loaded (pickles can run code). "
            "Save the adapter with safetensors (PEFT's default, save_pretrained(..., safe_serialization=True))")
    raise StudioError(f"{label} has no adapter_model.safetensors: it holds no prompt weights the studio reads "
                      "(pickle weights such as adapter_model.bin are refused, never loaded)")


def _check_peft_task_type(config: dict, backbone, label: str) -> None:
    """An adapter for an encoder-decoder model does not fit a decoder-only one, and the other way round."""
    seq2seq = PEFT_TASK_TYPES.get(config.get("task_type"))
    if seq2seq is not None and seq2seq != bool(getattr(backbone, "is_seq2seq", seq2seq)):
        wanted = "an encoder-decoder" if seq2seq else "a decoder-only"
        raise StudioError(f"{label} is a {config['task_type']} adapter, made for {wanted} model, which "
                          f"{backbone.name} is not: choose the model it was tuned on")


def read_json_file(path: Path, max_bytes: int, what: str) -> object:
    """Someone else's JSON file, parsed, or None where it cannot be read or parsed; one over ``max_bytes`` is refused
    before it is read (``json.loads`` of a few MB of tiny values or nesting takes hundreds of MB). For an import's
    adapter files, read-only catalogs and pulled catalogs (``MAX_CATALOG_BYTES``)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size > max_bytes:
        raise StudioError(f"{what} is {size:,} bytes, over the {max_bytes:,} it may have: it is refused unread")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _json_object(path: Path, problem: str) -> dict:
    """A JSON object from a user's file, or a StudioError saying ``problem`` (unreadable, not JSON, not an object)."""
    data = read_json_file(path, MAX_ITEM_JSON_BYTES, f"{path.name} in {path.parent.name}")
    if not isinstance(data, dict):
        raise StudioError(problem)
    return data


def _studio_item(path: Path) -> dict:
    """The studio's description of an exported item, if the folder has one; only plain strings are taken."""
    if not path.exists():
        return {}
    data = _json_object(path, f"{path.name} in the adapter folder is not valid JSON: delete it or re-export")
    keep = {k: data.get(k) for k in ("kind", "task", "name", "model", "origin_id") if isinstance(data.get(k), str) and data.get(k)}
    if keep.get("kind") == "vector":  # a PEFT adapter holds a whole prompt, never a difference of prompts
        keep.pop("kind")
    return keep
