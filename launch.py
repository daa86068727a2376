"""Open Prompt Arithmetic Studio: `python launch.py` (also the Hugging Face Space's app_file)."""

from __future__ import annotations

import argparse
import os

from studio.space import configure_environment, on_space, on_zero_gpu, prepare

configure_environment()  # offline here; online on a Space (before anything imports the hub client)
if on_zero_gpu():
    import spaces  # noqa: F401 - ZeroGPU needs it imported before anything initialises CUDA

from studio.ui.app import CSS, create  # noqa: E402


def main() -> None:
    space = on_space()
    parser = argparse.ArgumentParser(description="Prompt Arithmetic Studio")
    parser.add_argument("--host", default="0.0.0.0" if space else "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--library", default=None, help="your library folder (default: $STUDIO_LIBRARY, else "
                                                        "$STUDIO_HOME/library)")
    parser.add_argument("--model", default=None, help="model registry name, local folder or hub id")
    parser.add_argument("--no-prebuilt", action="store_true", help="do not attach the prebuilt library")
    parser.add_argument("--serve-at-once", action="store_true",
                        help="serve the page before the model is loaded (the first evaluation then waits for it)")
    args = parser.parse_args()
    if space:  # a fresh Space has neither the corpora nor the embedded weights: fetched once, with a message
        prepare()
    app, state = create(args.library, args.model, prebuilt=not args.no_prebuilt)
    if not args.serve_at_once:  # a few seconds more before the page, so that the first slider move answers at once
        print("[studio] loading the model...", flush=True)
        state.wait_warm_up(timeout=30)
    print(f"Prompt Arithmetic Studio on http://{args.host}:{args.port}", flush=True)
    app.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port, share=False,
                                                 css=CSS, show_error=True)


if __name__ == "__main__":
    main()
