"""Agents: the studio's main actions as MCP tools, served by ``python launch.py --mcp``.

Gradio's MCP server (``launch(mcp_server=True)``) lists every public API endpoint of the app as a tool: named after
its function, described by its docstring (the summary, then ``Args:``) and typed by its hints. ``attach`` registers
the ``AgentTools`` methods with ``gr.api`` and first makes the UI's own events "undocumented": the page and
``gradio_client`` still call them, but they leave the API docs and the MCP tool list (bound partials with
``gr.State`` inputs, which MCP would list as ``partial``, ``partial_1``... with arguments no agent can fill).

Every tool is a thin call into what the tabs already use (``studio.analysis``, the Library, Arithmetic and Tune
panels' checks, the app's job runner) and answers JSON text: Gradio hands a tool's return value to the client as
``str(value)``, so a dict would arrive as a Python repr. A ``StudioError`` reaches the agent as its one-line message
(the call's error result), never as a traceback; arguments of the wrong JSON type are refused before the call by the
MCP server, which checks them against the schema.

Tuning is a start + status pair, not one blocking call: even a small job takes minutes on a CPU, longer than MCP
clients wait for one call (a timed-out call would lose the job id), and the job is then the Tune tab's too (its jobs
table lists it; the same settings started again resume from its checkpoint).
"""

from __future__ import annotations

import json
import math
from typing import Literal

import gradio as gr

from studio import StudioError, analysis
from studio.jobs import Job, progress_summary, submit_tuning, tune_request
from studio.library import Item
from studio.prompts import MERGE_METHODS, SIMILARITY_MEASURES
from studio.settings import TuneConfig
from studio.space import tuner
from studio.tasks import list_tasks, load_task
from studio.ui import arithmetic, library_panel, tune_panel
from studio.ui.common import AppState, friendly, job_of

TOOLS = ("list_library", "list_tasks", "evaluate_combination", "similarity_table", "start_tuning", "tuning_status",
         "cancel_tuning")
Kind = Literal["all", "origin", "prompt", "vector"]
MergeMethod = Literal[tuple(MERGE_METHODS)]  # the registries' names, so a client sees them as an enum
Measure = Literal[tuple(SIMILARITY_MEASURES)]
View = Literal[analysis.SIMILARITY_VIEWS]
Order = Literal[analysis.SIMILARITY_ORDERS]


def as_json(value) -> str:
    """JSON text with NaN and infinities as null (plain JSON has no NaN)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value))


def string_list(value, what: str) -> list[str]:
    """A list of names or ids from a JSON list (or one comma-separated string, as agents sometimes send)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudioError(f"{what} must be a list of strings, e.g. [\"mr\", \"tweets\"] (got {value!r:.80})")
    return [v.strip() for v in value if v.strip()]


def item_record(item: Item) -> dict:
    """What an agent needs of a library item to choose it for the other tools."""
    return {"id": item.id, "kind": item.kind, "name": item.name, "task": item.task, "seed": item.seed,
            "origin_id": item.origin_id, "prompt_id": item.prompt_id, "n_tokens": item.n_tokens,
            "source": item.source, "pulled_from": item.pulled_from, "val_accuracy": item.accuracy("validation"),
            "test_accuracy": item.accuracy("test")}


def job_record(state: AppState, job: Job) -> dict:
    """A tuning job as the Tune tab shows it: status, step, losses, ETA and, once done, the stored items."""
    record = {"job_id": job.id, "title": job.title, "status": job.status, "progress": round(job.progress, 4),
              "message": job.message, "summary": tune_panel.status_line(job).replace("**", "")}
    summary = progress_summary(job)
    if summary:
        record.update(step=summary["step"], steps=summary["steps"], eta_s=round(summary["eta_s"], 1),
                      train_loss=summary["train_loss"], validation_accuracy=summary["val_accuracies"])
    if job.status == "done" and isinstance(job.result, list):  # run_tuning's prompt ids
        prompts = set(job.result)
        record["prompt_ids"] = list(job.result)
        record["vector_ids"] = [v.id for v in state.library.items(kind="vector") if v.prompt_id in prompts]
    return record


class AgentTools:
    """The tools, bound to the app's state. Each docstring is the tool's description in the MCP schema."""

    def __init__(self, state: AppState):
        self.state = state

    def _job(self, job_id: str) -> Job:
        key = job_id.strip() if isinstance(job_id, str) else ""
        return job_of(self.state, key, f"no tuning job {key!r}: start_tuning returns the id of a new job")

    @friendly
    def list_library(self, kind: Kind = "all", task: str = "") -> str:
        """List the studio library's items for the loaded model: origins (random starting prompts), tuned prompts
        and task prompt vectors (TPVs, tuned prompt minus its origin), with their ids, task, origin seed and
        stored validation/test accuracy. Use the ids with the other tools.

        Args:
            kind: only items of this kind: "origin", "prompt", "vector", or "all".
            task: only items of this task (e.g. "mr"); empty for every task.

        Returns:
            JSON {"model": ..., "count": ..., "items": [{"id", "kind", "name", "task", "seed", "origin_id", "prompt_id", "n_tokens", "source", "pulled_from", "val_accuracy", "test_accuracy"}]}.
        """
        if kind not in ("all", "origin", "prompt", "vector"):
            raise StudioError(f"unknown kind {kind!r}: use origin, prompt, vector or all")
        items = [i for i in library_panel.filtered_items(self.state, kind, (task or "").strip(), None)
                 if i.model == self.state.model_name]
        return as_json({"model": self.state.model_name, "count": len(items), "items": [item_record(i) for i in items]})

    @friendly
    def list_tasks(self) -> str:
        """List the tasks (classification datasets) that prompts can be tuned and evaluated on: the tasks of the
        library's items first, then the bundled ones, with their label words.

        Returns:
            JSON [{"name", "title", "labels", "source", "description"}].
        """
        specs = {spec.name: spec for spec in list_tasks()}
        return as_json([{"name": name, "title": spec.title, "labels": list(spec.label_words), "source": spec.source,
                         "description": spec.description} if (spec := specs.get(name)) else
                        {"name": name, "source": "library"} for name in arithmetic.task_choices(self.state)])

    @friendly
    def evaluate_combination(self, origin_id: str, vector_ids: list[str], weights: list[float],
                             method: MergeMethod = "weighted_sum", tasks: list[str] | None = None, limit: int = 64,
                             density: float = 0.5, save: bool = False, name: str = "") -> str:
        """Evaluate a new prompt made by task arithmetic, P = origin + merge(weight_i x vector_i), as the Arithmetic
        tab does: accuracy by rank classification on the first `limit` class-balanced validation examples of each
        task. Stored in the library only with save=true.

        Args:
            origin_id: id of an origin (kind "origin" in list_library) to add the vectors to.
            vector_ids: ids of 1 to 6 task prompt vectors (kind "vector") of the loaded model.
            weights: one weight per vector, in the same order: 1 adds the task, 0 leaves it out, negative pushes it away.
            method: how the weighted vectors are merged: weighted_sum (task arithmetic) or a PEFT merge (ties, dare_linear, dare_ties, magnitude_prune).
            tasks: task names to evaluate on (list_tasks); empty for the vectors' own tasks.
            limit: validation examples per task, 1 to 2000 (64 takes seconds on a CPU).
            density: share of entries that ties, dare_* and magnitude_prune keep, in (0, 1]; weighted_sum ignores it.
            save: also store the combined prompt in the library with these scores (the same combination is stored once).
            name: the stored prompt's name when saved (default: its formula, e.g. "origin 0 + 1 mr + 0.5 tweets").

        Returns:
            JSON {"accuracy": {task: value}, "accuracy_se": {task: standard error}, "n": {task: examples}, "mean_accuracy", "split", "saved_id" (with save), and the combination evaluated}.
        """
        state = self.state
        if not isinstance(weights, list):
            raise StudioError(f"weights must be a list of numbers, one per vector (got {weights!r:.80})")
        choice = analysis.check_combination(state.library, (origin_id or "").strip(),
                                            string_list(vector_ids, "vector_ids"), method, density,
                                            string_list(tasks, "tasks"), limit, weights, model=state.model_name)
        prompt, recipe = analysis.combine(state.library, choice.origin_id, choice.vector_ids, choice.weights,
                                          choice.method, choice.density)
        metrics = analysis.score_combination(state.backbone(), prompt, choice.tasks, "validation", choice.limit)
        accuracy = {t: m["accuracy"] for t, m in metrics.items()}
        record = {"origin_id": choice.origin_id, "vector_ids": choice.vector_ids, "weights": choice.weights,
                  "method": choice.method, "density": choice.density, "split": "validation", "accuracy": accuracy,
                  "accuracy_se": {t: m["accuracy_se"] for t, m in metrics.items()},
                  "n": {t: m["n"] for t, m in metrics.items()}, "mean_accuracy": sum(accuracy.values()) / len(accuracy)}
        if save:  # stored with the scores just measured (or as it was, when the same combination is stored)
            evaluated = {"recipe": recipe, "tasks": choice.tasks, "limit": choice.limit, "metrics": metrics}
            item, _ = analysis.save_scored_combination(state.library, state.backbone(), choice,
                                                       name if isinstance(name, str) else "", evaluated)
            record["saved_id"] = item.id
        return as_json(record)

    @friendly
    def similarity_table(self, ids: list[str], measure: Measure = "token_mean_cosine", view: View = "vectors",
                         order: Order = "task") -> str:
        """Compare library items pairwise, as the Similarity tab's heatmap: how alike their task prompt vectors (or
        their raw prompt matrices) are, and the mean similarity of same-task pairs (across origins) vs
        different-task pairs.

        Args:
            ids: ids of 2 or more library items of one model (vectors, prompts or origins).
            measure: token_mean_cosine (cosine of the token-averaged matrices, the paper's), flat_cosine, l2, mean_abs_diff or norm_gap (the last three are distances).
            view: "vectors" compares tau = prompt - origin; "prompts" compares the prompt matrices themselves.
            order: row order of the matrix: by "task", by "origin", or "cluster" (average-linkage clustering).

        Returns:
            JSON {"ids": [...], "labels": [...], "matrix": [[...]] (rows and columns in the order of ids), "measure", "view", "same_task_mean", "different_task_mean", "n_same", "n_different"}.
        """
        table = analysis.similarity_table(self.state.library, string_list(ids, "ids"), measure,
                                          analysis.compares_vectors(view), order)
        stats = analysis.same_vs_different(table)
        return as_json({"ids": [item.id for item in table.items], "labels": table.labels,
                        "matrix": table.matrix.tolist(), "measure": measure, "view": view,
                        "same_task_mean": stats["same_task"], "different_task_mean": stats["different_task"],
                        "n_same": stats["n_same"], "n_different": stats["n_different"]})

    @friendly
    def start_tuning(self, tasks: list[str], seeds: list[int] | None = None, steps: int | None = None,
                     n_tokens: int | None = None, lr: float | None = None, batch_size: int | None = None) -> str:
        """Start a background job that tunes one soft prompt per task and origin seed (the Tune tab's Start) and
        return its id at once; poll tuning_status with it. When the job is done, each prompt, its origin and its
        task prompt vector are in the library. Jobs run one at a time; the same settings started again after a
        cancel resume from the last checkpoint. Settings left out use the model's default recipe.

        Args:
            tasks: task names to tune on (list_tasks), e.g. ["mr"].
            seeds: origin seeds, one prompt per task and seed (default [0]); the same seed is the same origin.
            steps: training steps (the model's recipe if left out; fewer for a quick try, e.g. 20).
            n_tokens: prompt length in virtual tokens (the recipe's, matching the prebuilt origins, if left out).
            lr: peak learning rate (the recipe's if left out).
            batch_size: examples per prompt per step (the recipe's if left out).

        Returns:
            JSON {"job_id", "title", "status", "jobs_ahead"}.
        """
        state, recipe = self.state, self.state.recipe()
        seeds = [0] if seeds is None else seeds
        if not isinstance(seeds, list):
            raise StudioError(f"seeds must be a list of whole numbers, e.g. [0, 1] (got {seeds!r:.80})")
        defaults = tune_panel.DEFAULTS  # what the Tune tab's form starts from
        settings = recipe.filled(steps=steps, batch_size=batch_size, lr=lr, n_tokens=n_tokens)
        config = TuneConfig.parse(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                                  eval_every=defaults.eval_every, val_limit=defaults.val_limit,
                                  schedule=defaults.schedule, select_by=defaults.select_by)
        request = tune_request([load_task(name) for name in string_list(tasks, "tasks")],
                               ",".join(str(s) for s in seeds), config, settings["n_tokens"])
        job = submit_tuning(state.runner, state.library, state.backbone, request, tuner=tuner())
        return as_json({"job_id": job.id, "title": job.title, "status": job.status,
                        "jobs_ahead": state.runner.ahead_of(job)})

    @friendly
    def tuning_status(self, job_id: str) -> str:
        """Report a tuning job: queued, running (step, training loss, validation accuracy, ETA in seconds), done
        (the ids of the stored prompts and vectors), cancelled or failed (why).

        Args:
            job_id: the id start_tuning returned.

        Returns:
            JSON {"job_id", "title", "status", "progress" (0 to 1), "message", "summary", and while it has run "step", "steps", "eta_s", "train_loss", "validation_accuracy"; when done "prompt_ids" and "vector_ids"}.
        """
        return as_json(job_record(self.state, self._job(job_id)))

    @friendly
    def cancel_tuning(self, job_id: str) -> str:
        """Cancel a queued or running tuning job. A running job stops after its current step and keeps its
        checkpoint: start_tuning with the same settings resumes it.

        Args:
            job_id: the id start_tuning returned.

        Returns:
            JSON of the job, as tuning_status.
        """
        job = self.state.runner.cancel(self._job(job_id).id)  # the runner refuses a finished job
        return as_json(job_record(self.state, job))


def hide_ui_events(app: gr.Blocks) -> None:
    """Make the app's public events "undocumented": still callable by the page and by gradio_client (which lists
    all endpoints), but left out of the API docs and out of Gradio's MCP tool list, which takes the public ones.
    Gradio's public API sets this per event only (``api_visibility=`` where a panel wires it), and the panels keep
    theirs public for the API page of a plain run; so in MCP mode the same attribute is set here on the events
    already wired (``Blocks.fns``: not documented API; tests/test_mcp.py fails if a Gradio upgrade moves it)."""
    for fn in app.fns.values():
        if fn.api_visibility == "public":
            fn.api_visibility = "undocumented"


def attach(app: gr.Blocks, state: AppState) -> None:
    """Register the agent tools inside ``app`` (call it before ``launch(mcp_server=True)``); only they are listed.
    The tools act on the one library and job list: not with a library per visitor (``STUDIO_VISITORS=own``), where
    an MCP call carries no visitor to act for."""
    if state.visitors:
        raise StudioError("the MCP tools serve one library and job list: run with STUDIO_VISITORS=shared")
    hide_ui_events(app)
    tools = AgentTools(state)
    with app:
        for name in TOOLS:
            # queued (Gradio's default): the model-bound ones share the app's concurrency limit, and an error reaches
            # the client as its message (the unqueued path would send gr.Error's repr, quotes included)
            gr.api(getattr(tools, name), api_name=name)
