"""Named points where the fault-injection tests kill the studio, to prove that a kill anywhere loses nothing.

``STUDIO_KILL_AT=name:n`` makes the process send itself SIGKILL the n-th time it passes the point ``name`` (n
defaults to 1). Without the variable, ``kill_point`` is a dictionary lookup and nothing else. The points sit where
a crash hurts most: between writing a file and renaming it, between writing item files and recording them, between
storing a job's results and removing its checkpoint, and inside the tuning loop (tests/test_faults.py).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process if ``STUDIO_KILL_AT`` names this point and this is the chosen pass."""
    target = os.environ.get("STUDIO_KILL_AT")
    if not target:
        return
    wanted, _, count = target.rpartition(":")
    if not count.isdigit():  # "name" alone: its first pass
        wanted, count = target, "1"
    if wanted != name:
        return
    _passed[name] += 1
    if _passed[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
