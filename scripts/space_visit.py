"""A first visitor of the studio served as a Space (see scripts/simulate_space.sh): default selections, through
gradio_client, the steps the issue names. Prints one line per step and exits non-zero on the first failure."""

from __future__ import annotations

import sys
import time

from gradio_client import Client

from studio.library import open_library
from studio.views import default_pair


def step(name: str, call) -> object:
    started = time.time()
    try:
        result = call()
    except Exception as error:  # the visitor sees this message: print it and stop
        print(f"FAIL {name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}", flush=True)
        sys.exit(1)
    print(f"ok   {name} ({time.time() - started:.1f} s)", flush=True)
    return result


def main(url: str) -> None:
    client = Client(url, verbose=False)
    library = open_library()  # the same prebuilt library the server shows (ids only; nothing is written)
    model = "smollm2-135m-instruct"
    origin_id, vectors = default_pair(library, model)
    prebuilt = [v.id for v in library.items(kind="vector", model=model) if v.source == "prebuilt"]
    step("Similarity: draw heatmap",
         lambda: client.predict(prebuilt, "vectors", "token_mean_cosine", "task", api_name="/similarity"))
    tasks = [library.get(v).task for v in vectors]
    weights = [1.0] * len(vectors) + [0.0] * (6 - len(vectors))
    result = step("Arithmetic: Evaluate", lambda: client.predict(origin_id, vectors, "weighted_sum", 0.5, tasks, 32,
                                                                 *weights, api_name="/arithmetic_eval"))
    assert str(result[1]).startswith("Done"), result[1]
    step("Transfer: cross-origin table (8 examples)",
         lambda: client.predict([tasks[0]], "validation", 8, api_name="/cross_origin"))
    job_id, message, _ = step("Tune: start a 2-step job on mr", lambda: client.predict(
        ["mr"], None, [], None, "", "0", 20, 2, 0.2, 2, 1, 8, "cosine", "loss", api_name="/tune_start"))
    deadline = time.time() + 600
    while time.time() < deadline:
        status = client.predict(job_id, api_name="/tune_watch")[0]
        if any(word in status for word in ("**done**", "**failed**", "**cancelled**")):
            break
        time.sleep(3)
    print(("ok   " if "**done**" in status else "FAIL ") + f"Tune job {job_id}: {status.splitlines()[0]}", flush=True)
    sys.exit(0 if "**done**" in status else 1)


if __name__ == "__main__":
    main(sys.argv[1])
