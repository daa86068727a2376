"""Shared fixtures: offline environment, tiny random models, a small real library, the app on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

for key, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ[key] = value

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with the embedded model's tokenizer, saved to a temporary folder (fast tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from studio.weights import KNOWN_BACKBONES, _cached_known_backbone

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(_cached_known_backbone(KNOWN_BACKBONES["smollm2-135m-instruct"]))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A tiny random T5 with the embedded model's tokenizer (the T5 code path, no hub)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from studio.weights import KNOWN_BACKBONES, _cached_known_backbone

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(_cached_known_backbone(KNOWN_BACKBONES["smollm2-135m-instruct"]))
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def embedded():
    """The real embedded default model (SmolLM2-135M-Instruct), loaded once per session."""
    from studio.backbones import load_backbone

    return load_backbone()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The real app on 127.0.0.1 (free port), a fresh user library, the prebuilt library beneath it."""
    from studio.ui.app import create, serve

    library_dir = tmp_path_factory.mktemp("user-library")
    app, state = create(str(library_dir))
    port = free_port()
    serve(app, port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield url, state
    app.close()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page(profile: Path) -> Iterator:
    """A page of Debian's Chromium driven by Playwright (never `playwright install`), with the flags that work here."""
    if not shutil.which("chromium") and not shutil.which("/usr/bin/chromium"):
        pytest.fail("Debian chromium is missing: apt-get install chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        yield page
        context.close()


# ---- leaving the test process -------------------------------------------------------------------------------------
# The apps these tests serve leave daemon threads behind (the job worker, the live evaluator, warm-ups) that may be
# inside torch when Python shuts down. Python then ends them with pthread_exit, whose unwinding through torch's C++
# frames calls std::terminate: "terminate called without an active exception", SIGABRT, and a red run although
# every test passed (it happened at the end of a full run with Ray's crash handler installed). Once pytest has
# reported everything, leave without the interpreter's shutdown, with pytest's own exit status.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import sys

    if _EXIT_STATUS and os.environ.get("STUDIO_TEST_CLEAN_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


@pytest.fixture
def planned_passes(monkeypatch) -> list[list[int]]:
    """The row lengths that each call of ``Backbone.batches`` plans forward passes for (a spy on the real method):
    what tuning and scoring count as a row's tokens."""
    from studio.backbones import Backbone

    seen: list[list[int]] = []
    original = Backbone.batches

    def spy(self, lengths, *args, **kwargs):
        seen.append(list(lengths))
        return original(self, lengths, *args, **kwargs)

    monkeypatch.setattr(Backbone, "batches", spy)
    return seen
