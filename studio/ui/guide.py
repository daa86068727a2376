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
   lineage (`origin_id` is the origin it started from; the vector's `prompt_id` points back to its prompt).
2. **Similarity**: keep the default items (every TPV), *Compare as* vectors, measure `token_mean_cosine`, order
   *task, then origin*, and press **Draw heatmap**. *Expect* bright blocks on the diagonal: TPVs of the same task
   from different origins are similar, and TPVs of different tasks much less so (close to zero for unrelated
   tasks such as sentiment vs news topics). Switch *Compare as* to prompts and draw again: raw prompts that share
   an origin now look alike whatever their task, because the random start dominates them. That is why we compare
   vectors, not prompts.
3. **Map**: **Draw map** with *Colour by* task, then by origin. *Expect* TPVs to group by task, not by origin.
4. **Arithmetic**: choose origin 0 and the TPVs of two tasks (e.g. `mr` and `tweets`), leave both weights at 1
   (or set 0.5 each) and press **Evaluate**. In the paper the sum is one multi-task prompt that does well on both
   tasks. On the prebuilt library *expect* a partial result: MR stays clearly above its origin (about 72% against
   67%, its own prompt 86%) while tweets falls back to about its origin's level; switch *Merge method* to TIES and
   watch both rise a little. A weight of 0 removes a task; a negative weight pushes its behaviour away. The
   coefficient **Sweep** repeats the paper's search for one shared weight. **Save to library** keeps the result as
   a new prompt.
5. **Transfer**: **Compare own vs other origin**. In the paper (T5-base, 8B decoders, long runs) a TPV tuned from
   origin 1 and added to origin 0 keeps the accuracy of origin 0's own prompt. On the prebuilt library (a 135M
   model, 80 steps) it keeps only part of it: MR about 74% against 86% (the origin alone: 67%), and on BBC topics
   nothing. *Look for* that gap, then compare the Similarity tab's two cosines: the token-mean cosine of same-task
   TPVs is high, the flattened one near zero, so what moves across origins is the average direction only (the
   numbers and the reasoning are in `docs/findings.md`). In *Few-shot
   initialisation*, *expect* the TPV start (origin + the sum of related TPVs) to beat the random start when only
   a handful of examples is used.
6. **Tune**: train your own: choose a task (or upload a CSV/JSONL with a text and a label column and press
   **Check file**), origin seeds `0` (or `0,1,2` to compare origins) and a small budget (e.g. 50 steps), then
   **Start** and watch the curves. On a CPU this takes minutes; a GPU is used when there is one. The new prompt
   and its TPV then appear in the Library and in every other tab (opening a tab refreshes its lists). With the
   default length of 20 tokens your prompts start from the prebuilt origins, so their TPVs compare directly
   with the prebuilt ones.

### Good to know
- The prebuilt library is read-only: renaming or deleting a prebuilt item is refused; export it to make a copy.
- Deleting asks you to confirm; deleting a prompt that has a TPV needs *cascade* (or delete the TPV first).
- Imports are checked and never unpickled: a pickle, a wrong model width or NaN values are refused.
- A cancelled or crashed job keeps its checkpoint: **Resume**, or **Start** with the same settings, continues it.
"""


def prebuilt_summary(state: AppState) -> str:
    """What the prebuilt library actually holds in this app (tasks, origins, counts)."""
    items = [i for i in state.library.items() if i.source == "prebuilt"]
    if not items:
        return ("### The prebuilt library\nNo prebuilt library is attached to this studio, so the path below works "
                "once you have tuned a few prompts in the **Tune** tab (two tasks x two or three origin seeds).")
    tasks = sorted({i.task for i in items if i.kind == "prompt" and i.task})
    seeds = sorted({i.origin for i in items if i.kind == "origin" and i.origin is not None})
    count = {kind: sum(i.kind == kind for i in items) for kind in ("origin", "prompt", "vector")}
    models = sorted({i.model for i in items})
    return (f"### The prebuilt library\nModel `{', '.join(models)}`: {count['origin']} origins (seeds "
            f"{', '.join(map(str, seeds)) or '-'}), {count['prompt']} tuned prompts and {count['vector']} TPVs for "
            f"the tasks {', '.join(f'`{t}`' for t in tasks) or '-'}.")


def build(state: AppState) -> None:
    explain("A short tour: what soft prompts, origins and task prompt vectors are, what each tab shows, and a path "
            "to click through the prebuilt library with what you should expect to see at each step.")
    gr.Markdown(CONCEPTS)
    gr.Markdown(prebuilt_summary(state))
    gr.Markdown(PATH)
    gr.Markdown(TABS)
