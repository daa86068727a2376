"""kill -9 anywhere: a tuning job, an import, a combination or an export killed at any instrumented point and then
rerun ends with exactly one origin, prompt and TPV per task and seed, no temporary files, no leftover checkpoint,
and an SQLite catalog that passes PRAGMA integrity_check.

Each trial runs the real `studio` command in a subprocess (the tiny random Llama, so it takes seconds) with
``STUDIO_KILL_AT=point:n``: the process sends itself SIGKILL the n-th time it passes that point (studio.faults).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TASKS, SEEDS = ["mr", "uncertainty"], [0, 1]
TUNE = ["tune", "--task", "mr", "--task", "uncertainty", "--seeds", "0,1", "--steps", "4", "--eval-every", "2",
        "--batch-size", "2", "--val-limit", "4", "--n-tokens", "4", "--lr", "0.05"]
# (point, pass): 4 steps, 2 validations with their checkpoints (2 atomic writes each), then one store of
# 2 origins + 4 prompts + 4 TPVs (10 atomic writes), then the commit
TUNE_KILLS = ([("model:loaded", 1)] + [("tune:step", n) for n in (1, 2, 3, 4)]
              + [("tune:validated", n) for n in (1, 2)]
              + [("atomic:before-rename", n) for n in (1, 2, 3, 4, 5, 8, 12, 14)]
              + [("store:files-written", 1), ("store:committed", 1)])
pytestmark = pytest.mark.slow


def studio(args: list[str], home: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """The studio command with its own STUDIO_HOME (checkpoints, library), sharing the bundled corpora."""
    from studio.config import cache_dir

    if not (home / "data").exists():
        (home / "data").symlink_to(cache_dir("data"), target_is_directory=True)
    env = {**os.environ, "STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    env.pop("STUDIO_KILL_AT", None)
    if kill_at:
        env["STUDIO_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "studio", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def consistent(library: Path, home: Path) -> dict:
    """What must hold after any kill and a rerun; returns the catalog rows by kind."""
    db = sqlite3.connect(library / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT id, kind, task, seed, origin_id, prompt_id, file FROM items").fetchall()
    db.close()
    by_kind = {kind: [r for r in rows if r[1] == kind] for kind in ("origin", "prompt", "vector")}
    files = {p.name for p in (library / "items").iterdir()}
    assert files == {Path(r[6]).name for r in rows}, "every file has its row and every row its file, nothing else"
    assert not [p for p in library.rglob("*") if "partial" in p.name]
    assert not [p for p in (library / "checkpoints").glob("*/*")]  # the job's checkpoint went with its store
    return by_kind


@pytest.fixture(scope="module")
def reference(tiny_llama_dir, tmp_path_factory):
    """The uninterrupted run: what every killed-and-rerun library must equal."""
    home = tmp_path_factory.mktemp("reference")
    result = studio([*TUNE, "--model", str(tiny_llama_dir), "--library", str(home / "lib"), "--no-prebuilt",
                     "--json"], home)
    assert result.returncode == 0, result.stderr[-2000:]
    return sorted((i["id"], i["kind"]) for i in _listing(tiny_llama_dir, home))


def _listing(model: Path, home: Path) -> list[dict]:
    result = studio(["library", "list", "--model", str(model), "--library", str(home / "lib"), "--no-prebuilt",
                     "--json"], home)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("point,count", TUNE_KILLS, ids=[f"{p}:{n}" for p, n in TUNE_KILLS])
def test_tuning_killed_anywhere_resumes_to_the_same_library(point, count, tiny_llama_dir, reference, tmp_path):
    args = [*TUNE, "--model", str(tiny_llama_dir), "--library", str(tmp_path / "lib"), "--no-prebuilt"]
    killed = studio(args, tmp_path, f"{point}:{count}")
    assert killed.returncode == -signal.SIGKILL, (point, count, killed.returncode, killed.stderr[-1500:])
    rerun = studio(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    by_kind = consistent(tmp_path / "lib", tmp_path)
    assert len(by_kind["origin"]) == len(SEEDS)
    assert len(by_kind["prompt"]) == len(by_kind["vector"]) == len(TASKS) * len(SEEDS)
    assert {(r[2], r[3]) for r in by_kind["prompt"]} == {(t, s) for t in TASKS for s in SEEDS}
    assert {r[5] for r in by_kind["vector"]} == {r[0] for r in by_kind["prompt"]}  # each prompt has its TPV
    # the same items as the run that was never killed (content ids: same job, same results)
    assert sorted((i["id"], i["kind"]) for i in _listing(tiny_llama_dir, tmp_path)) == reference


@pytest.mark.parametrize("point", ["atomic:before-rename", "store:files-written"])
def test_import_and_combine_killed_mid_write_leave_one_item(point, tiny_llama_dir, reference, tmp_path):
    home = tmp_path
    library = ["--model", str(tiny_llama_dir), "--library", str(home / "lib"), "--no-prebuilt"]
    assert studio([*TUNE, *library], home).returncode == 0
    items = _listing(tiny_llama_dir, home)
    prompt = next(i for i in items if i["kind"] == "prompt")
    vectors = [i["id"] for i in items if i["kind"] == "vector" and i["origin_id"] == prompt["origin_id"]]
    exported = studio(["library", "export", prompt["id"], "--format", "safetensors", "--out",
                       str(home / "p.safetensors"), *library], home)
    assert exported.returncode == 0, exported.stderr
    for args in (["library", "import", str(home / "p.safetensors"), "--task", "mr", *library],
                 ["combine", "--origin", prompt["origin_id"], *sum((["--vector", f"{v}:0.5"] for v in vectors), []),
                  *library]):
        before = len(_listing(tiny_llama_dir, home))
        killed = studio(args, home, f"{point}:1")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
        rerun = studio(args, home)
        assert rerun.returncode == 0, rerun.stderr[-1500:]
        again = studio(args, home)  # and once more: the same content is the same item
        assert again.returncode == 0, again.stderr[-1500:]
        consistent(home / "lib", home)
        assert len(_listing(tiny_llama_dir, home)) == before + 1, args[0]


def test_export_killed_mid_write_leaves_nothing_and_can_be_repeated(tiny_llama_dir, tmp_path):
    home = tmp_path
    library = ["--model", str(tiny_llama_dir), "--library", str(home / "lib"), "--no-prebuilt"]
    assert studio([*TUNE, *library], home).returncode == 0
    prompt = next(i for i in _listing(tiny_llama_dir, home) if i["kind"] == "prompt")
    for fmt, out, point in (("peft", home / "adapter", "folder:before-rename:1"),
                            ("safetensors", home / "p.safetensors", "atomic:before-rename:1")):
        args = ["library", "export", prompt["id"], "--format", fmt, "--out", str(out), *library]
        killed = studio(args, home, point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
        assert not out.exists() and [p for p in home.iterdir() if "partial" in p.name]  # the kill left a temporary
        rerun = studio(args, home)
        assert rerun.returncode == 0, rerun.stderr[-1500:]
        assert out.exists() and not [p for p in home.iterdir() if "partial" in p.name]
    consistent(home / "lib", home)


def test_an_overwrite_killed_after_moving_the_old_export_aside_puts_it_back(tiny_llama_dir, tmp_path):
    """Replacing an export moves the old folder aside, renames the new one in, then removes the old: killed in
    between, the old export (someone's only copy) is under a temporary name. The next export to that name puts it
    back before it checks the target, so without --overwrite it is refused and the old export is whole."""
    home, out = tmp_path, tmp_path / "adapter"
    library = ["--model", str(tiny_llama_dir), "--library", str(home / "lib"), "--no-prebuilt"]
    assert studio([*TUNE, *library], home).returncode == 0
    first, second = [i["id"] for i in _listing(tiny_llama_dir, home) if i["kind"] == "prompt"][:2]
    export = ["library", "export", "--format", "peft", "--out", str(out), *library]
    assert studio([*export[:2], first, *export[2:]], home).returncode == 0
    earlier = (out / "adapter_model.safetensors").read_bytes()
    killed = studio([*export[:2], second, *export[2:], "--overwrite"], home, "folder:old-aside:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
    assert not out.exists()  # the kill left the earlier export aside, the new one not yet in place
    refused = studio([*export[:2], second, *export[2:]], home)  # no --overwrite
    assert refused.returncode != 0 and "not empty" in refused.stderr, refused.stderr[-1500:]
    assert (out / "adapter_model.safetensors").read_bytes() == earlier
    assert not [p for p in home.iterdir() if "partial" in p.name]
    replaced = studio([*export[:2], second, *export[2:], "--overwrite"], home)
    assert replaced.returncode == 0, replaced.stderr[-1500:]
    assert (out / "adapter_model.safetensors").read_bytes() != earlier
    assert not [p for p in home.iterdir() if "partial" in p.name]


def _small_library(library: Path) -> tuple[str, str]:
    """An origin and a prompt tuned from it, stored in-process (no model needed): what the delete tests delete."""
    import torch

    from studio.library import Library

    items = Library(library)
    origin = items.add("origin", torch.randn(4, 8), "m", seed=0)
    return origin.id, items.add("prompt", torch.randn(4, 8), "m", origin_id=origin.id).id


DELETE = "import sys; from studio.library import Library; Library(sys.argv[1]).delete(sys.argv[2], cascade=True)"


def _python(code: str, *args: str, kill_at: str | None = None) -> subprocess.Popen:
    """``code`` in its own Python process (the library alone, no command line: no model, no prompts to confirm)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("STUDIO_KILL_AT", None)
    if kill_at:
        env["STUDIO_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("point", ["delete:file-aside", "delete:committed"])
def test_a_delete_killed_anywhere_leaves_each_item_whole_or_gone(point, tmp_path):
    """A delete sets the file aside, deletes the row, commits, then removes the file: killed before the commit the
    item stays whole (its file put back when the library opens), after it the item is gone, file and all."""
    from studio.library import Library

    origin, prompt = _small_library(tmp_path / "lib")
    killed = _python(DELETE, str(tmp_path / "lib"), origin, kill_at=f"{point}:1")  # the prompt goes first
    assert killed.wait(timeout=120) == -signal.SIGKILL, killed.stderr.read()[-1500:]
    assert list((tmp_path / "lib" / "items").glob(".*"))  # the kill left the file set aside
    Library(tmp_path / "lib")  # opening finishes what the kill left
    by_kind = consistent(tmp_path / "lib", tmp_path)
    assert [r[0] for r in by_kind["prompt"]] == ([prompt] if point == "delete:file-aside" else [])
    assert [r[0] for r in by_kind["origin"]] == [origin]
    rerun = _python(DELETE, str(tmp_path / "lib"), origin)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read()[-1500:]
    assert consistent(tmp_path / "lib", tmp_path) == {"origin": [], "prompt": [], "vector": []}


RACE = """
import sys, time
from studio import StudioError
from studio.library import Library

library, mode, seconds, path = Library(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]


class Backbone:
    name, hidden_size, is_seq2seq = "m", 8, False


end = time.time() + seconds
while time.time() < end:
    try:
        if mode == "import":
            library.import_file(path, Backbone())
        else:
            for item in library.items():
                library.delete(item.id, cascade=True)
    except StudioError:  # the other process deleted it first
        pass
"""


def test_deletes_and_imports_of_the_same_item_in_two_processes_leave_every_row_its_file(tmp_path):
    """An import (or a tuning job's store) of an item being deleted landed between the delete's commit and its
    file removal: a row without its file, and re-imports that said "imported" and never wrote it (race.py of
    the audit, in a loop across two processes)."""
    import torch
    from safetensors.torch import save_file

    from studio.library import Library

    Library(tmp_path / "lib")
    save_file({"prompt": torch.randn(4, 8)}, str(tmp_path / "p.safetensors"))
    racers = [_python(RACE, str(tmp_path / "lib"), mode, "4", str(tmp_path / "p.safetensors"))
              for mode in ("import", "delete")]
    for racer in racers:
        assert racer.wait(timeout=120) == 0, racer.stderr.read()[-1500:]
    consistent(tmp_path / "lib", tmp_path)
