"""How quickly the studio answers a person: launch -> usable page, slider move -> first estimate -> full evaluation.

Starts `python launch.py` on a free port as a user would, polls until the page and its config are served, then
moves the arithmetic sliders through the app's own API (`arithmetic_eval`, streaming) with the default
selection (origin 0, two TPVs, 128 validation examples per task) and times the first and the last update.
Prints JSON lines. Run from the repository root: `.venv/bin/python bench/ui_latency.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_studio(prefix: str, limit_s: float = 180) -> tuple[subprocess.Popen, str, float]:
    """`python launch.py` on a free port with its own empty user library, as a user starts it: (server, page url,
    seconds until /config answered). ``bench/ui_load.py`` starts its server the same way."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--library",
                               tempfile.mkdtemp(prefix=prefix)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return server, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
        if time.perf_counter() - started > limit_s or server.poll() is not None:
            server.terminate()
            raise SystemExit(f"the page did not come up within {limit_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after the page is up before the first move (a person reading the "
                             "panel first; 0 = move at once, the worst case)")
    args = parser.parse_args()
    server, url, page_s = start_studio("latency-library-")
    try:
        print(json.dumps({"measure": "launch_to_usable_page_s", "value": round(page_s, 2),
                          "loadavg": os.getloadavg()[0]}), flush=True)

        time.sleep(args.settle)
        from gradio_client import Client

        client = Client(url, verbose=False)
        info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/arithmetic_eval"]
        defaults = [p.get("parameter_default") for p in info["parameters"]]
        n_fixed = 6  # origin, vectors, method, density, tasks, limit; then the sliders
        for attempt, weight in enumerate((0.5, 0.8, 0.3)):
            args = defaults[:n_fixed] + [weight] * (len(defaults) - n_fixed)
            moved = time.perf_counter()
            job = client.submit(*args, api_name="/arithmetic_eval")
            first = None
            seen = 0
            while not job.done() or seen < len(job.outputs()):
                outputs = job.outputs()
                if len(outputs) > seen:
                    seen = len(outputs)
                    first = first or time.perf_counter() - moved
                time.sleep(0.02)
            total = time.perf_counter() - moved
            error = None
            try:
                job.result()
            except Exception as raised:  # a failed evaluation must show up in the output, not as "no updates"
                error = f"{type(raised).__name__}: {raised}"[:300]
            print(json.dumps({"measure": "slider_move", "attempt": attempt, "weight": weight, "error": error,
                              "first_estimate_s": round(first or total, 2), "full_evaluation_s": round(total, 2),
                              "updates": seen, "status": str(job.outputs()[-1][1])[:160] if seen else "",
                              "loadavg": os.getloadavg()[0]}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
