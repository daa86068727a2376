"""`python launch.py` as the README's first command runs it: the page is served, with the model already warm."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def upload(port: int, size: int) -> int:
    """POST a file of ``size`` bytes to the page's upload route, as the browser does; the HTTP status."""
    import httpx

    files = {"files": ("notes.csv", b"text,label\n" + b"x" * size, "text/csv")}
    return httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files=files, timeout=30).status_code


def test_launch_serves_the_page_after_the_warm_up(tmp_path):
    """... and refuses an upload over the limit (``STUDIO_MAX_UPLOAD``; 100 MB by default) before storing it:
    without one, a visitor of a public Space could fill its disk."""
    port = free_port()
    env = {**ENV, "STUDIO_MAX_UPLOAD": "4kb"}
    server = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--library", str(tmp_path / "lib")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.3)
        assert status == 200, "the page was not served within 120 s"
        assert upload(port, 1000) == 200
        assert upload(port, 5000) == 413
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    # the model was loaded before the page was announced
    assert output.index("[studio] loading the model") < output.index("Prompt Arithmetic Studio on http://127.0.0.1")


def test_a_mistyped_upload_limit_stops_the_launch_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "launch.py", "--library", str(tmp_path / "lib")], cwd=ROOT,
                            env={**ENV, "STUDIO_MAX_UPLOAD": "lots"}, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: STUDIO_MAX_UPLOAD='lots' is not a size: write it like 100mb" in result.stderr
