"""The one folder where thrifty keeps what it builds or trains once: native kernels, diffusion teachers, classifiers.

``$THRIFTY_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/thrifty`` (``~/.cache/thrifty`` by default); each user of it
takes a subfolder (``native``, ``diffusion``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """thrifty's cache folder (not created here: each user creates its subfolder when it first writes)."""
    root = os.environ.get("THRIFTY_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thrifty"
