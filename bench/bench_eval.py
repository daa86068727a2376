"""Evaluation throughput on the live view's workload, on the embedded SmolLM2-135M-Instruct (CPU or GPU).

The classroom's work is ``score_examples`` over the live sample (2 tasks x 128 validation examples, stratified) for
one prompt and for 8 prompts at once (8 visitors batched), and the worker's 64-row turns (8 prompts x 8 examples).
Per configuration it prints one JSON line: rows per second and the floating-point operations per row that the
model ran (``torch.utils.flop_counter``: padding and repeated prefixes included, so it does not depend on how busy
a noisy machine is).

``--against REV`` runs the same workload on another git revision of this repository too (a temporary worktree on
``PYTHONPATH``), alternating the two ``--repeats`` times in fresh processes, and prints the median ratio:

    .venv/bin/python bench/bench_eval.py                          # this checkout, ~1 min on 2 idle cores
    .venv/bin/python bench/bench_eval.py --against HEAD~1 --repeats 3 --json-out bench/results-cpu-eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOAD = [(1, 128), (8, 128), (8, 8)]  # (prompts, examples per task)
TASKS = ("mr", "uncertainty")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure(label: str) -> list[dict]:
    """Time and count the workload in this process (whatever ``studio`` is importable)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from studio.backbones import load_backbone
    from studio.evaluation import encode_task, score_examples
    from studio.tasks import load_task

    backbone = load_backbone()
    encoded = [encode_task(backbone, load_task(t), "validation", 128, stratified=True) for t in TASKS]
    prompts = torch.randn(8, 20, backbone.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.5
    score_examples(backbone, prompts[:1], encoded[0], encoded[0].examples[:8])  # the first pass is slow
    lines = []
    for n_prompts, n_examples in WORKLOAD:
        started = time.perf_counter()
        checksum = 0.0
        for task in encoded:
            checksum += float(score_examples(backbone, prompts[:n_prompts], task, task.examples[:n_examples]).sum())
        seconds = time.perf_counter() - started
        with FlopCounterMode(display=False) as flops:
            score_examples(backbone, prompts[:n_prompts], encoded[0], encoded[0].examples[:n_examples])
        rows = n_prompts * n_examples * len(TASKS)
        lines.append({"config": f"eval_{n_prompts}p_{n_examples}x{len(TASKS)}", "code": label, "rows": rows,
                      "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1),
                      "gflop_per_row_mr": round(flops.get_total_flops() / 1e9 / (n_prompts * n_examples), 2),
                      "checksum": round(checksum, 2), "device": str(backbone.device), "dtype": str(backbone.dtype),
                      "threads": torch.get_num_threads(), "cpu": cpu_name()})
    return lines


def run_in_subprocess(label: str, pythonpath: str | None) -> list[dict]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath  # before the editable install: the other revision's ``studio``
    out = subprocess.run([sys.executable, __file__, "--label", label, "--here"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="another git revision to compare with, alternating runs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json-out")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)  # one measurement, this process
    args = parser.parse_args()
    if args.here:
        for line in measure(args.label):
            print(json.dumps(line), flush=True)
        return
    lines: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        other = None
        if args.against:
            other = str(Path(tmp) / "other")
            subprocess.run(["git", "worktree", "add", "--detach", other, args.against], check=True,
                           capture_output=True)
        try:
            for _ in range(args.repeats):
                for label, path in [("this checkout", None)] + ([(args.against, other)] if other else []):
                    for line in run_in_subprocess(label, path):
                        print(json.dumps(line), flush=True)
                        lines.append(line)
        finally:
            if other:
                subprocess.run(["git", "worktree", "remove", "--force", other], check=False)
    if other:
        for config in dict.fromkeys(line["config"] for line in lines):
            mine = [x for x in lines if x["config"] == config and x["code"] == "this checkout"]
            theirs = [x for x in lines if x["config"] == config and x["code"] == args.against]
            summary = {"config": config, "against": args.against,
                       "speed_ratio_median": round(statistics.median(m["rows_per_s"] for m in mine)
                                                   / statistics.median(t["rows_per_s"] for t in theirs), 2),
                       "gflop_per_row": [mine[0]["gflop_per_row_mr"], theirs[0]["gflop_per_row_mr"]],
                       "cpu": mine[0]["cpu"]}
            print(json.dumps(summary), flush=True)
            lines.append(summary)
    if args.json_out:
        with open(args.json_out, "a") as out:
            out.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
