"""A classroom on one studio: N visitors each move the Arithmetic sliders M times, some seconds apart.

Starts `python launch.py` on a free port (its own empty user library, the prebuilt one beneath), then runs N
gradio_client sessions in threads. Each visitor submits `arithmetic_eval` with the default selection and a new
weight every `--every` seconds (a newer move supersedes that visitor's older one, as a person dragging a slider
does). Measured per move: seconds to its first update (the first estimate) and, for each visitor's LAST move,
seconds to the final result. Prints JSON lines, then a summary line. Run from the repository root:

    .venv/bin/python bench/ui_load.py --visitors 8 --moves 5 --every 20              # 6 weights the visitors share
    .venv/bin/python bench/ui_load.py --visitors 8 --moves 5 --every 20 --distinct   # 40 different weights

Compare runs only on the same machine (name the CPU: `lscpu | grep 'Model name'`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from ui_latency import start_studio  # the same server start (bench/ is the script's folder on sys.path)


def visitor(url: str, index: int, moves: int, every: float, limit: int, out: list[dict], lock: threading.Lock,
            deadline_s: float, distinct: bool = False) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/arithmetic_eval"]
    defaults = [p.get("parameter_default") for p in info["parameters"]]
    n_fixed = 6  # origin, vectors, method, density, tasks, limit; then one weight per slider
    monitors = []
    for move in range(moves):
        # by default 6 positions that visitors share (as a class told "try 0.5" does); --distinct: 40 different ones
        weight = round(-0.95 + 0.05 * (index * moves + move), 2) if distinct else round(0.2 + 0.15 * ((index + move) % 6), 2)
        args = defaults[:5] + [limit] + [weight] * (len(defaults) - n_fixed)
        job = client.submit(*args, api_name="/arithmetic_eval")
        monitor = threading.Thread(target=watch, args=(index, move, move == moves - 1, time.perf_counter(), job,
                                                       out, lock, deadline_s))
        monitor.start()
        monitors.append(monitor)
        if move < moves - 1:
            time.sleep(every)
    for monitor in monitors:
        monitor.join()


def watch(index: int, move: int, last: bool, moved: float, job, out: list[dict], lock: threading.Lock,
          deadline_s: float) -> None:
    """From the moment of the move: when its first update arrives, and (for a visitor's last move) when it is done."""
    first = final = None
    end = moved + deadline_s
    while time.perf_counter() < end:
        if job.outputs() and first is None:
            first = time.perf_counter() - moved
        if job.done():
            break
        time.sleep(0.05)
    status = str(job.outputs()[-1][1]) if job.outputs() else ""
    if last and job.done() and status.startswith("Done"):
        final = time.perf_counter() - moved
    row = {"visitor": index, "move": move, "first_update_s": None if first is None else round(first, 2),
           "final_s": None if final is None else round(final, 2), "last_move": last, "status": status[:80]}
    with lock:
        out.append(row)
    print(json.dumps(row), flush=True)


def start_tuning(url: str, steps: int) -> str:
    """A small tuning job in the same queue (mr, origin seed 11, 20 tokens, batch 4): it must still finish."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    return client.predict(["mr"], None, [], None, "", "11", 20, steps, 0.2, 4, steps, 32, "cosine", "loss",
                          api_name="/tune_start")[0]


def finish_tuning(url: str, job_id: str, deadline_s: float) -> str:
    from gradio_client import Client

    client = Client(url, verbose=False)
    end = time.perf_counter() + deadline_s
    status = ""
    while time.perf_counter() < end:
        status = str(client.predict(job_id, api_name="/tune_watch")[0])
        if any(f"**{word}**" in status for word in ("done", "failed", "cancelled")):
            break
        time.sleep(3)
    return status.splitlines()[0][:120] if status else "no status"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=8)
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between one visitor's moves")
    parser.add_argument("--limit", type=int, default=128, help="validation examples per task (the default)")
    parser.add_argument("--deadline", type=float, default=600.0, help="give up on a move after this many seconds")
    parser.add_argument("--distinct", action="store_true",
                        help="every move a weight no other move sets (no remembered scores to reuse)")
    parser.add_argument("--tune-steps", type=int, default=10,
                        help="a small tuning job (mr, one origin) started beside the visitors; 0: none")
    args = parser.parse_args()
    server, url, page_s = start_studio("load-library-", limit_s=240)
    try:
        print(json.dumps({"measure": "launch_to_usable_page_s", "value": round(page_s, 2)}), flush=True)
        rows: list[dict] = []
        lock = threading.Lock()
        tuning = start_tuning(url, args.tune_steps) if args.tune_steps else None
        threads = [threading.Thread(target=visitor, args=(url, k, args.moves, args.every, args.limit, rows, lock,
                                                          args.deadline, args.distinct))
                   for k in range(args.visitors)]
        for thread in threads:
            thread.start()
            time.sleep(args.every / max(1, args.visitors))  # visitors do not move in lockstep
        for thread in threads:
            thread.join()
        tune_status = finish_tuning(url, tuning, args.deadline) if tuning else None
        firsts = [r["first_update_s"] for r in rows if r["first_update_s"] is not None]
        finals = [r["final_s"] for r in rows if r["last_move"]]
        superseded_silent = sum(1 for r in rows if not r["last_move"] and r["first_update_s"] is None)
        summary = {"measure": "classroom", "visitors": args.visitors, "moves_each": args.moves, "every_s": args.every,
                   "distinct_weights": args.distinct,
                   "limit": args.limit, "moves_with_an_update": len(firsts), "moves": len(rows),
                   "first_update_median_s": round(statistics.median(firsts), 2) if firsts else None,
                   "first_update_max_s": round(max(firsts), 2) if firsts else None,
                   "last_moves_finished": sum(f is not None for f in finals), "last_moves": len(finals),
                   "final_max_s": max((f for f in finals if f is not None), default=None),
                   "superseded_without_an_update": superseded_silent, "tuning_job": tune_status, "cpu": _cpu()}
        print(json.dumps(summary), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


if __name__ == "__main__":
    main()
