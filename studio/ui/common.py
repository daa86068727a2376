"""What every panel shares: the app state, error handling, and the optional ZeroGPU decorator."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from studio import StudioError
from studio.backbones import DEFAULT_MODEL, load_backbone
from studio.jobs import JobRunner
from studio.library import Library

try:  # on Hugging Face ZeroGPU Spaces this requests a GPU for the call; elsewhere it is a no-op
    import spaces

    def gpu(duration: int = 60) -> Callable:
        return spaces.GPU(duration=duration)
except ImportError:  # pragma: no cover - depends on the environment

    def gpu(duration: int = 60) -> Callable:
        return lambda fn: fn


@dataclass
class AppState:
    """Shared by all panels: the library (user's, with the prebuilt one beneath), the model, the job queue."""

    library: Library
    model_name: str = DEFAULT_MODEL
    runner: JobRunner = field(default_factory=JobRunner)
    _warm: threading.Thread | None = None

    def backbone(self):
        return load_backbone(self.model_name)

    def warm_up(self) -> None:
        """Load the model in the background so the page is usable before the first evaluation needs it."""
        self._warm = threading.Thread(target=self.backbone, daemon=True, name="warm-model")
        self._warm.start()


def friendly(fn: Callable) -> Callable:
    """Turn a StudioError into a gr.Error with its one-line message (no traceback in the UI)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as error:
            raise gr.Error(str(error)) from None

    return wrapper


def friendly_stream(fn: Callable) -> Callable:
    """Same as ``friendly`` for generator handlers (streaming outputs)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except StudioError as error:
            raise gr.Error(str(error)) from None

    return wrapper


def explain(text: str) -> gr.Markdown:
    """The two-sentence explanation at the top of every panel."""
    return gr.Markdown(f"<div class='explain'>{text}</div>")
