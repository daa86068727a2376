"""Open Prompt Arithmetic Studio: `python launch.py` (also the Hugging Face Space's app_file)."""

from __future__ import annotations

import argparse
import os
import time

STARTED = time.monotonic()

from studio.space import configure_environment, on_space, on_zero_gpu, prepare  # noqa: E402

configure_environment()  # offline here; online on a Space (before anything imports the hub client)
if on_zero_gpu():
    import spaces  # noqa: F401 - ZeroGPU needs it imported before anything initialises CUDA



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
    parser.add_argument("--page-within", type=float, default=8.5, metavar="SECONDS",
                        help="serve the page this long after start at the latest, even if the model is still "
                             "warming up (a slider moved before it is warm waits for it); default 8.5")
    args = parser.parse_args()
    if space:  # a fresh Space has neither the corpora nor the embedded weights: fetched once, with a message
        prepare()
    from studio.backbones import DEFAULT_MODEL
    from studio.live import start_warm_up

    warming = start_warm_up(args.model or DEFAULT_MODEL)  # the model loads while Gradio imports and the page is built
    from studio.ui.app import CSS, create

    app, state = create(args.library, args.model, prebuilt=not args.no_prebuilt, warming=warming)
    if not args.serve_at_once:  # wait for the model (bounded), so that the first slider move answers at once
        print("[studio] loading the model...", flush=True)
        state.wait_warm_up(timeout=max(0.0, args.page_within - (time.monotonic() - STARTED)))
    print(f"Prompt Arithmetic Studio on http://{args.host}:{args.port}", flush=True)
    app.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port, share=False,
                                                 css=CSS, show_error=True)


if __name__ == "__main__":
    main()
