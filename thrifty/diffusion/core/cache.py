"""Where the diffusion field caches what it trains once (teachers, the digits feature classifier).

``cache_dir()`` is ``$THRIFTY_CACHE_DIR/diffusion`` when the variable is set, else ``~/.cache/thrifty/diffusion``
(``$XDG_CACHE_HOME`` respected); it is created on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The field's cache folder (created if missing)."""
    root = os.environ.get("THRIFTY_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thrifty"
    path = base / "diffusion"
    path.mkdir(parents=True, exist_ok=True)
    return path
