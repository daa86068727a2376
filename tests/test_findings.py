"""The "when does a TPV transfer?" finding on tiny models and hand-made numbers (no real model, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from studio import StudioError, findings
from studio.backbones import load_backbone
from studio.evaluation import evaluate_many
from studio.library import Library

TASKS = ("mr", "uncertainty")
SEEDS = (0, 1, 2)


def build_library(root: Path, model: str, hidden: int, scale: float, seed: int) -> Library:
    """A prebuilt-style (exported, read-only) library: 3 origins, and per task a tuned prompt and its TPV on
    each origin, with random tensors; ``scale`` sets ||tau|| against ||P0||."""
    generator = torch.Generator().manual_seed(seed)
    work = Library(root.parent / f"{root.name}-work")
    for origin_seed in SEEDS:
        p0 = torch.randn(4, hidden, generator=generator)
        origin = work.add("origin", p0, model, seed=origin_seed, recipe={"init": "normal"})
        for task in TASKS:
            tau = scale * torch.randn(4, hidden, generator=generator)
            prompt = work.add("prompt", p0 + tau, model, task=task, seed=origin_seed, origin_id=origin.id)
            work.add("vector", tau, model, task=task, seed=origin_seed, origin_id=origin.id, prompt_id=prompt.id)
    recipe = {"steps": 80 if scale < 1 else 300, "batch_size": 8, "lr": 0.03, "n_tokens": 4, "seeds": list(SEEDS)}
    work.export_catalog(root, extra_files={"baselines.json": json.dumps({"recipe": recipe})})
    return Library(root, read_only=True)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


@pytest.fixture(scope="module")
def libraries(tiny, tmp_path_factory) -> tuple[Library, Library]:
    folder = tmp_path_factory.mktemp("transfer")
    return (build_library(folder / "new", tiny.name, tiny.hidden_size, 2.0, 0),
            build_library(folder / "old", tiny.name, tiny.hidden_size, 0.3, 1))


def test_scale_ratio_is_the_ratio_of_frobenius_norms():
    assert findings.scale_ratio(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 10.0]])) == pytest.approx(0.5)
    assert findings.scale_ratio(torch.full((2, 3), 3.0), torch.ones(2, 3)) == pytest.approx(3.0)


def test_scaling_prompts_are_the_documented_sums():
    origins = [torch.randn(4, 8) for _ in SEEDS]
    taus = [torch.randn(4, 8) for _ in SEEDS]
    specs, prompts = findings.scaling_prompts(origins, taus, list(SEEDS), (0.5, 1.0), (0.5, 1.5))
    assert len(specs) == len(prompts) == 3 * (2 + 2 + 2)
    assert sorted({(s["origin"], s["vector_from"]) for s in specs}) == [(0, 1), (1, 2), (2, 0)]
    for spec, prompt in zip(specs, prompts):
        a, b = spec["origin"], spec["vector_from"]
        if spec["variant"] == "own":
            expected = origins[b] + spec["c"] * taus[b]
        elif spec["variant"] == "moved":
            expected = origins[a] + spec["c"] * taus[b]
        else:
            assert spec["variant"] == "origin_scaled" and spec["c"] == 1.0
            expected = spec["s"] * origins[a] + taus[b]
        assert torch.equal(prompt, expected), spec
    assert findings.cyclic_pairs(2) == [(0, 1), (1, 0)]
    with pytest.raises(StudioError, match="at least two origins"):
        findings.scaling_prompts(origins[:1], taus[:1], [0])


def test_transfer_gap_rows_arithmetic():
    cross = [{"task": "mr", "own": True, "accuracy": 0.8}, {"task": "mr", "own": True, "accuracy": 0.9},
             {"task": "mr", "own": False, "accuracy": 0.6}, {"task": "mr", "own": False, "accuracy": 0.7},
             {"task": "bbc", "own": True, "accuracy": 0.5}, {"task": "bbc", "own": False, "accuracy": 0.5}]
    geometry = [{"task": "mr", "tau_norm": 10.0, "origin_norm": 10.0, "ratio": 1.0},
                {"task": "mr", "tau_norm": 30.0, "origin_norm": 10.0, "ratio": 2.0}]
    mr, bbc = findings.transfer_gap_rows(cross, geometry)
    assert (mr["task"], mr["own"], mr["other"]) == ("mr", pytest.approx(0.85), pytest.approx(0.65))
    assert mr["gap"] == pytest.approx(20.0) and mr["ratio"] == pytest.approx(1.5)
    assert mr["tau_norm"] == pytest.approx(20.0) and mr["origin_norm"] == pytest.approx(10.0)
    assert bbc["gap"] == pytest.approx(0.0) and bbc["ratio"] is None


def test_tpv_geometry_reads_prebuilt_prompts_only(libraries, tiny, tmp_path):
    new, _ = libraries
    user = Library(tmp_path / "user", parents=[new])
    origin = new.items(kind="origin")[0]
    user.add("prompt", torch.zeros(4, tiny.hidden_size), tiny.name, task="mr", seed=0, origin_id=origin.id)
    rows = findings.tpv_geometry(user, list(TASKS))
    assert [(r["task"], r["origin"]) for r in rows] == [(t, s) for t in TASKS for s in SEEDS]
    for row in rows:
        prompt = new.get(row["prompt_id"])
        tau = new.tensor(prompt.id) - new.tensor(prompt.origin_id)
        assert row["tau_norm"] == pytest.approx(float(tau.norm()), rel=1e-5)
        assert row["ratio"] == pytest.approx(row["tau_norm"] / row["origin_norm"])
    assert {s["task"]: s["n"] for s in findings.geometry_by_task(rows)} == {"mr": 3, "uncertainty": 3}


def test_figures_are_written_to_the_given_folder(tmp_path):
    gaps = {"old": [{"task": "mr", "gap": 12.0, "ratio": 0.3}, {"task": "bbc", "gap": 30.0, "ratio": None}],
            "new": [{"task": "mr", "gap": 1.0, "ratio": 2.0}]}
    scaling = [{"variant": v, "c": c, "s": 1.0, "accuracy": a}
               for v, a in (("own", 0.8), ("moved", 0.6)) for c in (0.5, 1.0)]
    scaling += [{"variant": "origin_scaled", "c": 1.0, "s": s, "accuracy": 0.7} for s in (0.5, 1.5)]
    paths = findings.transfer_figures(gaps, scaling, tmp_path / "figures", ".html")
    assert [p.name for p in paths] == ["transfer_gap_vs_scale.html", "transfer_scaling.html"]
    assert all(p.stat().st_size > 1000 for p in paths)
    figure = findings.gap_scale_figure(gaps)
    assert [t.name for t in figure.data] == ["old", "new"] and list(figure.data[0].x) == [0.3]
    assert findings.scaling_summary(scaling)[0][0] == {"c": 0.5, "own": 0.8, "moved": 0.6,
                                                       "gap": pytest.approx(20.0)}


def test_scaling_experiment_end_to_end(libraries, tiny):
    new, _ = libraries
    rows = findings.scaling_experiment(new, tiny, list(TASKS), coefficients=(0.5, 1.0), origin_scales=(0.5,),
                                       limit=8)
    assert len(rows) == len(TASKS) * 3 * (2 + 2 + 1)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] == 8 for r in rows)
    moved = next(r for r in rows if r["task"] == "mr" and r["variant"] == "moved" and r["c"] == 1.0)
    prompts = {p.seed: p for p in new.items(kind="prompt", task="mr")}
    a, b = prompts[moved["origin"]], prompts[moved["vector_from"]]
    tensor = new.tensor(a.origin_id) + new.vector(b.id).delta
    assert moved["accuracy"] == pytest.approx(evaluate_many(tiny, [tensor], ["mr"], "test", 8)["accuracy"][0, 0])


def test_finding_transfer_charts_both_libraries_and_caches(libraries, tiny, tmp_path, monkeypatch):
    new, old = libraries
    monkeypatch.setattr(findings, "studio_home", lambda: tmp_path / "home")
    loads = []
    text, rows = findings.finding_transfer(new, 8, False, compare=old.root, scaling_limit=8,
                                           folder=tmp_path / "docs", suffix=".html",
                                           load=lambda: loads.append(1) or tiny)
    assert loads == [1]  # the model is loaded once for every cache miss together
    assert list(rows["libraries"]) == ["this library: new (300 x 8, lr 0.03)", "compared: old (80 x 8, lr 0.03)"]
    assert all(len(gaps) == len(TASKS) for gaps in rows["libraries"].values())
    assert text.count("| task | ‖τ‖ | ‖P0‖ |") == 2 and "| c | own | moved | gap (points) |" in text
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["transfer_gap_vs_scale.html",
                                                                    "transfer_scaling.html"]
    cached = sorted(p.name for p in (tmp_path / "home" / "findings").iterdir())
    assert cached == ["cross_origin.json", f"cross_origin_compare_{findings.catalog_hash(old.root)}_8.json",
                      "transfer_scaling.json"]

    def no_model():
        raise AssertionError("cached results must not load the model")

    again, _ = findings.finding_transfer(new, 8, False, compare=old.root, scaling_limit=8,
                                         folder=tmp_path / "docs", suffix=".html", load=no_model)
    assert again == text
