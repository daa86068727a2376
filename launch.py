"""Open Prompt Arithmetic Studio: `python launch.py` (also the Hugging Face Space's app_file)."""

from __future__ import annotations

import argparse
import os
import time

STARTED = time.monotonic()

from studio import StudioError  # noqa: E402
from studio.config import max_upload_bytes  # noqa: E402
from studio.space import configure_environment, on_space, on_zero_gpu, prepare  # noqa: E402

configure_environment()  # offline here; online on a Space (before anything imports the hub client)
if on_zero_gpu():
    import spaces  # noqa: F401 - ZeroGPU needs it imported before anything initialises CUDA


def check_mcp() -> None:
    """Gradio only prints a line and serves no MCP when the `mcp` package is missing: say so and stop instead."""
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        raise SystemExit("--mcp needs Gradio's MCP extra: pip install -e '.[mcp]' (or pip install \"gradio[mcp]\")")


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
    parser.add_argument("--page-within", type=float, default=7.0, metavar="SECONDS",
                        help="serve the page this long after start at the latest, even if the model is still "
                             "warming up (a slider moved before it is warm waits for it); default 7")
    parser.add_argument("--mcp", action="store_true", default=os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true",
                        help="also serve the studio's main actions as MCP tools for agents, at "
                             "/gradio_api/mcp/ (needs `pip install -e '.[mcp]'`; also on with GRADIO_MCP_SERVER=true)")
    args = parser.parse_args()
    try:
        max_upload_bytes()  # a mistyped STUDIO_MAX_UPLOAD stops here, before the model loads
    except StudioError as error:
        raise SystemExit(f"error: {error}") from None
    if args.mcp:
        check_mcp()
    if space:  # a fresh Space has neither the corpora nor the embedded weights: fetched once, with a message
        prepare()
    from studio.config import DEFAULT_MODEL
    from studio.live import start_warm_up
    from studio.ui.app import create, serve

    # the model loads while the page is built and after it is served: started before Gradio's import (pure Python),
    # the two fought for the GIL and the page came a second later without the model being ready any sooner
    warming = start_warm_up(args.model or DEFAULT_MODEL)

    app, state = create(args.library, args.model, prebuilt=not args.no_prebuilt, warming=warming)
    if args.mcp:  # the agent tools, and only they, in the MCP tool list
        from studio.ui.agents import attach

        try:
            attach(app, state)
        except StudioError as error:
            raise SystemExit(f"--mcp: {error}") from None
    if not args.serve_at_once:  # wait for the model (bounded), so that the first slider move answers at once
        print("[studio] loading the model...", flush=True)
        state.wait_warm_up(timeout=max(0.0, args.page_within - (time.monotonic() - STARTED)))
    print(f"Prompt Arithmetic Studio on http://{args.host}:{args.port}", flush=True)
    if args.mcp:
        print(f"MCP server (streamable HTTP) on http://{args.host}:{args.port}/gradio_api/mcp/", flush=True)
    serve(app, args.host, args.port, mcp=args.mcp, public=state.visitors is not None)


if __name__ == "__main__":
    main()
