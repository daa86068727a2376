"""The Tune tab's sweep section: edit or upload a sweep spec (``studio.sweep``), see its plan, run it as one
background job in the same queue as tuning jobs, and watch its groups finish.

Thin wiring: parsing, planning, "already done" and running as a job are ``studio.sweep``'s; this module turns a
plan into a table and the job's events into a status line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from studio import StudioError
from studio import sweep as sweeps
from studio.jobs import FINISHED
from studio.ui.common import AppState, friendly, job_of
from studio.ui.visitors import SWEEPS_OFF

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


def plan_table(state: AppState, spec: sweeps.SweepSpec) -> pd.DataFrame:
    groups = sweeps.plan(spec, state.library)
    return pd.DataFrame([[g.key, g.label(), len(g.runs), len(sweeps.missing(g, state.library))] for g in groups],
                        columns=PLAN_COLUMNS)


@friendly
def on_upload(path: str | None) -> tuple:
    if not path:
        return gr.skip(), gr.skip()
    syntax = sweeps.spec_syntax(path)
    return Path(path).read_text(encoding="utf-8"), syntax


def refuse_on_a_public_space(state: AppState) -> None:
    """Sweeps are off where each visitor has their own space, planning one included: a spec names models by
    folder, and the plan would tell a visitor which folders exist on the server."""
    if state.visitors:
        raise StudioError(f"{SWEEPS_OFF}: the Sweep panel is for your own studio (README, Quick start)")


@friendly
def on_plan(state: AppState, text: str | None, syntax: str) -> tuple[pd.DataFrame, str]:
    refuse_on_a_public_space(state)
    table = plan_table(state, sweeps.parse_spec_text(text, syntax))
    todo = int(table["still to tune"].sum())
    return table, (f"{len(table)} group(s), {int(table['prompts'].sum())} prompt(s); {todo} still to tune "
                   "(the rest are in your library already and are never tuned again).")


@friendly
def on_run(state: AppState, text: str | None, syntax: str) -> tuple[str, str, pd.DataFrame, gr.Timer]:
    refuse_on_a_public_space(state)
    spec = sweeps.parse_spec_text(text, syntax)
    table = plan_table(state, spec)
    job = sweeps.submit_sweep(state.runner, state.library, spec)
    return job.id, f"Sweep job `{job.id}` queued.", table, gr.Timer(active=True)


def on_tick(state: AppState, job_id: str | None) -> tuple[str, gr.Timer]:
    job = job_of(state, job_id, quiet=True)
    if job is None:
        return "", gr.Timer(active=False)
    lines = [f"Sweep job `{job.id}`: **{job.status}** ({job.progress:.0%}) {job.message}"]
    lines += [f"- group {e['group']} ({e['prompts']} prompts): {e['status']}"
              + (f" — {e['message']}" if e.get("message") else "") for e in job.events]
    return "\n".join(lines), gr.Timer(active=job.status not in FINISHED)


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
