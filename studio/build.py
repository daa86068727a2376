"""Build the prebuilt library shipped in ``assets/library``: tasks x origins tuned with the studio's own engine.

Resumable: the working library lives in ``$STUDIO_HOME/build``; prompts already there are kept, the tuning job
checkpoints as it goes, and rerunning the command picks up where it stopped. Test metrics of the template alone,
each origin and each tuned prompt are stored with the items (and the template's in ``baselines.json``); the views
the tabs show on first open are computed last (``studio.views``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from studio.backbones import load_backbone
from studio.config import studio_home
from studio.evaluation import evaluate
from studio.files import atomic_write_text
from studio.jobs import origin_item, progress_summary, run_tuning
from studio.library import Library, metric_key, split_metrics
from studio.settings import TuneConfig
from studio.tasks import load_task
from studio.tuning import checkpoint_step
from studio.views import compute_views, save_views


def build_library(out: Path, tasks: list[str], seeds: list[int], steps: int, batch_size: int, lr: float,
                  n_tokens: int, test_limit: int, model: str, workdir: Path | None = None,
                  stop_after: int | None = None) -> Path:
    """Tune, test and export. ``stop_after`` ends tuning early at that step (resuming from a checkpoint if one
    exists) and keeps the best prompts validated so far: for a CPU budget that ran out."""
    workdir = workdir or studio_home() / "build"
    library = Library(workdir / "library")
    backbone = load_backbone(model)
    config = TuneConfig(steps=steps, batch_size=batch_size, lr=lr, eval_every=max(1, steps // 4), val_limit=60)
    task_data = {name: load_task(name) for name in tasks}
    done = {(i.task, i.seed) for i in library.items(kind="prompt", model=backbone.name)}
    missing = [name for name in tasks if any((name, s) not in done for s in seeds)]
    if missing:
        bar = tqdm(total=steps, desc=f"tuning {len(missing)} tasks x {len(seeds)} origins", file=sys.stderr)

        reached = [0]

        def update(event: dict) -> None:
            reached[0] = event["step"]
            bar.update(event["step"] - bar.n)
            summary = progress_summary([event])
            bar.set_postfix(loss=f"{summary['train_loss']:.3f}", ex_s=f"{summary['examples_per_s']:.1f}")

        def stop() -> bool:
            if stop_after is None:
                return False
            return max(reached[0], checkpoint_step(checkpoint) or 0) >= stop_after

        checkpoint = workdir / "checkpoint"
        run_tuning(library, backbone, [task_data[n] for n in missing], seeds, config, n_tokens, on_progress=update,
                   should_stop=stop, checkpoint_dir=checkpoint, keep_partial=stop_after is not None)
        bar.close()

    baselines_path = workdir / "baselines.json"
    baselines = json.loads(baselines_path.read_text()) if baselines_path.exists() else {}
    origins = [origin_item(library, backbone, seed, n_tokens) for seed in seeds]
    for name in tqdm(tasks, desc="test evaluation", file=sys.stderr):
        task = task_data[name]
        key = metric_key("test", "accuracy", name)
        if name not in baselines:
            baselines[name] = evaluate(backbone, None, task, "test", test_limit, keep_records=False)[0].metrics
            atomic_write_text(baselines_path, json.dumps(baselines, indent=1))
        prompts = [i for i in library.items(kind="prompt", task=name) if i.seed in seeds]
        todo = [i for i in origins + prompts if key not in i.metrics]
        if todo:
            results = evaluate(backbone, [library.tensor(i.id) for i in todo], task, "test", test_limit,
                               keep_records=False)
            for item, result in zip(todo, results):
                library.update_metrics(item.id, split_metrics("test", result.metrics, name))
                for vector in library.dependents(item.id):
                    if vector.kind == "vector":
                        library.update_metrics(vector.id, split_metrics("test", result.metrics, name))
    library.export_catalog(out, extra_files={"baselines.json": json.dumps(
        {"model": backbone.name, "test_limit": test_limit, "template": baselines,
         "recipe": {"steps": steps, "batch_size": batch_size, "lr": lr, "n_tokens": n_tokens, "seeds": seeds}},
        indent=1)})
    print("computing the views shown on first open (cross-origin table, sweep, map)...", file=sys.stderr)
    save_views(out, compute_views(Library(out, read_only=True), backbone))
    print(f"prebuilt library written to {out}")
    return out
