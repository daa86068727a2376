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


def test_launch_serves_the_page_after_the_warm_up(tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
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
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    # the model was loaded before the page was announced
    assert output.index("[studio] loading the model") < output.index("Prompt Arithmetic Studio on http://127.0.0.1")
