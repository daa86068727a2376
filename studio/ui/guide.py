"""Guide tab: what soft prompts, origins and task prompt vectors are, and a click-by-click path through the studio."""

from __future__ import annotations

import gradio as gr

from studio.ui.common import AppState, explain

CONCEPTS = """
### Three words
- **Soft prompt**: a small matrix of *virtual token* embeddings ([tokens x hidden size], e.g. 20 x 576 for the
  default model) placed in front of the frozen model's input. Tuning changes only this matrix; the model never
  changes, so one model serves many tasks.
- **Origin**: the random start of a soft prompt, made from a seed (rows are embeddings of random tokens among the
  first 5,000 of the vocabulary). The same seed always gives the same origin, so prompts tuned from "origin 0" for
  different tasks share their starting point.
- **Task prompt vector (TPV)**: *tuned prompt minus its origin*, element by element. It is what tuning learned,
  with the random start taken away. Vectors add, scale and negate: `origin + tau_mr + tau_tweets` is a new prompt.
"""

TABS = """
### What each tab shows
| tab | what it shows | what you do there |
|---|---|---|
| **Library** | every origin, tuned prompt and TPV with its recipe (model, task, data hash, seed, settings), metrics and lineage; prebuilt items are read-only | filter, click a row for details, rename, delete, export (PEFT adapter .zip or safetensors), import |
| **Tune** | training jobs: live training loss and validation accuracy, a job queue | choose tasks (or your CSV/JSONL), origin seeds and a budget; Start, Watch, Cancel, Resume |
| **Similarity** | a heatmap of pairwise similarity of TPVs (or raw prompts) across tasks and origins | pick items, *Compare as* vectors or prompts, a *Measure* (two cosines and distances), an *Order*; hover a cell; download HTML / CSV / PNG |
| **Map** | UMAP or PCA projection of prompts and TPVs in 2-D or 3-D, or one point per virtual token | *Colour by* task, origin or kind; hover a point; look up the nearest vocabulary tokens of a prompt |
| **Arithmetic** | a new prompt = origin P0 + a merge of weighted TPVs, evaluated on the tasks you choose | one weight slider per TPV (negative allowed), a *Merge method* (weighted sum, TIES, DARE...), *Evaluate*, a coefficient *Sweep*, *Save to library* |
| **Transfer** | TPVs moved to another origin, and TPVs as the start for tuning a new task on few examples | *Compare own vs other origin*; in *Few-shot initialisation* pick a target task and source TPVs, *Start experiment* |
"""

PATH = """
### A first path through the prebuilt library (about ten minutes)
1. **Library**: set *Source* to `prebuilt`. There is one origin per seed, and for every task and seed a *prompt*
   and its *vector*. Click a prompt row: the details show its recipe, its validation and test accuracy, and its
   lineage (`origin_id` is the origin it started from; the vector's `prompt_id` points back to its prompt). The
   column *|tau|/|origin|* says how far tuning moved each prompt from its random start: {ratio}.
2. **Similarity** opens on the heatmap of every TPV (token-mean cosine, ordered by task). *Expect* bright blocks
   on the diagonal: TPVs of the same task from different origins are similar ({same}), TPVs of different tasks much
   less so ({different}). Switch *Compare as* to prompts: {prompts}
3. **Map** opens on a UMAP of every prompt and TPV, coloured by task. *Expect* TPVs to group by task; colour by
   origin to see that the origin does not decide where they land.
4. **Arithmetic** opens on origin 0 with the TPVs of {pair}. Press **Evaluate** (or move a slider): the bars are
   the combination's validation accuracy per task, the marks beside them the origin alone and each task's own tuned
   prompt, so "keeps x% of its own prompt" is read off the chart. {addition} The **Sweep** accordion shows the
   paper's search for one shared coefficient c (stored with the library: {sweep}). A weight of 0 removes a task; a
   negative weight pushes its behaviour away. **Save to library** keeps the result as a new prompt.
5. **Transfer** opens on the cross-origin table: each task's own tuned prompt against its TPV moved to another
   origin (P0(A) + tau(B)). The paper finds TPVs independent of the random start. On the prebuilt library *expect*
   the same: {transfer}. This holds because the library's recipe tunes far enough from the origin; at the earlier
   recipe (80 steps, lr 0.03) the moved TPVs lost up to 30 points (`docs/findings.md`, "When does a TPV transfer?").
   In *Few-shot initialisation*, compare starts for a new task: the random origin, single source TPVs, their sum,
   and a prompt tuned on the sources mixed.
6. **Tune**: train your own: choose a task (or upload a CSV/JSONL with a text and a label column and press
   **Check file**), origin seeds `0` (or `0,1,2` to compare origins) and a budget: the form starts from the model's
   recipe ({recipe}): about 5 minutes per prompt on a 2-core CPU (less each when several train together), seconds
   on a GPU; for a quick look use 30 steps. Then **Start** and watch the curves. The new prompt and its TPV then appear in the Library and in
   every other tab (opening a tab refreshes it). With the default length your prompts start from the prebuilt
   origins, so their TPVs compare directly with the prebuilt ones.

### Good to know
- The prebuilt library is read-only: renaming or deleting a prebuilt item is refused; export it to make a copy.
- Deleting asks you to confirm; deleting a prompt that has a TPV needs *cascade* (or delete the TPV first).
- Imports are checked and never unpickled: a pickle, a wrong model width or NaN values are refused.
- A cancelled or crashed job keeps its checkpoint: **Resume**, or **Start** with the same settings, continues it.
"""


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def expectations(state: AppState) -> dict[str, str]:
    """The numbers the path tells a newcomer to expect, read from the prebuilt library and its stored views (so the
    text never goes stale after a rebuild). Each falls back to a plain sentence when there is nothing to read."""
    from statistics import mean

    from studio import analysis

    recipe = state.recipe()
    found = {"ratio": "larger for tasks that moved further", "same": "high", "different": "near zero",
             "prompts": "compare how much the shared random start shows in raw prompts.",
             "pair": "two tasks", "addition": "", "sweep": "press Sweep to compute it", "transfer": "see the table",
             "recipe": f"{recipe.steps} steps x batch {recipe.batch_size}, lr {recipe.lr}"}
    vectors = [i for i in state.library.items(kind="vector") if i.source == "prebuilt"]
    if vectors:
        ratios = [state.library.scale_ratio(v.id) for v in vectors]
        found["ratio"] = f"{min(ratios):.1f} to {max(ratios):.1f} in the prebuilt library (origins have none)"
        ids = [v.id for v in vectors]
        stats = analysis.same_vs_different(analysis.similarity_table(state.library, ids))
        found["same"], found["different"] = f"mean {stats['same_task']:.2f}", f"mean {stats['different_task']:.2f}"
        raw = analysis.same_vs_different(analysis.similarity_table(state.library, ids, as_vectors=False))
        found["prompts"] = (
            f"here same-task prompts score {raw['same_task']:.2f} and different tasks {raw['different_task']:.2f}. "
            + ("The shared random start dominates raw prompts, so they hardly separate tasks: that is why we compare "
               "vectors, not prompts." if raw["same_task"] - raw["different_task"] < 0.1 else
               f"Tuning moved these prompts about {mean(ratios):.0f}x their origin's size away from it, so the "
               "tuned part dominates them too; after a short run (the paper's supplement, our earlier library) raw "
               "prompts that share an origin look alike whatever their task, and only TPVs separate tasks."))
    sweep = state.views.get("sweep")
    if sweep:
        tasks = sweep["tasks"]
        found["pair"] = " and ".join(f"`{t}`" for t in tasks)
        at_one = {t: sweep["accuracy"][t][sweep["coefficients"].index(1.0)] for t in tasks}
        found["addition"] = ("With both weights at 1 the stored sweep scores " + ", ".join(
            f"{t} {_percent(a)}" for t, a in at_one.items()) + f" on {sweep['limit']} validation examples per task.")
        found["sweep"] = f"best c = {sweep['best']:.2f}, mean accuracy {_percent(sweep['best_mean'])}"
    rows = state.views.get("cross_origin", {}).get("rows")
    if rows:
        summary = analysis.cross_origin_summary(rows)
        found["transfer"] = "; ".join(f"{s['task']} {_percent(s['own_mean'])} own vs {_percent(s['other_mean'])} "
                                      f"moved" for s in summary)
        found["transfer"] += f" (largest gap {max(100 * s['gap'] for s in summary):.1f} points; mean |tau|/|origin| " \
                             f"{mean(s['tau_ratio'] for s in summary):.1f})"
    return found


def prebuilt_summary(state: AppState) -> str:
    """What the prebuilt library actually holds in this app (tasks, origins, counts)."""
    items = [i for i in state.library.items() if i.source == "prebuilt"]
    if not items:
        return ("### The prebuilt library\nNo prebuilt library is attached to this studio, so the path below works "
                "once you have tuned a few prompts in the **Tune** tab (two tasks x two or three origin seeds).")
    tasks = sorted({i.task for i in items if i.kind == "prompt" and i.task})
    seeds = sorted({i.seed for i in items if i.kind == "origin" and i.seed is not None})
    count = {kind: sum(i.kind == kind for i in items) for kind in ("origin", "prompt", "vector")}
    models = sorted({i.model for i in items})
    return (f"### The prebuilt library\nModel `{', '.join(models)}`: {count['origin']} origins (seeds "
            f"{', '.join(map(str, seeds)) or '-'}), {count['prompt']} tuned prompts and {count['vector']} TPVs for "
            f"the tasks {', '.join(f'`{t}`' for t in tasks) or '-'}.")


def build(state: AppState, tab: gr.Tab, app: gr.Blocks) -> None:
    """The Guide tab: static text with numbers read at start-up, so it has no events to wire."""
    explain("A short tour: what soft prompts, origins and task prompt vectors are, what each tab shows, and a path "
            "to click through the prebuilt library with what you should expect to see at each step.")
    gr.Markdown(CONCEPTS)
    gr.Markdown(prebuilt_summary(state))
    gr.Markdown(PATH.format(**expectations(state)))
    gr.Markdown(TABS)
