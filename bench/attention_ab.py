"""SDPA vs eager attention for tuning on a bf16 CPU backbone, alternating in one process (docs/performance.md).

The studio tunes on ``Backbone.for_training()`` (eager attention on a bf16 CPU); the SDPA side bypasses it.
    .venv/bin/python bench/attention_ab.py [timed steps, default 8]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_engine as engine  # noqa: E402  (sets the offline environment, as every bench does)

from studio.backbones import Backbone, load_backbone  # noqa: E402
from studio.prompts import make_origin  # noqa: E402
from studio.tasks import load_task  # noqa: E402
from studio.tuning import TrainingPrompt  # noqa: E402


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    backbone, task = load_backbone(), load_task("mr")
    origin = make_origin(backbone, 0, engine.N_VIRTUAL)
    eager_twin = Backbone.for_training
    results: dict[str, list[float]] = {}
    for repeat in range(2):
        for name in ("sdpa", "eager"):
            Backbone.for_training = (lambda self: self) if name == "sdpa" else eager_twin
            run = engine.run_studio(backbone, [TrainingPrompt(task, origin, 0)], steps, 2)
            results.setdefault(name, []).append(round(run["examples_per_s"], 2))
            print(repeat, name, results[name][-1], flush=True)
    Backbone.for_training = eager_twin
    print(json.dumps({"backbone": repr(backbone), "examples_per_s": results}))


if __name__ == "__main__":
    main()
