"""Reproduce the paper's findings on the prebuilt library: `python -m studio.findings` writes docs/findings.md.

Every number and figure in docs/findings.md comes from this module run on the prebuilt library (assets/library),
with the studio's own engine and plotting code. Each finding is cached in ``$STUDIO_HOME/findings/*.json`` so an
interrupted run picks up where it stopped; ``--fresh`` recomputes.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean, pstdev

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from studio import StudioError
from studio.config import REPO_ROOT, studio_home
from studio.files import atomic_write_text
from studio.library import Item, Library, metric_key, open_library
from studio.limits import TASK_JOINER
from studio.prompts import scale_ratio  # ||tau|| / ||P0||; re-exported: the transfer finding's measure

DOCS = REPO_ROOT / "docs"


def _cached(name: str, compute: Callable[[], object], fresh: bool) -> object:
    path = studio_home() / "findings" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    value = compute()
    atomic_write_text(path, json.dumps(value, indent=1))
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
        key = metric_key("test", "accuracy", task)
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
    from studio.backbones import load_backbone

    tasks = prebuilt_tasks(library)
    rows = _cross_rows(library, "cross_origin", limit, fresh, load_backbone)
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
    return next(i for i in library.items(kind="vector", task=task) if i.source == "prebuilt" and i.seed == origin)


def _test_accuracy(backbone, prompt, tasks: list[str], limit: int) -> dict[str, float]:
    from studio.evaluation import evaluate
    from studio.tasks import load_task

    return {t: evaluate(backbone, [prompt], load_task(t), "test", limit, keep_records=False)[0].metrics["accuracy"]
            for t in tasks}


def finding_addition(library: Library, val_limit: int, test_limit: int, fresh: bool) -> tuple[str, list[dict]]:
    """origin + c (tau_A + tau_B), c grid-searched on validation; then per-task weights, TIES and DARE (origin 0)."""
    from studio.analysis import coefficient_sweep, combine, weight_grid
    from studio.backbones import load_backbone

    origins = sorted({i.seed for i in library.items(kind="origin") if i.source == "prebuilt"})

    def compute() -> list[dict]:  # the model is loaded only when the cached rows are missing
        backbone = load_backbone()
        rows = []
        for a, b in PAIRS:
            for origin in origins:
                va, vb = _prebuilt_vector(library, a, origin), _prebuilt_vector(library, b, origin)
                single = {t: library.get(v.prompt_id).metrics.get(metric_key("test", "accuracy", t)) for t, v in ((a, va), (b, vb))}
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
                    rows.append({"pair": f"{a}{TASK_JOINER}{b}", "origin": origin, "method": method, "search": search,
                                 "weights": weights, "test": test, "single": single,
                                 "relative": {t: test[t] / single[t] if single[t] else None for t in (a, b)}})
        return rows

    rows = _cached("addition", compute, fresh)
    lines = ["| tasks | method | weights chosen on validation | test acc. A / B | relative to single-task tuning |",
             "|---|---|---|---|---|"]
    for pair in dict.fromkeys(r["pair"] for r in rows):
        a, b = pair.split(TASK_JOINER)
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
    from studio.backbones import load_backbone
    from studio.fewshot import few_shot_study
    from studio.plots import curves, save_figure
    from studio.settings import TuneConfig

    origin = min((i for i in library.items(kind="origin") if i.source == "prebuilt"), key=lambda i: i.seed)
    vectors = [_prebuilt_vector(library, t, origin.seed).id for t in sources]
    # the few-shot runs use the library's learning rate (the model's recipe), with a few-shot budget
    config = TuneConfig(steps=steps, batch_size=4, lr=recipe["lr"], eval_every=max(1, steps // 2), val_limit=40)

    def compute() -> list[dict]:
        backbone = load_backbone()
        mixture_config = TuneConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                                    eval_every=max(1, recipe["steps"] // 4), val_limit=60)
        return few_shot_study(library, backbone, target, vectors, origin.id, shots, config, mixture_config,
                              eval_limit=test_limit)

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


# ---- 6. when does a TPV transfer? -----------------------------------------------------------------------------------
# A TPV moved onto another origin lands where that origin decides when ||tau|| is small next to ||P0||
# (scale_ratio): the gap chart tests that across libraries, the scaling experiment by scaling tau or P0.
SCALING_COEFFICIENTS = (0.25, 0.5, 1.0, 1.5)
ORIGIN_SCALES = (0.5, 1.0, 1.5)


def _origin_prompts(library: Library, task: str, model: str | None = None) -> list[Item]:
    """The first prebuilt tuned prompt per origin (the ones cross_origin_table picks), in origin-seed order."""
    from studio.analysis import is_single_task_prompt

    by_origin: dict[str, Item] = {}
    for item in library.items(kind="prompt", model=model, task=task):
        if item.source == "prebuilt" and is_single_task_prompt(item):
            by_origin.setdefault(item.origin_id, item)
    return sorted(by_origin.values(), key=lambda item: (-1 if item.seed is None else item.seed, item.origin_id))


def tpv_geometry(library: Library, tasks: list[str]) -> list[dict]:
    """One row per prebuilt tuned prompt: ||tau||, ||P0|| and their ratio (cheap: no model)."""
    rows = []
    for task in tasks:
        for prompt in _origin_prompts(library, task):
            tau, origin = library.vector(prompt.id).delta, library.tensor(prompt.origin_id)
            rows.append({"task": task, "origin": prompt.seed, "prompt_id": prompt.id,
                         "tau_norm": float(tau.norm()), "origin_norm": float(origin.norm()),
                         "ratio": scale_ratio(tau, origin)})
    return rows


def geometry_by_task(geometry: list[dict]) -> list[dict]:
    """Per task, the mean of tpv_geometry's norms and ratio over its origins."""
    summary = []
    for task in dict.fromkeys(row["task"] for row in geometry):
        group = [row for row in geometry if row["task"] == task]
        summary.append({"task": task, "n": len(group),
                        **{key: mean(row[key] for row in group) for key in ("tau_norm", "origin_norm", "ratio")}})
    return summary


def transfer_gap_rows(cross_rows: list[dict], geometry: list[dict]) -> list[dict]:
    """Per task: own-init and other-init mean accuracy (cross_origin_table rows), the gap own - other in
    accuracy points, and the task's mean norms and ratio (None where the geometry lacks the task)."""
    from studio.analysis import cross_origin_summary

    shape = {row["task"]: row for row in geometry_by_task(geometry)}
    rows = []
    for summary in cross_origin_summary(cross_rows):
        task = summary["task"]
        norms = {key: shape[task][key] if task in shape else None for key in ("tau_norm", "origin_norm", "ratio")}
        rows.append({"task": task, "own": summary["own_mean"], "other": summary["other_mean"],
                     "gap": 100 * (summary["own_mean"] - summary["other_mean"]), **norms})
    return rows


def cyclic_pairs(n: int) -> list[tuple[int, int]]:
    """(A, B = the next origin after A), wrapping: n ordered pairs instead of n (n - 1), to keep it cheap."""
    if n < 2:
        raise StudioError(f"moving a TPV needs at least two origins, got {n}")
    return [(a, (a + 1) % n) for a in range(n)]


def scaling_prompts(origins: Sequence[Tensor], taus: Sequence[Tensor], seeds: Sequence[int | None],
                    coefficients: Sequence[float] = SCALING_COEFFICIENTS,
                    origin_scales: Sequence[float] = ORIGIN_SCALES) -> tuple[list[dict], list[Tensor]]:
    """Every prompt is s * P0(X) + c * tau_B for a cyclic pair (A, B): own = P0(B) + c tau_B and moved =
    P0(A) + c tau_B over ``coefficients``; origin_scaled = s P0(A) + tau_B over ``origin_scales``. ``taus[i]``
    is the TPV tuned from ``origins[i]``. Returns the rows describing each prompt, and the prompts."""
    if len(origins) != len(taus) or len(origins) != len(seeds):
        raise StudioError(f"got {len(origins)} origins, {len(taus)} vectors and {len(seeds)} seeds")
    specs, prompts = [], []
    for a, b in cyclic_pairs(len(origins)):
        variants = ([("own", b, float(c), 1.0) for c in coefficients]
                    + [("moved", a, float(c), 1.0) for c in coefficients]
                    + [("origin_scaled", a, 1.0, float(s)) for s in origin_scales])
        for variant, base, c, s in variants:
            specs.append({"origin": seeds[a], "vector_from": seeds[b], "variant": variant, "c": c, "s": s})
            prompts.append(s * origins[base].float() + c * taus[b].float())
    return specs, prompts


def scaling_experiment(library: Library, backbone, tasks: list[str],
                       coefficients: Sequence[float] = SCALING_COEFFICIENTS,
                       origin_scales: Sequence[float] = ORIGIN_SCALES, limit: int | None = 60,
                       split: str = "test") -> list[dict]:
    """Is the cross-origin gap about the TPV being too small next to the foreign origin? Scale tau (own vs
    moved) and scale the foreign origin, on the class-balanced first ``limit`` examples (evaluate_many)."""
    from studio.evaluation import evaluate_many

    rows = []
    for task in tasks:
        prompts = _origin_prompts(library, task, backbone.name)
        specs, tensors = scaling_prompts([library.tensor(p.origin_id) for p in prompts],
                                         [library.vector(p.id).delta for p in prompts],
                                         [p.seed for p in prompts], coefficients, origin_scales)
        result = evaluate_many(backbone, tensors, [task], split, limit)
        rows += [{"task": task, **spec, "accuracy": float(accuracy), "n": result["n"][0]}
                 for spec, accuracy in zip(specs, result["accuracy"][:, 0])]
    return rows


def scaling_summary(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Means over tasks and pairs: per c, own vs moved (gap in points); per s, moved with the origin scaled."""
    def average(variant: str, key: str, value: float) -> float:
        return mean(r["accuracy"] for r in rows if r["variant"] == variant and r[key] == value)

    by_c = []
    for c in sorted({r["c"] for r in rows if r["variant"] == "own"}):
        own, moved = average("own", "c", c), average("moved", "c", c)
        by_c.append({"c": c, "own": own, "moved": moved, "gap": 100 * (own - moved)})
    by_s = [{"s": s, "origin_scaled": average("origin_scaled", "s", s)}
            for s in sorted({r["s"] for r in rows if r["variant"] == "origin_scaled"})]
    return by_c, by_s


def gap_scale_figure(gaps: dict[str, list[dict]]) -> go.Figure:
    """Gap (points) against ||tau|| / ||P0||: one marker per (library, task), one colour per library."""
    figure = go.Figure()
    for label, rows in gaps.items():
        points = [row for row in rows if row["ratio"] is not None]
        figure.add_trace(go.Scatter(x=[row["ratio"] for row in points], y=[row["gap"] for row in points],
                                    text=[row["task"] for row in points], mode="markers+text", name=label,
                                    textposition="top center", marker={"size": 11}))
    figure.add_hline(y=0, line_dash="dot", line_color="gray")
    figure.update_layout(title="Cross-origin gap against the TPV's size relative to its origin",
                         xaxis={"title": "||tau|| / ||P0|| (mean over origins)"},
                         yaxis={"title": "own init - other init (accuracy points)"}, height=460)
    return figure


def scaling_figure(rows: list[dict]) -> go.Figure:
    """Mean accuracy of own and moved prompts against c, and of moved prompts against the origin's scale s."""
    from studio.plots import curves

    by_c, by_s = scaling_summary(rows)
    series = {"own: P0(B) + c tau_B": ([r["c"] for r in by_c], [r["own"] for r in by_c]),
              "moved: P0(A) + c tau_B": ([r["c"] for r in by_c], [r["moved"] for r in by_c]),
              "origin scaled: s P0(A) + tau_B": ([r["s"] for r in by_s], [r["origin_scaled"] for r in by_s])}
    return curves(series, "Scaling the TPV (c) or the foreign origin (s)", "c (own, moved) or s (origin scaled)",
                  "mean test accuracy")


def transfer_figures(gaps: dict[str, list[dict]], scaling_rows: list[dict], folder: Path,
                     suffix: str = ".png") -> list[Path]:
    """Write both figures into ``folder`` (.png for the docs, .html where no Chromium is available)."""
    from studio.plots import save_figure

    folder.mkdir(parents=True, exist_ok=True)
    return [save_figure(gap_scale_figure(gaps), folder / f"transfer_gap_vs_scale{suffix}"),
            save_figure(scaling_figure(scaling_rows), folder / f"transfer_scaling{suffix}")]


def _percent(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"  # value != value: NaN


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def transfer_markdown(gaps: dict[str, list[dict]], scaling_rows: list[dict]) -> str:
    """One geometry + gap table per library, then the scaling experiment's means."""
    lines = []
    for label, rows in gaps.items():
        lines += [f"{label}:", "", "| task | ‖τ‖ | ‖P0‖ | ‖τ‖/‖P0‖ | own init | other init | gap (points) |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['task']} | {_number(r['tau_norm'])} | {_number(r['origin_norm'])} | "
                  f"{_number(r['ratio'], 2)} | {_percent(r['own'])} | {_percent(r['other'])} | {_number(r['gap'])} |"
                  for r in rows]
        lines.append("")
    by_c, by_s = scaling_summary(scaling_rows)
    lines += ["Scaling (mean over tasks and cyclic origin pairs A -> B): own = P0(B) + c τ_B, moved = P0(A) + c τ_B",
              "", "| c | own | moved | gap (points) |", "|---|---|---|---|"]
    lines += [f"| {r['c']:g} | {_percent(r['own'])} | {_percent(r['moved'])} | {_number(r['gap'])} |" for r in by_c]
    lines += ["", "| s | moved with the origin scaled, s P0(A) + τ_B |", "|---|---|"]
    lines += [f"| {r['s']:g} | {_percent(r['origin_scaled'])} |" for r in by_s]
    return "\n".join(lines)


def library_label(root: Path) -> str:
    """A folder's name (relative to the repository when inside it) and its build recipe, from baselines.json."""
    root = Path(root).resolve()
    name = str(root.relative_to(REPO_ROOT)) if root.is_relative_to(REPO_ROOT) else root.name
    path = root / "baselines.json"
    recipe = json.loads(path.read_text()).get("recipe") if path.exists() else None
    if not recipe:
        return name
    return f"{name} ({recipe.get('steps')} x {recipe.get('batch_size')}, lr {recipe.get('lr')})"


def catalog_hash(root: Path) -> str:
    """The first 12 hex digits of sha256(catalog.json): a cache name that changes when the library does."""
    return hashlib.sha256((Path(root) / "catalog.json").read_bytes()).hexdigest()[:12]


def _cross_rows(library: Library, name: str, limit: int, fresh: bool, load: Callable) -> list[dict]:
    """The cross-origin rows of ``library``'s prebuilt tasks: the ones build-library stored with the library
    (``studio.views``) when they were computed from the same prompts and sample size, else computed now."""
    from studio.analysis import cross_origin_table
    from studio.views import load_views, stored_cross_origin

    tasks = prebuilt_tasks(library)
    prebuilt = next((lib for lib in (library, *library.parents) if lib.read_only), None)

    def compute() -> list[dict]:
        views = load_views(prebuilt.root) if prebuilt else {}
        stored = stored_cross_origin(views, library, views.get("model", ""), tasks, "test", limit) if views else None
        return stored if stored is not None else cross_origin_table(library, load(), tasks, "test", limit)

    return _cached(name, compute, fresh)


def finding_transfer(library: Library, limit: int, fresh: bool, compare: Path | None = None,
                     scaling_limit: int = 60, folder: Path = DOCS, suffix: str = ".png",
                     load: Callable | None = None) -> tuple[str, dict]:
    """When does a TPV transfer? The cross-origin gap against ||tau|| / ||P0|| for this library (and ``compare``,
    e.g. an older build), and the scaling experiment. ``load`` returns the backbone (default: the embedded
    model), called only when a cache misses."""
    from studio.backbones import load_backbone

    backbone = functools.cache(load or load_backbone)
    own_root = next((lib.root for lib in (library, *library.parents) if lib.read_only), library.root)
    sources = [(f"this library: {library_label(own_root)}", library, "cross_origin")]
    if compare is not None:
        other = Library(compare, read_only=True)
        sources.append((f"compared: {library_label(compare)}", other,
                        f"cross_origin_compare_{catalog_hash(compare)}_{limit}"))
    gaps, geometry = {}, {}
    for label, lib, cache in sources:
        geometry[label] = tpv_geometry(lib, prebuilt_tasks(lib))
        gaps[label] = transfer_gap_rows(_cross_rows(lib, cache, limit, fresh, backbone), geometry[label])
    scaling = _cached("transfer_scaling", lambda: scaling_experiment(
        library, backbone(), prebuilt_tasks(library), limit=scaling_limit), fresh)
    figures = transfer_figures(gaps, scaling, folder, suffix)
    return transfer_markdown(gaps, scaling), {"libraries": gaps, "geometry": geometry, "scaling": scaling,
                                              "figures": [str(path) for path in figures]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=200, help="test examples per task and prompt")
    parser.add_argument("--fresh", action="store_true", help="recompute cached findings")
    parser.add_argument("--val-limit", type=int, default=48, help="validation examples per task for searches")
    parser.add_argument("--fewshot-steps", type=int, default=30, help="tuning steps per few-shot run")
    parser.add_argument("--only", nargs="*", default=None,
                        help="subset: tuning cross similarity addition fewshot transfer")
    parser.add_argument("--compare-library", type=Path, default=None, metavar="PATH",
                        help="transfer: also chart this library folder (with catalog.json, e.g. an older build)")
    parser.add_argument("--scaling-limit", type=int, default=60, help="transfer: test examples per scaling prompt")
    args = parser.parse_args(argv)
    if args.compare_library is not None and not (args.compare_library / "catalog.json").exists():
        parser.error(f"--compare-library {args.compare_library}: no catalog.json there")
    library = open_library(studio_home() / "findings" / "scratch-library")
    baselines = json.loads((REPO_ROOT / "assets" / "library" / "baselines.json").read_text())
    sections = {}
    wanted = set(args.only or ["tuning", "cross", "similarity", "addition", "fewshot", "transfer"])
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
    if "transfer" in wanted:
        sections["transfer"] = finding_transfer(library, args.limit, args.fresh, args.compare_library,
                                                args.scaling_limit)[0]
    out = studio_home() / "findings" / "sections.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(sections)
    atomic_write_text(out, json.dumps(old, indent=1))
    for name, text in old.items():
        print(f"## {name}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
