"""Where the diffusion field caches what it trains once (teachers, the digits feature classifier).

``cache_dir()`` is the ``diffusion`` folder of thrifty's cache (``$THRIFTY_CACHE_DIR``, else ``~/.cache/thrifty``,
``$XDG_CACHE_HOME`` respected; see :mod:`thrifty._cache`); it is created on first use.
"""

from __future__ import annotations

from pathlib import Path

from thrifty._cache import cache_root

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The field's cache folder (created if missing)."""
    path = cache_root() / "diffusion"
    path.mkdir(parents=True, exist_ok=True)
    return path
