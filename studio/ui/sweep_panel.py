"""The Tune tab's sweep section: edit or upload a sweep spec (``studio.sweep``), see its plan, run it as one
background job in the same queue as tuning jobs, and watch its groups finish.

Thin wiring: parsing, planning, "already done" and running are ``studio.sweep``'s; this module turns text into a
spec, a plan into a table, and the job's events into a status line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from studio import StudioError
from studio import sweep as sweeps
from studio.jobs import Job
from studio.ui.common import AppState, friendly

EXAMPLE_SPEC = """# a grid of tuning runs: every model x recipe point x task x seed (lists are crossed)
models = ["smollm2-135m-instruct"]
tasks = ["mr", "tweets"]
seeds = [0, 1]

[recipe]            # unset settings come from the model's recipe
lr = [0.1, 0.2]
steps = 20
"""
PLAN_COLUMNS = ["group", "model and recipe", "prompts", "still to tune"]
POLL_S = 2.0


@dataclass
class SweepView:
    upload: gr.File
    spec: gr.Code
    syntax: gr.Radio
    plan: gr.Button
    run: gr.Button
    table: gr.Dataframe
    status: gr.Markdown
    job_id: gr.Textbox
    timer: gr.Timer


def spec_from_text(text: str | None, syntax: str) -> sweeps.SweepSpec:
    if not (text or "").strip():
        raise StudioError("write a sweep spec (or upload a .toml / .yaml file) first")
    if syntax not in ("toml", "yaml"):
        raise StudioError(f"unknown spec syntax {syntax!r}: toml or yaml")
    return sweeps.parse_spec(sweeps.spec_data(text, syntax))


def plan_table(state: AppState, spec: sweeps.SweepSpec) -> pd.DataFrame:
    groups = sweeps.plan(spec, state.library)
    return pd.DataFrame([[g.key, g.label(), len(g.runs), len(sweeps.missing(g, state.library))] for g in groups],
                        columns=PLAN_COLUMNS)


@friendly
def on_upload(path: str | None) -> tuple:
    if not path:
        return gr.skip(), gr.skip()
    suffix = Path(path).suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise StudioError(f"{Path(path).name}: a sweep spec is a .toml, .yaml or .yml file")
    return Path(path).read_text(encoding="utf-8"), "toml" if suffix == ".toml" else "yaml"


@friendly
def on_plan(state: AppState, text: str | None, syntax: str) -> tuple[pd.DataFrame, str]:
    table = plan_table(state, spec_from_text(text, syntax))
    todo = int(table["still to tune"].sum())
    return table, (f"{len(table)} group(s), {int(table['prompts'].sum())} prompt(s); {todo} still to tune "
                   "(the rest are in your library already and are never tuned again).")


@friendly
def on_run(state: AppState, text: str | None, syntax: str) -> tuple[str, str, pd.DataFrame, gr.Timer]:
    spec = spec_from_text(text, syntax)
    table = plan_table(state, spec)

    def work(job: Job) -> list[str]:
        done = 0
        total = max(1, len(table))

        def progress(event: dict) -> None:
            nonlocal done
            if event["event"] == "group" and event["status"] not in ("running",):
                done += 1
                job.events.append(event)
            job.progress = min(1.0, done / total)
            job.message = (f"group {event['group']}: {event['status']}" if event["event"] == "group" else
                           f"group {event['group']}: step {event['step']}/{event['steps']}")

        outcomes = sweeps.run_local(spec, state.library, progress, job.cancel.is_set)
        job.message = sweeps.summary(outcomes).splitlines()[0]
        if any(o.status == "failed" for o in outcomes):
            raise StudioError(sweeps.summary(outcomes).replace("\n", "; "))
        return [o.group.key for o in outcomes]

    job = state.runner.submit(f"sweep {sweeps.spec_hash(spec)[:8]}: {len(table)} group(s)", work)
    return job.id, f"Sweep job `{job.id}` queued.", table, gr.Timer(active=True)


def on_tick(state: AppState, job_id: str | None) -> tuple[str, gr.Timer]:
    job = state.runner.jobs.get((job_id or "").strip())
    if job is None:
        return "", gr.Timer(active=False)
    lines = [f"Sweep job `{job.id}`: **{job.status}** ({job.progress:.0%}) {job.message}"]
    lines += [f"- group {e['group']} ({e['prompts']} prompts): {e['status']}"
              + (f" — {e['message']}" if e.get("message") else "") for e in job.events]
    return "\n".join(lines), gr.Timer(active=job.status not in ("done", "failed", "cancelled"))


def layout_sweep() -> SweepView:
    with gr.Accordion("Sweep: a grid of runs from a spec (docs/sweeps.md)", open=False):
        with gr.Row():
            spec = gr.Code(EXAMPLE_SPEC, language=None, label="Sweep spec", lines=10, interactive=True)
            with gr.Column(scale=0, min_width=220):
                upload = gr.File(label="or upload .toml / .yaml", file_types=[".toml", ".yaml", ".yml"], height=110)
                syntax = gr.Radio(["toml", "yaml"], value="toml", label="Syntax")
                plan = gr.Button("Plan", size="sm")
                run = gr.Button("Run sweep", variant="primary", size="sm")
        table = gr.Dataframe(headers=PLAN_COLUMNS, label="Plan", interactive=False)
        status = gr.Markdown()
        job_id = gr.Textbox(label="Sweep job id", interactive=False)
        timer = gr.Timer(POLL_S, active=False)
    return SweepView(upload, spec, syntax, plan, run, table, status, job_id, timer)


def wire_sweep(state: AppState, view: SweepView) -> None:
    view.upload.upload(on_upload, view.upload, [view.spec, view.syntax], api_name="sweep_upload")
    view.plan.click(partial(on_plan, state), [view.spec, view.syntax], [view.table, view.status],
                    api_name="sweep_plan")
    view.run.click(partial(on_run, state), [view.spec, view.syntax],
                   [view.job_id, view.status, view.table, view.timer], api_name="sweep_run")
    view.timer.tick(partial(on_tick, state), view.job_id, [view.status, view.timer], api_name="sweep_poll",
                    api_visibility="undocumented", show_progress="hidden")
