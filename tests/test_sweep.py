"""Sweeps: spec files and their errors, the plan, a local run and its rerun, the same sweep through a real local Ray,
and a Ray worker killed mid-run (retried, resumed, nothing duplicated). Tiny random Llama, 4 steps per group.

The Ray tests need Ray (`pip install 'tpv-studio[cluster]'`); CI installs it, elsewhere they are skipped.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import torch

from studio import StudioError, sweep
from studio.cli import build_parser
from studio.library import Library
from studio.settings import SMALL_DECODER_RECIPE
from studio.sweep import SweepSpec, load_spec, parse_spec, plan, run_local, run_ray, spec_hash, tune_shard

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'tpv-studio[cluster]'")
RECIPE = {"lr": [0.05, 0.1], "steps": 4, "batch_size": 2, "n_tokens": 4, "eval_every": 2, "val_limit": 4}
TOML = """\
models = ["{model}"]
tasks = ["mr", "uncertainty"]
seeds = [0, 1]

[recipe]  # lists are crossed
lr = [0.05, 0.1]
steps = 4
batch_size = 2
n_tokens = 4
eval_every = 2
val_limit = 4
"""
YAML = """\
models: [{model}]
tasks: [mr, uncertainty]
seeds: [0, 1]
recipe:
  lr: [0.05, 0.1]
  steps: 4
  batch_size: 2
  n_tokens: 4
  eval_every: 2
  val_limit: 4
"""


@pytest.fixture(scope="module")
def spec(tiny_llama_dir) -> SweepSpec:
    """2 tasks x 2 seeds x 2 learning rates on the tiny Llama: 2 groups of 4 prompts."""
    return parse_spec({"models": [str(tiny_llama_dir)], "tasks": ["mr", "uncertainty"], "seeds": [0, 1],
                       "recipe": RECIPE})


@pytest.fixture(scope="module")
def local(spec, tmp_path_factory):
    """The sweep run here into a fresh library: (library, outcomes, progress events)."""
    library = Library(tmp_path_factory.mktemp("sweep-local"))
    events: list[dict] = []
    outcomes = run_local(spec, library, events.append)
    return library, outcomes, events


def catalog(library: Library) -> dict[str, list]:
    """The library's items by kind, after checking the catalog and that every file has its row and nothing else."""
    db = sqlite3.connect(library.root / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    items = library.items()
    assert len({i.id for i in items}) == len(items)
    assert {p.name for p in (library.root / "items").iterdir()} == {Path(i.file).name for i in items}
    return {kind: [i for i in items if i.kind == kind] for kind in ("origin", "prompt", "vector")}


def assert_whole_sweep(library: Library, spec: SweepSpec, like: Library | None = None) -> None:
    """8 prompts and their 8 TPVs, exactly the planned ids, with recipe (lr) and lineage; 2 origins; with ``like``,
    the same tensors as that library's (thread counts may differ between processes: close, not bit-equal)."""
    items = catalog(library)
    groups = plan(spec)
    planned = {run.prompt_id: (group, run) for group in groups for run in group.runs}
    assert sorted(i.id for i in items["prompt"]) == sorted(planned)
    assert sorted(i.id for i in items["vector"]) == sorted(run.vector_id for _, run in planned.values())
    assert len(items["origin"]) == 2
    for prompt in items["prompt"]:
        group, run = planned[prompt.id]
        assert prompt.recipe["lr"] == group.settings["lr"] and prompt.recipe["steps"] == 4
        assert (prompt.task, prompt.seed, prompt.origin_id) == (run.task, run.seed, run.origin_id)
    for vector in items["vector"]:
        prompt = library.get(vector.prompt_id)
        assert vector.origin_id == prompt.origin_id and library.get(vector.origin_id).kind == "origin"
    for item in library.items() if like else []:
        torch.testing.assert_close(library.tensor(item.id), like.tensor(item.id), atol=1e-4, rtol=1e-4)


# ---- the spec --------------------------------------------------------------------------------------------------
def test_toml_and_yaml_specs_read_the_same(tmp_path, tiny_llama_dir, spec):
    (tmp_path / "s.toml").write_text(TOML.format(model=tiny_llama_dir))
    (tmp_path / "s.yaml").write_text(YAML.format(model=tiny_llama_dir))
    (tmp_path / "s.yml").write_text(YAML.format(model=tiny_llama_dir))
    from_toml, from_yaml = load_spec(tmp_path / "s.toml"), load_spec(tmp_path / "s.yaml")
    assert from_toml == from_yaml == load_spec(tmp_path / "s.yml") == spec
    assert spec.recipe["lr"] == (0.05, 0.1) and spec.recipe["steps"] == (4,) and spec.seeds == (0, 1)
    assert spec_hash(from_toml) == spec_hash(from_yaml) == spec_hash(spec)
    moved = parse_spec({"models": [str(tiny_llama_dir)], "tasks": ["mr", "uncertainty"], "seeds": [0, 1],
                        "recipe": RECIPE, "ray": {"num_gpus": 1}})
    assert spec_hash(moved) == spec_hash(spec)  # how it runs is not what it tunes


def test_a_spec_written_in_an_editor_is_read_as_a_spec_file_is(tmp_path, tiny_llama_dir, spec):
    """The Tune tab's editor and upload go through the same rules as ``studio sweep SPEC``."""
    toml, yaml = TOML.format(model=tiny_llama_dir), YAML.format(model=tiny_llama_dir)
    assert sweep.parse_spec_text(toml, "toml") == sweep.parse_spec_text(yaml, "yaml") == spec
    assert [sweep.spec_syntax(name) for name in ("a.toml", "b.YAML", "c.yml", Path("d/e.yaml"))] == [
        "toml", "yaml", "yaml", "yaml"]
    for call, message in [(lambda: sweep.parse_spec_text("  ", "toml"), "write a sweep spec"),
                          (lambda: sweep.parse_spec_text(toml, "json"), "unknown spec syntax 'json'"),
                          (lambda: sweep.parse_spec_text("models = [", "toml"), "not valid TOML"),
                          (lambda: sweep.parse_spec_text(toml.replace("seeds", "sneeds"), "toml"), "unknown key"),
                          (lambda: sweep.parse_spec_text(toml.replace("steps = 4", "steps = 0"), "toml"),
                           "recipe.steps = 0: bad tuning settings: steps must be between 1 and 100000"),
                          (lambda: sweep.parse_spec_text(toml.replace("batch_size = 2", "batch_size = 600"), "toml"),
                           "batch size must be between 1 and 512"),
                          (lambda: sweep.spec_syntax("spec.json"), "a sweep spec is a .toml, .yaml or .yml file")]:
        with pytest.raises(StudioError, match=message):
            call()


@pytest.mark.parametrize("change, message", [
    ({"modles": ["x"]}, "unknown key 'modles' in the spec"),
    ({"tasks": None}, "the spec needs 'tasks'"),
    ({"tasks": []}, "tasks is an empty list"),
    ({"tasks": ["mr", "no-such-task"]}, "unknown task 'no-such-task'"),
    ({"models": ["no-such-model"]}, "unknown model 'no-such-model'"),
    ({"models": [3]}, "models takes str values"),
    ({"seeds": ["a"]}, "seeds takes int values"),
    ({"seeds": [-1]}, "between 0 and 2147483647"),
    ({"seeds": list(range(17))}, "at most 16 origin seeds"),
    ({"init": "text"}, "init must be one of top5000"),
    ({"recipe": [1]}, "recipe must be a table"),
    ({"recipe": {"lrs": 0.1}}, "unknown key 'lrs' in [recipe]"),
    ({"recipe": {"lr": []}}, "recipe.lr is an empty list"),
    ({"recipe": {"lr": "1e-3"}}, "YAML reads 1e-3 as text"),
    ({"recipe": {"lr": float("nan")}}, "recipe.lr must be a finite number"),
    ({"recipe": {"lr": 0}}, "recipe.lr = 0: bad tuning settings: learning rate"),
    ({"recipe": {"steps": 0}}, "recipe.steps = 0: bad tuning settings: steps must be between 1 and 100000"),
    ({"recipe": {"steps": True}}, "recipe.steps takes int values"),
    ({"recipe": {"batch_size": 2.5}}, "recipe.batch_size takes int values"),
    ({"recipe": {"n_tokens": 5000}}, "between 1 and 1000 virtual tokens"),
    ({"recipe": {"lr": [0.0001 * (i + 1) for i in range(5001)]}}, "10002 runs; at most 10000"),
    ({"ray": {"gpus": 1}}, "unknown key 'gpus' in [ray]"),
    ({"ray": {"num_gpus": -1}}, "ray.num_gpus must be a number from 0"),
    ({"ray": {"shard_root": ""}}, "ray.shard_root must be a folder path"),
])
def test_each_bad_spec_is_one_line_naming_the_problem(tmp_path, tiny_llama_dir, change, message):
    data = {"models": [str(tiny_llama_dir)], "tasks": ["mr"], "seeds": [0, 1], **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "bad.toml"
    path.write_text(_toml(data))
    with pytest.raises(StudioError) as error:
        load_spec(path)
    assert str(error.value).startswith("bad.toml: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def _toml(data: dict) -> str:
    """Enough TOML for the cases above (json's spelling of strings, numbers and lists is TOML's too)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables += [f"[{key}]"] + [f"{k} = {_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines + tables) + "\n"


def _value(value) -> str:
    if isinstance(value, float) and value != value:
        return "nan"
    return json.dumps(value)


@pytest.mark.parametrize("name, text, message", [
    ("s.json", "{}", "a sweep spec is a .toml, .yaml or .yml file"),
    ("s.toml", "models = [", "s.toml is not valid TOML"),
    ("s.yaml", "models: [a\n  b: {", "s.yaml is not valid YAML"),
    ("s.yaml", "- mr\n- tweets\n", "a sweep spec is a table of keys"),
    ("missing.toml", None, "cannot read the sweep spec"),
])
def test_unreadable_spec_files(tmp_path, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(StudioError, match=message) as error:
        load_spec(tmp_path / name)
    assert "\n" not in str(error.value)


# ---- the plan --------------------------------------------------------------------------------------------------
def test_plan_packs_tasks_and_seeds_of_a_recipe_point_into_one_group(spec, tiny_llama_dir, monkeypatch):
    monkeypatch.setattr("studio.backbones.load_backbone", lambda *a, **k: pytest.fail("planning loads no model"))
    groups = plan(spec)
    assert [len(g.runs) for g in groups] == [4, 4]
    assert [g.settings["lr"] for g in groups] == [0.05, 0.1]
    assert all(g.tasks == ("mr", "uncertainty") and g.seeds == (0, 1) and g.n_tokens == 4 for g in groups)
    assert [(r.task, r.seed) for r in groups[0].runs] == [("mr", 0), ("mr", 1), ("uncertainty", 0), ("uncertainty", 1)]
    ids = [r.prompt_id for g in groups for r in g.runs]
    assert len(set(ids)) == 8 and len({g.key for g in groups}) == 2
    assert groups[0].runs[0].origin_id == groups[1].runs[0].origin_id  # one origin per seed, shared by the lrs
    assert plan(spec) == groups  # stable: content ids, not counters or clocks
    defaults = plan(parse_spec({"models": [str(tiny_llama_dir)], "tasks": "mr", "seeds": 0}))
    assert len(defaults) == 1 and defaults[0].settings == {"lr": SMALL_DECODER_RECIPE.lr, "steps": 150,
                                                          "batch_size": 8}
    assert defaults[0].n_tokens == SMALL_DECODER_RECIPE.n_tokens


# ---- running here ----------------------------------------------------------------------------------------------
def test_local_run_stores_every_prompt_with_its_recipe_and_lineage(local, spec):
    library, outcomes, events = local
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    assert_whole_sweep(library, spec)
    assert any(e["event"] == "step" for e in events)
    assert sweep.summary(outcomes).startswith("2 group(s), 8 prompt(s): 2 done, 0 skipped (already done), 0 failed")


def test_a_rerun_trains_nothing(local, spec):
    library, _, _ = local
    before = {i.id for i in library.items()}
    events: list[dict] = []
    outcomes = run_local(spec, library, events.append)
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert not [e for e in events if e["event"] == "step"]  # no tuning step ran
    assert {i.id for i in library.items()} == before


def test_merging_a_shard_twice_adds_nothing(local, spec, tmp_path):
    library, _, _ = local
    before = catalog(library)
    group = plan(spec, library)[0]
    sweep.seed_shard(library, tmp_path / "shard", group)  # the whole group, copied as a worker's shard would hold it
    assert len(Library(tmp_path / "shard").items()) == 2 + 4 + 4
    sweep.merge_shard(library, tmp_path / "shard", group)
    assert catalog(library) == before and not (tmp_path / "shard").exists()


def test_cli_dry_run_and_rerun(local, tiny_llama_dir, tmp_path, capsys):
    library, _, _ = local
    (tmp_path / "s.toml").write_text(TOML.format(model=tiny_llama_dir))
    parser = build_parser()
    common = ["--library", str(library.root), "--no-prebuilt"]
    args = parser.parse_args(["sweep", str(tmp_path / "s.toml"), "--dry-run", *common])
    args.run(args)
    shown = capsys.readouterr().out
    assert "2 group(s), 8 prompt(s), 8 already done" in shown and shown.count(" done\n") >= 8
    args = parser.parse_args(["sweep", str(tmp_path / "s.toml"), "--dry-run", "--json", *common])
    args.run(args)
    planned = json.loads(capsys.readouterr().out)
    assert planned["spec"] == spec_hash(load_spec(tmp_path / "s.toml")) and len(planned["groups"]) == 2
    args = parser.parse_args(["sweep", str(tmp_path / "s.toml"), *common])
    args.run(args)
    assert "2 skipped (already done)" in capsys.readouterr().out


def test_a_sweep_runs_as_one_background_job(local, spec, tiny_llama_dir, tmp_path):
    """The Tune tab's Run sweep: one job on the runner; a rerun skips every group, a failed group fails the job."""
    from studio.jobs import FINISHED, JobRunner

    library, _, _ = local
    runner = JobRunner()
    job = sweep.submit_sweep(runner, library, spec)
    assert job.title == f"sweep {spec_hash(spec)[:8]}: 2 group(s)" and job.spec == spec
    deadline = time.time() + 120
    while job.status not in FINISHED and time.time() < deadline:
        time.sleep(0.05)
    assert job.status == "done" and job.progress == 1.0 and job.result == [g.key for g in plan(spec, library)]
    assert [e["status"] for e in job.events] == ["skipped", "skipped"] and "2 skipped" in job.message
    (tmp_path / "not-a-model").mkdir()
    broken = parse_spec({"models": [str(tmp_path / "not-a-model")], "tasks": "mr", "seeds": 0,
                         "recipe": {"steps": 2, "batch_size": 2, "n_tokens": 4, "val_limit": 4}})
    failed = sweep.submit_sweep(runner, Library(tmp_path / "lib"), broken)
    deadline = time.time() + 120
    while failed.status not in FINISHED and time.time() < deadline:
        time.sleep(0.05)
    assert failed.status == "failed" and "1 failed" in failed.message and "not-a-model" in failed.message
    assert [e["status"] for e in failed.events] == ["failed"]


def test_a_failed_group_is_reported_and_the_others_still_run(tiny_llama_dir, tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()  # a folder, so the spec passes; loading it fails when its group runs
    (tmp_path / "s.yaml").write_text(f"models: [{tmp_path / 'not-a-model'}, {tiny_llama_dir}]\ntasks: mr\nseeds: 0\n"
                                     "recipe: {steps: 2, batch_size: 2, n_tokens: 4, val_limit: 4}\n")
    parser = build_parser()
    args = parser.parse_args(["sweep", str(tmp_path / "s.yaml"), "--library", str(tmp_path / "lib"), "--no-prebuilt"])
    with pytest.raises(StudioError, match="1 of 2 group"):
        args.run(args)
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "2 group(s), 2 prompt(s): 1 done, 0 skipped (already done), 1 failed"
    assert len(shown) == 2 and "not-a-model" in shown[1] and "could not load model" in shown[1]
    assert len(catalog(Library(tmp_path / "lib"))["prompt"]) == 1


# ---- running on Ray --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module: starting it takes ~10 s on 2 cores."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the wrapped work below travels by value
    yield ray
    ray.shutdown()


@needs_ray
def test_ray_run_gives_the_local_ids_and_leaves_no_shard(ray_cluster, local, spec, tmp_path):
    library = Library(tmp_path / "library")
    events: list[dict] = []
    outcomes = run_ray(spec, library, progress=events.append)
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    assert_whole_sweep(library, spec, like=local[0])
    assert {i.id for i in library.items()} == {i.id for i in local[0].items()}
    assert not (library.root / "sweeps").exists()
    again = run_ray(spec, library)
    assert [o.status for o in again] == ["skipped", "skipped"]


def _killed_once(markers: str, group, shard: str) -> dict:
    """The first attempt of each group dies at its first checkpoint (SIGKILL, studio.faults); the retry runs."""
    marker = Path(markers) / group.key
    if not marker.exists():
        marker.write_text("killed")
        os.environ["STUDIO_KILL_AT"] = "tune:validated"  # this worker process is about to die
    else:  # what the retry finds to resume from
        checkpoint = sorted(p.name for p in (Path(shard) / "checkpoint").glob("state.*"))
        (Path(markers) / f"{group.key}.retried").write_text(" ".join(checkpoint))
    result = tune_shard(group, shard)
    (Path(markers) / f"{group.key}.finished").write_text(str(os.environ.get("STUDIO_KILL_AT")))
    return result


@needs_ray
def test_a_killed_worker_is_retried_and_the_library_stays_consistent(ray_cluster, local, spec, tmp_path):
    library, markers = Library(tmp_path / "library"), tmp_path / "markers"
    markers.mkdir()
    outcomes = run_ray(spec, library, work=functools.partial(_killed_once, str(markers)))
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    for group in plan(spec):  # each first attempt died before it finished; the retry found its checkpoint
        assert (markers / f"{group.key}.retried").read_text().startswith("state.")
        assert (markers / f"{group.key}.finished").read_text() == "None"
    assert_whole_sweep(library, spec, like=local[0])  # the retry resumed the shard's checkpoint: the same prompts
    assert not (library.root / "sweeps").exists()


def _refuses(markers: str, group, shard: str) -> dict:
    with open(Path(markers) / group.key, "a") as attempts:
        attempts.write("x")
    raise StudioError(f"bad input for {group.key}")


@needs_ray
def test_bad_input_is_not_retried_and_is_reported(ray_cluster, spec, tmp_path):
    library, markers = Library(tmp_path / "library"), tmp_path / "markers"
    markers.mkdir()
    outcomes = run_ray(spec, library, work=functools.partial(_refuses, str(markers)))
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert {o.message for o in outcomes} == {f"bad input for {g.key}" for g in plan(spec)}
    assert all((markers / g.key).read_text() == "x" for g in plan(spec))  # one attempt each
    assert not library.items() and not (library.root / "sweeps").exists()
    text = sweep.summary(outcomes)
    assert "0 done, 0 skipped (already done), 2 failed" in text and text.count("\n  failed g-") == 2
