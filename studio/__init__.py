"""Prompt Arithmetic Studio: tune soft prompts, compare task prompt vectors, do arithmetic on prompts.

Imports point one way, down these layers (``tests/test_layers.py`` checks it): ``config``, ``limits``,
``faults``, ``files``, ``settings`` -> ``backbones``, ``tasks``, ``task_files``, ``corpora``, ``prompts`` ->
``evaluation`` -> ``tuning``, ``library``, ``item_files`` -> ``jobs``, ``analysis``, ``projection``, ``plots``,
``live`` -> ``views``, ``build``, ``hub``, ``findings``, ``sweep``, ``fewshot``, ``space`` -> ``cli``, ``ui``.
Heavy libraries (torch, transformers, gradio) are imported where they are used.
"""

import os
import threading

__version__ = "0.1.0"

# transformers and PEFT import lazily, and a first import from two threads at once is not safe: the UI's model
# warm-up thread and a first slider move raced into "cannot import name 'AutoModel' from 'transformers'". Loading
# a model and importing PEFT both hold this lock.
HEAVY_IMPORT_LOCK = threading.RLock()


class StudioError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it.

    The CLI prints it as one line and exits non-zero; the UI shows it as a gr.Error.
    """


from studio.space import configure_environment  # noqa: E402 - after StudioError, which config needs

# Offline by default: nothing in the studio phones a hub or an analytics host unless a user asks (or it runs as a
# Hugging Face Space, where the hub is the point: ``studio.space``).
configure_environment()
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
