"""The agent tools (``studio.ui.agents``) through Gradio's real MCP server: the schema lists them, typed and
described, and nothing of the UI; an MCP client session calls them and gets the library's own answers.

The app runs on 127.0.0.1 with the tiny random Llama and a fresh library (no prebuilt one), holding one origin and a
tuned prompt and TPV for two tasks made here, so ids and stored accuracies are known.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port

pytest.importorskip("mcp")
from mcp import ClientSession  # noqa: E402

try:
    from mcp.client.streamable_http import streamable_http_client  # noqa: E402
except ImportError:  # mcp before 1.24
    from mcp.client.streamable_http import streamablehttp_client as streamable_http_client  # noqa: E402

from studio import analysis  # noqa: E402
from studio.ui.agents import TOOLS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VAL_ACCURACY = {"mr": 0.625, "tweets": 0.5}
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # gradio's own pandas use


def read_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def studio(tiny_llama_dir, tmp_path_factory):
    """The app with the agent tools attached, served with mcp_server=True; yields (url, state, items)."""
    from studio.ui.agents import attach
    from studio.ui.app import create, serve

    app, state = create(str(tmp_path_factory.mktemp("mcp-library")), str(tiny_llama_dir), prebuilt=False)
    library, model = state.library, state.model_name
    hidden = state.backbone().hidden_size
    torch.manual_seed(0)
    origin = library.add("origin", torch.randn(4, hidden), model, name="origin 0", seed=0, recipe={"init": "test"})
    items = {"origin": origin}
    for task, accuracy in VAL_ACCURACY.items():
        prompt = library.add("prompt", library.tensor(origin.id) + 0.2 * torch.randn(4, hidden), model,
                             name=f"{task} prompt", task=task, seed=0, origin_id=origin.id,
                             metrics={"validation_accuracy": accuracy})
        items[task] = library.add("vector", library.vector(prompt.id).delta, model, name=f"TPV {task}", task=task,
                                  seed=0, origin_id=origin.id, prompt_id=prompt.id,
                                  metrics={"validation_accuracy": accuracy})
    attach(app, state)
    port = free_port()
    serve(app, port=port, block=False, mcp=True, quiet=True)
    yield f"http://127.0.0.1:{port}", state, items
    app.close()


def call_tools(url: str, calls: list[tuple[str, dict]]) -> tuple[list[str], list]:
    """List the tools and make ``calls`` in one MCP session over streamable HTTP; (tool names, call results)."""
    async def session():
        async with streamable_http_client(f"{url}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as client:
                await client.initialize()
                names = [tool.name for tool in (await client.list_tools()).tools]
                return names, [await client.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(session())


def answer(result) -> dict | list:
    assert not result.isError, result.content
    return json.loads(result.content[0].text)


def error(result) -> str:
    assert result.isError
    text = result.content[0].text
    assert "Traceback" not in text and not text.startswith("'")
    return text


def test_the_schema_lists_the_agent_tools_typed_and_described_and_nothing_of_the_ui(studio):
    url, _, _ = studio
    schema = {tool["name"]: tool for tool in read_json(f"{url}/gradio_api/mcp/schema")}
    assert set(schema) == set(TOOLS)  # no UI handler (library_list, arithmetic_eval, partial...) among them
    for tool in schema.values():
        assert len(tool["description"]) > 60, tool["name"]
        assert all(p.get("description") for p in tool["inputSchema"]["properties"].values()), tool["name"]
    evaluate = schema["evaluate_combination"]["inputSchema"]
    assert evaluate["required"] == ["origin_id", "vector_ids", "weights"]
    properties = evaluate["properties"]
    assert properties["origin_id"]["type"] == "string"
    assert properties["vector_ids"]["type"] == "array" and properties["vector_ids"]["items"] == {"type": "string"}
    assert properties["weights"]["items"] == {"type": "number"}
    assert properties["limit"]["type"] == "integer" and properties["limit"]["default"] == 64
    assert "ties" in properties["method"]["enum"] and properties["method"]["default"] == "weighted_sum"
    similarity = schema["similarity_table"]["inputSchema"]["properties"]
    assert "token_mean_cosine" in similarity["measure"]["enum"] and similarity["view"]["enum"] == ["vectors", "prompts"]
    assert schema["list_library"]["inputSchema"]["properties"]["kind"]["enum"] == ["all", "origin", "prompt", "vector"]
    assert schema["tuning_status"]["inputSchema"]["required"] == ["job_id"]


def test_the_ui_events_stay_callable_but_undocumented(studio):
    """Hidden from the API docs and MCP, the page's events still answer gradio_client (which lists all of them)."""
    from gradio_client import Client

    url, _, _ = studio
    documented = read_json(f"{url}/gradio_api/info")["named_endpoints"]
    assert set(documented) == {f"/{name}" for name in TOOLS}
    everything = read_json(f"{url}/gradio_api/info?all_endpoints=True")["named_endpoints"]
    assert everything["/library_list"]["api_visibility"] == everything["/tune_jobs"]["api_visibility"] == "undocumented"
    table = Client(url, verbose=False).predict(api_name="/tune_jobs")
    assert table["headers"] == ["id", "title", "status", "progress", "message"]


def test_list_evaluate_and_compare_through_an_mcp_session(studio):
    url, state, items = studio
    origin, vectors = items["origin"].id, [items["mr"].id, items["tweets"].id]
    names, results = call_tools(url, [
        ("list_library", {"kind": "vector"}),
        ("list_library", {"task": "mr"}),
        ("evaluate_combination", {"origin_id": origin, "vector_ids": vectors, "weights": [1.0, 0.5], "limit": 8}),
        ("similarity_table", {"ids": vectors + [items["origin"].id], "measure": "l2", "view": "prompts"}),
        ("list_tasks", {}),
    ])
    assert set(names) == set(TOOLS)
    listed = answer(results[0])
    assert listed["model"] == state.model_name and listed["count"] == len(listed["items"])
    assert all(i["kind"] == "vector" for i in listed["items"])
    mine = [i for i in listed["items"] if i["origin_id"] == origin]  # another test may have tuned more
    assert {i["id"]: i["val_accuracy"] for i in mine} == {items[t].id: a for t, a in VAL_ACCURACY.items()}
    assert all(i["seed"] == 0 and i["n_tokens"] == 4 and i["prompt_id"] for i in mine)
    by_task = answer(results[1])["items"]
    assert {i["kind"] for i in by_task} == {"prompt", "vector"} and {i["task"] for i in by_task} == {"mr"}

    evaluated = answer(results[2])
    prompt, _ = analysis.combine(state.library, origin, vectors, [1.0, 0.5])
    expected = analysis.score_combination(state.backbone(), prompt, ["mr", "tweets"], "validation", 8)
    assert evaluated["accuracy"] == pytest.approx({t: m["accuracy"] for t, m in expected.items()})
    assert evaluated["n"] == {"mr": 8, "tweets": 8} and evaluated["weights"] == [1.0, 0.5]
    assert evaluated["mean_accuracy"] == pytest.approx(sum(evaluated["accuracy"].values()) / 2)
    assert "saved_id" not in evaluated  # nothing stored
    assert len([p for p in state.library.items(kind="prompt") if p.origin_id == origin]) == 2

    table = answer(results[3])
    direct = analysis.similarity_table(state.library, vectors + [origin], "l2", as_vectors=False)
    assert table["ids"] == [i.id for i in direct.items] and table["measure"] == "l2"
    np.testing.assert_allclose(table["matrix"], direct.matrix, atol=1e-6)
    assert all(table["matrix"][k][k] == pytest.approx(0.0, abs=1e-5) for k in range(3))

    tasks = {task["name"]: task for task in answer(results[4])}
    assert list(tasks)[:2] == ["mr", "tweets"] and tasks["mr"]["labels"] == ["negative", "positive"]


def test_bad_input_is_one_clear_message(studio):
    url, _, items = studio
    vector = items["mr"].id
    _, results = call_tools(url, [
        ("evaluate_combination", {"origin_id": "o-nothing", "vector_ids": [vector], "weights": [1.0]}),
        ("evaluate_combination", {"origin_id": items["origin"].id, "vector_ids": [vector], "weights": "lots"}),
        ("evaluate_combination", {"origin_id": items["origin"].id, "vector_ids": [vector], "weights": [1], "limit": 0}),
        ("similarity_table", {"ids": [vector]}),
        ("list_library", {"kind": "everything"}),
        ("start_tuning", {"tasks": ["no-such-task"]}),
        ("start_tuning", {"tasks": ["mr"], "steps": 2.5}),
        ("tuning_status", {"job_id": "nope"}),
    ])
    messages = [error(result) for result in results]
    assert "no library item 'o-nothing'" in messages[0]
    assert "'lots' is not of type 'array'" in messages[1]  # the MCP server checks the schema's types first
    assert "between 1 and" in messages[2]
    assert "at least two" in messages[3]
    assert "'everything' is not one of" in messages[4]
    assert "no-such-task" in messages[5]
    assert "Input validation error: 2.5 is not valid" in messages[6]
    assert "no tuning job 'nope'" in messages[7]


def test_tune_start_poll_and_find_the_results_in_the_library(studio):
    url, state, _ = studio
    _, (started,) = call_tools(url, [("start_tuning", {"tasks": ["mr"], "seeds": [3], "steps": 2, "n_tokens": 4,
                                                        "batch_size": 2})])
    job = answer(started)
    assert job["status"] in ("queued", "running") and "2 steps, 4 tokens" in job["title"]
    deadline, status = time.time() + 60, {}
    while time.time() < deadline:
        _, (polled,) = call_tools(url, [("tuning_status", {"job_id": job["job_id"]})])
        status = answer(polled)
        if status["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert status["status"] == "done", status
    assert status["step"] == status["steps"] == 2 and status["progress"] == 1.0
    prompt = state.library.get(status["prompt_ids"][0])
    vector = state.library.get(status["vector_ids"][0])
    assert (prompt.kind, prompt.task, prompt.seed, prompt.n_tokens) == ("prompt", "mr", 3, 4)
    assert vector.prompt_id == prompt.id and vector.kind == "vector"
    assert job["job_id"] in state.runner.jobs  # the Tune tab's job list shows it too
    _, (cancelled,) = call_tools(url, [("cancel_tuning", {"job_id": job["job_id"]})])
    assert "already finished" in error(cancelled)


def test_launch_with_mcp_serves_the_tools(tiny_llama_dir, tmp_path):
    """`python launch.py --mcp` as the README gives it, with the tiny model."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    server = subprocess.Popen([sys.executable, "launch.py", "--mcp", "--port", str(port), "--model", str(tiny_llama_dir),
                               "--library", str(tmp_path / "lib"), "--no-prebuilt"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, names = time.time() + 90, None
        while time.time() < deadline and server.poll() is None:
            try:
                names = [tool["name"] for tool in read_json(f"http://127.0.0.1:{port}/gradio_api/mcp/schema")]
                break
            except OSError:
                time.sleep(0.3)
        assert names is not None, "the MCP schema was not served within 90 s"
        assert set(names) == set(TOOLS)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"MCP server (streamable HTTP) on http://127.0.0.1:{port}/gradio_api/mcp/" in output
