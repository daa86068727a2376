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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=200, help="test examples per task and prompt")
    parser.add_argument("--fresh", action="store_true", help="recompute cached findings")
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
    out = studio_home() / "findings" / "sections.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(sections)
    out.write_text(json.dumps(old, indent=1))
    for name, text in old.items():
        print(f"## {name}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
