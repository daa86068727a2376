"""The tuning engine: determinism, batched jobs equal single ones, checkpoint/resume, kills, divergence, a real run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from studio import StudioError
from studio.backbones import load_backbone
from studio.prompts import make_origin
from studio.settings import Schedule, SelectBy, TuneConfig, config_fields
from studio.tasks import load_task
from studio.tuning import TrainingPrompt, batch_indices, tune

SMALL = TuneConfig(steps=6, batch_size=3, lr=0.05, eval_every=2, val_limit=6, micro_batch=16)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backbone(str(tiny_llama_dir), dtype=torch.float32)


def jobs_for(tiny, specs):
    """PromptJobs from (task name, origin seed) pairs, 4 virtual tokens each."""
    return [TrainingPrompt(load_task(name), make_origin(tiny, seed, 4), seed) for name, seed in specs]


def assert_same_outcome(a, b, exact=True):
    assert a.status == b.status and a.steps_done == b.steps_done
    for x, y in zip(a.results, b.results):
        if exact:
            assert torch.equal(x.final_prompt, y.final_prompt)
            assert torch.equal(x.best_prompt, y.best_prompt)
        else:
            torch.testing.assert_close(x.final_prompt, y.final_prompt, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(x.best_prompt, y.best_prompt, atol=1e-5, rtol=1e-5)
        assert x.best_step == y.best_step
        assert [h["step"] for h in x.history] == [h["step"] for h in y.history]
        for hx, hy in zip(x.history, y.history):
            for key in ("val_loss", "val_accuracy", "train_loss"):
                if hx[key] is None:
                    assert hy[key] is None
                else:
                    assert hx[key] == pytest.approx(hy[key], rel=1e-4, abs=1e-5), key


# ---- the recipe ------------------------------------------------------------------------------------------------
def test_config_validation():
    for bad in ({"steps": 0}, {"batch_size": 0}, {"lr": 0}, {"lr": float("nan")}, {"lr": float("inf")},
                {"schedule": "step"}, {"select_by": "f1"}, {"eval_every": 0}, {"val_limit": 0}, {"micro_batch": 0}):
        with pytest.raises(StudioError, match="bad tuning settings"):
            TuneConfig(**bad)



def test_every_numeric_setting_has_its_range_in_one_place():
    """The ranges live in TuneConfig's field metadata: config_fields shows them (for the CLI's flags, the Tune tab,
    sweeps) and the config itself refuses a value outside them, naming the setting as people know it."""
    from studio.limits import MAX_SEED, MAX_STEPS

    fields = {f.name: f for f in config_fields(TuneConfig)}
    numeric = [f for f in fields.values() if f.choices is None]
    assert numeric and all(f.range is not None and f.label for f in numeric)
    assert (fields["steps"].range.low, fields["steps"].range.high) == (1, MAX_STEPS)
    assert (fields["batch_size"].range.low, fields["batch_size"].range.high) == (1, 512)
    assert fields["seed"].range.high == MAX_SEED and fields["lr"].range.open
    for setting in numeric:  # each end is allowed (closed) or refused (open), and one step beyond it is refused
        low, high = setting.range.low, setting.range.high
        beyond = (low - 1, high + 1) if setting.type is int else (low - 0.5, high * 1.5 + 1)
        for value in beyond:
            with pytest.raises(StudioError, match=f"{setting.label} must be (between|in)"):
                TuneConfig(**{setting.name: value})
        for value in (low, high):
            if setting.range.open:
                with pytest.raises(StudioError, match=rf"{setting.label} must be in \("):
                    TuneConfig(**{setting.name: value})
            else:
                assert getattr(TuneConfig(**{setting.name: value}), setting.name) == value
    with pytest.raises(StudioError, match=r"^bad tuning settings: batch size must be between 1 and 512 \(got 513\)$"):
        TuneConfig(batch_size=513)
    with pytest.raises(StudioError, match="steps must be a whole number"):
        TuneConfig(steps=2.5)
    with pytest.raises(StudioError, match="steps must be a number"):
        TuneConfig(steps="3")
    assert TuneConfig(steps=3.0).steps == 3 and type(TuneConfig(steps=3.0).steps) is int
    assert asdict(TuneConfig(steps=3.0)) == asdict(TuneConfig(steps=3))  # the same content ids either way


def test_parse_reads_a_forms_values_with_one_message_per_setting():
    config = TuneConfig.parse(steps="12", batch_size=4.0, lr="0.1", eval_every=6, val_limit="20", micro_batch="",
                              schedule="linear", select_by="accuracy")
    assert config == TuneConfig(steps=12, batch_size=4, lr=0.1, eval_every=6, val_limit=20, schedule="linear",
                                select_by="accuracy")
    for values, message in [({"steps": ""}, "steps is empty"), ({"lr": None}, "learning rate is empty"),
                            ({"steps": "ten"}, "steps must be a whole number"),
                            ({"eval_every": 1.5}, "validate every must be a whole number"),
                            ({"lr": "fast"}, "learning rate must be a number"),
                            ({"steps": 0}, "steps must be between 1 and 100000"),
                            ({"val_limit": 10**6}, "validation examples must be between 1 and 100000"),
                            ({"lr": 50}, "learning rate must be in"), ({"schedule": "step"}, "schedule must be"),
                            ({"steps_": 3}, "unknown tuning setting 'steps_'")]:
        with pytest.raises(StudioError, match=message):
            TuneConfig.parse(**values)

def test_learning_rate_schedule_by_hand():
    config = TuneConfig(steps=100, lr=0.1, warmup_ratio=0.1, schedule="cosine")
    assert config.lr_at(0) == pytest.approx(0.01)  # warm-up: (step + 1) / 10
    assert config.lr_at(9) == pytest.approx(0.1)
    assert config.lr_at(10) == pytest.approx(0.1)  # cosine starts at the peak
    assert config.lr_at(55) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert config.lr_at(99) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    linear = TuneConfig(steps=100, lr=0.1, warmup_ratio=0.1, schedule="linear")
    assert linear.lr_at(55) == pytest.approx(0.1 * (1 - 45 / 90))
    assert TuneConfig(steps=100, lr=0.1, warmup_ratio=0.1, schedule="constant").lr_at(70) == pytest.approx(0.1)


def test_batches_cover_each_epoch_once():
    n, batch = 10, 4
    drawn = [i for step in range(5) for i in batch_indices(0, step, batch, n)]  # 20 draws = 2 epochs
    assert Counter(drawn[:10]) == Counter(range(10)) and Counter(drawn[10:]) == Counter(range(10))
    assert batch_indices(0, 3, batch, n) == batch_indices(0, 3, batch, n)
    assert drawn != [i for step in range(5) for i in batch_indices(1, step, batch, n)]  # the data seed matters



def test_enum_settings_accept_strings_and_store_strings():
    from studio.tuning import _job_signature

    assert TuneConfig(schedule=Schedule.LINEAR) == TuneConfig(schedule="linear")
    config = TuneConfig(schedule="constant", select_by=SelectBy.ACCURACY)
    assert type(config.schedule) is str and config.schedule == "constant" == Schedule.CONSTANT
    assert type(config.select_by) is str and config.select_by == "accuracy"
    # asdict, repr and JSON are what they were before the Enums: job signatures, checkpoint folders and content ids
    # computed from them stay the same
    assert asdict(TuneConfig(schedule=Schedule.COSINE, select_by=SelectBy.LOSS)) == asdict(TuneConfig())
    assert repr(asdict(TuneConfig(schedule=Schedule.COSINE))) == repr(asdict(TuneConfig()))
    assert json.loads(json.dumps(asdict(config)))["schedule"] == "constant"
    assert json.loads(_job_signature([], TuneConfig()))["config"] == {
        "steps": 150, "batch_size": 8, "lr": 0.2, "weight_decay": 1e-5, "warmup_ratio": 0.03, "schedule": "cosine",
        "eval_every": 50, "val_limit": 100, "select_by": "loss", "max_grad_norm": 1.0, "micro_batch": None, "seed": 0}
    with pytest.raises(StudioError, match=r"^bad tuning settings: schedule must be cosine, linear or constant$"):
        TuneConfig(schedule="step")
    with pytest.raises(StudioError, match=r"^bad tuning settings: select_by must be loss or accuracy$"):
        TuneConfig(select_by=None)


def test_config_fields_describe_every_setting():
    fields = {f.name: f for f in config_fields(TuneConfig)}
    assert list(fields) == list(asdict(TuneConfig()))
    assert all(f.help for f in fields.values())
    assert fields["schedule"].choices == ["cosine", "linear", "constant"] and fields["schedule"].default == "cosine"
    assert fields["select_by"].choices == ["loss", "accuracy"] and fields["select_by"].type is str
    assert fields["steps"][:5] == ("steps", int, 150, fields["steps"].help, None)
    assert fields["lr"].type is float and "0.3" in fields["lr"].help  # the paper's value
    assert fields["micro_batch"].type is int and fields["micro_batch"].default is None  # optional: None stripped


# ---- determinism and batching -------------------------------------------------------------------------------------
def test_same_config_twice_is_identical(tiny):
    first = tune(tiny, jobs_for(tiny, [("mr", 0)]), SMALL)
    second = tune(tiny, jobs_for(tiny, [("mr", 0)]), SMALL)
    assert first.status == "done" and first.steps_done == SMALL.steps
    assert_same_outcome(first, second)
    result = first.results[0]
    assert not torch.equal(result.final_prompt, result.job.origin)  # it trained
    assert [h["step"] for h in result.history] == [0, 2, 4, 6]
    assert result.history[0]["train_loss"] is None
    # the best checkpoint is chosen among the validations after training began (step 0 is the origin itself)
    best = min(result.history[1:], key=lambda h: h["val_loss"])
    assert result.best_step == best["step"]
    # the best validation under evaluation's names (the catalog stores them as validation_*), the curves' points
    # under val_* beside the training loss (stored with the prompt as they are)
    assert result.best_metrics == {"loss": best["val_loss"], "accuracy": best["val_accuracy"],
                                   "macro_f1": best["val_macro_f1"]}
    assert list(best) == ["step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"]


def test_multi_prompt_job_equals_single_prompt_jobs(tiny):
    specs = [("mr", 0), ("uncertainty", 1), ("mr", 2)]
    together = tune(tiny, jobs_for(tiny, specs), SMALL)
    for spec, joint in zip(specs, together.results):
        alone = tune(tiny, jobs_for(tiny, [spec]), SMALL).results[0]
        torch.testing.assert_close(joint.final_prompt, alone.final_prompt, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(joint.best_prompt, alone.best_prompt, atol=1e-5, rtol=1e-4)
        assert joint.best_step == alone.best_step
        for hj, ha in zip(joint.history, alone.history):
            assert hj["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-4)


def test_mixture_trains_one_prompt_on_both_tasks(tiny):
    origin = make_origin(tiny, 0, 4)
    mixed = [TrainingPrompt(load_task(name), origin, 0, mixture="mr+tweets") for name in ("mr", "tweets")]
    outcome = tune(tiny, mixed, SMALL)
    a, b = outcome.results
    assert torch.equal(a.final_prompt, b.final_prompt) and torch.equal(a.best_prompt, b.best_prompt)
    assert a.best_step == b.best_step
    assert not torch.equal(a.final_prompt, origin)
    alone = tune(tiny, [TrainingPrompt(load_task("mr"), origin, 0)], SMALL).results[0]
    assert not torch.allclose(alone.final_prompt, a.final_prompt, atol=1e-4)  # the tweets half pulled it too
    with pytest.raises(StudioError, match="same tensor"):
        tune(tiny, [TrainingPrompt(load_task("mr"), origin, 0, mixture="m"),
                    TrainingPrompt(load_task("tweets"), make_origin(tiny, 1, 4), 1, mixture="m")], SMALL)


def test_progress_events(tiny):
    events = []
    outcome = tune(tiny, jobs_for(tiny, [("mr", 0), ("mr", 1)]), SMALL, on_progress=events.append)
    assert [e["step"] for e in events] == list(range(1, 7))
    assert all(len(e["train_loss"]) == 2 and e["steps"] == 6 for e in events)
    validated = [e for e in events if "validation" in e]
    assert [e["step"] for e in validated] == [2, 4, 6]
    assert all(e["examples_per_s"] > 0 and e["eta_s"] >= 0 for e in events)
    # each validation as the Tune tab plots it: the curves' points, without the training loss
    assert list(validated[0]["validation"][0]) == ["step", "val_loss", "val_accuracy", "val_macro_f1"]
    for j, result in enumerate(outcome.results):
        assert [e["validation"][j] for e in validated] == [
            {k: v for k, v in point.items() if k != "train_loss"} for point in result.history[1:]]


def test_tuning_encodes_and_counts_rows_as_scoring_does(tiny, planned_passes):
    """Training rows are the examples exactly as scoring encodes them (``evaluation.encode_example``), and
    training's micro-batches are planned by scoring's count of a row's tokens (``evaluation.row_tokens``: the soft
    prompt, the input and the answer but its last token)."""
    from studio.backbones import Row
    from studio.evaluation import encode_task
    from studio.tuning import EncodedJobs, forward_backward

    task = load_task("mr")
    jobs = [TrainingPrompt(task, make_origin(tiny, 0, 4), 0, train_examples=task.validation[:3])]
    rows = EncodedJobs(tiny, jobs, 3).rows(0, 0, 3)  # one epoch: every example once
    scored = encode_task(tiny, task, "validation", 3)
    answers = {tuple(e.input_ids): scored.target_ids[e.example.label] for e in scored.examples}
    assert sorted(r.input_ids for r in rows) == sorted(e.input_ids for e in scored.examples)
    assert all(r.target_ids == answers[tuple(r.input_ids)] for r in rows)

    seen = planned_passes
    params = torch.nn.Parameter(torch.stack([make_origin(tiny, 0, 4), make_origin(tiny, 1, 4)]))
    forward_backward(tiny, params, [Row(0, [1, 2, 3, 4, 5], [6]), Row(1, [1, 2], [6, 7, 8]), Row(0, [1, 2, 3], [6, 7])],
                     None)
    assert seen == [[4 + 2 + 3 - 1, 4 + 3 + 2 - 1, 4 + 5 + 1 - 1]]  # sorted, shortest first


def test_init_and_few_shot_examples(tiny):
    task = load_task("mr")
    origin = make_origin(tiny, 0, 4)
    start = origin + 0.1
    outcome = tune(tiny, [TrainingPrompt(task, origin, 0, init=start, train_examples=task.train[:5])],
                   TuneConfig(steps=2, batch_size=5, eval_every=1, val_limit=4, lr=1e-6, warmup_ratio=0.0))
    result = outcome.results[0]
    torch.testing.assert_close(result.final_prompt, start, atol=1e-4, rtol=0)  # starts at init, not the origin
    with pytest.raises(StudioError, match="no training examples"):
        tune(tiny, [TrainingPrompt(task, origin, 0, train_examples=[])], SMALL)


def test_job_errors(tiny):
    with pytest.raises(StudioError, match="nothing to tune"):
        tune(tiny, [], SMALL)
    task = load_task("mr")
    with pytest.raises(StudioError, match="same shape"):
        tune(tiny, [TrainingPrompt(task, make_origin(tiny, 0, 4), 0), TrainingPrompt(task, make_origin(tiny, 0, 5), 0)], SMALL)
    with pytest.raises(StudioError, match="does not match the model"):
        tune(tiny, [TrainingPrompt(task, torch.zeros(4, 7), 0)], SMALL)


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def test_stop_and_resume_equals_uninterrupted(tiny, tmp_path):
    specs = [("mr", 0), ("uncertainty", 1)]
    uninterrupted = tune(tiny, jobs_for(tiny, specs), SMALL)
    calls = []

    def stop_after_three() -> bool:
        calls.append(1)
        return len(calls) > 3

    stopped = tune(tiny, jobs_for(tiny, specs), SMALL, should_stop=stop_after_three, checkpoint_dir=tmp_path)
    assert stopped.status == "cancelled" and stopped.steps_done == 3
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["step"] == 3
    assert not list(tmp_path.glob("*.partial"))
    # a kill between writing the tensors and state.json leaves an older state.json: the tensors file wins
    state["step"] = 2
    (tmp_path / "state.json").write_text(json.dumps(state))
    resumed_events = []
    resumed = tune(tiny, jobs_for(tiny, specs), SMALL, checkpoint_dir=tmp_path, on_progress=resumed_events.append)
    assert resumed_events[0]["step"] == 4  # picked up after step 3, did not start over
    assert_same_outcome(resumed, uninterrupted)



def test_checkpoint_holds_the_optimizer_state_dict(tiny, tmp_path):
    """The optimizer's state_dict is saved whole, its tensors in the safetensors file (flat keys) and the rest in
    the JSON, and load_state_dict restores it: the resumed job ends exactly where the uninterrupted one does."""
    jobs = jobs_for(tiny, [("mr", 0)])
    tune(tiny, jobs, SMALL, should_stop=iter([False] * 3 + [True]).__next__, checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    with safe_open(str(tmp_path / "state.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["state"]) == state  # the tensors file carries its own copy
        assert set(handle.keys()) == {"params", "best", "optimizer.state.0.exp_avg", "optimizer.state.0.exp_avg_sq",
                                      "optimizer.state.0.step"}
        assert float(handle.get_tensor("optimizer.state.0.step")) == state["step"] == 3
    group = state["optimizer"]["param_groups"][0]
    assert group["params"] == [0] and group["weight_decay"] == SMALL.weight_decay
    assert_same_outcome(tune(tiny, jobs, SMALL, checkpoint_dir=tmp_path), tune(tiny, jobs, SMALL))


def test_optimizer_state_round_trip_continues_exactly(tmp_path):
    from studio.tuning import _join_optimizer_state, _split_optimizer_state

    torch.manual_seed(0)
    grads = [torch.randn(2, 3, 4) for _ in range(5)]
    a = torch.nn.Parameter(torch.randn(2, 3, 4))
    b = torch.nn.Parameter(a.detach().clone())
    first = torch.optim.AdamW([a], lr=0.1, weight_decay=0.01)
    for grad in grads[:3]:
        a.grad = grad.clone()
        first.step()
    tensors, rest = _split_optimizer_state(first.state_dict())
    save_file(tensors, str(tmp_path / "o.safetensors"))
    second = torch.optim.AdamW([b], lr=0.5)  # the saved groups replace these settings
    second.load_state_dict(_join_optimizer_state(json.loads(json.dumps(rest)), load_file(tmp_path / "o.safetensors")))
    assert second.param_groups[0]["lr"] == 0.1 and second.param_groups[0]["weight_decay"] == 0.01
    with torch.no_grad():
        b.copy_(a)
    for grad in grads[3:]:
        for param, optimizer in ((a, first), (b, second)):
            param.grad = grad.clone()
            optimizer.step()
    assert torch.equal(a, b)


def test_first_format_checkpoint_still_resumes(tiny, tmp_path):
    """Checkpoints written before the optimizer was saved whole held AdamW's moments as "exp_avg"/"exp_avg_sq" and
    its step count as the job's step (no "optimizer" in the JSON); one written by hand resumes exactly."""
    specs = [("mr", 0), ("uncertainty", 1)]
    tune(tiny, jobs_for(tiny, specs), SMALL, should_stop=iter([False] * 3 + [True]).__next__, checkpoint_dir=tmp_path)
    new = load_file(tmp_path / "state.safetensors")
    state = json.loads((tmp_path / "state.json").read_text())
    del state["optimizer"]
    old = {"params": new["params"], "best": new["best"], "exp_avg": new["optimizer.state.0.exp_avg"],
           "exp_avg_sq": new["optimizer.state.0.exp_avg_sq"]}
    save_file(old, str(tmp_path / "state.safetensors"), metadata={"state": json.dumps(state)})
    (tmp_path / "state.json").write_text(json.dumps(state))
    events = []
    resumed = tune(tiny, jobs_for(tiny, specs), SMALL, checkpoint_dir=tmp_path, on_progress=events.append)
    assert events[0]["step"] == 4
    assert_same_outcome(resumed, tune(tiny, jobs_for(tiny, specs), SMALL))
    assert "optimizer" in json.loads((tmp_path / "state.json").read_text())  # rewritten in the new format


def test_a_checkpoint_holding_its_best_as_a_curve_point_resumes_with_the_same_metrics(tiny, tmp_path):
    """Checkpoints written before the best validations kept evaluation's names held each as its curve point
    ({"step", "val_loss", "val_accuracy", "val_macro_f1"}); one resumes with the best metrics that the uninterrupted
    job ends with, so the catalog stores the same names and values."""
    specs = [("mr", 0), ("uncertainty", 1)]
    config = TuneConfig(steps=6, batch_size=3, lr=1e-4, eval_every=2, val_limit=6, select_by=SelectBy.ACCURACY)
    tune(tiny, jobs_for(tiny, specs), config, should_stop=iter([False] * 3 + [True]).__next__,
         checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    state["best_metrics"] = [{"step": 2, **{f"val_{k}": v for k, v in best.items()}} for best in state["best_metrics"]]
    tensors = load_file(tmp_path / "state.safetensors")
    save_file(tensors, str(tmp_path / "state.safetensors"), metadata={"state": json.dumps(state)})
    (tmp_path / "state.json").write_text(json.dumps(state))
    resumed = tune(tiny, jobs_for(tiny, specs), config, checkpoint_dir=tmp_path)
    uninterrupted = tune(tiny, jobs_for(tiny, specs), config)
    assert [r.best_metrics for r in resumed.results] == [r.best_metrics for r in uninterrupted.results]
    assert any(r.best_step == 2 for r in resumed.results)  # a best from before the stop, read back


def test_cancel_before_the_first_step_resumes_with_one_start_point(tiny, tmp_path):
    config = TuneConfig(steps=2, batch_size=2, eval_every=1, val_limit=4)
    cancelled = tune(tiny, jobs_for(tiny, [("mr", 0)]), config, should_stop=lambda: True, checkpoint_dir=tmp_path)
    assert cancelled.status == "cancelled" and cancelled.steps_done == 0
    resumed = tune(tiny, jobs_for(tiny, [("mr", 0)]), config, checkpoint_dir=tmp_path)
    assert [h["step"] for h in resumed.results[0].history] == [0, 1, 2]
    assert_same_outcome(resumed, tune(tiny, jobs_for(tiny, [("mr", 0)]), config))


def test_checkpoint_of_another_job_is_refused(tiny, tmp_path):
    tune(tiny, jobs_for(tiny, [("mr", 0)]), TuneConfig(steps=2, batch_size=2, eval_every=1, val_limit=4),
         checkpoint_dir=tmp_path)
    with pytest.raises(StudioError, match="different job"):
        tune(tiny, jobs_for(tiny, [("mr", 1)]), TuneConfig(steps=2, batch_size=2, eval_every=1, val_limit=4),
             checkpoint_dir=tmp_path)


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from studio.backbones import load_backbone
    from studio.prompts import make_origin
    from studio.tasks import load_task
    from studio.tuning import TrainingPrompt, TuneConfig, tune

    tiny = load_backbone(sys.argv[1], dtype=torch.float32)
    jobs = [TrainingPrompt(load_task(n), make_origin(tiny, s, 4), s) for n, s in (("mr", 0), ("uncertainty", 1))]
    config = TuneConfig(steps=6, batch_size=3, lr=0.05, eval_every=2, val_limit=6, micro_batch=16)

    def progress(event):
        if event["step"] == 5:
            os.kill(os.getpid(), 9)  # SIGKILL: no cleanup, no finally

    tune(tiny, jobs, config, on_progress=progress, checkpoint_dir=sys.argv[2])
""")


def test_killed_job_resumes_from_last_checkpoint(tiny, tiny_llama_dir, tmp_path):
    checkpoint = tmp_path / "ckpt"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    process = subprocess.run([sys.executable, str(script), str(tiny_llama_dir), str(checkpoint)],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == -9, process.stderr[-2000:]
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 4  # the last validation
    assert sorted(p.name for p in checkpoint.iterdir()) == ["state.json", "state.safetensors"]
    specs = [("mr", 0), ("uncertainty", 1)]
    resumed = tune(tiny, jobs_for(tiny, specs), SMALL, checkpoint_dir=checkpoint)
    assert_same_outcome(resumed, tune(tiny, jobs_for(tiny, specs), SMALL))


def test_failed_checkpoint_write_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    import studio.tuning

    config = TuneConfig(steps=4, batch_size=2, eval_every=2, val_limit=4)
    tune(tiny, jobs_for(tiny, [("mr", 0)]), TuneConfig(**{**config.__dict__, "steps": 4}),
         should_stop=iter([False, False, False, True]).__next__, checkpoint_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"state.json", "state.safetensors"}

    def broken_save(tensors, path, metadata=None):  # the disk fills up half-way through the write
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(studio.tuning, "save_file", broken_save)
    with pytest.raises(OSError):
        tune(tiny, jobs_for(tiny, [("mr", 0)]), config, checkpoint_dir=tmp_path)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the last good checkpoint survives
    monkeypatch.undo()
    resumed = tune(tiny, jobs_for(tiny, [("mr", 0)]), config, checkpoint_dir=tmp_path)
    assert resumed.status == "done" and resumed.steps_done == 4


# ---- divergence -----------------------------------------------------------------------------------------------------
def test_divergence_raises(tiny, tmp_path):
    task = load_task("mr")
    origin = make_origin(tiny, 0, 4)
    huge = torch.full_like(origin, 3e38)  # overflows inside the model: NaN loss and gradients
    events = []
    with pytest.raises(StudioError, match="diverged at step 1"):
        tune(tiny, [TrainingPrompt(task, origin, 0, init=huge)],
             TuneConfig(steps=50, batch_size=2, eval_every=1, val_limit=4), checkpoint_dir=tmp_path,
             on_progress=events.append)
    assert events == []  # stopped at once, not after 50 steps of NaN
    assert not list(tmp_path.glob("*"))  # no NaN checkpoint written


# ---- a real run on the embedded model ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_tuning_improves_validation_accuracy(embedded):
    task = load_task("mr")
    jobs = [TrainingPrompt(task, make_origin(embedded, 0, 20), 0)]
    # measured here (bf16): validation accuracy 0.61 (origin) -> 0.72, 0.77, 0.80 (steps 10, 20, 30), loss 4.5 ->
    # 0.54. A bf16 run is chaotic in its details (other thread counts or kernels, as on a GPU, round differently and
    # one run ended at 0.61 at step 30), so the accuracy is read at three validations, the loss at the end
    config = TuneConfig(steps=30, batch_size=8, lr=0.03, eval_every=10, val_limit=64)
    outcome = tune(embedded, jobs, config)
    assert outcome.status == "done"
    history = outcome.results[0].history
    start, end = history[0], history[-1]
    assert [h["step"] for h in history] == [0, 10, 20, 30]
    assert end["val_loss"] < start["val_loss"] / 2
    assert max(h["val_accuracy"] for h in history[1:]) > start["val_accuracy"], history


def test_a_default_config_is_the_default_models_recipe_and_reading_settings_needs_no_torch():
    """TuneConfig() trained 200 steps at lr 0.03 while every entry point used the model's recipe (150 at 0.2), at
    which SmolLM2's TPVs do not transfer across origins (docs/findings.md)."""
    import subprocess
    import sys

    from studio.backbones import recipe_for
    from studio.config import DEFAULT_MODEL

    recipe = recipe_for(DEFAULT_MODEL)
    assert {k: getattr(TuneConfig(), k) for k in ("steps", "batch_size", "lr")} == {
        k: getattr(recipe, k) for k in ("steps", "batch_size", "lr")}
    code = "import sys, studio.settings; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
