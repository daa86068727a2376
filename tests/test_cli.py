"""The `studio` command, run as a real subprocess against a temporary library (the cached embedded model)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from studio.item_files import read_prompt_file
from studio.library import Library

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def studio(*args: str, library: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "studio", *args]
    if library is not None:
        command += ["--library", str(library), "--no-prebuilt"]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A failed command: non-zero exit, exactly one line on stderr, starting with 'error:', no traceback."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A library with two origins, two tuned prompts and their vectors, made by `studio tune`."""
    library = tmp_path_factory.mktemp("cli-library")
    result = ok(studio("tune", "--task", "mr", "--seeds", "0,1", "--steps", "2", "--batch-size", "2",
                       "--val-limit", "8", "--eval-every", "1", "--n-tokens", "4", "--json", library=library))
    prompts = json.loads(result.stdout)
    return library, prompts


# ---- without a model ------------------------------------------------------------------------------------------------
def test_help_and_entry_point():
    assert "tune" in ok(studio("--help")).stdout
    entry = shutil.which("studio", path=str(Path(sys.executable).parent))
    assert entry, "the `studio` console script is installed next to the interpreter"
    result = subprocess.run([entry, "data", "list"], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0 and "mr " in result.stdout


def test_data_list_and_preview():
    listed = ok(studio("data", "list")).stdout
    for name in ("mr", "tweets", "bbc", "uncertainty", "reviews-nl", "spam", "sst2", "mnli"):
        assert f"\n{name} " in f"\n{listed}"
    as_json = json.loads(ok(studio("data", "list", "--json")).stdout)
    assert {"name", "label_words", "source"} <= set(as_json[0])
    preview = ok(studio("data", "preview", "mr", "-n", "3")).stdout
    assert preview.startswith("MR sentence polarity") and "negative, positive" in preview
    assert len([line for line in preview.splitlines() if line.startswith("[")]) == 3
    data = json.loads(ok(studio("data", "preview", "mr", "--split", "test", "-n", "2", "--json")).stdout)
    assert data["task"] == "mr" and data["sizes"]["test"] == 500 and len(data["rows"]) == 2


def test_library_list_empty(tmp_path):
    assert json.loads(ok(studio("library", "list", "--json", library=tmp_path)).stdout) == []
    assert "(empty library)" in ok(studio("library", "list", library=tmp_path)).stdout


def test_errors_without_a_model(tmp_path):
    one_error_line(studio("data", "preview", "no-such-task"), "unknown task 'no-such-task'")
    one_error_line(studio("eval", "--template", "--task", "no-such-task", library=tmp_path), "unknown task")
    one_error_line(studio("eval", "--template", "--task", "mr", "--model", "no-such-model", library=tmp_path),
                   "unknown model 'no-such-model'")
    one_error_line(studio("library", "show", "p-nothing", library=tmp_path), "no library item 'p-nothing'")
    one_error_line(studio("library", "delete", "p-nothing", library=tmp_path), "--yes")
    assert json.loads(ok(studio("library", "list", "--json", library=tmp_path)).stdout) == []


def test_more_errors_in_process(tmp_path, capsys):
    """The same error path as the subprocess runs (``main``'s handler), without starting Python each time."""
    from studio.cli import main

    lib = ["--library", str(tmp_path), "--no-prebuilt"]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("content,label\nhello,yes\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("tasks: " + "[" * 100_000 + "]" * 100_000 + "\n")
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    cases = [
        (["tune", "--task", "no-such-task", *lib], "unknown task"),
        (["tune", "--task", "mr", "--seeds", "a,b", *lib], "origin seeds must be whole numbers"),
        (["tune", "--task", "mr", "--seeds", str(10**30), *lib], "between 0 and 2147483647"),
        (["tune", "--task", "mr", "--seeds", ",".join(map(str, range(50))), *lib], "at most 16 origin seeds"),
        (["tune", "--task", "mr", "--n-tokens", "100000", *lib], "between 1 and 1000 virtual tokens"),
        (["tune", "--task", "mr", "--steps", "0", *lib], "steps must be between 1 and 100000"),
        (["tune", "--task", str(bad_csv), *lib], "--text-column"),
        (["data", "preview", str(bad_csv)], "bad.csv"),
        (["data", "preview", "mr", "--split", "dev"], "unknown split"),
        (["combine", "--origin", "o-nothing", "--vector", "v-nothing", *lib], "no library item 'o-nothing'"),
        (["library", "rename", "p-nothing", "--name", "x", *lib], "no library item"),
        (["library", "rename", "p-nothing", *lib], "--name"),
        (["library", "export", "p-nothing", *lib], "--out"),
        (["library", "show", *lib], "needs an item id"),
        (["similarity", *lib], "at least two"),
        (["eval", "--task", "mr", *lib], "--template"),
        (["tune", "--task", "mr", "--task", "mr", *lib], "a task is chosen twice"),  # trained one, said two
        (["data", "preview", "mr", "-n", "-3"], "0 or more"),  # printed nearly the whole split
        (["sweep", str(deep), *lib], "nests too deeply"),  # RecursionError
        (["sweep", str(fifo), *lib], "is not a file"),  # waited for a writer forever
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (argv, captured.err)
    assert Library(tmp_path).items() == []


def test_home_or_library_that_is_a_file_is_one_error_line(tmp_path, capsys, monkeypatch):
    from studio.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["library", "list", "--library", str(a_file), "--no-prebuilt"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ")
    monkeypatch.setenv("STUDIO_HOME", str(a_file))
    assert main(["library", "list", "--no-prebuilt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is a file" in err and len(err.splitlines()) == 1


# ---- with the embedded model ----------------------------------------------------------------------------------------
def test_eval_template_json(tmp_path):
    data = json.loads(ok(studio("eval", "--template", "--task", "mr", "--split", "test", "--limit", "4", "--json",
                                library=tmp_path)).stdout)
    assert data["task"] == "mr" and data["metrics"]["n"] == 4 and len(data["records"]) == 4
    for record in data["records"]:
        assert {"input", "label", "prediction", "scores"} <= set(record)
        assert set(record["scores"]) == {"negative", "positive"}
        assert record["prediction"] == max(record["scores"], key=record["scores"].get)


def test_tune_stores_origins_prompts_and_vectors(tuned):
    library, prompts = tuned
    assert len(prompts) == 2 and {p["seed"] for p in prompts} == {0, 1}
    listed = json.loads(ok(studio("library", "list", "--json", library=library)).stdout)
    assert isinstance(listed, list) and len(listed) == 6
    for item in listed:
        assert {"id", "kind", "model", "task", "seed", "metrics"} <= set(item)
        assert item["model"] == "smollm2-135m-instruct"
    kinds = sorted(item["kind"] for item in listed)
    assert kinds == ["origin", "origin", "prompt", "prompt", "vector", "vector"]
    prompt = next(item for item in listed if item["kind"] == "prompt")
    assert prompt["task"] == "mr" and "validation_accuracy" in prompt["metrics"]
    assert prompt["recipe"]["steps"] == 2 and prompt["recipe"]["n_tokens"] == 4
    text = ok(studio("library", "list", library=library)).stdout
    assert text.count("\n") >= 5 and prompts[0]["id"] in text


def test_eval_prompt_and_save(tuned):
    library, prompts = tuned
    item_id = prompts[0]["id"]
    data = json.loads(ok(studio("eval", "--prompt", item_id, "--task", "mr", "--limit", "3", "--save", "--json",
                                library=library)).stdout)
    assert data["prompt"] == item_id and data["metrics"]["n"] == 3
    shown = json.loads(ok(studio("library", "show", item_id, "--json", library=library)).stdout)
    assert shown["metrics"]["test_n/mr"] == 3 and len(shown["dependents"]) == 1
    # saving again says which score it replaced (a 4-example score silently replaced a full one)
    again = ok(studio("eval", "--prompt", item_id, "--task", "mr", "--limit", "4", "--save", library=library)).stdout
    assert f"saved in place of {shown['metrics']['test_accuracy/mr']:.3f} (n=3)" in again
    # a prebuilt item cannot be saved to: said before the evaluation runs, not after it
    from studio.library import open_library

    prebuilt = next(i for i in open_library(library).items(kind="prompt") if i.source == "prebuilt")
    one_error_line(studio("eval", "--prompt", prebuilt.id, "--task", prebuilt.task, "--limit", "100000", "--save",
                          "--library", str(library), timeout=60), "prebuilt library, which is read-only")


def test_export_peft_and_safetensors(tuned, tmp_path):
    library, prompts = tuned
    item_id = prompts[0]["id"]
    out = tmp_path / "adapter"
    assert "wrote" in ok(studio("library", "export", item_id, "--format", "peft", "--out", str(out),
                                library=library)).stdout
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4
    assert (out / "adapter_model.safetensors").is_file()
    zipped = tmp_path / "adapter.zip"  # one file, as the Library tab downloads it; imported back with its lineage
    ok(studio("library", "export", item_id, "--format", "peft", "--out", str(zipped), library=library))
    with zipfile.ZipFile(zipped) as archive:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {Path(n).name for n in archive.namelist()}
    back = json.loads(ok(studio("library", "import", str(zipped), "--json", library=library)).stdout)
    assert back["origin_id"] == prompts[0]["origin_id"] and back["task"] == prompts[0]["task"]
    ok(studio("library", "delete", back["id"], "--yes", library=library))  # the later tests count the items
    flat = tmp_path / "prompt.safetensors"
    ok(studio("library", "export", item_id, "--format", "safetensors", "--out", str(flat), library=library))
    tensor, metadata = read_prompt_file(flat, 576)
    torch.testing.assert_close(tensor, Library(library).tensor(item_id))
    assert metadata["model"] == "smollm2-135m-instruct" and metadata["studio_id"] == item_id


def test_combine_and_similarity(tuned, tmp_path):
    library, prompts = tuned
    lib = Library(library)
    vectors = [d for p in prompts for d in lib.dependents(p["id"])]
    origin_id = prompts[0]["origin_id"]
    result = ok(studio("combine", "--origin", origin_id, "--vector", f"{vectors[0].id}:0.5",
                       "--vector", f"{vectors[1].id}:0.25", "--eval-task", "mr", "--limit", "4", "--json",
                       library=library))
    item = json.loads(result.stdout)
    assert item["kind"] == "prompt" and item["origin_id"] == origin_id and item["task"] == "mr"
    assert item["recipe"]["combination"]["weights"] == [0.5, 0.25]
    assert item["metrics"]["test_n/mr"] == 4
    expected = lib.tensor(origin_id) + 0.5 * lib.tensor(vectors[0].id) + 0.25 * lib.tensor(vectors[1].id)
    torch.testing.assert_close(lib.tensor(item["id"]), expected)
    assert set(item["metrics"]) == {"test_accuracy/mr", "test_accuracy_se/mr", "test_n/mr"}  # as the tab saves
    again = ok(studio("combine", "--origin", origin_id, "--vector", f"{vectors[0].id}:0.5", "--vector",
                      f"{vectors[1].id}:0.25", "--eval-task", "mr", "--limit", "4", library=library)).stdout
    assert item["id"] in again and "mr=" in again and "scored now, not stored" in again  # it printed no score
    # without --eval-task nothing is evaluated: no sample size or task is needed (a --limit over 2000 was refused)
    unscored = json.loads(ok(studio("combine", "--origin", origin_id, "--vector", f"{vectors[0].id}:0.3",
                                    "--limit", "5000", "--json", library=library)).stdout)
    assert unscored["metrics"] == {} and unscored["recipe"]["combination"]["weights"] == [0.3]
    one_error_line(studio("combine", "--origin", vectors[0].id, "--vector", vectors[1].id, library=library),
                   "choose an origin")
    # the Arithmetic tab's rules hold here too (a NaN weight stored a NaN prompt; a vector twice was accepted)
    stored = {i.id for i in lib.items()}
    one_error_line(studio("combine", "--origin", origin_id, "--vector", f"{vectors[0].id}:nan", library=library),
                   "finite weight")
    one_error_line(studio("combine", "--origin", origin_id, "--vector", vectors[0].id, "--vector",
                          f"{vectors[0].id}:2", library=library), "each vector can be chosen once")
    one_error_line(studio("combine", "--origin", origin_id, "--vector", f"{vectors[0].id}:x", library=library),
                   "ID or ID:WEIGHT")
    assert {i.id for i in lib.items()} == stored

    out = tmp_path / "similarity.csv"
    assert "wrote" in ok(studio("similarity", "--out", str(out), library=library)).stdout
    rows = list(csv.reader(out.open()))
    assert rows[0][0] == "item" and len(rows) == 3 and all(len(r) == 3 for r in rows)
    assert float(rows[1][1]) == pytest.approx(1.0, abs=1e-5) and -1 <= float(rows[1][2]) <= 1
    data = json.loads(ok(studio("similarity", "--measure", "l2", "--json", library=library)).stdout)
    assert len(data["matrix"]) == 2 and data["matrix"][0][0] == pytest.approx(0.0, abs=1e-6)
    # an existing file is not replaced unless asked (it was, silently); a format it cannot write is named
    precious = tmp_path / "precious.csv"
    precious.write_text("my results\n")
    one_error_line(studio("similarity", "--out", str(precious), library=library), "exists", "--overwrite")
    assert precious.read_text() == "my results\n"
    assert "wrote" in ok(studio("similarity", "--out", str(precious), "--overwrite", library=library)).stdout
    assert precious.read_text().startswith("item,")
    one_error_line(studio("similarity", "--out", str(tmp_path / "sim.txt"), library=library), ".csv, .png or .html")
    one_error_line(studio("similarity", "--out", str(library / "sim.csv"), library=library), "library folder")


def test_errors_that_need_the_library_or_model(tuned, tmp_path):
    library, prompts = tuned
    before = ok(studio("library", "list", "--json", library=library)).stdout
    files_before = sorted(p.name for p in (library / "items").iterdir())
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not a tensor file" * 4)
    one_error_line(studio("library", "import", str(garbage), library=library), "garbage.safetensors")
    pickled = tmp_path / "model.pt"
    torch.save({"prompt": torch.zeros(4, 576)}, pickled)
    one_error_line(studio("library", "import", str(pickled), library=library), "pickle")
    one_error_line(studio("library", "delete", prompts[0]["id"], library=library), "--yes")
    one_error_line(studio("library", "delete", prompts[0]["id"], "--yes", library=library), "cascade")
    one_error_line(studio("eval", "--prompt", "p-nothing", "--task", "mr", library=library), "no library item")
    assert ok(studio("library", "list", "--json", library=library)).stdout == before
    assert sorted(p.name for p in (library / "items").iterdir()) == files_before
    assert not list(library.rglob("*.partial"))


def test_rename_and_cascade_delete(tuned):
    library, prompts = tuned
    item_id = prompts[1]["id"]
    assert ok(studio("library", "rename", item_id, "--name", "my prompt", library=library)).stdout.strip() == (
        "my prompt")
    deleted = ok(studio("library", "delete", item_id, "--yes", "--cascade", library=library)).stdout
    assert deleted.startswith("deleted ") and item_id in deleted
    remaining = json.loads(ok(studio("library", "list", "--json", library=library)).stdout)
    assert item_id not in {i["id"] for i in remaining}


def test_a_score_of_zero_is_printed_as_zero():
    """``accuracy or nan`` printed a validation accuracy of 0.0 as nan."""
    from studio.cli import _score
    from studio.library import Item

    def item(metrics: dict) -> Item:
        return Item("p-00000000", "prompt", "x", "m", "mr", 0, None, None, 4, 8, metrics=metrics)

    assert _score(item({"validation_accuracy/mr": 0.0})) == "0.000"
    assert _score(item({"validation_accuracy/mr": 0.5})) == "0.500" and _score(item({})) == "n/a"


def test_tune_flags_come_from_the_config_and_build_it():
    """Every TuneConfig setting has a flag with its help and choices; unset recipe settings come from the model."""
    from dataclasses import asdict

    from studio.backbones import recipe_for
    from studio.cli import _with_recipe, build_parser, tuning_config
    from studio.settings import TuneConfig, config_fields

    parser = build_parser()
    args = parser.parse_args(["tune", "--task", "mr", "--schedule", "linear", "--select-by", "accuracy",
                              "--micro-batch", "4", "--data-seed", "3", "--warmup-ratio", "0.1"])
    _with_recipe(args)
    config = tuning_config(args)
    recipe = recipe_for(args.model)
    assert (config.steps, config.batch_size, config.lr) == (recipe.steps, recipe.batch_size, recipe.lr)
    assert (config.schedule, config.select_by, config.micro_batch, config.seed, config.warmup_ratio) == (
        "linear", "accuracy", 4, 3, 0.1)
    untouched = {f.name for f in config_fields(TuneConfig)} - {"steps", "batch_size", "lr", "schedule", "select_by",
                                                                "micro_batch", "seed", "warmup_ratio"}
    assert {k: v for k, v in asdict(config).items() if k in untouched} == {
        k: v for k, v in asdict(TuneConfig()).items() if k in untouched}
    with pytest.raises(SystemExit):
        parser.parse_args(["tune", "--task", "mr", "--schedule", "sideways"])
    help_text = parser._subparsers._group_actions[0].choices["tune"].format_help()
    for setting in config_fields(TuneConfig):
        assert setting.help.split(" (")[0][:20] in " ".join(help_text.split())
