"""The prebuilt-library build: tasks x origins tuned, tested and exported; rerunning it resumes, not redoes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from studio import StudioError
from studio.build import build_library
from studio.library import open_library


def test_build_library_exports_a_read_only_library_and_resumes(tiny_llama_dir, tmp_path):
    out, work = tmp_path / "prebuilt", tmp_path / "work"
    settings = dict(tasks=["mr", "uncertainty"], seeds=[0, 1], steps=2, batch_size=2, lr=0.03, n_tokens=4,
                    test_limit=6, model=str(tiny_llama_dir), workdir=work)
    build_library(out, **settings)
    catalog = json.loads((out / "catalog.json").read_text())
    assert Counter(r["kind"] for r in catalog) == {"origin": 2, "prompt": 4, "vector": 4}
    assert all((out / r["file"]).exists() for r in catalog)
    for record in catalog:
        tasks = ["mr", "uncertainty"] if record["kind"] == "origin" else [record["task"]]
        assert all(0 <= record["metrics"][f"test_accuracy/{t}"] <= 1 for t in tasks), record
    baselines = json.loads((out / "baselines.json").read_text())
    assert set(baselines["template"]) == {"mr", "uncertainty"} and baselines["recipe"]["steps"] == 2
    assert baselines["test_limit"] == 6

    library = open_library(tmp_path / "user", prebuilt=out)  # what the app and CLI do with assets/library
    prebuilt = library.items(kind="prompt")
    assert len(prebuilt) == 4 and {i.source for i in prebuilt} == {"prebuilt"}
    with pytest.raises(StudioError, match="prebuilt library, which is read-only"):
        library.delete(prebuilt[0].id)

    build_library(out, **settings)  # everything is in the working library: nothing is tuned again
    assert {r["id"] for r in json.loads((out / "catalog.json").read_text())} == {r["id"] for r in catalog}
