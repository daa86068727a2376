"""The ``studio`` command: everything the GUI does, from a shell.

    studio data list                               what tasks there are
    studio tune --task mr --task tweets --seeds 0,1,2 --steps 200
    studio library list                            origins, tuned prompts and task prompt vectors
    studio eval --prompt ID --task mr --limit 100
    studio combine --origin ID --vector ID:0.5 --vector ID:0.5 --eval-task mr
    studio similarity --kind vector --out sim.html

Errors print one line and exit with status 2; nothing in the library changes on error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from studio import StudioError
from studio.config import DEFAULT_MODEL

if TYPE_CHECKING:  # names for type hints only: cli.py imports the heavy modules where a command runs
    from studio.library import Library
    from studio.sweep import RunGroup, SweepSpec


def _library(args):
    from studio.library import open_library

    return open_library(args.library, prebuilt=not args.no_prebuilt)


def _backbone(args):
    from transformers.utils import logging as hf_logging

    from studio.backbones import load_backbone

    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr would bury a one-line error
    return load_backbone(args.model)


def _print(args, data, text: str) -> None:
    print(json.dumps(data, indent=1, default=str) if getattr(args, "json", False) else text)


def _seeds(text: str) -> list[int]:
    from studio.limits import parse_seeds

    return parse_seeds(text)


def _task(args, name: str):
    """A task named on the command line: a CSV/JSONL file (read with the column options) or a task name."""
    from studio.task_files import load_file_task
    from studio.tasks import load_task

    if Path(name).suffix.lower() in (".csv", ".jsonl", ".json"):
        return load_file_task(name, args.text_column, args.label_column)
    return load_task(name, args.hub_path)


def _load_tasks(args) -> list:
    return [_task(args, name) for name in args.task]


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    from studio.jobs import progress_summary

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)

    def update(event: dict) -> None:
        bar.update(event["step"] - bar.n)
        summary = progress_summary([event])  # this step's numbers: validation accuracy only at a validation
        postfix = {"loss": f"{summary['train_loss']:.3f}", "ex/s": f"{summary['examples_per_s']:.1f}"}
        if summary["val_accuracy"] is not None:
            postfix["val_acc"] = f"{summary['val_accuracy']:.3f}"
        bar.set_postfix(postfix)

    return bar, update


# ---- commands -------------------------------------------------------------------------------------------------
def cmd_data(args) -> None:
    from studio.corpora import fetch_bundled_data
    from studio.tasks import list_tasks

    if args.action == "fetch":
        print(f"bundled corpora in {fetch_bundled_data(force=args.force)}")
    elif args.action == "list":
        specs = list_tasks()
        _print(args, [vars(s) for s in specs], "\n".join(
            f"{s.name:14} {s.source:11} {s.family:12} {len(s.label_words):2} labels  {s.title}" for s in specs))
    elif args.action == "preview":
        if not args.name:
            raise StudioError("data preview needs a task name or a file")
        if args.n < 0:
            raise StudioError(f"-n is how many rows to show: 0 or more (got {args.n})")
        task = _task(args, args.name)
        rows = [{"label": task.spec.label_words[e.label], "input": e.body()} for e in task.split(args.split)[: args.n]]
        sizes = {s: len(task.split(s)) for s in ("train", "validation", "test")}
        _print(args, {"task": task.spec.name, "sizes": sizes, "labels": task.spec.label_words, "rows": rows},
               f"{task.spec.title}: {sizes}, labels {', '.join(task.spec.label_words)}\n"
               + "\n".join(f"[{r['label']}] {r['input'][:150]}" for r in rows))


FLAGS = {"seed": "--data-seed"}  # a plain --seed would read as an origin seed


def add_tuning_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TuneConfig`` setting, with its help and choices: the config is the one place they are written."""
    from studio.settings import RECIPE_SETTINGS, TuneConfig, config_fields

    for setting in config_fields(TuneConfig):
        from_recipe = setting.name in RECIPE_SETTINGS  # left unset, these come from the model's recipe
        default = "the model's recipe" if from_recipe else setting.default
        flag = FLAGS.get(setting.name, "--" + setting.name.replace("_", "-"))
        parser.add_argument(flag, dest=setting.name, type=setting.type, choices=setting.choices,
                            default=None if from_recipe else setting.default, help=f"{setting.help} (default: {default})",
                            metavar=None if setting.choices else flag[2:].replace("-", "_").upper())


def tuning_config(args):
    """The ``TuneConfig`` the parsed flags describe (after ``_with_recipe`` filled the recipe's settings)."""
    from studio.settings import TuneConfig, config_fields

    return TuneConfig(**{setting.name: getattr(args, setting.name) for setting in config_fields(TuneConfig)})


def _with_recipe(args) -> None:
    """Fill the tuning options left unset from the model's default recipe (``backbones.recipe_for``)."""
    from studio.backbones import recipe_for

    for option, value in recipe_for(args.model).filled(**vars(args)).items():
        setattr(args, option, value)


def cmd_tune(args) -> None:
    """A tuning job checked by the Tune tab's rules (``jobs.tune_request``), run here with a progress bar."""
    from studio.jobs import pulled_note, run_tuning, tune_request
    from studio.limits import check_prompt_length

    _with_recipe(args)
    check_prompt_length(args.n_tokens, "--n-tokens: a prompt")
    # bad input fails before the model loads
    request = tune_request(_load_tasks(args), _seeds(args.seeds), tuning_config(args), args.n_tokens, args.init)
    library, backbone = _library(args), _backbone(args)
    prompts = len(request.tasks) * len(request.seeds)
    bar, update = _progress_bar(request.config.steps, f"tuning {prompts} prompt(s)")
    try:
        items, status = run_tuning(library, backbone, list(request.tasks), list(request.seeds), request.config,
                                   request.n_tokens, request.init, on_progress=update)
    finally:
        bar.close()
    _print(args, [i.to_dict() for i in items], "\n".join(f"{i.id}  {i.name}  validation accuracy {_score(i)}"
                                                          for i in items) or status)
    if note := pulled_note(items):
        print(note, file=sys.stderr)


def _score(item) -> str:
    """An item's validation accuracy as printed: 0.000 is a score, a missing one is "n/a" (not nan)."""
    value = item.accuracy("validation")
    return "n/a" if value is None else f"{value:.3f}"


def cmd_eval(args) -> None:
    from studio.evaluation import evaluate

    if not args.prompt and not args.template:
        raise StudioError("say what to evaluate: --prompt ID, or --template for the hand-written template alone")
    task = _task(args, args.task)  # a wrong task name or file fails before the model loads
    library, backbone = _library(args), _backbone(args)
    if args.prompt:
        item = library.get(args.prompt)
        if args.save:  # before the evaluation, not after it
            library.check_writable(item.id)
        if item.model != backbone.name:
            raise StudioError(f"{item.id} was made for {item.model}; pass --model {item.model}")
        prompt = library.tensor(item.id) if item.kind != "vector" else None
        if prompt is None:
            raise StudioError(f"{item.id} is a task prompt vector: evaluate its prompt or `combine` it with an origin")
    else:
        prompt = None
    result = evaluate(backbone, None if prompt is None else [prompt], task, args.split, args.limit)[0]
    replaced = ""
    if args.prompt and args.save:
        from studio.library import metric_key, split_metrics

        before, n_before = (item.metrics.get(metric_key(args.split, name, task.spec.name)) for name in ("accuracy", "n"))
        if isinstance(before, (int, float)):
            replaced = f"; saved in place of {before:.3f} (n={n_before})"
        library.update_metrics(args.prompt, split_metrics(args.split, result.metrics, task.spec.name))
    data = {"task": task.spec.name, "split": args.split, "prompt": args.prompt, "metrics": result.metrics,
            "records": result.records}
    m = result.metrics
    _print(args, data, f"{task.spec.name} {args.split}: accuracy {m['accuracy']:.3f} +- {m['accuracy_se']:.3f}, "
                       f"macro-F1 {m['macro_f1']:.3f} (n={m['n']}){replaced}")


def cmd_combine(args) -> None:
    """The Arithmetic tab's Save from a shell: the same rules, the same sample and metrics, the same stored item."""
    from studio.analysis import (
        check_combination,
        check_model,
        combine,
        parse_weighted,
        save_combination,
        save_scored_combination,
        score_combination,
        stored_combination,
    )
    from studio.library import metric_key

    library = _library(args)
    ids, weights = parse_weighted(args.vector, "--vector values")
    choice = check_combination(library, args.origin, ids, args.method, args.density, args.eval_task, args.limit,
                               weights, scored=bool(args.eval_task))
    if args.eval_task:
        backbone = _backbone(args)
        check_model(library, choice, backbone.name)
        item, known = save_scored_combination(library, backbone, choice, args.name, split=args.split)
        if known:  # stored as it was: scored now all the same, as asked (not stored over its first scores)
            measured = score_combination(backbone, library.tensor(item.id), choice.tasks, args.split, choice.limit)
            scores = "  ".join(f"{task}={m['accuracy']:.3f}" for task, m in measured.items())
            _print(args, {**item.to_dict(), "scored_now": measured},
                   f"{item.id}  {item.name}  {scores}  (already in the library; scored now, not stored)")
            return
    else:  # stored without scores (the same combination twice is one item)
        prompt, recipe = combine(library, choice.origin_id, choice.vector_ids, choice.weights, choice.method,
                                 choice.density)
        known = stored_combination(library, recipe) is not None
        item = save_combination(library, prompt, recipe, {}, name=args.name)
    scores = "  ".join(f"{task}={item.metrics[key]:.3f}" for task in choice.tasks
                       if (key := metric_key(args.split, "accuracy", task)) in item.metrics)
    _print(args, item.to_dict(), f"{item.id}  {item.name}  {scores}" + ("  (already in the library)" if known else ""))


def cmd_similarity(args) -> None:
    from studio.analysis import similarity_table
    from studio.files import check_export_target
    from studio.plots import heatmap, save_figure, write_csv

    library = _library(args)
    out = Path(args.out) if args.out else None
    if out is not None:  # before the work: a file that is there is not replaced unless asked
        if out.suffix not in (".csv", ".png", ".html"):
            raise StudioError(f"--out {out.name}: write a .csv, .png or .html file")
        check_export_target(out, library.roots(), overwrite=args.overwrite)
    ids = args.items or [i.id for i in library.items(kind=args.kind, model=args.model, task=args.task)]
    table = similarity_table(library, ids, args.measure, as_vectors=not args.prompts, order=args.order)
    kind = "prompts" if args.prompts else "task prompt vectors"
    rows = [[label, *map(float, row)] for label, row in zip(table.labels, table.matrix)]
    if out is not None:
        if out.suffix == ".csv":
            write_csv(out, ["item", *table.labels], rows)
        else:
            from studio.prompts import is_cosine

            bounded = is_cosine(args.measure)
            save_figure(heatmap(table.matrix, table.labels, f"{args.measure} of {kind}", args.measure,
                                [f"{i.id} {i.name}" for i in table.items],
                                -1 if bounded else None, 1 if bounded else None), out)
        print(f"wrote {out}")
    else:
        _print(args, {"labels": table.labels, "ids": [i.id for i in table.items], "matrix": table.matrix.tolist()},
               "\n".join(f"{r[0]:32} " + " ".join(f"{v:6.2f}" for v in r[1:]) for r in rows))


def cmd_library(args) -> None:
    library = _library(args)
    if args.action == "list":
        items = library.items(kind=args.kind, model=None if args.model == DEFAULT_MODEL and not args.only_model
                              else args.model, task=args.task, text=args.filter)
        _print(args, [i.to_dict() for i in items], "\n".join(
            f"{i.id:22} {i.kind:7} {i.source:8} {i.task or '-':14} o{i.seed if i.seed is not None else '-':<3} "
            f"{i.name}" for i in items) or "(empty library)")
        return
    if not args.id:
        raise StudioError(f"library {args.action} needs an item id (or a path for import)")
    if args.action == "show":
        shown = library.describe(args.id)
        shown["dependents"] = shown["lineage"]["dependents"]  # a top-level key scripts already read
        _print(args, shown, json.dumps(shown, indent=1, default=str))
    elif args.action == "rename":
        if not args.name:
            raise StudioError("library rename needs --name")
        print(library.rename(args.id, args.name).name)
    elif args.action == "delete":
        if not args.yes:
            raise StudioError(f"deleting {args.id} cannot be undone: add --yes to confirm")
        print("deleted " + ", ".join(library.delete(args.id, cascade=args.cascade)))
    elif args.action == "export":
        if not args.out:
            raise StudioError("library export needs --out")
        if args.format == "peft" and str(args.out).endswith(".zip"):  # one file, as the Library tab downloads it
            path = library.export_peft_zip(args.id, args.out, _backbone(args), overwrite=args.overwrite)
        elif args.format == "peft":
            path = library.export_peft(args.id, args.out, _backbone(args), overwrite=args.overwrite)
        else:
            path = library.export_safetensors(args.id, args.out, overwrite=args.overwrite)
        print(f"wrote {path}")
    elif args.action == "import":
        item = library.import_file(args.id, _backbone(args), kind=args.kind, task=args.task,
                                   name=args.name or "", origin_id=args.origin)
        _print(args, item.to_dict(), f"imported {item.id} ({item.kind}, {item.n_tokens} tokens)")


def cmd_hub_push(args) -> None:
    from studio.hub import push, require_online

    require_online("push to")  # before the model loads
    library, backbone = _library(args), _backbone(args)
    print(f"pushing {'your library' if args.items is None else ', '.join(args.items)} to {args.repo_id} ...",
          file=sys.stderr)
    url = push(library, args.items, args.repo_id, backbone, private=args.private, overwrite=args.overwrite)
    _print(args, {"repo_id": args.repo_id, "url": url}, f"pushed to {url}")


def cmd_hub_pull(args) -> None:
    from studio.hub import is_local_folder, pull, require_online

    if not is_local_folder(args.source):
        require_online("pull from")  # before the model loads
    library, backbone = _library(args), _backbone(args)
    items = pull(library, args.source, backbone, revision=args.revision, origin=args.origin)
    _print(args, [i.to_dict() for i in items], "\n".join(
        f"{i.id:22} {i.kind:7} {i.task or '-':14} {i.name}" for i in items) + f"\npulled {len(items)} item(s)")


def _sweep_progress_bar(groups: list[RunGroup]):
    """One tqdm bar over the sweep's prompts and a status line per group; returns (bar, progress callback)."""
    from tqdm import tqdm

    bar = tqdm(total=sum(len(g.runs) for g in groups), desc="sweep", unit="prompt", file=sys.stderr)

    def update(event: dict) -> None:
        if event["event"] == "step":
            bar.set_postfix_str(f"{event['group']} step {event['step']}/{event['steps']}")
            return
        if event["status"] in ("done", "skipped", "failed"):
            bar.update(event["prompts"])
        seconds = f" in {event['seconds']:.0f} s" if event["status"] in ("done", "failed") else ""
        message = f": {event['message']}" if event["message"] else ""
        tqdm.write(f"{event['group']} {event['status']}{seconds}  {event['label']}{message}", file=sys.stderr)

    return bar, update


def cmd_sweep(args) -> None:
    """Tune the spec's missing groups (here or on Ray), then one summary; a failed group fails the command."""
    from studio.sweep import load_spec, plan, quiet_model_loading, run_local, run_ray, summary

    spec = load_spec(args.spec)  # a bad spec fails before the library opens or a model loads
    library = _library(args)
    groups = plan(spec, library)
    if args.dry_run:
        _print_sweep_plan(args, spec, groups, library)
        return
    quiet_model_loading()
    bar, update = _sweep_progress_bar(groups)
    try:
        outcomes = (run_ray(spec, library, args.ray, update) if args.ray else run_local(spec, library, update))
    finally:
        bar.close()
    data = [{"group": o.group.key, "label": o.group.label(), "status": o.status, "message": o.message,
             "seconds": round(o.seconds, 1), "prompts": [r.prompt_id for r in o.group.runs]} for o in outcomes]
    _print(args, data, summary(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise StudioError(f"{len(failed)} of {len(outcomes)} group(s) failed; rerun the same command to retry them "
                          "(finished groups are kept)")


def _print_sweep_plan(args, spec: SweepSpec, groups: list[RunGroup], library: Library) -> None:
    """``studio sweep --dry-run``: every group and run, each marked done or todo."""
    from studio.sweep import missing, spec_hash

    data = []
    for group in groups:
        todo = {run.prompt_id for run in missing(group, library)}
        data.append({"group": group.key, "model": group.model, "settings": group.settings,
                     "n_tokens": group.n_tokens, "init": group.init,
                     "runs": [{**asdict(run), "done": run.prompt_id not in todo} for run in group.runs]})
    runs = [run for group in data for run in group["runs"]]
    lines = [f"sweep {spec_hash(spec)}: {len(groups)} group(s), {len(runs)} prompt(s), "
             f"{sum(r['done'] for r in runs)} already done"]
    for group, shown in zip(groups, data):
        done = sum(r["done"] for r in shown["runs"])
        lines.append(f"{group.key}  {group.label()}  {done}/{len(group.runs)} done")
        lines += [f"  {r['prompt_id']}  {r['task']} / origin {r['seed']}  {'done' if r['done'] else 'todo'}"
                  for r in shown["runs"]]
    _print(args, {"spec": spec_hash(spec), "groups": data}, "\n".join(lines))


def cmd_build_library(args) -> None:
    from studio.build import build_library

    _with_recipe(args)
    build_library(out=Path(args.out), tasks=args.tasks.split(","), seeds=_seeds(args.seeds), steps=args.steps,
                  batch_size=args.batch_size, lr=args.lr, n_tokens=args.n_tokens, test_limit=args.test_limit,
                  model=args.model, workdir=Path(args.workdir) if args.workdir else None,
                  stop_after=args.stop_after)


# ---- parser ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args = argparse.ArgumentParser(add_help=False)
    model_args.add_argument("--model", default=DEFAULT_MODEL, help="registry name, local folder or hub id")
    library_args = argparse.ArgumentParser(add_help=False)  # all of common but --model: a sweep's spec names models
    library_args.add_argument("--library", default=None, help="your library folder (default: $STUDIO_HOME/library)")
    library_args.add_argument("--no-prebuilt", action="store_true", help="do not attach the prebuilt library")
    library_args.add_argument("--json", action="store_true", help="machine-readable output")
    common = argparse.ArgumentParser(add_help=False, parents=[model_args, library_args])
    data_args = argparse.ArgumentParser(add_help=False)
    data_args.add_argument("--hub-path", default=None, help="local copy of a Hugging Face dataset folder")
    data_args.add_argument("--text-column", action="append", default=None, help="for CSV/JSONL files (repeatable)")
    data_args.add_argument("--label-column", default="label", help="for CSV/JSONL files")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub, common, data_args)
    _add_prompt_commands(sub, common)
    _add_sharing_commands(sub, common)
    _add_sweep_command(sub, library_args)
    return parser


def _add_data_commands(sub, common: argparse.ArgumentParser, data_args: argparse.ArgumentParser) -> None:
    """data, tune, eval: commands that read tasks."""
    from studio.prompts import DEFAULT_INIT, TUNING_INITS

    p = sub.add_parser("data", parents=[common, data_args], help="list, preview and fetch tasks")
    p.add_argument("action", choices=["list", "preview", "fetch"])
    p.add_argument("name", nargs="?", help="task name or CSV/JSONL file (preview)")
    p.add_argument("--split", default="train")
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--force", action="store_true")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("tune", parents=[common, data_args], help="tune soft prompts (tasks x origins, one batched job)",
                       description="Tune one prompt per task x origin seed in one batched job; each is stored with "
                                   "its origin and task prompt vector. Rerunning an interrupted job resumes it.")
    p.add_argument("--task", action="append", required=True, help="task name or CSV/JSONL file (repeatable)")
    p.add_argument("--seeds", default="0", help="origin seeds, e.g. 0,1,2")
    p.add_argument("--n-tokens", type=int, default=None, help="virtual tokens per prompt (default: the model's recipe)")
    p.add_argument("--init", default=DEFAULT_INIT, choices=TUNING_INITS,
                   help=f"how origins are drawn (default: {DEFAULT_INIT}, the paper's)")
    add_tuning_arguments(p)
    p.set_defaults(run=cmd_tune)

    p = sub.add_parser("eval", parents=[common, data_args], help="evaluate a prompt (or the template alone) on a task")
    p.add_argument("--prompt", help="library id of a prompt or origin")
    p.add_argument("--template", action="store_true", help="evaluate the hand-written template with no soft prompt")
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--save", action="store_true", help="store the metrics on the item")
    p.set_defaults(run=cmd_eval)


def _add_prompt_commands(sub, common: argparse.ArgumentParser) -> None:
    """combine, similarity, library: commands on stored prompts."""
    from studio.prompts import MEASURES, MERGES  # the registries the choices and help come from

    p = sub.add_parser("combine", parents=[common], help="origin + merge(weights x vectors) -> a new prompt")
    p.add_argument("--origin", required=True)
    p.add_argument("--vector", action="append", required=True, help="ID or ID:WEIGHT (repeatable)")
    p.add_argument("--method", default="weighted_sum", choices=list(MERGES),
                   help="; ".join(f"{name}: {entry.description}" for name, entry in MERGES.items()))
    p.add_argument("--density", type=float, default=0.5)
    p.add_argument("--name")
    p.add_argument("--eval-task", action="append", help="evaluate the result on these tasks (repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(run=cmd_combine)

    p = sub.add_parser("similarity", parents=[common], help="similarity matrix of prompts or vectors (CSV/PNG/HTML)")
    p.add_argument("--items", nargs="*", help="item ids (default: all of --kind)")
    p.add_argument("--kind", default="vector", choices=["prompt", "vector"])
    p.add_argument("--task")
    p.add_argument("--prompts", action="store_true", help="compare raw prompts instead of task prompt vectors")
    p.add_argument("--measure", default="token_mean_cosine", choices=list(MEASURES),
                   help="; ".join(f"{name}: {entry.description}" for name, entry in MEASURES.items()))
    p.add_argument("--order", default="task", choices=["task", "origin", "cluster"])
    p.add_argument("--out", help="file.csv, file.png or file.html (a new file: see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=cmd_similarity)

    p = sub.add_parser("library", parents=[common], help="list, show, rename, delete, export, import items")
    p.add_argument("action", choices=["list", "show", "rename", "delete", "export", "import"])
    p.add_argument("id", nargs="?", help="item id (or, for import, a .safetensors file or PEFT adapter folder)")
    p.add_argument("--kind", choices=["origin", "prompt", "vector"])
    p.add_argument("--task")
    p.add_argument("--filter", help="text to look for in id, name or task")
    p.add_argument("--only-model", action="store_true", help="list only items of --model")
    p.add_argument("--name")
    p.add_argument("--origin", help="import: the origin this prompt/vector belongs to")
    p.add_argument("--format", default="peft", choices=["peft", "safetensors"])
    p.add_argument("--out", help="export: a new file or folder (never an existing folder's contents); a PEFT "
                                 "adapter to a name ending in .zip is one zip file")
    p.add_argument("--overwrite", action="store_true",
                   help="export: replace an existing file, or a folder that an earlier PEFT export wrote")
    p.add_argument("--cascade", action="store_true", help="delete: also delete items derived from it")
    p.add_argument("--yes", action="store_true", help="delete: confirm")
    p.set_defaults(run=cmd_library)


def _add_sharing_commands(sub, common: argparse.ArgumentParser) -> None:
    """hub push/pull and build-library: commands that move libraries."""
    p = sub.add_parser("hub", help="share items through the Hugging Face Hub (push, pull)",
                       description="Push items (PEFT adapters, origins, task prompt vectors, catalog, model card) to a "
                                   "Hugging Face model repository, or pull a repository (or a local snapshot folder) "
                                   "into your library. Needs HF_HUB_OFFLINE=0 and `hf auth login` or HF_TOKEN.")
    hub = p.add_subparsers(dest="hub_action", required=True)
    p = hub.add_parser("push", parents=[common], help="upload items with their lineage to a model repository")
    p.add_argument("repo_id", help="owner/name of the model repository (created if needed)")
    p.add_argument("--items", nargs="+", default=None, help="item ids (default: your whole library of --model)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--overwrite", action="store_true", help="replace the content of an existing repository the "
                                                             "studio did not write (its README.md, adapters/, items/)")
    p.set_defaults(run=cmd_hub_push)
    p = hub.add_parser("pull", parents=[common], help="store a repository's items in your library")
    p.add_argument("source", help="owner/name of a model repository, a local snapshot folder, or a library zip "
                                  "(the Library tab's Download my library)")
    p.add_argument("--origin", help="without a studio catalog: the adapter folder (or library origin id) that is the "
                                    "origin of the other adapters; their task prompt vectors are stored too")
    p.add_argument("--revision", help="a branch, tag or commit of the repository")
    p.set_defaults(run=cmd_hub_pull)

    p = sub.add_parser("build-library", parents=[common], help="(re)build the prebuilt library in assets/ (resumable)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "assets" / "library"))
    p.add_argument("--tasks", default="mr,tweets,bbc,uncertainty,reviews-nl")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=None, help="default: the model's recipe (150 for SmolLM2)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--lr", type=float, default=None, help="default: the model's recipe")
    p.add_argument("--n-tokens", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--test-limit", type=int, default=200)
    p.add_argument("--workdir", help="where the build keeps its working library (default: $STUDIO_HOME/build)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="end tuning at this step and keep the best prompts so far (resumes a checkpoint first)")
    p.set_defaults(run=cmd_build_library)


def _add_sweep_command(sub, library_args: argparse.ArgumentParser) -> None:
    """studio sweep SPEC [--ray ADDRESS] [--dry-run]: the common options less --model (the spec names the models)."""
    p = sub.add_parser(
        "sweep", parents=[library_args], help="tune a grid (models x tasks x seeds x recipes), here or on a Ray cluster",
        description="Tune every run of a sweep spec (TOML or YAML, docs/sweeps.md) that is not in the library yet: "
                    "each model x recipe point is one batched job over all its tasks x seeds. Rerunning the same "
                    "spec trains only what is missing.")
    p.add_argument("spec", help="a .toml, .yaml or .yml sweep spec")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the groups on Ray: auto (the cluster `ray start --head` runs), HOST:PORT, "
                        "ray://HOST:10001, or local (start Ray here for this sweep)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (groups, prompts, what is done) and stop")
    p.set_defaults(run=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    from studio.files import sweep_dead_scratch

    args = build_parser().parse_args(argv)
    try:
        sweep_dead_scratch()  # what a killed studio left in the temporary folder (a pull's download: 200 MB)
        args.run(args)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as error:  # a fault nobody turned into a message yet: still one line, never a traceback dump
        if os.environ.get("STUDIO_DEBUG"):
            raise
        print(f"error: unexpected {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
              "(rerun with STUDIO_DEBUG=1 for the details, and please report it)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
