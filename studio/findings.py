"""Reproduce the paper's findings on the prebuilt library: `python -m studio.findings` writes docs/findings.md.

Every number and figure in docs/findings.md comes from this module run on the prebuilt library (assets/library),
with the studio's own engine and plotting code. Each finding is cached in ``$STUDIO_HOME/findings/*.json`` so an
interrupted run picks up where it stopped; ``--fresh`` recomputes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from statistics import mean, pstdev

import numpy as np

from studio.config import REPO_ROOT, studio_home
from studio.library import Library, open_library

DOCS = REPO_ROOT / "docs"


def _cached(name: str, compute: Callable[[], object], fresh: bool) -> object:
    path = studio_home() / "findings" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value, indent=1))
    return value


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{100 * mean(values):.1f} ± {100 * pstdev(values):.1f}" if len(values) > 1 else f"{100 * values[0]:.1f}"


def prebuilt_tasks(library: Library) -> list[str]:
    return sorted({i.task for i in library.items(kind="prompt") if i.source == "prebuilt" and i.task})


# ---- 1. prompt tuning vs origin vs template ----------------------------------------------------------------------
def finding_tuning(library: Library, baselines: dict) -> tuple[str, list[dict]]:
    rows = []
    origins = [i for i in library.items(kind="origin") if i.source == "prebuilt"]
    for task in prebuilt_tasks(library):
        key = f"test_accuracy/{task}"
        prompts = [i for i in library.items(kind="prompt", task=task) if i.source == "prebuilt"]
        rows.append({"task": task, "template": baselines.get(task, {}).get("accuracy"),
                     "origins": [o.metrics.get(key) for o in origins],
                     "tuned": [p.metrics.get(key) for p in prompts]})
    lines = ["| task | template alone | origin (random init) | tuned prompt |", "|---|---|---|---|"]
    for r in rows:
        template = f"{100 * r['template']:.1f}" if r["template"] is not None else "-"
        lines.append(f"| {r['task']} | {template} | {mean_std(r['origins'])} | {mean_std(r['tuned'])} |")
    return "\n".join(lines), rows


# ---- 2. cross-origin ---------------------------------------------------------------------------------------------
def finding_cross_origin(library: Library, limit: int, fresh: bool) -> tuple[str, list[dict]]:
    from studio.analysis import cross_origin_table
    from studio.backbones import load_backbone

    tasks = prebuilt_tasks(library)
    rows = _cached("cross_origin", lambda: cross_origin_table(library, load_backbone(), tasks, "test", limit), fresh)
    lines = ["| task | own init | other init (TPV from B on A) | n per cell |", "|---|---|---|---|"]
    for task in tasks:
        own = [r["accuracy"] for r in rows if r["task"] == task and r["own"]]
        other = [r["accuracy"] for r in rows if r["task"] == task and not r["own"]]
        n = next(r["n"] for r in rows if r["task"] == task)
        lines.append(f"| {task} | {mean_std(own)} | {mean_std(other)} | {n} |")
    return "\n".join(lines), rows


# ---- 3. similarity -------------------------------------------------------------------------------------------------
def finding_similarity(library: Library) -> tuple[str, dict]:
    from studio.analysis import similarity_table
    from studio.plots import heatmap, save_figure

    ids = [i.id for i in library.items(kind="vector") if i.source == "prebuilt"]
    summary = {}
    lines = ["| compared | measure | same task, different origins | different tasks |", "|---|---|---|---|"]
    for as_vectors in (True, False):
        for measure in ("token_mean_cosine", "flat_cosine"):
            table = similarity_table(library, ids, measure, as_vectors=as_vectors, order="task")
            same, different = [], []
            for a in range(len(table.items)):
                for b in range(a + 1, len(table.items)):
                    (same if table.items[a].task == table.items[b].task else different).append(table.matrix[a, b])
            kind = "TPVs" if as_vectors else "prompts"
            summary[f"{kind}/{measure}"] = {"same": float(np.mean(same)), "different": float(np.mean(different))}
            lines.append(f"| {kind} | {measure} | {np.mean(same):.2f} | {np.mean(different):.2f} |")
            name = f"similarity_{'tpv' if as_vectors else 'prompt'}_{measure}.png"
            save_figure(heatmap(table.matrix, table.labels, f"{measure} of {kind}", measure), DOCS / name)
    return "\n".join(lines), summary


# ---- 4. addition ----------------------------------------------------------------------------------------------------
PAIRS = (("mr", "tweets"), ("bbc", "uncertainty"))


def _prebuilt_vector(library: Library, task: str, origin: int):
    return next(i for i in library.items(kind="vector", task=task) if i.source == "prebuilt" and i.origin == origin)


def _test_accuracy(backbone, prompt, tasks: list[str], limit: int) -> dict[str, float]:
    from studio.evaluation import evaluate
    from studio.tasks import load_task

    return {t: evaluate(backbone, [prompt], load_task(t), "test", limit, keep_records=False)[0].metrics["accuracy"]
            for t in tasks}


def finding_addition(library: Library, val_limit: int, test_limit: int, fresh: bool) -> tuple[str, list[dict]]:
    """origin + c (tau_A + tau_B), c grid-searched on validation; then per-task weights, TIES and DARE (origin 0)."""
    from studio.analysis import coefficient_sweep, combine, weight_grid
    from studio.backbones import load_backbone

    origins = sorted({i.origin for i in library.items(kind="origin") if i.source == "prebuilt"})

    def compute() -> list[dict]:  # the model is loaded only when the cached rows are missing
        backbone = load_backbone()
        rows = []
        for a, b in PAIRS:
            for origin in origins:
                va, vb = _prebuilt_vector(library, a, origin), _prebuilt_vector(library, b, origin)
                single = {t: library.get(v.prompt_id).metrics.get(f"test_accuracy/{t}") for t, v in ((a, va), (b, vb))}
                methods = [("weighted_sum", "shared c")] + ([("ties", "shared c"), ("dare_linear", "shared c"),
                                                            ("weighted_sum", "per-task")] if origin == origins[0] else [])
                for method, search in methods:
                    if search == "shared c":
                        sweep = coefficient_sweep(library, backbone, va.origin_id, [va.id, vb.id], [1.0, 1.0], [a, b],
                                                  method, limit=val_limit)
                        weights = [sweep["best"], sweep["best"]]
                    else:
                        grid = weight_grid(library, backbone, va.origin_id, [va.id, vb.id], [1.0, 1.0], [a, b],
                                           limit=val_limit)
                        weights = grid["best"]
                    prompt, _ = combine(library, va.origin_id, [va.id, vb.id], weights, method)
                    test = _test_accuracy(backbone, prompt, [a, b], test_limit)
                    rows.append({"pair": f"{a}+{b}", "origin": origin, "method": method, "search": search,
                                 "weights": weights, "test": test, "single": single,
                                 "relative": {t: test[t] / single[t] if single[t] else None for t in (a, b)}})
        return rows

    rows = _cached("addition", compute, fresh)
    lines = ["| tasks | method | weights chosen on validation | test acc. A / B | relative to single-task tuning |",
             "|---|---|---|---|---|"]
    for pair in dict.fromkeys(r["pair"] for r in rows):
        a, b = pair.split("+")
        for (method, search) in dict.fromkeys((r["method"], r["search"]) for r in rows if r["pair"] == pair):
            group = [r for r in rows if r["pair"] == pair and r["method"] == method and r["search"] == search]
            weights = "; ".join("/".join(f"{w:.2f}" for w in r["weights"]) for r in group)
            lines.append(
                f"| {pair} | {method} ({search}) | {weights} | {mean_std([r['test'][a] for r in group])} / "
                f"{mean_std([r['test'][b] for r in group])} | {mean_std([r['relative'][a] for r in group])} / "
                f"{mean_std([r['relative'][b] for r in group])} |")
    return "\n".join(lines), rows


# ---- 5. few-shot initialisation -------------------------------------------------------------------------------------
def finding_fewshot(library: Library, target: str, sources: tuple[str, ...], shots: list[int], steps: int,
                    test_limit: int, fresh: bool, recipe: dict) -> tuple[str, list[dict]]:
    """Random origin vs each source's prompt vs the TPV sum vs a prompt tuned on the sources' mixture (tuned with
    the prebuilt library's own recipe), each tuned on k shots of the held-out target."""
    from studio.analysis import few_shot_experiment, multitask_prompt
    from studio.backbones import load_backbone
    from studio.plots import curves, save_figure
    from studio.tuning import TuneConfig

    origin = min((i for i in library.items(kind="origin") if i.source == "prebuilt"), key=lambda i: i.origin)
    vectors = [_prebuilt_vector(library, t, origin.origin).id for t in sources]
    config = TuneConfig(steps=steps, batch_size=4, eval_every=max(1, steps // 2), val_limit=40)

    def compute() -> list[dict]:
        backbone = load_backbone()
        mixture_config = TuneConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                                    eval_every=max(1, recipe["steps"] // 4), val_limit=60)
        multitask = multitask_prompt(library, backbone, origin.id, list(sources), mixture_config)
        return few_shot_experiment(library, backbone, target, vectors, origin.id, shots, config,
                                   eval_limit=test_limit, multitask_id=multitask.id)

    rows = _cached(f"fewshot_{target}", compute, fresh)
    inits = list(dict.fromkeys(r["init"] for r in rows))
    series = {init: ([r["shots"] for r in rows if r["init"] == init], [r["accuracy"] for r in rows if r["init"] == init])
              for init in inits}
    save_figure(curves(series, f"Few-shot initialisation on {target}", "shots", "test accuracy"),
                DOCS / f"fewshot_{target}.png")
    lines = ["| init | " + " | ".join(f"{k} shots" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    for init in inits:
        by_shot = {r["shots"]: r for r in rows if r["init"] == init}
        lines.append(f"| {init} | " + " | ".join(
            f"{100 * by_shot[k]['accuracy']:.1f} (F1 {100 * by_shot[k]['macro_f1']:.1f})" if k in by_shot else "-"
            for k in shots) + " |")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=200, help="test examples per task and prompt")
    parser.add_argument("--fresh", action="store_true", help="recompute cached findings")
    parser.add_argument("--val-limit", type=int, default=48, help="validation examples per task for searches")
    parser.add_argument("--fewshot-steps", type=int, default=30, help="tuning steps per few-shot run")
    parser.add_argument("--only", nargs="*", default=None, help="subset: tuning cross similarity addition fewshot")
    args = parser.parse_args(argv)
    library = open_library(studio_home() / "findings" / "scratch-library")
    baselines = json.loads((REPO_ROOT / "assets" / "library" / "baselines.json").read_text())
    sections = {}
    wanted = set(args.only or ["tuning", "cross", "similarity", "addition", "fewshot"])
    if "tuning" in wanted:
        sections["tuning"] = finding_tuning(library, baselines["template"])[0]
    if "cross" in wanted:
        sections["cross"] = finding_cross_origin(library, args.limit, args.fresh)[0]
    if "similarity" in wanted:
        sections["similarity"] = finding_similarity(library)[0]
    if "addition" in wanted:
        sections["addition"] = finding_addition(library, args.val_limit, args.limit, args.fresh)[0]
    if "fewshot" in wanted:
        sections["fewshot"] = finding_fewshot(library, "movie-reviews", ("mr", "tweets"), [0, 10, 50, 100],
                                              args.fewshot_steps, args.limit, args.fresh, baselines["recipe"])[0]
    out = studio_home() / "findings" / "sections.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(sections)
    out.write_text(json.dumps(old, indent=1))
    for name, text in old.items():
        print(f"## {name}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
