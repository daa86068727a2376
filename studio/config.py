"""Where the studio keeps things: caches, the user's library and the bundled (prebuilt) library."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PREBUILT_LIBRARY = Path(os.environ.get("STUDIO_PREBUILT") or REPO_ROOT / "assets" / "library")


def studio_home() -> Path:
    """Root of everything the studio writes: ``$STUDIO_HOME`` or ``~/.cache/tpv-studio``."""
    home = Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "tpv-studio")
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(kind: str) -> Path:
    """A writable cache folder (``models``, ``data``, ``checkpoints``...), never inside site-packages."""
    path = studio_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_library_dir() -> Path:
    return Path(os.environ.get("STUDIO_LIBRARY") or studio_home() / "library")
